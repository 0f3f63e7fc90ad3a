"""Resume after the driver is killed: SIGKILL `frontier run` mid-search, then `frontier run --resume`.
Finished trials are kept, unfinished ones resume from their stage checkpoints, and the search ends
with exactly the requested number of trials, none duplicated."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.run.study import load_run_study
from tests.tiny_spec import tiny_spec
from search.results.files import read_trials

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TRIALS = 4

# transfer runs long enough that a trial is still mid-way when the driver snapshots its checkpoint
SPEC = tiny_spec("killed", trials=TRIALS, transfer_epochs=8, recover_epochs=1, space={"order": {"choice": {
    "PB": {"s1": {"choice": [0.5, 0.7]}}, "PA": {"s2": {"choice": [0.5, 0.8]}}}}})


MARKER = f"FRONTIER_TEST_RESUME={uuid.uuid4().hex}"  # inherited by the drivers' Ray processes


def frontier(*args: str, **kwargs) -> subprocess.Popen:
    name, value = MARKER.split("=")
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", name: value}
    return subprocess.Popen([sys.executable, "-m", "search.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


@pytest.fixture()
def no_stray_ray():
    yield
    # the killed driver's local Ray (GCS, raylet, workers) outlives it: kill the processes this
    # test's drivers started (they carry MARKER in their environment), not every Ray on the machine
    for pid in marked_processes(MARKER.encode()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def marked_processes(marker: bytes) -> list[int]:
    """Pids whose environment holds ``marker`` (Linux /proc; other processes' are unreadable)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def snapshot_checkpointed(tune_dir: Path) -> set[str]:
    """Trials whose last result in the driver's last experiment snapshot carries a checkpoint.

    A checkpoint folder on disk is not enough: ``--resume`` restores from the snapshot the driver
    writes every few seconds, so a checkpoint it has not snapshotted yet is unknown to the restore.
    """
    trials = set()
    for path in tune_dir.glob("experiment_state-*.json"):
        try:
            snapshot = json.loads(path.read_text())
        except (OSError, ValueError):  # being written: look again at the next poll
            continue
        for trial, run in snapshot.get("trial_data", []):
            if (json.loads(run).get("last_result") or {}).get("checkpoint_dir_name"):
                trials.add(json.loads(trial)["trial_id"])
    return trials


# with early stopping only: its resume restores everything a plain search's does (trials, checkpoints,
# the study) and the scheduler's record besides; a plain twin took 85 s more of CI's 20 minutes
@pytest.mark.parametrize("early_stop", [True], ids=["early_stop"])
def test_sigkill_mid_search_then_resume_completes_exactly_the_requested_trials(tmp_path: Path, no_stray_ray,
                                                                              early_stop: bool) -> None:
    spec, runs = tmp_path / "spec.yaml", tmp_path / "runs"
    # early stopping on: a stopped trial's slot goes to a new one, and the study and the scheduler's
    # record come back from the run folder
    spec.write_text(yaml.safe_dump(dict(SPEC, early_stop={"enabled": True, "grace": 2, "runs": 2}) if early_stop else SPEC))
    driver = frontier("run", str(spec), "--runs", str(runs), start_new_session=True)
    trials_dir, tune_dir = runs / "killed" / "trials", runs / "killed" / "tune"

    def state() -> tuple[set[str], set[str]]:
        finished = {p.parent.name for p in trials_dir.glob("*/model.h5")}
        return finished, snapshot_checkpointed(tune_dir) - finished

    deadline = time.time() + 240
    while time.time() < deadline and not all(state()):  # one trial done, another one mid-way
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.2)
    finished_before, midway = state()
    assert finished_before and midway, "one trial finished and another checkpointed before the kill"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started, at once
    driver.wait()
    partial = runs / "killed" / "trials.csv"  # written as each trial ends (issue 18), so it may exist
    done = pd.read_csv(partial) if partial.exists() else pd.DataFrame({"status": []})
    assert (done["status"] == "ok").sum() < TRIALS, "the search was cut off before its end"

    resumed = frontier("run", str(spec), "--runs", str(runs), "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    frame = read_trials(runs / "killed")
    ok = frame[frame["status"] == "ok"]
    assert len(ok) == TRIALS, frame[["trial_id", "status", "pipeline", "error"]].to_string()
    assert frame["trial_id"].is_unique
    assert set(frame["status"]) <= ({"ok", "stopped"} if early_stop else {"ok"}), frame["error"].tolist()
    assert frame.loc[frame["status"] == "stopped", "stopped_at"].notna().all()
    assert finished_before <= set(frame["trial_id"]), "finished trials are kept as they were"
    resumed = ok[ok["trial_id"].isin(midway)]
    assert resumed["resumed_at"].notna().all(), "the interrupted trials resumed from their stage checkpoints"
    # the study on disk went on: each trial once, told what became of it, none left RUNNING
    study = load_run_study(runs / "killed")
    told = [t.user_attrs["tune_trial_id"] for t in study.trials
            if "tune_trial_id" in t.user_attrs and t.number not in study.user_attrs.get("lost_trials", [])]
    assert sorted(told) == sorted(frame["trial_id"])
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
