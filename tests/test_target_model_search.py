"""Searches without transfer, end to end: a model trained from scratch on the target by ``D``, then a
model whose weights were trained on the target (compress only: no source, no ``T``), and a rerun
that reproduces a compress-only trial exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from search.cli import main
from search.results.files import read_trials
from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from trainables import Context, DataSpec, Dense, DenseConfig, run_stages
from trainables.errors import FrontierError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py


def target_spec(name: str, *, reference: bool, **model) -> dict:
    """Digits 5-9 only: the target's own small_resnet, pruned on the target (order P, D|50|B)."""
    spec = tiny_spec(name, trials=2 if reference else 1, reference=reference, space={"order": "P", "s2": 0.5})
    del spec["data"]["source"]
    spec["model"] = {"name": "small_resnet", "trained_on": "target", **model}
    spec["concurrency"] = 1
    spec["budgets"]["dense"] = {"epochs": 4, "batch_size": 32, "optim": {"name": "adam", "lr": 0.001}}
    return spec


def test_a_model_trained_from_scratch_on_the_target_is_pruned_without_transfer(tmp_path: Path) -> None:
    spec = target_spec("scratch", reference=False)
    row = read_trials(run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path)).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["pipeline"] == "D|50|B" and row["sparsity"] == 0.5 and "seconds.T" not in row.index
    assert row["accuracy"] > 0.5  # D trained it on digits 5-9 from scratch (chance: 0.2), pruning kept it


@pytest.fixture(scope="module")
def target_weights(tmp_path_factory) -> tuple[Path, float]:
    """A state dict of small_resnet trained on digits 5-9 (D on the target), and its test accuracy."""
    spec = target_spec("weights", reference=False)
    ctx = Context(None, DataSpec(**spec["data"]["target"]), tmp_path_factory.mktemp("dense"))
    model, metrics = run_stages([Dense(DenseConfig(model="small_resnet", domain="target", **spec["budgets"]["dense"]))], ctx)
    path = ctx.workdir / "dense.pt"
    torch.save(model.state_dict(), path)
    return path, metrics["accuracy"]


def test_a_compress_only_search_on_target_weights_reruns_exactly(target_weights, tmp_path: Path) -> None:
    """Weights trained on the target, no source, no T: the reference trial is the model as it is,
    and a rerun of the pruned trial is the same model (accuracy and artifact bytes)."""
    weights, accuracy = target_weights
    spec = target_spec("compress", reference=True, weights=str(weights))
    spec["budgets"]["dense"] = {"epochs": 0}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path / "runs")
    frame = read_trials(run_dir).set_index("pipeline")
    assert sorted(frame.index) == ["D|50|B", "D|B"] and (frame["status"] == "ok").all(), frame["error"].tolist()
    assert bool(frame.loc["D|B", "reference"]) and not bool(frame.loc["D|50|B", "reference"])
    assert frame.loc["D|B", "accuracy"] == accuracy, "the weights are used as they are"
    pruned = frame.loc["D|50|B"]
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", pruned["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["pipeline"] == "D|50|B"
    assert card["metrics"]["accuracy"] == pruned["accuracy"] and card["metrics"]["size_bytes"] == pruned["size_bytes"]


def test_weights_whose_head_is_not_the_targets_are_one_line(target_weights, tmp_path: Path) -> None:
    """The D stage itself (no search: Tune would retry the raised error)."""
    four = DataSpec(name="digits", classes=[6, 7, 8, 9])  # the weights have five classes
    dense = Dense(DenseConfig(model="small_resnet", weights=str(target_weights[0]), domain="target"))
    with pytest.raises(FrontierError, match="has a 5-class head but data.target has 4 classes"):
        dense.run(None, Context(None, four, tmp_path))
