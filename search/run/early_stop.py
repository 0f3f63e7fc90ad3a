"""Multi-objective early stopping at stage boundaries: successive halving by non-dominated rank.

Ray Tune's schedulers (ASHA, HyperBand) and Optuna's pruners rank trials by one metric. Here a
trial is compared on all of the run's objectives, in the spirit of multi-objective ASHA (Schmucker
et al., "Multi-objective Asynchronous Successive Halving", 2021): each stage boundary is a rung,
and a trial that reaches it continues only if it ranks in the better ``1/eta`` of the trials that
reached the same rung, ranked by non-dominated sorting.

A trial measures itself cheaply at a boundary (:mod:`trainables.pipeline.boundary`: validation
accuracy, artifact bytes, latency from a few timed runs) and reports it with its stage checkpoint.
Trials at the same boundary (``D|P1|T``: the same kinds of stages done, in the same order) are
comparable. :func:`should_stop` is the rule, on the objectives of the trials at the rung:

1. **Margin.** A difference in an objective of less than ``margin`` times the judged trial's value
   is noise, a tie: ``y`` dominates ``x`` beyond the margin when ``y`` is not worse than ``x`` by
   more than the margin in any objective and better by more than it in at least one.
2. **Rank.** The rung's trials are sorted into fronts by that dominance (front 1: dominated by
   none; front 2: dominated only by front 1; ...). ``x`` is stopped when the trials in fronts
   before its own are at least ``ceil(n / eta)`` of the ``n`` at the rung: it is outside the better
   ``1/eta`` (and dominated beyond the margin by at least one trial).
3. **Grace.** Nothing is stopped at a rung before ``grace`` trials reached it.

Like ASHA the decision is asynchronous: a trial is judged once, when it reaches the rung, against
those that reached it before; one that continued is never stopped there later.

A stopped trial gets status ``stopped`` in ``trials.csv`` with its boundary (``stopped_at``), is told
PRUNED in the study, stays off the front, and its slot goes to a new trial
(:class:`search.run.searcher.FailAwareOptunaSearch` ``budget``). The scheduler keeps each judgement in
``runs/<name>/early_stop.jsonl``, which it reads back after a ``--resume`` (Tune restores a
scheduler as it was pickled when the run began, without what it saw since).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.spec.schema import EarlyStop
from trainables.pipeline.boundary import PREFIX, PREFIX_PLAN
from trainables.pipeline.result import BOUNDARY

def dominates_beyond(y: Sequence[float], x: Sequence[float], directions: Sequence[str],
                     margins: Sequence[float]) -> bool:
    """Whether ``y`` dominates ``x`` beyond the margins (rule 1 of the module doc).

    Example:
        >>> dominates_beyond([0.95, 100], [0.90, 100.5], ["max", "min"], [0.02, 0.02])
        True
        >>> dominates_beyond([0.91, 90], [0.90, 100], ["max", "min"], [0.02, 0.02])  # accuracy: a tie
        True
        >>> dominates_beyond([0.91, 99], [0.90, 100], ["max", "min"], [0.02, 0.02])  # both ties
        False
    """
    better = False
    for yv, xv, d, m in zip(y, x, directions, margins):
        gain = (yv - xv) if d == "max" else (xv - yv)  # > 0: y is better in this objective
        slack = m * abs(xv)
        if gain < -slack:
            return False
        if gain > slack:
            better = True
    return better


def fronts_before(points: Sequence[Sequence[float]], index: int, directions: Sequence[str],
                  margins: Sequence[float], groups: Sequence[str] | None = None) -> int:
    """How many of ``points`` lie in fronts before the front of ``points[index]`` (rule 2), under
    :func:`dominates_beyond`. Points of the same ``group`` (the same model: the same plan up to the
    boundary) never dominate each other: what differs between them is measurement noise."""
    groups = list(groups) if groups is not None else [str(i) for i in range(len(points))]
    remaining = set(range(len(points)))
    before = 0
    while remaining:
        front = {i for i in remaining
                 if not any(groups[j] != groups[i] and dominates_beyond(points[j], points[i], directions, margins)
                            for j in remaining if j != i)}
        if not front:  # margins can make the relation cyclic: what is left ranks together
            front = set(remaining)
        if index in front:
            return before
        before += len(front)
        remaining -= front
    return before


def should_stop(points: Sequence[Sequence[float]], index: int, directions: Sequence[str],
                margins: Sequence[float], *, grace: int, eta: float, groups: Sequence[str] | None = None) -> bool:
    """Whether the trial ``points[index]`` stops at a rung holding ``points`` (the module doc's rule);
    ``groups`` as in :func:`fronts_before`.

    Example:
        >>> rung = [[0.95, 100.0], [0.94, 80.0], [0.90, 120.0], [0.80, 130.0]]
        >>> [should_stop(rung, i, ["max", "min"], [0.02, 0.02], grace=4, eta=2) for i in range(4)]
        [False, False, True, True]
    """
    n = len(points)
    if n < grace:
        return False
    return fronts_before(points, index, directions, margins, groups) >= math.ceil(n / eta)


class ParetoHalving(FIFOScheduler):
    """Tune scheduler: stops a trial at a stage boundary by :func:`should_stop` (module doc).

    Runs trials first in, first out (``FIFOScheduler``) and judges each result that carries a
    ``boundary`` and the ``boundary.<objective>`` measurements.

    Example::

        scheduler = ParetoHalving(["accuracy", "size_bytes"], ["max", "min"], EarlyStop(enabled=True),
                                  record=Path("runs/r/early_stop.jsonl"))
        tune.TuneConfig(scheduler=scheduler, ...)

    Args:
        names: the run's objectives.
        directions: ``max`` or ``min`` for each.
        config: the spec's ``early_stop`` (grace, eta, margins).
        record: the JSON-lines file keeping each judgement (read back after a restore).
    """

    def __init__(self, names: Sequence[str], directions: Sequence[str], config: EarlyStop, *,
                 record: str | Path | None = None) -> None:
        super().__init__()
        self.names, self.directions, self.config = list(names), list(directions), config
        self.margins = [config.margin_of(n) for n in self.names]
        self.record = None if record is None else str(record)
        self.rungs: dict[str, dict[str, list[float]]] = {}  # boundary -> trial -> objectives there
        self.groups: dict[str, str] = {}  # "<boundary>/<trial>" -> hash of its plan up to the boundary (same hash: same model)
        self.stopped: dict[str, str] = {}  # trial -> the boundary it was stopped at
        self._loaded = False

    def __getstate__(self) -> dict[str, Any]:
        # pickled when the run starts; a restore rereads what happened since from the record
        return {**self.__dict__, "rungs": {}, "groups": {}, "stopped": {}, "_loaded": False}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        boundary = result.get(BOUNDARY)
        values = [result.get(PREFIX + n) for n in self.names]
        if not boundary or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return TrialScheduler.CONTINUE
        return self.judge(trial.trial_id, str(boundary), [float(v) for v in values],
                          str(result.get(PREFIX_PLAN, trial.trial_id)))

    def judge(self, trial_id: str, boundary: str, values: list[float], group: str | None = None) -> str:
        """Record ``trial_id`` at ``boundary`` with ``values`` (``group``: the hash of its plan up to
        there, :func:`fronts_before`) and say whether it continues."""
        self._load()
        rung = self.rungs.setdefault(boundary, {})
        if trial_id in rung:  # a resumed trial reporting a boundary it passed before
            return TrialScheduler.STOP if self.stopped.get(trial_id) == boundary else TrialScheduler.CONTINUE
        rung[trial_id] = values
        key = f"{boundary}/{trial_id}"
        self.groups[key] = group or trial_id
        ids = list(rung)
        stop = should_stop([rung[i] for i in ids], ids.index(trial_id), self.directions, self.margins,
                           grace=self.config.grace, eta=self.config.eta,
                           groups=[self.groups.get(f"{boundary}/{i}", i) for i in ids])
        if stop:
            self.stopped[trial_id] = boundary
        self._append({"trial_id": trial_id, BOUNDARY: boundary, "group": self.groups[key], "values": values,
                      "stop": stop, "rung_size": len(rung)})
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self.record is None or not Path(self.record).is_file():
            return
        for line in Path(self.record).read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by a killed driver
                continue
            self.rungs.setdefault(entry[BOUNDARY], {}).setdefault(entry["trial_id"], entry["values"])
            self.groups.setdefault(f"{entry['boundary']}/{entry['trial_id']}", entry.get("group", entry["trial_id"]))
            if entry["stop"]:
                self.stopped[entry["trial_id"]] = entry[BOUNDARY]

    def _append(self, entry: dict[str, Any]) -> None:
        if self.record is None:
            return
        with open(self.record, "a", encoding="utf-8") as f:  # one line per judgement, appended
            f.write(json.dumps(entry) + "\n")

    def debug_string(self) -> str:
        return f"ParetoHalving: {sum(map(len, self.rungs.values()))} judgements, {len(self.stopped)} stopped"
