"""The run's Optuna study on disk: a real tiny search (local Ray, TPE with the spec's ``select`` as
constraints), the study loaded with ``optuna.load_study`` checked against trials.csv, served by a
real optuna-dashboard on 127.0.0.1 and read over its HTTP API, infeasible trials off the front
(and on it with ``--all``), and a warm start from the run's front."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from trainables.layout import RunFolder
from search.cli import main
from search.run.driver import run_search
from search.spec.load import parse_spec
from search.run.study import WARM_START_FROM, load_run_study, open_storage
from tests.tiny_spec import tiny_spec
from search.results.files import read_trials

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("local_ray")]  # tests/conftest.py

# 4 plans, 3 trials; min_accuracy splits them: 90% sparsity after 2 epochs of transfer misses it
SPEC = dict(tiny_spec("study", trials=3, space={"order": "PA", "s2": {"choice": [0.3, 0.5, 0.9, 0.95]}}),
            sampler="tpe", select={"min_accuracy": 0.5})




@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return run_search(parse_spec(SPEC), yaml.safe_dump(SPEC), runs_root=tmp_path_factory.mktemp("runs"))


def test_the_study_on_disk_holds_every_trial_of_trials_csv(run_dir: Path) -> None:
    frame = read_trials(run_dir)
    study = optuna.load_study(study_name="study", storage=open_storage(RunFolder(run_dir).study_journal))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    ran = {t.user_attrs["tune_trial_id"]: t for t in study.trials if "tune_trial_id" in t.user_attrs}
    assert set(ran) == set(frame["trial_id"])
    states = {"ok": "COMPLETE", "stopped": "PRUNED", "failed": "FAIL"}
    for _, row in frame.iterrows():
        trial = ran[row["trial_id"]]
        assert trial.number == row["optuna_trial"]
        assert trial.state.name == states[row["status"]]
        assert trial.user_attrs["pipeline"] == row["pipeline"] and trial.user_attrs["status"] == row["status"]
        assert trial.values == [row["accuracy"], row["size_bytes"], row["latency_ms"]]
        csv_params = {k[6:]: row[k] for k in row.index if k.startswith("param.") and pd.notna(row[k])}
        assert {**trial.params, "order": row["order"]} == csv_params
        # the sampler learns the constraint: min_accuracy - accuracy, <= 0 when met
        assert trial.user_attrs["constraints"] == {"min_accuracy": pytest.approx(0.5 - row["accuracy"])}
        if hasattr(trial, "constraints"):  # Optuna 5: the trial's own, which the samplers read
            assert trial.constraints == {"min_accuracy": pytest.approx(0.5 - row["accuracy"])}
        assert bool(row["feasible"]) == (row["accuracy"] >= 0.5)
    others = [t for t in study.trials if "tune_trial_id" not in t.user_attrs]
    assert all("duplicate_of" in t.user_attrs and t.state.name != "FAIL" for t in others), \
        "a skipped duplicate is told its first trial's outcome, not FAIL"
    assert not [t for t in study.trials if t.state.name == "RUNNING"]


def test_infeasible_trials_stay_off_the_front_and_all_shows_them(run_dir: Path, capsys) -> None:
    frame = read_trials(run_dir)
    front = {t["trial_id"] for t in json.loads((run_dir / "front.json").read_text())["trials"]}
    infeasible = set(frame.loc[frame["feasible"] == False, "trial_id"])  # noqa: E712 (a column of bools)
    assert front and front.isdisjoint(infeasible)
    assert main(["front", str(run_dir), "--json", "--all"]) == 0
    every = {t["trial_id"] for t in json.loads(capsys.readouterr().out)["trials"]}
    ok = frame[frame["status"] == "ok"]
    best_small = ok.loc[ok["size_bytes"].idxmin(), "trial_id"]  # the smallest ok trial is on the all-front
    assert best_small in every and (best_small in infeasible) == (best_small not in front)


def test_optuna_dashboard_serves_the_study_over_http(run_dir: Path) -> None:
    port = _free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"  # the README's command, on the journal file
    server = subprocess.Popen([str(dashboard), str(RunFolder(run_dir).study_journal),
                               "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["study"]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", server)
        frame = read_trials(run_dir)
        served = {t["number"]: t for t in detail["trials"]}
        for _, row in frame[frame["status"] == "ok"].iterrows():
            trial = served[int(row["optuna_trial"])]
            assert trial["state"] == "Complete"
            assert [float(v) for v in trial["values"]] == [row["accuracy"], row["size_bytes"], row["latency_ms"]]
        assert {a["key"] for t in detail["trials"] for a in t["user_attrs"]} >= {"tune_trial_id", "pipeline", "status"}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_warm_start_runs_the_earlier_fronts_plans_first(run_dir: Path, tmp_path: Path) -> None:
    front = json.loads((run_dir / "front.json").read_text())["trials"]
    spec = dict(SPEC, name="warm", trials=len(front))
    spec_file = tmp_path / "warm.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    # --cache: the earlier run's stage cache, so the repeated plans cost their benchmark only
    assert main(["run", str(spec_file), "--runs", str(tmp_path / "runs"), "--warm-start", str(run_dir),
                 "--cache", str(run_dir / "cache")]) == 0
    warm = read_trials(tmp_path / "runs" / "warm")
    assert sorted(warm["pipeline"]) == sorted(t["pipeline"] for t in front)
    study = load_run_study(tmp_path / "runs" / "warm")
    sources = sorted(t.user_attrs.get(WARM_START_FROM, "") for t in study.trials[:len(front)])
    assert sources == sorted(f"study/{t['trial_id']}" for t in front)


def test_warm_start_from_a_folder_without_a_run_is_one_line(tmp_path: Path, capsys) -> None:
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    capsys.readouterr()
    assert main(["run", str(spec_file), "--runs", str(tmp_path / "r"), "--warm-start", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.strip().startswith("frontier: --warm-start: ") and "front.json" in err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, server: subprocess.Popen, seconds: float = 60.0) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if server.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited: {server.stderr.read()}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_a_numbers_check_of_the_constraint_helper() -> None:
    from search.spec.constraints import constraint_values, feasible

    bounds = {"min_accuracy": 0.9, "max_size_bytes": 1000.0, "max_latency_ms": 2.0}
    assert constraint_values(bounds, {"accuracy": 0.95, "size_bytes": 900, "latency_ms": 2.5}) == \
        [pytest.approx(-0.05), -100.0, 0.5]
    assert feasible(bounds, {"accuracy": 0.95, "size_bytes": 900, "latency_ms": 1.0}) is True
    assert feasible(bounds, {"accuracy": 0.95, "size_bytes": 900, "latency_ms": 2.5}) is False
    assert feasible(bounds, {"accuracy": math.nan, "size_bytes": 900, "latency_ms": 1.0}) is None
