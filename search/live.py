"""Results while a search runs: ``trials.csv``, ``front.json`` and ``plans.json`` rewritten as each trial ends.

A Ray Tune callback on the driver. Whenever a trial completes, is stopped or fails, it writes the
run's result files from Tune's list of trials (every finished trial, restored ones after a
``--resume`` included), atomically (:func:`search.results.write_results`), with ``front.json``'s
``running`` saying how many trials have not finished yet. So ``frontier front`` and its report work at
any moment of a search; the files written when the search ends replace these (``running`` 0).
A failure to write (a full disk) is one line on stderr, never the end of the search.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from .results import mark_feasible, trial_row, write_results

FINISHED = ("TERMINATED", "ERROR")  # Tune's Trial.status of a trial that will not run again


class LiveResults(Callback):
    """Write the run's results after every finished trial.

    Args:
        run_dir: the run folder.
        names: the objectives' names, as the spec lists them.
        directions: ``max`` or ``min``, one per objective.
        bounds: the spec's ``select`` as :func:`search.constraints.active_constraints` gives them.
    """

    def __init__(self, run_dir: str | Path, names: Sequence[str], directions: Sequence[str],
                 bounds: dict[str, float]) -> None:
        self.run_dir, self.names, self.directions = str(run_dir), list(names), list(directions)
        self.bounds = dict(bounds)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.write(trials, trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.write(trials, trial, error=_error_text(trial))

    def write(self, trials: list, ended: Any, error: str | None) -> None:
        """Write the files from ``trials`` (Tune ``Trial`` objects), ``ended`` counted as finished
        with ``error`` (None: it completed or was stopped) whatever its status says yet."""
        rows, plans = [], {}
        running = 0
        for trial in trials:
            if trial is not ended and trial.status not in FINISHED:
                running += 1
                continue
            failed = error if trial is ended else (_error_text(trial) if trial.status == "ERROR" else None)
            config = trial.config or {}
            row = trial_row(trial.trial_id, config, trial.last_result or {}, failed)
            rows.append(mark_feasible(row, self.bounds))
            plans[trial.trial_id] = config.get("plan")
        try:
            write_results(self.run_dir, rows, self.names, self.directions, plans, running=running)
        except OSError as exc:
            print(f"frontier: could not write the live results in {self.run_dir}: {exc}", file=sys.stderr)


def _error_text(trial: Any) -> str:
    """The last line of a failed trial's error as Tune stored it, or a plain note."""
    try:
        text = trial.get_error()
    except Exception:  # the error file may be unreadable on remote storage: the row still says failed
        text = None
    return str(text).strip() if text else "trial failed (see Ray's log)"
