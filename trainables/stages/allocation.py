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
from collections.abc import Mapping
from typing import Literal, get_args

import torch

Allocation = Literal["uniform", "global"]
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
        score = scores[name].float()
        mean = float(score[keep].mean()) if bool(keep.any()) else 0.0
        normalised = score / mean if mean > 0 else torch.ones_like(score)
        candidates += [(float(normalised[i]), name, int(i)) for i in torch.nonzero(keep).flatten()]
    candidates.sort()  # ties: by group name, then unit index, so the result never depends on dict order
    for _, name, _ in candidates:
        if to_prune <= 0:
            break
        if kept[name] > least[name]:
            kept[name] -= 1
            to_prune -= 1
    return kept
