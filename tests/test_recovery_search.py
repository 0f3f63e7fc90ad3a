"""The recovery recipe as search dimensions, end to end: a search whose space picks the unit
importance, the allocation, the pace and distillation runs, its trial's plan carries them, and
``frontier rerun`` reproduces the distilled trial exactly (accuracy and artifact bytes)."""

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
from trainables.layout import RunFolder
from trainables.pipeline.plan import Plan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py

SPACE = {"order": "PA", "s2": 0.5, "prune.granularity": "channel", "prune.importance": {"choice": ["taylor"]},
         "prune.allocation": {"choice": ["global"]}, "prune.pace": {"choice": ["oneshot"]},
         "prune.distill.weight": {"choice": [0.5]}}


def test_a_distilled_trial_with_a_searched_recipe_reruns_exactly(tmp_path: Path) -> None:
    spec = tiny_spec("recipe", trials=1, space=SPACE, transfer_epochs=1, recover_epochs=1)
    spec["concurrency"] = 1
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path / "runs")
    row = read_trials(run_dir).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["pipeline"] == "D|T|50|B"
    plan = Plan.model_validate(json.loads(RunFolder(run_dir).plans_json.read_text())[row["trial_id"]])
    config = plan.steps[2].config
    assert (config.importance, config.allocation, config.pace, config.distill.weight) == ("taylor", "global", "oneshot", 0.5)
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", row["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["accuracy"] == row["accuracy"] and card["metrics"]["size_bytes"] == row["size_bytes"]
