"""The Pareto front of a run and its hypervolume.

:func:`pareto_front` keeps the non-dominated points under per-objective directions;
:func:`hypervolume` measures the region they dominate up to a reference point, exactly, by
slicing along the last objective (the HSO algorithm of While et al., 2006). Optuna has its own
hypervolume, but it is private (``optuna._hypervolume``), and the project does not depend on
private APIs it can avoid (ARCHITECTURE.md, stack facts), so this small exact version is ours;
fronts here hold tens of points.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Directions = Sequence[str]  # "max" or "min", one per objective


def _as_minimization(values, directions: Directions) -> np.ndarray:
    points = np.asarray(values, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"values must be a 2-D array (points x objectives), got shape {points.shape}")
    if points.shape[1] != len(directions):
        raise ValueError(f"values have {points.shape[1]} objectives but directions has {len(directions)}")
    for d in directions:
        if d not in ("max", "min"):
            raise ValueError(f"directions must be 'max' or 'min' but got {d!r}")
    signs = np.array([-1.0 if d == "max" else 1.0 for d in directions])
    return points * signs


def pareto_front(values, directions: Directions) -> list[int]:
    """Indices of the non-dominated rows of ``values``, in their original order.

    A row dominates another when it is no worse in every objective and better in at least one.
    Duplicated rows are all kept (none dominates the other).

    Example:
        >>> pareto_front([[0.9, 10], [0.8, 5], [0.7, 8]], ["max", "min"])
        [0, 1]
    """
    points = _as_minimization(values, directions)
    keep = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))
        if not dominated:
            keep.append(i)
    return keep


def hypervolume(values, directions: Directions, reference: Sequence[float]) -> float:
    """Volume dominated by ``values`` and bounded by ``reference`` (in the objectives' own units).

    Points that do not strictly dominate the reference contribute nothing.

    Example:
        >>> hypervolume([[1, 2], [2, 1]], ["min", "min"], [3, 3])
        3.0
    """
    points = _as_minimization(values, directions)
    ref = _as_minimization([reference], directions)[0]
    points = points[np.all(points < ref, axis=1)]
    if len(points) == 0:
        return 0.0
    return float(_hso(points[pareto_front(points, ["min"] * points.shape[1])], ref))


def _hso(points: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of minimisation ``points`` (all strictly below ``ref``) by slicing the last axis."""
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    order = np.argsort(points[:, -1])
    points = points[order]
    volume = 0.0
    for i in range(len(points)):
        upper = points[i + 1, -1] if i + 1 < len(points) else ref[-1]
        depth = upper - points[i, -1]
        if depth > 0:
            volume += depth * _hso(points[: i + 1, :-1], ref[:-1])
    return volume
