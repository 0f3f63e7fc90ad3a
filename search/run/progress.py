"""The live progress of a search: trials done, running and failed, best accuracy, front size.

The front size is counted by ``frontier front``'s rule: feasible trials only (the spec's
``select``), values within their combined spread equal (latencies within their IQRs, accuracies
within 1.96 standard errors of their difference: :func:`search.results.summary.noisy_front`).

A Ray Tune callback on the driver. On a terminal it redraws one rich status panel; elsewhere (CI,
a log file) it prints one line whenever a trial finishes or fails.

On ``frontier run --resume`` Tune brings back the trials that finished before as TERMINATED or
ERROR and calls no callback for them (and uses the copy of this callback it pickled when the run
began, counts empty). The first step of the loop therefore seeds the counts from Tune's trial list,
so a resumed run's display starts from the trials already finished.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
from ray.tune import Callback
from rich.console import Console
from rich.live import Live
from rich.text import Text

from search.results.summary import noisy_front
from search.spec.constraints import feasible
from trainables.objectives import OBJECTIVES
from trainables.pipeline.result import FAILED, FAILED_STATUS, OK, STAGE_INDEX, STAGES, classify

TERMINATED, ERROR = "TERMINATED", "ERROR"  # Tune's Trial.status values of a finished trial


class SearchProgress(Callback):
    """Counts trials by state and keeps the running front of finished ones."""

    def __init__(self, total: int, names: list[str], directions: list[str],
                 bounds: Mapping[str, float] | None = None) -> None:
        self.total, self.names, self.directions = total, names, directions
        self.bounds = dict(bounds or {})  # the spec's select (search.spec.constraints.active_constraints)
        self.done: dict[str, list[float]] = {}
        self.noise: dict[str, dict[str, float]] = {}  # trial -> its spread columns (latency_iqr_ms, accuracy_se)
        self.infeasible: set[str] = set()
        self.failed: set[str] = set()
        self.running: set[str] = set()
        self.stage: dict[str, str] = {}
        self.before_resume = 0  # trials that had finished before this run started (a resume)
        self._seeded = False
        self._front_cache: tuple[Any, int] = (None, 0)  # (what front_size last counted, its count)
        self._live: Live | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run config (callbacks included); a live display is not picklable
        return {**self.__dict__, "_live": None}

    def setup(self, **info: Any) -> None:
        console = Console()
        if console.is_terminal:
            self._live = Live(self._render(), console=console, refresh_per_second=2, transient=False)
            self._live.start()

    def on_step_begin(self, iteration, trials, **info) -> None:
        if not self._seeded:
            self._seeded = True
            self.seed(trials)

    def seed(self, trials: Iterable[Any]) -> None:
        """Start the counts from ``trials`` (Tune ``Trial`` objects) that have already finished.

        Each is counted by :func:`record`, its status ERROR as its error (a restored errored trial
        that Tune retries is PENDING, not ERROR). Replaces whatever counts this object held.
        """
        self.done, self.failed, self.running, self.stage = {}, set(), set(), {}
        finished = [t for t in trials if t.status in (TERMINATED, ERROR)]
        for trial in finished:
            self.record(trial.trial_id, trial.last_result, error=trial.status == ERROR)
        self.before_resume = len(finished)
        if finished:
            self._line(f"resuming: {len(finished)} trial(s) finished before")

    def record(self, trial_id: str, result: Mapping[str, Any] | None, error: Any = None) -> None:
        """Count ``trial_id`` as finished with its last ``result`` and ``error`` (Tune's, text or a
        flag): by :func:`trainables.pipeline.result.classify`, failed, done (ok), or neither (stopped).

        Idempotent: recording a trial again replaces its entry.
        """
        self.running.discard(trial_id)
        if classify(result, error) == FAILED_STATUS:
            self.done.pop(trial_id, None)
            self.failed.add(trial_id)
            return
        self._keep(trial_id, result or {})

    def _keep(self, trial_id: str, result: Mapping[str, Any]) -> None:
        """Count ``trial_id`` as done with ``result``'s objectives, when ``result`` is a final ok one."""
        values = objective_values(result, self.names)
        if values is None or classify(result, None) != OK:
            return
        self.done[trial_id] = values
        self.noise[trial_id] = {c: result.get(c, math.nan) for c in self._spread_columns()}
        if self.bounds and feasible(self.bounds, result) is False:
            self.infeasible.add(trial_id)
        else:
            self.infeasible.discard(trial_id)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.running.add(trial.trial_id)
        self._refresh()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.stage[trial.trial_id] = f"{result.get(STAGE_INDEX, 0)}/{result.get(STAGES, '?')}"
        self._keep(trial.trial_id, result)
        self._refresh()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.running.discard(trial.trial_id)
        if classify(trial.last_result, None) == FAILED_STATUS:  # ended itself with a failure that would repeat
            self.record(trial.trial_id, trial.last_result)
            reason = (trial.last_result or {}).get(FAILED) or "did not report every objective"
            self._line(f"trial {trial.trial_id} failed: {reason}")
            return
        self._line(f"trial {trial.trial_id} finished: {result_text(trial.last_result, self.names)}")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.record(trial.trial_id, None, error=True)
        self._line(f"trial {trial.trial_id} failed")

    def on_experiment_end(self, trials, **info) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None

    def summary(self) -> str:
        """One line: counts, best accuracy and front size."""
        best = ""
        if "accuracy" in self.names and self.done:
            i = self.names.index("accuracy")
            best = f" · best accuracy {max(v[i] for v in self.done.values()):.4f}"
        front = self.front_size()
        resumed = f" ({self.before_resume} before the resume)" if self.before_resume else ""
        return (f"trials {len(self.done)}/{self.total} done{resumed}, {len(self.running)} running, "
                f"{len(self.failed)} failed{best} · front {front}")

    def _spread_columns(self) -> list[str]:
        """The ``trials.csv`` columns holding the objectives' noise (``ObjectiveInfo.spread``)."""
        return [OBJECTIVES[n].spread for n in self.names if n in OBJECTIVES and OBJECTIVES[n].spread]

    def front_size(self) -> int:
        """Trials on the front as ``frontier front`` counts them: feasible, noise-aware."""
        kept = [t for t in self.done if t not in self.infeasible]
        noise = {t: self._noise_of(t) for t in kept}
        key = tuple((t, *self.done[t], *noise[t].values()) for t in kept)
        if self._front_cache[0] == key:
            return self._front_cache[1]  # the display redraws on every result: count once per change
        if not kept:
            return 0
        frame = pd.DataFrame([{**dict(zip(self.names, self.done[t])), **noise[t]} for t in kept])
        self._front_cache = (key, len(noisy_front(frame, self.names, self.directions)))
        return self._front_cache[1]

    def _noise_of(self, trial_id: str) -> dict[str, float]:
        noise = self.noise.get(trial_id, {})
        return {c: noise.get(c, math.nan) for c in self._spread_columns()}

    def _render(self) -> Text:
        text = Text(self.summary(), style="bold")
        for trial_id in sorted(self.running):
            text.append(f"\n  {trial_id}: stage {self.stage.get(trial_id, '0/?')}")
        return text

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _line(self, message: str) -> None:
        if self._live is not None:
            self._live.console.print(message)
            self._refresh()
        else:
            print(f"{message} | {self.summary()}", file=sys.stdout, flush=True)


def objective_values(result: Mapping[str, Any], names: list[str]) -> list[float] | None:
    """The objectives ``names`` of ``result`` as floats, or None unless every one is finite."""
    values = [result.get(n) for n in names]
    if all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        return [float(v) for v in values]
    return None


def result_text(result: dict[str, Any], names: list[str]) -> str:
    parts = [str(result.get("pipeline", "?"))]
    for n in names:
        v = result.get(n)
        parts.append(f"{n}={v:.4g}" if isinstance(v, (int, float)) else f"{n}=?")
    return " ".join(parts)
