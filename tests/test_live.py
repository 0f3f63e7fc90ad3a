"""The live results callback spaces its writes, so their cost cannot grow into the search (issue 19).

The callback is driven here as Tune drives it, with objects carrying what it reads of Tune's
``Trial`` (id, status, config, last result); the search itself runs it in ``tests/test_search.py``.
Its intervals run on a clock the tests drive (:class:`Clock`), never on the wall clock: a test
that slept 0.35 s against a 0.3 s interval failed on a busy machine (issue 23).
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from search.run.live import LiveResults
from search.results.files import read_trials

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
DONE = {"accuracy": 0.9, "size_bytes": 100.0, "latency_ms": 1.0, "stage_index": 3, "stages": 3}


def trial(trial_id: str, status: str = "TERMINATED") -> SimpleNamespace:
    config = {"plan": {"steps": []}, "pipeline": "D|T|B", "order": "none", "params": {}}
    return SimpleNamespace(trial_id=trial_id, status=status, config=config, last_result=dict(DONE))


def rows(run_dir: Path) -> int:
    return len(read_trials(run_dir))


class Clock:
    """A clock the test sets: ``now`` seconds, plus ``cost`` once ``written`` exists (so the
    time a write takes is ``cost``, whatever the machine's speed). Module-level, so it pickles."""

    def __init__(self, now: float = 100.0, cost: float = 0.0, written: Path | None = None) -> None:
        self.now, self.cost, self.written = now, cost, written

    def __call__(self) -> float:
        return self.now + (self.cost if self.written is not None and self.written.exists() else 0.0)


def test_the_first_trial_is_written_at_once_and_a_quick_second_waits_for_the_interval(tmp_path: Path) -> None:
    clock = Clock()
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=0.3, clock=clock)
    first, second = trial("a"), trial("b", status="RUNNING")
    live.on_trial_complete(0, [first, second], first)
    assert rows(tmp_path) == 1 and json.loads((tmp_path / "front.json").read_text())["running"] == 1
    assert live.next_write == pytest.approx(100.3), "a write that cost nothing waits min_interval_s"
    clock.now = 100.2
    second.status = "TERMINATED"
    live.on_trial_complete(1, [first, second], second)
    assert rows(tmp_path) == 1, "a write within the interval of the last one waits"
    clock.now = 100.29
    live.on_step_end(2, [first, second])
    assert rows(tmp_path) == 1
    clock.now = 100.3
    live.on_step_end(3, [first, second])
    assert rows(tmp_path) == 2 and json.loads((tmp_path / "front.json").read_text())["running"] == 0
    mtime = (tmp_path / "trials.csv").stat().st_mtime_ns
    clock.now = 200.0
    live.on_step_end(4, [first, second])  # nothing new ended: nothing rewritten
    assert (tmp_path / "trials.csv").stat().st_mtime_ns == mtime and not live.pending


def test_the_wait_after_a_write_is_its_cost_over_the_share(tmp_path: Path) -> None:
    """A write that took 0.5 s (the clock moves by 0.5 once trials.csv is there) waits 0.5 / 0.05 = 10 s
    after it ends, more than min_interval_s: the driver spends at most 5% of its time writing."""
    clock = Clock(now=100.0, cost=0.5, written=tmp_path / "trials.csv")
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=1.0, cost_share=0.05, clock=clock)
    trials = [trial(f"t{i:03d}") for i in range(300)]
    live.write(trials, None, error=None)
    assert rows(tmp_path) == 300
    assert live.next_write == pytest.approx(100.5 + 10.0)
    live.pending = True
    clock.now = 109.99
    live.on_step_end(0, trials)
    assert live.pending, "within cost / share of the last write nothing is written"
    clock.now = 110.0
    live.on_step_end(1, trials)
    assert not live.pending


def test_a_pickled_callback_writes_at_once_in_its_new_process_with_its_clock(tmp_path: Path) -> None:
    live = LiveResults(tmp_path, NAMES, DIRECTIONS, {}, min_interval_s=3600.0, clock=Clock(now=5.0))
    live.write([trial("a")], None, error=None)
    assert live.next_write == pytest.approx(3605.0)
    restored = pickle.loads(pickle.dumps(live))  # what --resume restores
    assert restored.next_write == 0.0 and restored.min_interval_s == 3600.0
    assert isinstance(restored.clock, Clock) and restored.clock() == 5.0, "the clock travels with the callback"
    restored.on_trial_complete(0, [trial("a"), trial("b")], trial("b"))
    assert rows(tmp_path) == 2
    default = pickle.loads(pickle.dumps(LiveResults(tmp_path, NAMES, DIRECTIONS, {})))
    assert default.clock is time.monotonic


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_interval_s": -1.0}, "min_interval_s must be at least 0 but got -1.0"),
    ({"cost_share": 0.0}, r"cost_share must be in \(0, 1\] but got 0.0"),
    ({"clock": 3.0}, "clock must be a callable returning seconds but got 3.0"),
])
def test_bad_arguments_are_named_with_the_value(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        LiveResults(tmp_path, NAMES, DIRECTIONS, {}, **kwargs)
