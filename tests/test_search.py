"""A small real search: local Ray (started once for this module), a real Optuna study, the files
it writes, the front, the HTML report, a rerun, and a diverging trial that fails cleanly."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import yaml

from search.cli import main
from search.run.driver import run_search
from search.spec.load import parse_spec
from search.run.study import load_run_study
from tests.front_watch import FrontWatch
from tests.tiny_spec import tiny_spec
from search.results.files import read_trials

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py
ROOT = Path(__file__).resolve().parent.parent

TINY = tiny_spec("tiny", trials=5, space={"order": {"choice": {
    "PB": {"s1": {"float": [0.3, 0.9]}},
    "PA": {"s2": {"float": [0.3, 0.9]}},
    "PBA": {"s1": {"float": [0.2, 0.5]}, "s2": {"float": [0.6, 0.9]}}}}})




WATCH: dict[str, FrontWatch] = {}  # `frontier front` run while the module's search ran


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One stage cache for the module's searches (``--cache DIR``): they share TINY's dense stage."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, shared_cache: Path) -> Path:
    runs = tmp_path_factory.mktemp("runs")
    spec = dict(TINY, reference=True)  # the module's search starts with the dense model as it is
    with FrontWatch(runs / TINY["name"]) as watch:
        run = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=runs, cache_dir=shared_cache)
    WATCH["tiny"] = watch
    return run


def test_front_during_the_search_shows_the_finished_trials(run_dir: Path) -> None:
    """`frontier front` after the first trial ended and before the last: it reads the finished
    trials and says how many are still running."""
    watch = WATCH["tiny"]
    assert watch.front is not None, watch.error
    finished = watch.front["trials_finished"]
    assert 1 <= watch.rows_before <= finished < TINY["trials"], (watch.rows_before, finished)
    assert watch.front["running"] >= 1 and finished + watch.front["running"] <= TINY["trials"]
    assert 1 <= len(watch.front["trials"]) <= finished
    assert json.loads((run_dir / "front.json").read_text())["running"] == 0  # the search's last word


def test_trials_csv_has_a_row_per_trial_and_the_design_columns(run_dir: Path) -> None:
    frame = read_trials(run_dir)
    assert len(frame) == 5 and frame["trial_id"].is_unique
    assert list(frame.columns[:9]) == ["trial_id", "status", "pipeline", "order", "accuracy", "top5",
                                       "size_bytes", "latency_ms", "sparsity"]
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    assert {"seconds.D", "seconds.T", "seconds.B", "param.order"} <= set(frame.columns)
    reference = frame[frame["reference"]]  # the dense model as it is, first, whatever the space holds
    assert len(reference) == 1 and reference.iloc[0]["pipeline"] == "D|T|B", frame[["pipeline", "reference"]]
    assert reference.iloc[0]["optuna_trial"] == 0 and reference.iloc[0]["order"] == "none"
    assert not [c for c in frame.columns if c.startswith("param.") and c != "param.order"
                and pd.notna(reference.iloc[0][c])], "the reference trial samples nothing"
    for _, row in frame[~frame["reference"]].iterrows():
        assert row["pipeline"].startswith("D|") and row["pipeline"].endswith("|B")
        assert row["param.order"] == row["order"]
        branch = {c for c in frame.columns if c.startswith(f"param.{row['order']}:") and pd.notna(row[c])}
        assert branch == {f"param.{row['order']}:{s}" for s in {"PB": ["s1"], "PA": ["s2"], "PBA": ["s1", "s2"]}[row["order"]]}
        assert 0 <= row["accuracy"] <= 1 and row["size_bytes"] > 0 and row["latency_ms"] > 0
        assert row["size_bytes"] == (run_dir / "trials" / row["trial_id"] / "model.h5").stat().st_size
    assert frame["cached_stages"].fillna("").str.contains("D").any(), "later trials reuse the dense stage"


def test_front_json_equals_an_independent_filter_of_trials_csv(run_dir: Path) -> None:
    frame = read_trials(run_dir)
    front = json.loads((run_dir / "front.json").read_text())
    names = [o["name"] for o in front["objectives"]]
    assert names == ["accuracy", "size_bytes", "latency_ms"]
    values = frame[names].to_numpy()
    # latencies within their summed spreads (each its IQR, at least 2% of it) are equal; accuracies
    # within 1.96 standard errors of their difference
    latency_noise = np.maximum(frame["latency_iqr_ms"].to_numpy(), 0.02 * values[:, 2])
    se = frame["accuracy_se"].to_numpy()

    def dominates(j: int, i: int) -> bool:
        q, p = values[j], values[i]
        tol = [1.96 * math.sqrt(se[i] ** 2 + se[j] ** 2), 0.0, latency_noise[i] + latency_noise[j]]
        signs = [-1, 1, 1]  # accuracy is maximised
        no_worse = all(s * (q[k] - p[k]) <= tol[k] for k, s in enumerate(signs))
        return no_worse and any(s * (p[k] - q[k]) > tol[k] for k, s in enumerate(signs))

    n = len(values)
    dominators = {i: {j for j in range(n) if j != i and dominates(j, i)} for i in range(n)}
    on_front: dict[int, bool] = {}  # a trial is off the front only when a trial on it dominates it
    while len(on_front) < n:
        ready = [i for i in range(n) if i not in on_front and dominators[i] <= on_front.keys()]
        assert ready, "no dominance cycle among five trials"
        on_front.update({i: not any(on_front[j] for j in dominators[i]) for i in ready})
    dominated = {i for i in range(n) if not on_front[i]}
    expected = sorted(frame["trial_id"][i] for i in range(len(frame)) if i not in dominated)
    assert sorted(t["trial_id"] for t in front["trials"]) == expected
    assert front["hypervolume"] > 0 and len(front["reference"]) == 3


def test_front_cli_json_table_and_html(run_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["front", str(run_dir), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((run_dir / "front.json").read_text())
    html = tmp_path / "front.html"
    assert main(["front", str(run_dir), "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "hypervolume" in out and "pipeline" in out
    page = html.read_text()
    assert "plotly" in page.lower() and "scene" in page and printed["trials"][0]["trial_id"] in page


def test_rerun_best_writes_a_final_model_matching_its_trial(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", "best", "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    frame = read_trials(run_dir)
    front_ids = [t["trial_id"] for t in json.loads((run_dir / "front.json").read_text())["trials"]]
    best = frame[frame["trial_id"].isin(front_ids)].sort_values(["accuracy", "size_bytes"], ascending=[False, True])
    assert card["trial_id"] == best.iloc[0]["trial_id"]
    assert card["matches_trial"] == {"accuracy": True, "size_bytes": True}
    assert card["metrics"]["size_bytes"] == (out / "model.h5").stat().st_size
    assert {"torch", "onnxruntime", "python"} <= set(card["versions"])
    for name in ("model.pt", "model.onnx", "model.h5"):
        assert (out / name).is_file()
    # the sharing sweep reads the final folder and proposes groups to share
    assert main(["sweep", str(out), "--groups", "layer3", "--ks", "1", "64"]) == 0
    table = pd.read_csv(out / "sensitivity.csv")
    assert list(table["group"]) == ["none", "layer3", "layer3"] and list(table["k"]) == [0, 1, 64]
    assert (out / "sensitivity.html").is_file()
    assert main(["sweep", str(out), "--ks", "3"]) == 2


def test_rerun_unknown_trial_is_a_clear_error(run_dir: Path, capsys) -> None:
    assert main(["rerun", str(run_dir), "--trial", "nope"]) == 2
    assert "frontier: --trial: no trial 'nope'" in capsys.readouterr().err


def test_run_with_a_bad_spec_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    bad = dict(TINY, trials=0)
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(bad))
    runs = tmp_path / "runs"
    proc = subprocess.run([sys.executable, "-m", "search.cli", "run", str(spec), "--runs", str(runs)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "frontier: trials: Input should be greater than or equal to 1"
    assert "Traceback" not in proc.stderr and not runs.exists()


def test_a_diverging_trial_fails_cleanly_and_stays_off_the_front(tmp_path: Path, shared_cache: Path) -> None:
    spec = dict(TINY, name="diverge", trials=2, concurrency=1)
    spec["space"] = {"order": "PA", "s2": 0.5,
                     "transfer.optim.lr": {"choice": [0.001, 1.0e12]}, "transfer.optim.name": "sgd"}
    spec["sampler"] = "random"
    spec["seed"] = 3
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache_dir=shared_cache)
    frame = read_trials(run_dir)
    assert len(frame) == 2
    failed = frame[frame["param.transfer.optim.lr"] > 1]
    assert not failed.empty, "the seed samples the diverging learning rate once"
    assert (failed["status"] == "failed").all() and failed["error"].str.contains("loss became").all()
    assert all(not isinstance(v, float) or math.isnan(v) for v in failed["accuracy"])
    assert (failed["boundary_seconds"] == 0).all(), "a failed trial's result holds what boundaries cost it too"
    # a divergence would repeat: the trial ends itself as failed rather than raising, so Tune
    # (max_failures=1, for lost nodes) never retries it and writes no error file
    assert not [t for t in failed["trial_id"] if (run_dir / "tune" / t / "error.txt").exists()]
    study = load_run_study(run_dir)
    assert {t.user_attrs["tune_trial_id"]: t.state.name for t in study.trials
            if "tune_trial_id" in t.user_attrs}[failed["trial_id"].iloc[0]] == "FAIL"
    front = json.loads((run_dir / "front.json").read_text())
    assert set(failed["trial_id"]).isdisjoint(t["trial_id"] for t in front["trials"])


def test_a_crashed_trial_is_retried_and_resumes_after_its_last_finished_stage(tmp_path: Path) -> None:
    fault = Path(os.environ["FRONTIER_FAULT_FILE"])
    fault.write_text(json.dumps({"after_stage": 2}))  # crash once, after D and P1 are checkpointed
    spec = dict(TINY, name="crash", trials=1, concurrency=1)
    spec["space"] = {"order": "PBA", "s1": 0.4, "s2": 0.7}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache=False)
    frame = read_trials(run_dir)
    assert not fault.exists() and Path(f"{fault}.fired").exists(), "the fault fired"
    assert len(frame) == 1 and frame["status"][0] == "ok"
    assert str(frame["resumed_at"][0]) == "2", "the retry resumed at stage 2 (T), not from scratch"
    assert frame["pipeline"][0] == "D|40|T|70|B"


def test_a_multi_step_pipeline_runs_and_reruns_to_the_same_metrics(tmp_path: Path, shared_cache: Path) -> None:
    """The pruning-order paper's D|50|T|70|80 (Table 2): two milestones after transfer, each a stage."""
    spec = dict(TINY, name="milestones", trials=1, concurrency=1)
    spec["space"] = {"order": "PBA", "s1": 0.5, "s2": {"choice": [[0.7, 0.8]]}}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache_dir=shared_cache)
    frame = read_trials(run_dir)
    row = frame.iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["pipeline"] == "D|50|T|70|80|B" and row["param.s2"] == "[0.7, 0.8]"
    assert {"seconds.D", "seconds.P1", "seconds.T", "seconds.P2", "seconds.P2.2", "seconds.B"} <= set(frame.columns)
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", row["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["pipeline"] == "D|50|T|70|80|B"
    assert card["metrics"]["accuracy"] == row["accuracy"] and card["metrics"]["size_bytes"] == row["size_bytes"]


def test_an_int8_trial_reruns_to_the_same_int8_model(tmp_path: Path, shared_cache: Path) -> None:
    """I8|B: the rerun quantizes the same shrunk export on the same calibration images, so its
    INT8 accuracy (measured in ONNX Runtime) and INT8 artifact bytes are the trial's."""
    spec = dict(TINY, name="int8", trials=1, concurrency=1)
    spec["space"] = {"order": "PA", "s2": 0.5, "prune.granularity": "channel", "quantize": "I8"}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache_dir=shared_cache)
    row = read_trials(run_dir).iloc[0]
    assert row["status"] == "ok", row["error"]
    assert row["pipeline"] == "D|T|50|I8|B" and row["precision"] == "int8"
    out = tmp_path / "final"
    assert main(["rerun", str(run_dir), "--trial", row["trial_id"], "--out", str(out)]) == 0
    card = json.loads((out / "card.json").read_text())
    assert card["matches_trial"] == {"accuracy": True, "size_bytes": True}
    assert card["metrics"]["size_bytes"] == (out / "model.int8.h5").stat().st_size
    assert (out / "model.int8.onnx").is_file() and (out / "model.onnx").is_file()


def test_epruning_trials_run_their_actor_pool_inside_the_trials_placement_group(tmp_path: Path, shared_cache: Path) -> None:
    spec = dict(TINY, name="epruning", trials=1, concurrency=1)
    spec["budgets"] = dict(TINY["budgets"], prune={
        "epochs": 1, "recover_epochs": 0, "batch_size": 64, "method": "epruning",
        "epruning": {"population": 4, "evaluator": "actors", "actors": 1, "actor_cpus": 1}})
    spec["space"] = {"order": "PBA", "s1": 0.3, "s2": 0.6}
    run_dir = run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path, cache_dir=shared_cache)
    frame = read_trials(run_dir)
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    assert (frame["pipeline"] == "D|E30|T|E60|B").all()
    rates = frame["stage.P2.pruning_rate"]
    assert (rates > frame["stage.P1.pruning_rate"]).all() and (rates > 0.3).all()
    history = frame["stage.P2.energy_best"].astype(str).str.split(";")
    assert (history.str.len() == 1).all()  # one search epoch: one (best, mean) pair
    assert _cpus_back(2.0), "the actor pool and the trial gave their CPUs back"


def _cpus_back(total: float, seconds: float = 20.0) -> bool:
    import time

    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0.0) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    return ray.available_resources().get("CPU", 0.0) >= total
