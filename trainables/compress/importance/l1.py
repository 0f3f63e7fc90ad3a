"""``l1``: a unit's importance is the L1 norm of the weight rows its group's producers spend on it."""

from __future__ import annotations

import torch
from torch import nn

from ..units import UnitGroup, is_depthwise
from . import Importance


class L1Importance(Importance):
    """Per unit of ``group``: the L1 norm of the weight rows its producers spend on it.

    A residual stream's channel counts the rows of every layer adding into it, so a group's
    units are ranked as one (Torch-Pruning's group magnitude importance, summed over producers);
    depthwise filters and BatchNorms are not counted. Returns a CPU float tensor of ``group.size``.

    Example:
        >>> from trainables.models import build_model
        >>> from trainables.compress.units import unit_groups
        >>> model = build_model("small_resnet", 4)
        >>> group = unit_groups(model)[1]
        >>> L1Importance()(model, group).shape == (group.size,)
        True
    """

    name = "l1"

    def __call__(self, model: nn.Module, group: UnitGroup) -> torch.Tensor:
        total = torch.zeros(group.size)
        for gate in group.gates:
            module = model.get_submodule(gate.name)
            if isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module):
                rows = module.weight.detach().flatten(1).abs().sum(dim=1).cpu()
                total += rows[torch.tensor(gate.channels)].view(-1, gate.spread).sum(dim=1)
        return total
