"""A search with ``repeats: 2`` (real Ray, real Optuna): each trial's values are the mean and spread of
two runs of its plan, seeds s and s+1, equal to those runs made directly; the dense stage, loaded
from weights with no seed in it, is computed once and read from the cache by the second run; a
crash in the second run resumes there; `frontier front` and `frontier rerun` show and redo the k seeds."""

from __future__ import annotations

import json
import math
import os
import statistics
from io import StringIO
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console

from search.cli import main
from search.results.files import read_trials
from search.results.report import load_front, print_front_table
from search.run.driver import run_search
from search.run.study import load_run_study
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from trainables import Context, run_plan
from trainables.models import build_model
from trainables.objectives import OBJECTIVE_NAMES
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import Plan
from trainables.train import loader_workers_for, set_loader_workers

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py
SEED = 3
STEPS = 4  # D|T|50|B


@pytest.fixture(scope="module")
def search(tmp_path_factory) -> dict:
    """One trial of D|T|50|B, two seeds, the dense model loaded from weights (0 epochs: no seed in
    it); it crashes once, after its second run's D (stage 5 of 8), and Tune's retry resumes there.
    Early stopping is on, with a grace no rung reaches: boundaries are measured and judged, none stops."""
    root = tmp_path_factory.mktemp("repeats")
    torch.manual_seed(0)
    weights = root / "small_resnet_source.pt"
    torch.save(build_model("small_resnet", 5).state_dict(), weights)  # the source's five classes
    spec = tiny_spec("repeats", trials=1, space={"order": "PA", "s2": 0.5})
    spec.update(seed=SEED, repeats=2, concurrency=1, model={"name": "small_resnet", "weights": str(weights)},
                early_stop={"enabled": True, "grace": 100, "runs": 2})
    spec["budgets"] = dict(spec["budgets"], dense={"epochs": 0})
    fault = Path(os.environ["FRONTIER_FAULT_FILE"])
    fault.write_text(json.dumps({"after_stage": STEPS + 1}))
    cache = root / "cache"
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=root / "runs", cache_dir=cache)
    assert not fault.exists() and Path(f"{fault}.fired").exists(), "the fault fired"
    frame = read_trials(run_dir)
    assert len(frame) == 1, frame
    row = frame.iloc[0]
    assert row["status"] == "ok", row.get("error")
    plan = Plan.model_validate(json.loads((run_dir / "plans.json").read_text())[row["trial_id"]])
    return {"run_dir": run_dir, "row": row, "plan": plan, "cache": cache, "root": root}


@pytest.fixture(scope="module")
def direct(search: dict) -> list[dict]:
    """The plan's two runs made directly (seeds s and s+1, no cache), as the trial's worker ran them:
    one torch thread and its loader workers (float sums depend on the thread count)."""
    torch.set_num_threads(1)
    set_loader_workers(loader_workers_for("cpu", 1), pin_memory=False)
    plan, root = search["plan"], search["root"]
    runs = []
    for r in range(plan.repeats):
        single = plan.repeat(r)
        runs.append(run_plan(single, Context(plan.source, plan.target, root / f"direct{r}", seed=single.seed))[1])
    return runs


def test_the_plan_carries_two_seeds(search: dict) -> None:
    plan = search["plan"]
    assert plan.repeats == 2 and plan.seed == SEED and plan.pipeline == "D|T|50|B"
    assert search["row"]["repeats"] == 2


def test_each_objective_is_the_mean_of_the_two_seeds_runs_with_their_spread(search: dict, direct: list[dict]) -> None:
    row = search["row"]
    for name in OBJECTIVE_NAMES:
        values = [run[name] for run in direct]
        if name != "latency_ms":  # latency is timed anew: each run's own value is the trial's to compare
            assert [row[f"repeat.{r}.{name}"] for r in range(2)] == values, name
        values = [row[f"repeat.{r}.{name}"] for r in range(2)]
        assert row[name] == pytest.approx(statistics.mean(values), rel=1e-12), name
        assert row[f"{name}_std"] == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-15), name
    assert direct[0]["accuracy"] != direct[1]["accuracy"] or direct[0]["size_bytes"] != direct[1]["size_bytes"], \
        "two seeds train two different models"
    n = direct[0]["accuracy_n"]
    mean, std = row["accuracy"], row["accuracy_std"]
    assert row["accuracy_n"] == n
    assert row["accuracy_se"] == pytest.approx(math.sqrt(mean * (1 - mean) / n + std ** 2 / 2), rel=1e-9)
    run_dir, trial = search["run_dir"], row["trial_id"]
    assert row["repeat.0.size_bytes"] == (run_dir / "trials" / trial / "model.h5").stat().st_size
    assert row["repeat.1.size_bytes"] == (run_dir / "trials" / trial / "repeat1" / "model.h5").stat().st_size


def test_only_the_first_run_is_judged_at_its_boundaries(search: dict) -> None:
    """Every trial's first run has the spec's seed, so trials are judged on equal terms, and a stopped
    trial has spent one run's stages: run 1 (after D, after T) reports no boundary."""
    lines = [json.loads(line) for line in (search["run_dir"] / "early_stop.jsonl").read_text().splitlines()]
    judged = [e for e in lines if not e.get("peer")]  # a finished float benchmark's rung count is no judgement
    trial = search["row"]["trial_id"]
    assert [(j["trial_id"], j["boundary"]) for j in judged] == [(trial, "D"), (trial, "D|T")]
    folder = search["run_dir"] / "trials" / trial
    assert (folder / "boundary" / "model.h5").is_file(), "run 0 measured its boundaries"
    assert not (folder / "repeat1" / "boundary").exists(), "run 1 measured none"


def test_optuna_is_told_the_means(search: dict) -> None:
    row = search["row"]
    [trial] = [t for t in load_run_study(search["run_dir"]).trials if t.user_attrs.get("tune_trial_id") == row["trial_id"]]
    assert trial.state.name == "COMPLETE"
    assert trial.values == [row["accuracy"], row["size_bytes"], row["latency_ms"]]


def test_the_dense_stage_is_computed_once_and_the_second_run_reads_it(search: dict) -> None:
    """The cache holds one D (its key has no seed), and T and P2 once per seed; run 1 found D there
    (before the crash) and resumed after it (stage 1 of its plan)."""
    row = search["row"]
    assert row["cached_stages"] == ";D", row["cached_stages"]
    assert str(row["resumed_at"]) == ";1", row["resumed_at"]
    entries = StageCache(search["cache"]).entries()
    assert len(entries) == 1 + 2 + 2, [e.key for e in entries]


def test_front_and_report_show_mean_and_spread(search: dict, tmp_path: Path) -> None:
    frame, summary = load_front(search["run_dir"])
    console = Console(file=StringIO())
    print_front_table(frame, summary, console)
    text = console.file.getvalue()
    row = search["row"]
    assert f"{row['accuracy']:.4f} ± {row['accuracy_std']:.4f}" in text, text
    assert "mean over 2 seeds" in text
    [trial] = summary["trials"]
    assert trial["repeats"] == 2 and trial["accuracy_std"] == pytest.approx(row["accuracy_std"])
    html = tmp_path / "front.html"
    assert main(["front", str(search["run_dir"]), "--html", str(html)]) == 0
    page = html.read_text()
    assert 'id="seeds"' in page and f"{row['accuracy']:.4f} ± {row['accuracy_std']:.4f}" in page


def test_rerun_redoes_both_seeds_and_keeps_the_first_seeds_model(search: dict, tmp_path: Path) -> None:
    out = tmp_path / "final"
    row = search["row"]
    assert main(["rerun", str(search["run_dir"]), "--trial", row["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["files_seed"] == SEED and [r["seed"] for r in card["runs"]] == [SEED, SEED + 1]
    assert [r["accuracy"] for r in card["runs"]] == [row["repeat.0.accuracy"], row["repeat.1.accuracy"]]
    assert card["metrics"]["accuracy"] == pytest.approx(row["accuracy"], rel=1e-12)
    assert card["matches_trial"] == {"accuracy": True, "size_bytes": True}
    assert (out / "model.h5").stat().st_size == row["repeat.0.size_bytes"]
    assert (out / "repeat1" / "model.h5").stat().st_size == row["repeat.1.size_bytes"]
