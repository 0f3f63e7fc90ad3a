"""What ``front.json`` holds: the front of a run's trials, its hypervolume, and each trial's noise.

``front.json`` holds the objectives and their directions, the reference point, the ideal point, the
hypervolume (raw and normalised) and the front's trial ids with their values and deployment; a trial
whose values are means over several seeds (spec ``repeats``) also its ``repeats`` and each
objective's standard deviation over them (``accuracy_std``, ...), and a trial pruned to a latency
target (spec ``s2: {latency: 0.4}``) its ``latency_target_ms`` and whether its measured latency met it
(``latency_met``: at most :data:`LATENCY_TARGET_TOLERANCE` times the target, :func:`latency_target`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from trainables.objectives import OBJECTIVES
from trainables.pipeline.repeats import REPEATS, std_column

from .front import hypervolume, ideal_point, normalized_hypervolume, pareto_front

LATENCY_TARGET_TOLERANCE = 1.10  # a latency target is met when the measured latency_ms is at most 10% above it
TARGET_METRIC = "latency_target_ms"  # a pruning stage's metric: the target it pruned to, in ms (stage.<slot>.*)
_TARGET_COLUMN = re.compile(rf"stage\.P(\d+)(?:\.(\d+))?\.{TARGET_METRIC}")  # stage.P2.latency_target_ms, stage.P1.2...


def default_reference(frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str]) -> list[float]:
    """A reference point every ok trial dominates: 0 for a maximised accuracy-like objective,
    1.1 x the worst value seen for a minimised one."""
    ref = []
    for name, direction in zip(names, directions):
        column = frame[name].astype(float)
        if direction == "max":
            ref.append(min(0.0, float(column.min())) if len(column) else 0.0)
        else:
            ref.append(float(column.max()) * 1.1 if len(column) else 1.0)
    return ref


def spreads(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Each row's measurement noise per objective: ``ObjectiveInfo.spread``'s column (e.g.
    ``latency_iqr_ms``, ``accuracy_se``), but at least ``ObjectiveInfo.repeatability`` times the value (2% of a
    latency: medians of one model timed in separate sessions differ by that much even where each
    session's IQR is tighter); 0 for an exact objective, a missing column or a missing value."""
    columns = []
    for name in names:
        info = OBJECTIVES.get(name)
        column = info.spread if info is not None else None
        if column and column in frame:
            measured = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            floor = info.repeatability * np.abs(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float))
            columns.append(np.nan_to_num(np.maximum(measured, floor), nan=0.0))
        else:
            columns.append(np.zeros(len(frame)))
    return np.stack(columns, axis=1) if len(names) else np.zeros((len(frame), 0))


def spread_rules(names: Sequence[str]) -> list[float | None]:
    """How each objective's spreads combine (:attr:`trainables.objectives.ObjectiveInfo.z`): None sums
    them (latency), a number ``z`` takes ``z * sqrt(se_a**2 + se_b**2)`` (accuracy)."""
    return [OBJECTIVES[name].z if name in OBJECTIVES else None for name in names]


def noisy_front(frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str]) -> list[int]:
    """Positions in ``frame`` of its front where noise cannot decide: :func:`spreads` combined by
    :func:`spread_rules` (:func:`search.results.front.pareto_front`). The one rule ``front.json``,
    the report and the progress line count by."""
    if not len(frame):
        return []
    values = frame[list(names)].astype(float).to_numpy()
    return pareto_front(values, directions, spreads(frame, names), spread_rules(names))


def front_summary(frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str],
                  reference: Sequence[float] | None = None, *, all_trials: bool = False,
                  running: int = 0) -> dict[str, Any]:
    """The front of the ok trials of ``frame`` that are not marked infeasible (all ok trials with
    ``all_trials``), with its hypervolume; what ``front.json`` holds.

    Noise cannot decide the front: values within their combined spread (:func:`spreads`: latency's
    IQR, summed; accuracy's standard error, within 1.96 standard errors of the difference) are equal
    (:func:`noisy_front`). ``hypervolume`` is the front's raw volume (the objectives'
    units multiplied, for scripts); ``hypervolume_normalized`` is its share of the box between
    ``reference`` and ``ideal`` (the best value of each objective among these trials), 0 to 1.
    ``running``: trials of the search still running when this was written (0 once it ended).
    """
    ok = frame[(frame["status"] == "ok") & (all_trials | ~infeasible(frame))].reset_index(drop=True)
    values = ok[list(names)].astype(float).to_numpy() if len(ok) else []
    reference = list(reference) if reference is not None else default_reference(ok, names, directions)
    index = noisy_front(ok, names, directions)
    front = ok.iloc[index]
    front_values = front[list(names)].astype(float).to_numpy() if len(front) else []
    ideal = ideal_point(values, directions) if len(ok) else None
    return {
        "objectives": [{"name": n, "direction": d} for n, d in zip(names, directions)],
        "reference": reference,
        "ideal": ideal,
        "hypervolume": hypervolume(front_values, directions, reference) if len(front) else 0.0,
        "hypervolume_normalized": (normalized_hypervolume(front_values, directions, reference, ideal)
                                   if len(front) else 0.0),
        "trials_finished": int(len(frame)),
        "running": int(running),
        "trials": [
            {"trial_id": row["trial_id"], "pipeline": row["pipeline"], **{n: float(row[n]) for n in names},
             **seeds(row, names), **errors(row), **deployment(row), **latency_target(row)}
            for _, row in front.iterrows()
        ],
    }


def seeds(row: pd.Series, names: Sequence[str]) -> dict[str, Any]:
    """``{"repeats": k, "<name>_std": ...}`` of a trial whose values are means over k > 1 seeds; empty otherwise."""
    k = row.get(REPEATS)
    if k is None or pd.isna(k) or int(k) <= 1:
        return {}
    spread = {std_column(n): float(row[std_column(n)]) for n in names
              if std_column(n) in row and not pd.isna(row[std_column(n)])}
    return {REPEATS: int(k), **spread}


def errors(row: pd.Series) -> dict[str, float]:
    """``{"accuracy_se": ..., "accuracy_n": ...}``: the error bar the front judged the trial's accuracy
    with (ARCHITECTURE.md, error bar); empty for a row without one (a run from before)."""
    out = {}
    for name in ("accuracy_se", "accuracy_n"):
        value = row.get(name)
        if value is not None and not pd.isna(value):
            out[name] = float(value) if name == "accuracy_se" else int(value)
    return out


def latency_target(row: pd.Series) -> dict[str, Any]:
    """``{"latency_target_ms": ..., "latency_met": ...}`` of a trial pruned to a latency target; empty
    for a trial without one (pruned to sparsities, or from a run before latency targets).

    The target is the one of the trial's last pruning stage that had one (its ``stage.<slot>.latency_target_ms``
    column: ``P1``, ``P1.2``, ``P2``, ... in pipeline order), the stage closest to the benchmark; it is
    met when the benchmark's measured ``latency_ms`` is at most :data:`LATENCY_TARGET_TOLERANCE` times it
    (``latency_met`` None where the trial has no measured latency).

    Example:
        >>> latency_target(pd.Series({"latency_ms": 3.3, "stage.P2.latency_target_ms": 3.1}))
        {'latency_target_ms': 3.1, 'latency_met': True}
        >>> latency_target(pd.Series({"latency_ms": 3.3}))
        {}
    """
    found = []
    for column in row.index:
        match = _TARGET_COLUMN.fullmatch(str(column))
        value = row[column] if match else None
        if match and value is not None and not pd.isna(value):
            found.append(((int(match[1]), int(match[2] or 1)), float(value)))
    if not found:
        return {}
    target = max(found)[1]
    measured = row.get("latency_ms")
    met = None if measured is None or pd.isna(measured) else bool(float(measured) <= target * LATENCY_TARGET_TOLERANCE)
    return {TARGET_METRIC: target, "latency_met": met}


def infeasible(frame: pd.DataFrame) -> pd.Series:
    """Rows whose ``feasible`` column says False (a column read back from CSV may hold text)."""
    if "feasible" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["feasible"].map(lambda v: v is False or str(v).lower() == "false")


def deployment(row: pd.Series) -> dict[str, Any]:
    """What a trial was deployed as: its ``precision`` (``fp32``, ``fp16``, ``int8``) next to its
    nominal ``sparsity``, and for INT8 whether it ``ran_in_float``: the engine ran none of its layers
    with integer kernels (a backend that ignores QDQ nodes); None where that was not checked."""
    def value(name: str) -> Any:
        v = row.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    precision = value("precision") or value("latency_precision") or "fp32"
    out: dict[str, Any] = {"precision": str(precision), "sparsity": value("sparsity")}
    if out["sparsity"] is not None:
        out["sparsity"] = float(out["sparsity"])
    if precision == "int8":
        ops = value("int8_integer_ops")
        out["ran_in_float"] = None if ops is None else int(ops) == 0
    return out
