"""A search to latency targets end to end (issue 27): a space with ``s2: {latency: {choice: [0.3, 0.5]}}``
runs on a real Ray and Optuna, every trial's pruning stage reports its target, prediction and check,
trials.csv keeps them beside the benchmark's measured latency, the trials share one latency model
(built once, in the run folder), and ``frontier front`` shows each target against its measurement."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.results.files import read_trials
from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from trainables.layout import RunFolder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py

SPACE = {"order": "PA", "s2": {"latency": {"choice": [0.3, 0.5]}}, "prune.granularity": "channel"}
# EPruning to a latency is covered stage by stage (tests/test_latency_stage.py); two gradual trials keep this short


def test_a_search_to_latency_targets_reports_them_met(tmp_path: Path, capsys) -> None:
    spec = tiny_spec("latency", trials=2, space=SPACE, transfer_epochs=1, recover_epochs=1)
    spec["budgets"]["benchmark"] = {"warmup": 2, "runs": 20, "threads": 1}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path / "runs")
    rows = read_trials(run_dir)
    assert (rows["status"] == "ok").all(), rows["error"].tolist()
    assert len(rows) == 2 and set(rows["pipeline"]) <= {"D|T|L30|B", "D|T|L50|B"}
    for _, row in rows.iterrows():
        share = 0.3 if "L30" in row["pipeline"] else 0.5
        target = row["stage.P2.latency_target_ms"]
        assert target == pytest.approx(share * row["stage.P2.latency_dense_ms"])
        assert math.isfinite(row["stage.P2.latency_predicted_ms"]) and math.isfinite(row["stage.P2.latency_checked_ms"])
        assert row["latency_ms"] < row["stage.P2.latency_dense_ms"]  # pruned to a latency, it runs faster
    assert rows["stage.P2.latency_model_cached"].min() == 0.0  # one trial built it
    assert len(list(RunFolder(run_dir).latency.glob("*.json"))) == 1, "every trial shares one latency model"
    assert main(["front", str(run_dir)]) == 0
    shown = capsys.readouterr().out
    assert "target" in shown and ("✓" in shown or "✗" in shown)
