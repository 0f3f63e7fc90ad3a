"""The Pareto front of a run and its hypervolume.

:func:`pareto_front` keeps the non-dominated points under per-objective directions;
:func:`hypervolume` measures the region they dominate up to a reference point, exactly, by
slicing along the last objective (the HSO algorithm of While et al., 2006), raw and as a share of
the reference box (:func:`normalized_hypervolume`). A measured objective's noise (latency's
spread, accuracy's standard error) can make two values equal to :func:`pareto_front`, so noise
cannot decide the front. Optuna has its own hypervolume, but it is private
(``optuna._hypervolume``), and the project does not depend on private APIs it can avoid
(ARCHITECTURE.md, stack facts), so this small exact version is ours; fronts here hold tens of points.
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


def pareto_front(values, directions: Directions, spread=None, z: Sequence[float | None] | None = None) -> list[int]:
    """Indices of the non-dominated rows of ``values``, in their original order.

    A row dominates another when it is no worse in every objective and better in at least one; the
    front is every row that no row of the front dominates (:func:`_kernel`: with noise, a row
    dominated only by rows that are themselves off the front stays on it). Duplicated rows are all
    kept (none dominates the other).

    ``spread`` (same shape as ``values``, each objective's measurement noise in its own unit; 0 or
    NaN: exact) makes noise unable to decide the front: two values of an objective whose distance is
    at most the sum of their spreads are *equal* in it (neither better nor worse). So a trial whose
    only advantage over another is a latency lower by less than their combined spread is dominated
    when it is worse in anything else. Without ``spread`` this is the plain definition.

    ``z`` (one entry per objective, :attr:`trainables.objectives.ObjectiveInfo.z`) says how an
    objective's spreads combine: None (the default for all) is the sum above, for a spread that is a
    range (latency's IQR); a number makes the spread a standard error, and two values are equal when
    they differ by at most ``z * sqrt(se_a**2 + se_b**2)``, ``z`` standard errors of their
    difference (accuracy: 1.96, the two-sided two-proportion test at 5%).

    Example:
        >>> pareto_front([[0.9, 10], [0.8, 5], [0.7, 8]], ["max", "min"])
        [0, 1]
        >>> pareto_front([[0.9, 0.29], [0.8, 0.23]], ["max", "min"], spread=[[0, 0.04], [0, 0.03]])
        [0]
        >>> pareto_front([[0.905, 0.29], [0.90, 0.23]], ["max", "min"], spread=[[0.012, 0], [0.012, 0]], z=[1.96, None])
        [1]
    """
    points = _as_minimization(values, directions)
    noise = _noise(spread, points.shape, "spread")
    rules = _rules(z, points.shape[1])
    dominators = [set(np.flatnonzero(_dominating(points, noise, p, noise[i], rules)).tolist())
                  for i, p in enumerate(points)]
    return _kernel(dominators)


def dominators(values, directions: Directions, point, spread=None, point_spread=None,
               z: Sequence[float | None] | None = None) -> list[int]:
    """Indices of the rows of ``values`` that dominate ``point`` (one row of the same objectives),
    under the rule :func:`pareto_front` applies: values within their combined spread are equal, so a
    point better than a row only within noise, and worse beyond it in another objective, is dominated. ``spread`` (the shape of ``values``) and
    ``point_spread`` (one entry per objective) default to exact; ``z`` as in :func:`pareto_front`.

    Example:
        >>> dominators([[0.9, 10], [0.8, 5], [0.95, 20]], ["max", "min"], [0.85, 12])
        [0]
        >>> dominators([[0.9, 0.29]], ["max", "min"], [0.85, 0.27])  # exact: faster, not dominated
        []
        >>> dominators([[0.9, 0.29]], ["max", "min"], [0.85, 0.27], spread=[[0, 0.03]], point_spread=[0, 0.03])  # faster within noise
        [0]
    """
    points = _as_minimization(values, directions)
    p = _as_minimization([point], directions)[0]
    noise = _noise(spread, points.shape, "spread")
    p_noise = _noise(None if point_spread is None else [point_spread], (1, points.shape[1]), "point_spread")[0]
    return np.flatnonzero(_dominating(points, noise, p, p_noise, _rules(z, points.shape[1]))).tolist()


def _noise(spread, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``spread`` as an array of ``shape`` (NaN: exact, 0); zeros for None."""
    if spread is None:
        return np.zeros(shape)
    noise = np.nan_to_num(np.asarray(spread, dtype=float), nan=0.0)
    if noise.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of values {tuple(shape)}, got {noise.shape}")
    if np.any(noise < 0):
        raise ValueError(f"{name} must be >= 0 (or NaN for unmeasured)")
    return noise


def _rules(z: Sequence[float | None] | None, objectives: int) -> list[float | None]:
    rules = [None] * objectives if z is None else list(z)
    if len(rules) != objectives:
        raise ValueError(f"z must have one entry per objective ({objectives}), got {len(rules)}")
    return rules


def _dominating(points: np.ndarray, noise: np.ndarray, p: np.ndarray, p_noise: np.ndarray,
                rules: list[float | None]) -> np.ndarray:
    """A mask of the minimisation ``points`` that dominate ``p`` beyond their combined spread."""
    summed = np.array([r is None for r in rules])
    zs = np.array([0.0 if r is None else float(r) for r in rules])
    # the combined spread of p and each row: a sum of ranges, or z standard errors of a difference
    tolerance = np.where(summed, noise + p_noise, zs * np.sqrt(noise ** 2 + p_noise ** 2))
    equal = np.abs(points - p) <= tolerance
    no_worse = np.all((points <= p) | equal, axis=1)
    better = np.any((points < p) & ~equal, axis=1)
    return no_worse & better


def _kernel(dominators: list[set[int]]) -> list[int]:
    """The rows no row *of the front* dominates, ``dominators[i]`` being the rows that dominate row i.

    Within noise, dominance is not transitive: take a, b, c ever smaller, b's accuracy equal to a's
    within their errors and c's equal to b's, but a more accurate than c beyond theirs. Then b
    dominates a and c dominates b, yet nothing dominates a but b. Dropping every dominated row would
    leave c alone, a front claiming c is as accurate as a; here b is off (c dominates it) and a,
    dominated only by a row off the front, stays. Rows are decided once every row dominating them
    is: a row is on the front unless a row on the front dominates it (the kernel of the dominance
    graph). Without noise dominance is transitive and this is the plain front. Rows that dominate
    each other in a cycle (possible with three noisy objectives) are decided together, each on the
    front unless a row already on it dominates it.
    """
    on_front: dict[int, bool] = {}
    pending = set(range(len(dominators)))
    while pending:
        ready = [i for i in pending if dominators[i] <= on_front.keys()] or sorted(pending)  # a cycle: all at once
        for i in ready:
            on_front[i] = not any(on_front.get(q, False) for q in dominators[i])
        pending.difference_update(ready)
    return [i for i in range(len(dominators)) if on_front[i]]


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


def ideal_point(values, directions: Directions) -> list[float]:
    """The best value of each objective over ``values`` (its max or min), in the objectives' units."""
    points = np.asarray(values, dtype=float)
    return [float(points[:, k].max() if d == "max" else points[:, k].min()) for k, d in enumerate(directions)]


def normalized_hypervolume(values, directions: Directions, reference: Sequence[float],
                           ideal: Sequence[float]) -> float:
    """Hypervolume of ``values`` as a share of the reference box, in [0, 1].

    The reference box spans the reference point and ``ideal`` (usually :func:`ideal_point` of the
    run's trials); each objective is rescaled so the box is the unit cube, so 1 would be one trial
    at the ideal in every objective and 0 nothing dominating the reference. Raw hypervolume (in
    accuracy x bytes x ms) depends on units; this does not. A box flat in some objective is 0.

    Example:
        >>> normalized_hypervolume([[1, 2], [2, 1]], ["min", "min"], [3, 3], [1, 1])
        0.75
    """
    box = np.abs(np.asarray(ideal, dtype=float) - np.asarray(reference, dtype=float))
    if len(values) == 0 or np.any(box == 0) or not np.all(np.isfinite(box)):
        return 0.0
    return float(min(1.0, hypervolume(values, directions, reference) / float(np.prod(box))))


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
