"""Multi-objective early stopping at stage boundaries: successive halving by non-dominated rank.

Ray Tune's schedulers (ASHA, HyperBand) and Optuna's pruners rank trials by one metric. Here a
trial is compared on all of the run's objectives, in the spirit of multi-objective ASHA (Schmucker
et al., "Multi-objective Asynchronous Successive Halving", 2021): a trial that reaches a rung
continues only if it ranks in the better ``1/eta`` of the trials that reached the same rung, ranked
by non-dominated sorting.

A trial measures itself cheaply at a boundary (:mod:`trainables.pipeline.boundary`: validation
accuracy, artifact bytes, latency from a few timed runs, each with its measured noise) and reports
it with its stage checkpoint. The boundary keeps its slot name (``D|P1|T``, ``stopped_at``); trials
are compared at its **rung** (:func:`~trainables.pipeline.boundary.rung_name`), a resource level
shared by plans whose slots differ, as MO-ASHA's rungs are: the domain the model is on and the kinds
of compressing stages done, in order. PA's ``D|T|P2`` and PB's ``D|P1|T`` meet at ``target:P``;
PBA's ``D|P1|T|P2`` is at ``target:P+P``. :func:`should_stop` is the rule, on the objectives of
the trials at the rung:

1. **Noise.** Two values of an objective whose difference is within their combined noise are a
   tie: the rule of :func:`search.results.front.pareto_front` with ``spread``, applied to the pair
   (:func:`dominates_beyond`): accuracy's binomial standard errors combine as ``z * sqrt(se_y**2 +
   se_x**2)`` (``z`` = 1.96, :attr:`~trainables.objectives.ObjectiveInfo.z`), latency's
   interquartile ranges add up, and an objective measured without noise (bytes) is exact. The
   spec's ``margin`` (per objective ``margins``) is a floor on the noise: each value's spread is at
   least ``margin * |value| / 2`` for a range (two floors add up to about ``margin`` times the value)
   and ``margin * |value| / (z * sqrt(2))`` for a standard error (``z`` combined floors: the same),
   so a difference below the margin is a tie however tight the measurement, and with no noise
   measured the rule is the margin rule. ``y`` dominates ``x`` when it is not worse in any
   objective and better in at least one, ties being neither.
2. **Rank.** The rung's trials are sorted into fronts by that dominance (front 1: dominated by
   none; front 2: dominated only by front 1; ...). ``x`` is stopped when the trials in fronts
   before its own are at least ``ceil(n / eta)`` of the ``n`` at the rung: it is outside the better
   ``1/eta`` (and dominated beyond noise by at least one trial). Trials holding the same model
   (the same plan up to the boundary) never dominate each other: what differs is noise.
3. **Grace.** Nothing is stopped at a rung before ``grace`` trials reached it.

Like ASHA the decision is asynchronous: a trial is judged once, when it reaches the rung, against
those that reached it before; one that continued is never stopped there later. A finished trial
whose float benchmark measured the model of a rung it passed unmeasured (``D|T|P2|B`` at
``target:P``: :func:`~trainables.pipeline.boundary.final_peer`) counts there too, with its final
objectives and their noise, unjudged: MO-ASHA records every trial that reaches a rung, and without
them a rung of a PA search held only the plans that compress further. A trial whose next
stage is already in the stage cache is not measured there at all (stopping it would save nothing:
:func:`trainables.pipeline.run.next_stage_cached`), so it is not judged there either.

A stopped trial gets status ``stopped`` in ``trials.csv`` with its boundary (``stopped_at``), is told
PRUNED in the study, stays off the front, and its slot goes to a new trial
(:class:`search.run.searcher.FailAwareOptunaSearch` ``budget``). What measuring cost each trial is
its ``boundary_seconds`` column. The scheduler keeps each judgement in ``runs/<name>/early_stop.jsonl``
(trial, boundary, rung, values, their measured spreads), which it reads back after a ``--resume``
(Tune restores a scheduler as it was pickled when the run began, without what it saw since); a line
written before rungs and spreads existed counts at its boundary's name, without measured noise.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from search.results.front import dominators, pareto_front
from search.spec.schema import EarlyStop
from trainables.objectives import OBJECTIVES
from trainables.pipeline.boundary import FINAL_PLAN, FINAL_RUNG, PREFIX, PREFIX_PLAN, RUNG
from trainables.pipeline.result import BOUNDARY

Spreads = Sequence[float] | None  # one measured spread per objective (0 or NaN: exact); None: all exact
Rules = Sequence[float | None] | None  # per objective: None, spreads add up (a range); z: standard errors


def floored(values: Sequence[float], spreads: Spreads, margins: Sequence[float], z: Rules = None) -> list[float]:
    """The spreads of ``values`` the tie rule uses: the measured ones (None, NaN or negative: 0), each
    at least its margin's floor, ``margin * |value| / 2`` for a range (``z`` None) and
    ``margin * |value| / (z * sqrt(2))`` for a standard error (rule 1 of the module doc).

    Example:
        >>> [round(s, 4) for s in floored([0.9, 2.0], [0.001, 0.5], [0.02, 0.02], [1.96, None])]
        [0.0065, 0.5]
    """
    rules = [None] * len(values) if z is None else list(z)
    measured = [0.0] * len(values) if spreads is None else list(spreads)
    if not len(rules) == len(measured) == len(margins) == len(values):
        raise ValueError(f"values ({len(values)}), spreads ({len(measured)}), margins ({len(margins)}) and z "
                         f"({len(rules)}) must have one entry per objective")
    out = []
    for v, s, m, r in zip(values, measured, margins, rules):
        floor = m * abs(v) / (2.0 if r is None or r <= 0 else r * math.sqrt(2.0))
        out.append(max(s if isinstance(s, (int, float)) and math.isfinite(s) and s > 0 else 0.0, floor))
    return out


def dominates_beyond(y: Sequence[float], x: Sequence[float], directions: Sequence[str], margins: Sequence[float],
                     *, spread_y: Spreads = None, spread_x: Spreads = None, z: Rules = None) -> bool:
    """Whether ``y`` dominates ``x`` beyond their noise (rule 1 of the module doc): ``pareto_front``'s
    rule on the pair, with each spread :func:`floored` by ``margins``.

    Example:
        >>> dominates_beyond([0.95, 100], [0.90, 100.5], ["max", "min"], [0.02, 0.02])
        True
        >>> dominates_beyond([0.91, 90], [0.90, 100], ["max", "min"], [0.02, 0.02])  # accuracy: a tie
        True
        >>> dominates_beyond([0.91, 99], [0.90, 100], ["max", "min"], [0.02, 0.02])  # both ties
        False
        >>> dominates_beyond([0.95, 100], [0.90, 100], ["max", "min"], [0.0, 0.0],  # within 2 standard errors
        ...                  spread_y=[0.02, 0], spread_x=[0.02, 0], z=[1.96, None])
        False
    """
    pair = [floored(y, spread_y, margins, z), floored(x, spread_x, margins, z)]
    return pareto_front([list(y), list(x)], directions, spread=pair, z=z) == [0]


def fronts_before(points: Sequence[Sequence[float]], index: int, directions: Sequence[str],
                  margins: Sequence[float], groups: Sequence[str] | None = None, *,
                  spreads: Sequence[Spreads] | None = None, z: Rules = None) -> int:
    """How many of ``points`` lie in fronts before the front of ``points[index]`` (rule 2), under
    :func:`dominates_beyond` (``spreads``: each point's measured spreads, None: none measured). Points
    of the same ``group`` (the same model: the same plan up to the boundary) never dominate each
    other: what differs between them is measurement noise."""
    n = len(points)
    groups = list(groups) if groups is not None else [str(i) for i in range(n)]
    spreads = list(spreads) if spreads is not None else [None] * n
    if not len(groups) == len(spreads) == n:
        raise ValueError(f"groups ({len(groups)}) and spreads ({len(spreads)}) must have one entry per point ({n})")
    noise = [floored(p, s, margins, z) for p, s in zip(points, spreads)]  # once per point, not per pair
    beats = {(j, i) for i in range(n)  # j dominates i: dominates_beyond's rule, one vectorised call per point
             for j in dominators(points, directions, points[i], spread=noise, point_spread=noise[i], z=z)
             if groups[j] != groups[i]}
    remaining = set(range(n))
    before = 0
    while remaining:
        front = {i for i in remaining if not any((j, i) in beats for j in remaining)}
        if not front:  # noise can make the relation cyclic: what is left ranks together
            front = set(remaining)
        if index in front:
            return before
        before += len(front)
        remaining -= front
    return before


def should_stop(points: Sequence[Sequence[float]], index: int, directions: Sequence[str],
                margins: Sequence[float], *, grace: int, eta: float, groups: Sequence[str] | None = None,
                spreads: Sequence[Spreads] | None = None, z: Rules = None) -> bool:
    """Whether the trial ``points[index]`` stops at a rung holding ``points`` (the module doc's rule);
    ``groups``, ``spreads`` and ``z`` as in :func:`fronts_before`.

    Example:
        >>> rung = [[0.95, 100.0], [0.94, 80.0], [0.90, 120.0], [0.80, 130.0]]
        >>> [should_stop(rung, i, ["max", "min"], [0.02, 0.02], grace=4, eta=2) for i in range(4)]
        [False, False, True, True]
        >>> chain = [[0.95, 100.0], [0.90, 100.0], [0.85, 100.0], [0.80, 100.0]]
        >>> [should_stop(chain, i, ["max", "min"], [0.02, 0.02], grace=4, eta=2) for i in range(4)]
        [False, False, True, True]
        >>> se = [[0.04, 0.0]] * 4  # accuracy's standard errors: only 0.15 apart is beyond 1.96 of them
        >>> [should_stop(chain, i, ["max", "min"], [0.02, 0.02], grace=4, eta=2, spreads=se, z=[1.96, None])
        ...  for i in range(4)]
        [False, False, False, True]
    """
    n = len(points)
    if n < grace:
        return False
    return fronts_before(points, index, directions, margins, groups, spreads=spreads, z=z) >= math.ceil(n / eta)


class ParetoHalving(FIFOScheduler):
    """Tune scheduler: stops a trial at a stage boundary by :func:`should_stop` (module doc).

    Runs trials first in, first out (``FIFOScheduler``) and judges each result that carries a
    ``boundary`` and the ``boundary.<objective>`` measurements, at the result's ``boundary_rung``
    (the boundary's name for a result without one), with the measured noise of each objective that
    has one (``boundary.<spread>``, :attr:`~trainables.objectives.ObjectiveInfo.spread`: accuracy's
    ``accuracy_se``, latency's ``latency_iqr_ms``; missing or NaN: exact).

    Example::

        scheduler = ParetoHalving(["accuracy", "size_bytes"], ["max", "min"], EarlyStop(enabled=True),
                                  record=Path("runs/r/early_stop.jsonl"))
        tune.TuneConfig(scheduler=scheduler, ...)

    Args:
        names: the run's objectives.
        directions: ``max`` or ``min`` for each.
        config: the spec's ``early_stop`` (grace, eta, margins: the floors of the noise).
        record: the JSON-lines file keeping each judgement (read back after a restore).
    """

    def __init__(self, names: Sequence[str], directions: Sequence[str], config: EarlyStop, *,
                 record: str | Path | None = None) -> None:
        super().__init__()
        unknown = [n for n in names if n not in OBJECTIVES]
        if unknown:
            raise ValueError(f"names: unknown objective(s) {unknown}; known: {sorted(OBJECTIVES)}")
        if len(directions) != len(names):
            raise ValueError(f"directions must have one entry per name ({len(names)}) but got {list(directions)}")
        self.names, self.directions, self.config = list(names), list(directions), config
        self.margins = [config.margin_of(n) for n in self.names]
        self.spread_keys = [OBJECTIVES[n].spread for n in self.names]  # None: measured exactly
        self.z = [OBJECTIVES[n].z for n in self.names]
        self.record = None if record is None else str(record)
        self.rungs: dict[str, dict[str, list[float]]] = {}  # rung -> trial -> objectives there
        self.spreads: dict[str, dict[str, list[float]]] = {}  # rung -> trial -> measured spreads there
        self.groups: dict[str, str] = {}  # "<rung>/<trial>" -> hash of its plan up to the boundary (same hash: same model)
        self.stopped: dict[str, str] = {}  # trial -> the boundary it was stopped at
        self._loaded = False

    def __getstate__(self) -> dict[str, Any]:
        # pickled when the run starts; a restore rereads what happened since from the record
        return {**self.__dict__, "rungs": {}, "spreads": {}, "groups": {}, "stopped": {}, "_loaded": False}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        boundary = result.get(BOUNDARY)
        values = [result.get(PREFIX + n) for n in self.names]
        if not boundary or not all(_finite(v) for v in values):
            return TrialScheduler.CONTINUE
        spreads = [float(result[PREFIX + k]) if k and _finite(result.get(PREFIX + k)) else 0.0
                   for k in self.spread_keys]
        return self.judge(trial.trial_id, str(boundary), [float(v) for v in values],
                          str(result.get(PREFIX_PLAN, trial.trial_id)), rung=result.get(RUNG), spreads=spreads)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        super().on_trial_complete(tune_controller, trial, result)
        values = [(result or {}).get(n) for n in self.names]
        if not (result or {}).get(FINAL_RUNG) or not all(_finite(v) for v in values):
            return
        spreads = [float(result[k]) if k and _finite(result.get(k)) else 0.0 for k in self.spread_keys]
        self.count_peer(trial.trial_id, str(result[FINAL_RUNG]), [float(v) for v in values],
                        str(result.get(FINAL_PLAN, trial.trial_id)), spreads)

    def count_peer(self, trial_id: str, rung: str, values: list[float], group: str, spreads: list[float]) -> None:
        """Count a finished trial's final ``values`` (with their measured ``spreads``) at ``rung``,
        whose model its benchmark measured (module doc), without judging it; ``group`` as in :meth:`judge`."""
        self._load()
        if trial_id in self.rungs.get(rung, {}):
            return
        trials = self._enter(rung, trial_id, values, group, spreads)
        self._append({"trial_id": trial_id, BOUNDARY: "final", "rung": rung, "group": group, "values": values,
                      "spreads": spreads, "stop": False, "peer": True, "rung_size": len(trials)})

    def judge(self, trial_id: str, boundary: str, values: list[float], group: str | None = None, *,
              rung: str | None = None, spreads: list[float] | None = None) -> str:
        """Record ``trial_id`` at ``boundary`` with ``values`` and their measured ``spreads`` (None:
        exact) and say whether it continues. It is compared with the trials at ``rung`` (None: the
        boundary's name); ``group`` is the hash of its plan up to there (:func:`fronts_before`)."""
        self._load()
        rung = rung or boundary
        spreads = list(spreads) if spreads is not None else [0.0] * len(values)
        if trial_id in self.rungs.get(rung, {}):  # a resumed trial reporting a boundary it passed before
            return TrialScheduler.STOP if self.stopped.get(trial_id) == boundary else TrialScheduler.CONTINUE
        trials = self._enter(rung, trial_id, values, group or trial_id, spreads)
        ids = list(trials)
        stop = should_stop([trials[i] for i in ids], ids.index(trial_id), self.directions, self.margins,
                           grace=self.config.grace, eta=self.config.eta,
                           groups=[self.groups.get(f"{rung}/{i}", i) for i in ids],
                           spreads=[self.spreads[rung].get(i) for i in ids], z=self.z)
        if stop:
            self.stopped[trial_id] = boundary
        self._append({"trial_id": trial_id, BOUNDARY: boundary, "rung": rung, "group": group or trial_id,
                      "values": values, "spreads": spreads, "stop": stop, "rung_size": len(trials)})
        return TrialScheduler.STOP if stop else TrialScheduler.CONTINUE

    def _enter(self, rung: str, trial_id: str, values: list[float], group: str,
               spreads: list[float]) -> dict[str, list[float]]:
        """Put ``trial_id`` at ``rung`` (its values, spreads and group); returns the rung's trials."""
        trials = self.rungs.setdefault(rung, {})
        trials[trial_id] = values
        self.spreads.setdefault(rung, {})[trial_id] = spreads
        self.groups[f"{rung}/{trial_id}"] = group
        return trials

    def _load(self) -> None:
        """Read the record once (after a restore: the judgements made since the pickle). A line from
        before rungs and spreads were recorded counts at its boundary's name, with no noise."""
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
            rung, trial = entry.get("rung") or entry[BOUNDARY], entry["trial_id"]
            self.rungs.setdefault(rung, {}).setdefault(trial, entry["values"])
            self.spreads.setdefault(rung, {}).setdefault(trial, entry.get("spreads") or [0.0] * len(entry["values"]))
            self.groups.setdefault(f"{rung}/{trial}", entry.get("group", trial))
            if entry["stop"]:
                self.stopped[trial] = entry[BOUNDARY]

    def _append(self, entry: dict[str, Any]) -> None:
        if self.record is None:
            return
        line = json.dumps(entry) + "\n"
        if _cut(Path(self.record)):  # a killed driver left half a line: this one starts afresh
            line = "\n" + line
        with open(self.record, "a", encoding="utf-8") as f:  # one line per judgement, appended
            f.write(line)

    def debug_string(self) -> str:
        return f"ParetoHalving: {sum(map(len, self.rungs.values()))} judgements, {len(self.stopped)} stopped"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cut(path: Path) -> bool:
    """Whether ``path`` ends inside a line (not with a newline); False for a missing or empty file."""
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as f:
        f.seek(-1, 2)
        return f.read(1) != b"\n"
