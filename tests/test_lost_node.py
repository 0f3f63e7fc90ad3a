"""Reliability of a search (issue 7): a lost worker node, and the display of a resumed run.

A lost node, on a real local 3-node Ray cluster (a head and two workers): the head has no CPUs, so
every trial runs on a worker. Once a trial has checkpointed a stage and is busy with the next one,
the worker node it runs on is removed (its raylet and worker processes killed). Tune's FailureConfig
retries that trial on the surviving worker, it resumes from its last stage checkpoint, and the
search ends with exactly the requested trials, all ok, none duplicated.

A resumed run (``frontier run --resume``): Tune runs a copy of the progress callback restored
from the run and calls nothing for the trials that finished before; the display starts from them.
"""

from __future__ import annotations

import os
import pickle
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from search.run.driver import run_search
from search.run.progress import SearchProgress
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from tests.final_result import final
from trainables.pipeline.result import STAGE_INDEX, STAGES

MB = 1024**2
TRIALS = 3
SPEC = tiny_spec("lost", trials=TRIALS, transfer_epochs=8, space={"order": "PA", "s2": {"choice": [0.4, 0.6]}})


@pytest.fixture()
def cluster():
    """A head without CPUs and two 1-CPU workers on this machine; shut down whatever happens."""
    ray.shutdown()  # run_search reuses a Ray it finds initialized: make it connect to this cluster
    small = {"object_store_memory": 80 * MB}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False, **small})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, **small)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


@dataclass
class NodeLoss:
    """What the background thread saw and did: the trial it cut off, its node, and any failure."""

    trial_id: str | None = None
    node_id: str | None = None
    checkpoints: int = 0
    removed_at: float = 0.0
    error: str | None = None
    search_ended: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)


def trial_processes(raylet_pid: int) -> dict[str, int]:
    """Trial id -> pid of the Ray workers a raylet started whose working folder is a trial's.

    Tune runs each function trial in ``.../working_dirs/<trial dirname>`` (the runner names trial
    folders by trial id), and a worker process is a child of its node's raylet. Linux /proc only:
    the state API (``ray.util.state``) needs the dashboard, which this cluster does not start.
    """
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cwd = Path(os.readlink(entry / "cwd"))
        except (OSError, IndexError, ValueError):
            continue  # gone, or not ours
        if ppid == raylet_pid and cwd.parent.name == "working_dirs":
            found[cwd.name] = int(entry.name)
    return found


def midway_trials(run_dir: Path) -> dict[str, int]:
    """Trial id -> stage checkpoints written, for trials that checkpointed a stage but have not finished."""
    tune_dir, trials_dir = run_dir / "tune", run_dir / "trials"
    counts: dict[str, int] = {}
    for checkpoint in tune_dir.glob("*/checkpoint_*"):
        counts[checkpoint.parent.name] = counts.get(checkpoint.parent.name, 0) + 1
    return {t: n for t, n in counts.items() if not (trials_dir / t / "model.h5").exists()}


# A checkpoint folder on disk is not yet the driver's: until the driver has processed the report
# that carries it, a retry starts from scratch (a first CI run caught exactly that). The driver's
# own record (result.json) reaches the run folder only when Tune syncs it, so the test waits this
# long after the folder appears, with the next stage long enough to still be running.
REGISTERED_AFTER_S = 2.0


def remove_a_busy_worker(cluster: Cluster, run_dir: Path, loss: NodeLoss, timeout: float = 240) -> None:
    """Wait for a trial that finished its first stage and runs its second, then remove its worker node."""
    deadline = time.time() + timeout
    try:
        seen: dict[str, float] = {}  # trial id -> when its first checkpoint folder was seen
        while time.time() < deadline and loss.trial_id is None and not loss.search_ended.is_set():
            now = time.time()
            midway = {t: n for t, n in midway_trials(run_dir).items() if n == 1}
            midway = {t: n for t, n in midway.items() if now - seen.setdefault(t, now) >= REGISTERED_AFTER_S}
            for node in list(cluster.worker_nodes):
                raylet = node.all_processes["raylet"][0].process.pid
                busy = [t for t in trial_processes(raylet) if t in midway]
                if busy:
                    loss.trial_id, loss.node_id, loss.checkpoints = busy[0], node.node_id, midway[busy[0]]
                    cluster.remove_node(node)
                    loss.removed_at = time.time()
                    break
            time.sleep(0.1)
        if loss.trial_id is None:
            loss.error = "no trial was caught between its first and second stage checkpoints"
    except Exception as exc:  # reported by the test, not lost in the thread
        loss.error = f"{type(exc).__name__}: {exc}"
    finally:
        loss.done.set()


def fault_counts(frame: pd.DataFrame, run_dir: Path) -> dict[str, int]:
    """Requested, completed (ok), retried (Tune wrote an error file), duplicated and lost trials."""
    retried = {p.parent.name for p in (run_dir / "tune").glob("*/error.txt")}
    ok = frame[frame["status"] == "ok"]
    return {"requested": TRIALS, "completed": int(ok["trial_id"].nunique()), "retried": len(retried),
            "duplicated": int(frame["trial_id"].duplicated().sum()),
            "lost": TRIALS - int(ok["trial_id"].nunique())}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds trial processes through /proc")
def test_a_lost_worker_node_is_retried_from_its_checkpoint_and_the_search_completes(cluster, tmp_path: Path) -> None:
    start = time.time()
    run_dir = tmp_path / "lost"
    loss = NodeLoss()
    watcher = threading.Thread(target=remove_a_busy_worker, args=(cluster, run_dir, loss), daemon=True)
    watcher.start()
    try:
        # the cache on: the retried trial resumes from a checkpoint that refers to a cache entry
        run_search(parse_spec(SPEC), yaml.safe_dump(SPEC), address=cluster.address, runs_root=tmp_path)
    finally:
        loss.search_ended.set()
        loss.done.wait(timeout=30)
    assert loss.error is None, loss.error
    assert ray.get_runtime_context().get_node_id() == cluster.head_node.node_id, "the driver is on the head"
    assert len(cluster.worker_nodes) == 1 and loss.node_id not in {n.node_id for n in cluster.worker_nodes}

    frame = pd.read_csv(run_dir / "trials.csv", dtype={"resumed_at": str, "trial_id": str})
    counts = fault_counts(frame, run_dir)
    resumed = dict(zip(frame["trial_id"], frame["resumed_at"].fillna("")))
    print(f"\nlost node {loss.node_id[:8]} {loss.removed_at - start:.1f} s in, running trial {loss.trial_id} "
          f"after {loss.checkpoints} stage checkpoint(s); resumed_at {resumed}; faults {counts}; "
          f"wall {time.time() - start:.1f} s")
    assert len(frame) == TRIALS and frame["trial_id"].is_unique, frame[["trial_id", "status"]]
    assert (frame["status"] == "ok").all(), frame["error"].tolist()
    assert counts == {"requested": TRIALS, "completed": TRIALS, "retried": 1, "duplicated": 0, "lost": 0}
    assert (run_dir / "tune" / loss.trial_id / "error.txt").is_file(), "the trial on the lost node was the one retried"
    assert "died" in (run_dir / "tune" / loss.trial_id / "error.txt").read_text(), "it failed because its node went"
    cut = frame.set_index("trial_id").loc[loss.trial_id]
    assert int(cut["resumed_at"]) >= loss.checkpoints >= 1, "it resumed at a checkpointed stage, not from scratch"
    others = frame[frame["trial_id"] != loss.trial_id]
    assert others["resumed_at"].isna().all(), "no other trial was restarted"
    assert not list((run_dir / "tune").glob("*/checkpoint_*")), "the checkpoints ended with their trials"


# ----------------------------------------------------------------------------- a resumed run's display

NAMES, DIRECTIONS = ["accuracy", "size_bytes"], ["max", "min"]


def trial(trial_id: str, status: str, accuracy: float | None = None) -> SimpleNamespace:
    """What the progress callback reads of a Tune ``Trial``: id, status and last result."""
    result = {} if accuracy is None else final(accuracy=accuracy, size_bytes=1000.0 * (2 - accuracy))
    return SimpleNamespace(trial_id=trial_id, status=status, last_result=result)


def test_a_resumed_run_starts_its_display_from_the_trials_already_finished(capsys) -> None:
    progress = SearchProgress(5, NAMES, DIRECTIONS)
    restored = pickle.loads(pickle.dumps(progress))  # what Tune.restore hands the resumed run
    before = [trial("a", "TERMINATED", 0.9), trial("b", "TERMINATED", 0.8), trial("c", "ERROR"),
              trial("d", "PENDING"), trial("e", "PENDING")]  # d: unfinished, e: errored, retried
    restored.on_step_begin(0, before)
    assert restored.summary() == ("trials 2/5 done (3 before the resume), 0 running, 1 failed"
                                  " · best accuracy 0.9000 · front 1")
    assert "resuming: 3 trial(s) finished before" in capsys.readouterr().out

    d = trial("d", "RUNNING")
    restored.on_trial_start(1, before, d)
    restored.on_step_begin(1, before)  # seeds once: later steps leave the counts alone
    assert restored.summary().startswith("trials 2/5 done (3 before the resume), 1 running, 1 failed")
    d.last_result = final(accuracy=0.95, size_bytes=5000.0)
    restored.on_trial_result(2, before, d, d.last_result)
    restored.on_trial_complete(2, before, d)
    assert restored.summary().startswith("trials 3/5 done (3 before the resume), 0 running, 1 failed")
    assert "best accuracy 0.9500 · front 2" in restored.summary()


def test_a_fresh_run_and_the_drivers_own_copy_count_the_same() -> None:
    progress = SearchProgress(2, NAMES, DIRECTIONS)
    progress.on_step_begin(0, [])
    assert progress.summary() == "trials 0/2 done, 0 running, 0 failed · front 0"
    progress.record("a", final(accuracy=0.5, size_bytes=10.0))
    progress.record("a", final(accuracy=0.5, size_bytes=10.0))  # idempotent
    progress.record("b", final(accuracy=0.7), error="RuntimeError: lost")
    progress.record("c", {STAGE_INDEX: 2, STAGES: 4})  # stopped: neither done nor failed
    assert progress.summary() == "trials 1/2 done, 0 running, 1 failed · best accuracy 0.5000 · front 1"


def test_the_front_count_is_the_front_commands_feasible_and_noise_aware() -> None:
    """The progress line counts the front as ``frontier front`` does: an infeasible trial is off
    it, and a latency lower only within the noise does not put a less accurate trial on it."""
    names, directions = ["accuracy", "latency_ms"], ["max", "min"]
    progress = SearchProgress(3, names, directions, {"min_accuracy": 0.6})
    progress.record("a", final(accuracy=0.9, latency_ms=1.00, latency_iqr_ms=0.001))
    progress.record("b", final(accuracy=0.8, latency_ms=0.99, latency_iqr_ms=0.001))  # faster by < 2%
    assert progress.summary().endswith("front 1")
    progress.record("c", final(accuracy=0.5, latency_ms=0.10, latency_iqr_ms=0.001))  # below select
    assert progress.summary().endswith("front 1")
    assert SearchProgress(3, names, directions).front_size() == 0
    plain = SearchProgress(3, names, directions)
    for trial_id, (accuracy, latency) in progress.done.items():  # the same trials, no select, no spread
        plain.record(trial_id, final(accuracy=accuracy, latency_ms=latency))
    assert plain.front_size() == 3, "without select and spread every trial is on the front"
