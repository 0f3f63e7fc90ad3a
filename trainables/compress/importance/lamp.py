"""``lamp``: layer-adaptive magnitude (LAMP), a unit's squared L2 norm over the sum of the norms of
the units of its group at least as large."""

from __future__ import annotations

import torch
from torch import nn

from ..units import UnitGroup
from . import Importance, producers, unit_sums


class LAMPImportance(Importance):
    """Per unit of ``group``: its LAMP score among the group's units.

    LAMP (Lee et al., "Layer-adaptive Sparsity for the Magnitude-based Pruning", ICLR 2021, eq. 2):
    with a layer's magnitudes m (here per unit, sorted ascending), unit u scores
    ``m[u] / sum(m[v] for v with m[v] >= m[u])``. Within a group the order is the magnitude order
    (the score rises with m), and multiplying the group's weights by a constant changes nothing;
    what it changes is the scale across groups, so that a global ranking (the allocation,
    :mod:`trainables.stages.allocation`) compares each unit with the rest of its own layer.

    m is Torch-Pruning's ``LAMPImportance`` magnitude on frontier's members: the squared L2 norm of
    the unit's producer rows (``p=2``, squares summed, no root), mean over the producers
    (``group_reduction="mean"``). Units of equal m score alike (each divided by the sum over all of
    them), and a unit of m = 0 (a masked one) scores 0; Torch-Pruning's ``_lamp`` instead breaks
    ties by sort position and divides 0 by 0 in an all-zero tail.

    Written here rather than calling Torch-Pruning's: its importance takes its own dependency-graph
    groups, which frontier does not keep (units are traced once into plain data,
    :mod:`trainables.compress.units`), and its normaliser is a private method; the formula is
    five lines. Returns a CPU float tensor of ``group.size``.

    Example:
        >>> from trainables.models import build_model
        >>> from trainables.compress.units import unit_groups
        >>> model = build_model("small_resnet", 4)
        >>> group = unit_groups(model)[1]
        >>> scores = LAMPImportance()(model, group)
        >>> scores.shape == (group.size,) and bool(scores.max() == 1.0)  # the largest unit: m / m
        True
    """

    name = "lamp"

    @torch.no_grad()
    def __call__(self, model: nn.Module, group: UnitGroup) -> torch.Tensor:
        squares = [unit_sums(module.weight.detach().double().pow(2).flatten(1).sum(dim=1), gate).cpu()
                   for gate, module in producers(model, group)]
        return lamp(torch.stack(squares).mean(dim=0)).float()


def lamp(magnitudes: torch.Tensor) -> torch.Tensor:
    """LAMP scores (Lee et al. 2021, eq. 2) of the 1-D non-negative ``magnitudes`` of one layer:
    each divided by the sum of the magnitudes at least as large (itself included); 0 where that sum is 0.

    Example:
        >>> lamp(torch.tensor([1.0, 3.0, 2.0, 2.0]))
        tensor([0.1250, 1.0000, 0.2857, 0.2857])
    """
    if magnitudes.dim() != 1 or bool((magnitudes < 0).any()):
        raise ValueError(f"magnitudes must be a 1-D non-negative tensor but got shape {tuple(magnitudes.shape)} "
                         f"with minimum {float(magnitudes.min()) if magnitudes.numel() else None}")
    ascending, order = magnitudes.sort()
    at_least = ascending.flip(0).cumsum(0).flip(0)  # at_least[i]: sum of ascending[i:]
    first = torch.searchsorted(ascending, ascending, side="left")  # ties share the first one's sum
    denominator = at_least[first]
    scores = torch.zeros_like(magnitudes)
    scores[order] = torch.where(denominator > 0, ascending / denominator.clamp_min(torch.finfo(ascending.dtype).tiny),
                                torch.zeros_like(ascending))
    return scores
