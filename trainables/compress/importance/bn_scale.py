"""``bn_scale``: a unit's importance is |gamma|, the scale its group's BatchNorms give it."""

from __future__ import annotations

import torch
from torch import nn

from ..units import UnitGroup
from . import Importance, unit_sums
from .l1 import L1Importance


class BNScaleImportance(Importance):
    """Per unit of ``group``: |gamma| of the BatchNorms among its gates, mean over those BatchNorms.

    Network slimming's channel scaling factor (Liu et al., ICCV 2017, sec. 3.1: the BatchNorm's
    gamma scales the channel's output, so a small |gamma| marks a channel that contributes
    little). Aggregated over the group as Torch-Pruning's ``BNScaleImportance`` aggregates it
    (``p=1``, ``group_reduction="mean"``): each affine BatchNorm of the group adds |gamma| of the
    unit's channels (summed over a unit's channels where it has several), and the sum is divided
    by the number of such BatchNorms; so a residual stream's channel is the mean of its |gamma|
    over every branch adding into it. Under a mask ``module.weight`` is the masked gamma, so a
    masked unit scores 0. No normaliser (Torch-Pruning's default divides by the mean, which does
    not change the order within a group; the global allocation normalises,
    :mod:`trainables.stages.allocation`).

    A group with no affine BatchNorm among its gates (a plain conv, a classifier's hidden layer)
    falls back to ``l1`` (:class:`~trainables.compress.importance.l1.L1Importance`: the L1 norm of
    the producers' rows), so that every group is scored; Torch-Pruning instead leaves such a group
    unpruned. Returns a CPU float tensor of ``group.size``.

    Example:
        >>> from trainables.models import build_model
        >>> from trainables.compress.units import unit_groups
        >>> model = build_model("small_resnet", 4)
        >>> group = unit_groups(model)[1]
        >>> BNScaleImportance()(model, group).shape == (group.size,)
        True
    """

    name = "bn_scale"

    @torch.no_grad()
    def __call__(self, model: nn.Module, group: UnitGroup) -> torch.Tensor:
        scales = []
        for gate in group.gates:
            module = model.get_submodule(gate.name)
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
                scales.append(unit_sums(module.weight.detach().abs().float(), gate).cpu())
        if not scales:
            return L1Importance()(model, group)
        return torch.stack(scales).mean(dim=0)
