"""How many units each unit group keeps at a mask update: the allocation (``prune.allocation``).

The channel pruner (:class:`~trainables.stages.pruners.Channel`) scores every unit of every unit
group (an :class:`~trainables.compress.importance.Importance`) and asks :func:`kept_counts` how
many units of each group stay alive at sparsity s_t; it then masks each group's lowest-scored
alive units down to that count. Two allocations:

- ``uniform`` (the default, and frontier's only one before): every group keeps
  ``size - round(s_t * size)`` units (at least one), whatever its scores.
- ``global``: one ranking across groups, as Torch-Pruning's ``global_pruning`` ranks them:
  ``round(s_t * U)`` of the U units are pruned, the lowest *normalised* scores first, a unit's
  score divided by the mean score of its group's alive units (Torch-Pruning's ``mean``
  normaliser), so that groups whose scores differ in scale (a residual stream summed over many
  producers, a 1x1 bottleneck) are compared by their relative worth. Each group keeps at least
  ``ceil(floor * size)`` units (and one), so that no layer is cut to a sliver.

A third, ``latency``, answers a latency target instead of a share (:func:`latency_counts`): the
kept widths that keep the most normalised importance while a latency model's prediction stays
under the target, found greedily (HALP, Shen et al. NeurIPS 2022, solves the same knapsack of
importance against latency; the greedy takes, at each step, the group whose next aligned step
down loses the least importance per millisecond saved). :func:`counts_for_latency` answers a
latency target with any allocation: ``uniform`` and ``global`` find, by bisection, the least
share s whose counts the model predicts under the target.

Either way a kept count is rounded to a multiple of ``round_to`` (engines prefer aligned widths:
TensorRT's tensor-core kernels multiples of 8, for instance), never below ``round_to`` where the
group has that many units, and never above the units still alive (masks only grow). Rounding moves
the total by less than ``round_to / 2`` units per group. Hand-written rather than Torch-Pruning's
``MetaPruner``: the pruner masks our own unit groups (residual streams and grouped convs as units,
:mod:`trainables.compress.units`) in place on the schedule, while ``MetaPruner`` removes channels
of its own dependency groups at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Literal, get_args

import torch

Allocation = Literal["uniform", "global", "latency"]
ALLOCATIONS: tuple[str, ...] = get_args(Allocation)


def aligned(count: int, size: int, round_to: int) -> int:
    """``count`` units rounded to the nearest multiple of ``round_to``, within ``[round_to, size]``
    (``[1, size]`` when the group is smaller than ``round_to``, or ``round_to`` is 1); a whole
    group (``count >= size``) stays whole.

    Example:
        >>> aligned(13, 64, 8), aligned(3, 64, 8), aligned(5, 6, 8), aligned(13, 64, 1), aligned(70, 70, 8)
        (16, 8, 5, 13, 70)
    """
    if round_to < 1:
        raise ValueError(f"round_to must be >= 1 but got {round_to}")
    if count >= size:
        return size
    if size < round_to or round_to == 1:
        return max(count, 1)
    return min(max(round_to * round(count / round_to), round_to), size - size % round_to)


def kept_counts(
    alive: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    sparsity: float,
    *,
    allocation: str = "uniform",
    floor: float = 0.0,
    round_to: int = 1,
) -> dict[str, int]:
    """How many units each group keeps at ``sparsity`` (the share of all units pruned).

    Args:
        alive: per group name, a bool tensor of its units (True: still alive; masks only grow,
            so no count returned exceeds a group's alive units).
        scores: per group name, one importance score per unit (higher: more important); read for
            ``global`` only.
        sparsity: s_t, in [0, 1).
        allocation: ``uniform`` or ``global`` (see the module doc).
        floor: ``global``'s least kept share of each group, in [0, 1).
        round_to: kept counts are multiples of it (see :func:`aligned`).

    Returns:
        ``{group: kept units}``, each in ``[1, alive units]``.

    Raises:
        ValueError: an unknown ``allocation``, or ``floor`` outside [0, 1).
    """
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)} but got {allocation!r}")
    if allocation == "latency":
        raise ValueError("allocation 'latency' answers a latency target (counts_for_latency), not a sparsity")
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1) but got {floor!r}")
    if allocation == "uniform":
        wanted = {name: len(keep) - min(round(sparsity * len(keep)), len(keep) - 1) for name, keep in alive.items()}
    else:
        wanted = _global_counts(alive, scores, sparsity, floor)
    return {name: min(int(alive[name].sum()), aligned(count, len(alive[name]), round_to))
            for name, count in wanted.items()}


def _global_counts(alive: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor], sparsity: float,
                   floor: float) -> dict[str, int]:
    """Kept units per group under one ranking of normalised scores across groups (module doc)."""
    total = sum(len(keep) for keep in alive.values())
    to_prune = round(sparsity * total) - sum(int((~keep).sum()) for keep in alive.values())
    kept = {name: int(keep.sum()) for name, keep in alive.items()}
    least = {name: max(1, math.ceil(floor * len(keep))) for name, keep in alive.items()}
    candidates = []  # (normalised score, group, unit) of every alive unit
    for name, keep in alive.items():
        normalised = _normalised(scores[name], keep)
        candidates += [(float(normalised[i]), name, int(i)) for i in torch.nonzero(keep).flatten()]
    candidates.sort()  # ties: by group name, then unit index, so the result never depends on dict order
    for _, name, _ in candidates:
        if to_prune <= 0:
            break
        if kept[name] > least[name]:
            kept[name] -= 1
            to_prune -= 1
    return kept


Predict = Callable[[Mapping[str, int]], float]
"""``{group: kept units} -> predicted latency in ms`` (a latency model's ``predict``; groups absent are whole)."""


def counts_for_latency(
    alive: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    predict: Predict,
    target_ms: float,
    *,
    allocation: str = "latency",
    floor: float = 0.1,
    round_to: int = 1,
) -> dict[str, int]:
    """How many units each group keeps so that ``predict`` stays at or under ``target_ms``.

    ``latency``: :func:`latency_counts`. ``uniform`` / ``global``: the :func:`kept_counts` of the
    least sparsity s (bisection to 1e-4, s in [0, 0.999]) whose counts are predicted under the target.
    A target under what the most pruned counts reach returns those counts (the caller measures
    and reports what it got).

    Raises:
        ValueError: an unknown ``allocation``, or ``target_ms`` not > 0.
    """
    if not target_ms > 0:
        raise ValueError(f"target_ms must be > 0 but got {target_ms!r}")
    if allocation == "latency":
        return latency_counts(alive, scores, predict, target_ms, floor=floor, round_to=round_to)
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)} but got {allocation!r}")

    def counts(s: float) -> dict[str, int]:
        return kept_counts(alive, scores, s, allocation=allocation, floor=floor, round_to=round_to)

    low, high = 0.0, 0.999
    if predict(counts(low)) <= target_ms:
        return counts(low)
    while high - low > 1e-4:
        middle = (low + high) / 2
        low, high = (low, middle) if predict(counts(middle)) <= target_ms else (middle, high)
    return counts(high)


def latency_counts(
    alive: Mapping[str, torch.Tensor],
    scores: Mapping[str, torch.Tensor],
    predict: Predict,
    target_ms: float,
    *,
    floor: float = 0.1,
    round_to: int = 1,
) -> dict[str, int]:
    """The ``latency`` allocation: kept counts that keep the most normalised importance while
    ``predict(counts) <= target_ms`` (the knapsack of HALP, Shen et al. 2022, eq. 3, solved greedily).

    Scores are normalised as ``global`` normalises them (divided by the mean of the group's alive
    units), so that a group's units are worth their share of the group. From the alive counts, each
    step takes one group down to its next multiple of ``round_to`` (its lowest-scored alive units
    go): the group whose step loses the least normalised importance per millisecond the model
    predicts it saves (where no step saves time, the one losing the least importance). It stops
    once the prediction is at or under the target, or when every group is at its least
    (``ceil(floor * size)``, at least 1 and at least ``round_to`` where the group has that many).

    Returns:
        ``{group: kept units}``, each in ``[1, alive units]``, multiples of ``round_to`` where pruned.
    """
    if not 0 <= floor < 1:
        raise ValueError(f"floor must be in [0, 1) but got {floor!r}")
    kept = {name: int(keep.sum()) for name, keep in alive.items()}
    worth = {name: _ranked_worth(scores[name], keep) for name, keep in alive.items()}  # best first
    least = {name: min(kept[name], _least(len(keep), floor, round_to)) for name, keep in alive.items()}
    current = predict(kept)
    while current > target_ms:
        best: tuple[float, float, str, int] | None = None  # (loss per ms, -saving, group, next count)
        for name in sorted(kept):
            step = _step_down(kept[name], least[name], round_to)
            if step is None:
                continue
            loss = float(worth[name][step:kept[name]].sum())
            saving = current - predict({**kept, name: step})
            key = (loss / saving if saving > 0 else math.inf, loss if saving <= 0 else -saving, name, step)
            if best is None or key < best:
                best = key
        if best is None:
            break
        kept[best[2]] = best[3]
        current = predict(kept)
    return kept


def _normalised(score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Every unit's score over the mean score of the group's alive units (``keep``); all ones where
    that mean is not positive (Torch-Pruning's ``mean`` normaliser)."""
    score = score.float()
    mean = float(score[keep].mean()) if bool(keep.any()) else 0.0
    return score / mean if mean > 0 else torch.ones_like(score)


def _ranked_worth(score: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """The alive units' normalised scores, highest first (the order a group loses them in reverse)."""
    return torch.sort(_normalised(score, keep)[keep], descending=True).values


def _least(size: int, floor: float, round_to: int) -> int:
    """The fewest units a group of ``size`` keeps: ``ceil(floor * size)``, at least 1, rounded up to a
    multiple of ``round_to`` where the group has that many units."""
    least = max(1, math.ceil(floor * size))
    if size >= round_to > 1:
        least = min(round_to * math.ceil(least / round_to), size)
    return least


def _step_down(count: int, least: int, round_to: int) -> int | None:
    """The next kept count below ``count``: the multiple of ``round_to`` under it, not below ``least``;
    None where there is none."""
    step = (count - 1) // round_to * round_to if round_to > 1 else count - 1
    step = max(step, least)
    return step if step < count else None
