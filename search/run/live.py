"""Results while a search runs: ``trials.csv``, ``front.json`` and ``plans.json`` rewritten as each trial ends.

A Ray Tune callback on the driver. Whenever a trial completes, is stopped or fails, it writes the
run's result files from Tune's list of trials (every finished trial, restored ones after a
``--resume`` included), atomically (:func:`search.results.files.write_results`), with ``front.json``'s
``running`` saying how many trials have not finished yet. So ``frontier front`` and its report work at
any moment of a search; the files written when the search ends replace these (``running`` 0).
A failure to write (a full disk) is one line on stderr, never the end of the search.

Each write reads every finished trial (its cost grows with the search), so writes are spaced:
the next one waits at least ``min_interval_s`` and 1/``cost_share`` times the last write's own
seconds (a write costing 0.1 s waits 2 s by default); a trial that ends meanwhile is written at
the first step of Tune's loop after the wait. So the driver spends at most ``cost_share`` of its
time here however long the search, and a user sees every finished trial within seconds. The
intervals are read from an injectable ``clock`` (``time.monotonic`` by default), so a test drives
them with a clock of its own instead of sleeping.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search.results.files import write_results
from search.results.rows import FinishedTrial, rows_and_plans

FINISHED = ("TERMINATED", "ERROR")  # Tune's Trial.status of a trial that will not run again


class LiveResults(Callback):
    """Write the run's results after every finished trial.

    Args:
        run_dir: the run folder.
        names: the objectives' names, as the spec lists them.
        directions: ``max`` or ``min``, one per objective.
        bounds: the spec's ``select`` as :func:`search.spec.constraints.search_constraints` gives them.
        min_interval_s: seconds at least between the start of one write and the next.
        cost_share: the largest share of the driver's time spent writing: a write that took
            ``c`` seconds (by ``clock``) is followed by a wait of at least ``c / cost_share``.
        clock: seconds on a clock that never goes back, read before and after each write and at
            each trial's end and each step of Tune's loop. It travels with the callback when Tune
            pickles it for ``--resume`` (so it must pickle: a module-level function or object);
            the time of the next write does not, as it means nothing to a new process's clock.

    Example:
        >>> live = LiveResults("runs/demo", ["accuracy"], ["max"], {})  # doctest: +SKIP
        >>> tune.Tuner(..., run_config=tune.RunConfig(callbacks=[live]))  # doctest: +SKIP
    """

    def __init__(self, run_dir: str | Path, names: Sequence[str], directions: Sequence[str],
                 bounds: dict[str, float], *, min_interval_s: float = 1.0, cost_share: float = 0.05,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if min_interval_s < 0:
            raise ValueError(f"min_interval_s must be at least 0 but got {min_interval_s!r}")
        if not 0 < cost_share <= 1:
            raise ValueError(f"cost_share must be in (0, 1] but got {cost_share!r}")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds but got {clock!r}")
        self.run_dir, self.names, self.directions = str(run_dir), list(names), list(directions)
        self.bounds = dict(bounds)
        self.min_interval_s, self.cost_share, self.clock = min_interval_s, cost_share, clock
        self.next_write, self.pending = 0.0, False  # clock time the next write may start; a trial waits

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks for --resume: a clock time means nothing to another process
        return {**self.__dict__, "next_write": 0.0, "pending": False}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, error=_error_text(trial))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.pending and self.clock() >= self.next_write:
            self.write(trials, None, error=None)  # the ended trials' statuses are final by now

    def _ended(self, trials: list, trial: Any, error: str | None) -> None:
        self.pending = True
        if self.clock() >= self.next_write:
            self.write(trials, trial, error=error)

    def write(self, trials: list, ended: Any, error: str | None) -> None:
        """Write the files from ``trials`` (Tune ``Trial`` objects), ``ended`` counted as finished
        with ``error`` (None: it completed or was stopped) whatever its status says yet."""
        started = self.clock()
        finished, running = [], 0
        for trial in trials:
            if trial is not ended and trial.status not in FINISHED:
                running += 1
                continue
            failed = error if trial is ended else (_error_text(trial) if trial.status == "ERROR" else None)
            finished.append(FinishedTrial(trial.trial_id, trial.config or {}, trial.last_result or {}, failed))
        table = rows_and_plans(finished, self.bounds)
        try:
            write_results(self.run_dir, table.rows, self.names, self.directions, table.plans, running=running)
        except OSError as exc:
            print(f"frontier: could not write the live results in {self.run_dir}: {exc}", file=sys.stderr)
        finished = self.clock()
        self.pending = False
        self.next_write = finished + max(self.min_interval_s, (finished - started) / self.cost_share)


def _error_text(trial: Any) -> str:
    """The last line of a failed trial's error as Tune stored it, or a plain note."""
    try:
        text = trial.get_error()
    except Exception:  # the error file may be unreadable on remote storage: the row still says failed
        text = None
    return str(text).strip() if text else "trial failed (see Ray's log)"
