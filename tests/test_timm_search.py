"""A search on a timm model given by name, end to end on the CPU (issue 29): ``timm:lcnet_050``
trained from scratch on digits 5-9 by ``D`` (random weights, one epoch, 16x16 images), pruned by
channels to half its units (``D|50|B``), the benchmark timing the physically smaller network that
surgery's equivalence check passed, and ``frontier rerun`` reproducing the trial's accuracy and
artifact bytes exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.results.files import read_trials
from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec

pytest.importorskip("timm", reason="timm is in the test extra; install frontier[test]")
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py

MODEL = "timm:lcnet_050"  # a small timm CNN whose unit groups are all exact (tests/test_timm_zoo.py)


def test_a_search_on_a_timm_model_by_name_prunes_its_units_and_reruns_exactly(tmp_path: Path) -> None:
    spec = tiny_spec("timm", trials=1, space={"order": "P", "s2": 0.5, "prune.granularity": "channel"})
    del spec["data"]["source"]  # the target's own model: D trains it from random weights, no transfer
    spec["data"]["target"]["image_size"] = 16
    spec["model"] = {"name": MODEL, "trained_on": "target"}
    spec["concurrency"] = 1
    spec["budgets"]["dense"] = {"epochs": 1, "batch_size": 32, "optim": {"name": "adam", "lr": 0.001}}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path / "runs")
    row = read_trials(run_dir).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["pipeline"] == "D|50|B"
    assert row["units_removed"] > 0.3, "the benchmark timed the network without its dead units"
    assert row["params_timed"] < 0.8 * _dense_params(), "surgery removed them physically"
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", row["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["pipeline"] == "D|50|B"
    assert card["metrics"]["accuracy"] == row["accuracy"] and card["metrics"]["size_bytes"] == row["size_bytes"]
    assert card["matches_trial"] == {"accuracy": True, "size_bytes": True}


def _dense_params() -> int:
    from trainables.models import build_model

    return sum(p.numel() for p in build_model(MODEL, 5).parameters())
