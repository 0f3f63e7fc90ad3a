"""The live results callback spaces its writes, so their cost cannot grow into the search (issue 19).

The callback is driven here as Tune drives it, with objects carrying what it reads of Tune's
``Trial`` (id, status, config, last result); the search itself runs it in ``tests/test_search.py``.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from search.live import LiveResults

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
DONE = {"accuracy": 0.9, "size_bytes": 100.0, "latency_ms": 1.0, "stage_index": 3, "stages": 3}


def trial(trial_id: str, status: str = "TERMINATED") -> SimpleNamespace:
    config = {"plan": {"steps": []}, "pipeline": "D|T|B", "order": "none", "params": {}}
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, last_result=dict(DONE))


def rows(run_dir: Path) -> int:
    return len(pd.read_csv(run_dir / "trials.csv"))


def test_the_first_trial_is_written_at_once_and_a_quick_second_waits_for_the_interval(tmp_path: Path) -> None:
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=0.3)
    first, second = trial("a"), trial("b", status="RUNNING")
    live.on_trial_complete(0, [first, second], first)
    assert rows(tmp_path) == 1 and json.loads((tmp_path / "front.json").read_text())["running"] == 1
    second.status = "TERMINATED"
    live.on_trial_complete(1, [first, second], second)
    assert rows(tmp_path) == 1, "a write within the interval of the last one waits"
    live.on_step_end(2, [first, second])
    assert rows(tmp_path) == 1
    time.sleep(0.35)
    live.on_step_end(3, [first, second])
    assert rows(tmp_path) == 2 and json.loads((tmp_path / "front.json").read_text())["running"] == 0
    mtime = (tmp_path / "trials.csv").stat().st_mtime_ns
    time.sleep(0.35)
    live.on_step_end(4, [first, second])  # nothing new ended: nothing rewritten
    assert (tmp_path / "trials.csv").stat().st_mtime_ns == mtime


def test_the_wait_after_a_write_is_at_least_its_cost_over_the_share(tmp_path: Path) -> None:
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=0.0, cost_share=0.05)
    trials = [trial(f"t{i:03d}") for i in range(300)]
    before = time.monotonic()
    live.write(trials, None, error=None)
    cost = time.monotonic() - before
    assert rows(tmp_path) == 300
    assert live.next_write - before >= 0.9 * cost / 0.05, "the driver spends at most 5% of its time writing"


def test_a_pickled_callback_writes_at_once_in_its_new_process(tmp_path: Path) -> None:
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=3600.0)
    live.write([trial("a")], None, error=None)
    restored = pickle.loads(pickle.dumps(live))  # what --resume restores
    assert restored.next_write == 0.0 and restored.min_interval_s == 3600.0
    restored.on_trial_complete(0, [trial("a"), trial("b")], trial("b"))
    assert rows(tmp_path) == 2
