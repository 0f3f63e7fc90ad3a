"""Unit pruning end to end on CNNs that are not ResNets: MobileNetV2, and a user's own model
given as ``module:function`` (``tests.user_cnn:build``: a residual add, a concatenation, a
depthwise conv and a squeeze-excitation), on digits.

One search (real Ray, real Optuna) per model: the user's model over a space of two plans, pruning
by EPruning and by channel-granularity gradual pruning (the searcher never runs a plan twice, so
each runs once); MobileNetV2 by channel pruning alone (its EPruning population is the slowest part
of the suite, and its units are EPruning's as they are the channel pruner's: the same unit groups).
Both remove whole unit groups' channels, the benchmark times the physically smaller network, and
the trials say so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import yaml

from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from search.results.files import read_trials

pytestmark = pytest.mark.slow

SPACE = {"order": "PA", "s2": 0.5, "prune.method": {"choice": ["epruning", "gradual"]}, "prune.granularity": "channel"}
MODELS = {"mobilenet_v2": "mobilenet_v2", "user": "tests.user_cnn:build"}
METHODS = {"mobilenet_v2": ["gradual"], "user": ["epruning", "gradual"]}
LABELS = {"epruning": "E50", "gradual": "50"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2, log_to_driver=False)
    try:
        done = {}
        for model, name in MODELS.items():
            space = dict(SPACE, **{"prune.method": {"choice": METHODS[model]}})
            spec = tiny_spec(model, trials=len(METHODS[model]), transfer_epochs=1, space=space)
            spec["model"] = {"name": name}
            for domain in spec["data"].values():
                domain["image_size"] = 16  # MobileNetV2's five stride-2 stages still end at 1x1
            spec["budgets"]["dense"]["epochs"] = 1
            spec["budgets"]["prune"]["epruning"] = {"population": 4}
            done[model] = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path_factory.mktemp(model))
        yield done
    finally:
        ray.shutdown()


@pytest.mark.parametrize("model,method", [(m, method) for m, methods in METHODS.items() for method in methods])
def test_trials_remove_units_physically(runs: dict, model: str, method: str) -> None:
    frame = read_trials(runs[model])
    assert sorted(frame["pipeline"]) == sorted(f"D|T|{LABELS[m]}|B" for m in METHODS[model]), "each plan ran once"
    label = LABELS[method]
    row = frame[frame["pipeline"] == f"D|T|{label}|B"].iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["units_removed"] > 0.3, "the benchmark timed the network without its dead units"
    assert row["params_timed"] < 0.8 * _dense_params(model)
    assert 0 <= row["accuracy"] <= 1 and row["latency_ms"] > 0


def _dense_params(model: str) -> int:
    from trainables.models import build_model

    return sum(p.numel() for p in build_model(MODELS[model], 5).parameters())
