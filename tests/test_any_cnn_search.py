"""Unit pruning end to end on a torchvision CNN that is not a ResNet: MobileNetV2 on digits.

Two one-trial searches (real Ray, real Optuna), one pruning by EPruning, one by channel-granularity
gradual pruning: both remove whole unit groups' channels (inverted residual streams and depthwise
convs included), the benchmark times the physically smaller network, and the trials say so.
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


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        done = {}
        for method, space in METHODS.items():
            spec = tiny_spec(f"mobilenet-{method}", trials=1, transfer_epochs=1,
                             space={"order": "PA", "s2": 0.5, **space})
            spec["model"] = {"name": "mobilenet_v2"}
            spec["budgets"]["dense"]["epochs"] = 1
            spec["budgets"]["prune"]["epruning"] = {"population": 4}
            done[method] = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path_factory.mktemp(method))
        yield done
    finally:
        ray.shutdown()


@pytest.mark.parametrize("method,label", [("epruning", "E50"), ("channel", "50")])
def test_mobilenet_v2_trials_remove_units_physically(runs: dict[str, Path], method: str, label: str) -> None:
    frame = pd.read_csv(runs[method] / "trials.csv")
    assert len(frame) == 1 and frame["status"][0] == "ok", frame["error"].tolist()
    row = frame.iloc[0]
    assert row["pipeline"] == f"D|T|{label}|B"
    assert row["units_removed"] > 0.3, "the benchmark timed the network without its dead units"
    assert row["params_timed"] < 0.8 * _dense_params()
    assert 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0


def _dense_params() -> int:
    from torchvision.models import mobilenet_v2

    return sum(p.numel() for p in mobilenet_v2(num_classes=5).parameters())
