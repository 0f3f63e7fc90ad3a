"""Unit pruning end to end on CNNs that are not ResNets: MobileNetV2, and a user's own model
given as ``module:function`` (``tests.user_cnn:build``: a residual add, a concatenation, a
depthwise conv and a squeeze-excitation), on digits.

One-trial searches (real Ray, real Optuna) per model, one pruning by EPruning, one by
channel-granularity gradual pruning: both remove whole unit groups' channels, the benchmark times
the physically smaller network, and the trials say so.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml

from search.runner import run_search
from search.spec import parse_spec
from tests.tiny_spec import tiny_spec

pytestmark = pytest.mark.slow

METHODS = {
    "epruning": {"prune.method": "epruning"},
    "channel": {"prune.method": "gradual", "prune.granularity": "channel"},
}
MODELS = {"mobilenet_v2": "mobilenet_v2", "user": "tests.user_cnn:build"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        done = {}
        for model, name in MODELS.items():
            for method, space in METHODS.items():
                spec = tiny_spec(f"{model}-{method}", trials=1, transfer_epochs=1,
                                 space={"order": "PA", "s2": 0.5, **space})
                spec["model"] = {"name": name}
                for domain in spec["data"].values():
                    domain["image_size"] = 16  # MobileNetV2's five stride-2 stages still end at 1x1
                spec["budgets"]["dense"]["epochs"] = 1
                spec["budgets"]["prune"]["epruning"] = {"population": 4}
                done[model, method] = run_search(parse_spec(spec), yaml.safe_dump(spec),
                                                 runs_root=tmp_path_factory.mktemp(f"{model}-{method}"))
        yield done
    finally:
        ray.shutdown()


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("method,label", [("epruning", "E50"), ("channel", "50")])
def test_trials_remove_units_physically(runs: dict, model: str, method: str, label: str) -> None:
    frame = pd.read_csv(runs[model, method] / "trials.csv")
    assert len(frame) == 1 and frame["status"][0] == "ok", frame["error"].tolist()
    row = frame.iloc[0]
    assert row["pipeline"] == f"D|T|{label}|B"
    assert row["units_removed"] > 0.3, "the benchmark timed the network without its dead units"
    assert row["params_timed"] < 0.8 * _dense_params(model)
    assert 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0


def _dense_params(model: str) -> int:
    from trainables.models import build_model

    return sum(p.numel() for p in build_model(MODELS[model], 5).parameters())
