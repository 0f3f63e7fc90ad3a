"""``taylor``: a unit's importance is the first-order Taylor estimate of the loss change its removal
makes, |w * dL/dw| over its producers' rows, on a few batches of training data."""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import torch
from torch import nn
from torch.nn import functional as F

from ..units import UnitGroup, is_depthwise
from . import Importance, producers, unit_sums


class TaylorImportance(Importance):
    """Per unit of ``group``: sum of |w * g| over its producers' rows, mean over the producers.

    First-order Taylor importance (Molchanov et al., "Importance Estimation for Neural Network
    Pruning", CVPR 2019, eq. 3 and 8: removing a parameter w changes the loss by about
    |g * w|, g = dL/dw; a filter's importance sums its parameters'), as Torch-Pruning's
    ``GroupTaylorImportance`` computes it (``multivariable=False``: |w * g| summed over a row;
    ``group_reduction="mean"`` over the group's members; no normaliser, the global allocation
    normalises). g is the gradient of the mean cross-entropy of each batch, summed over the
    ``batches`` batches :meth:`observe` receives, as Torch-Pruning's recipe accumulates
    ``loss.backward()`` over a few batches before it scores.

    The members are the group's producers (the ``Conv2d``/``Linear`` rows that make the unit, as
    ``l1`` counts them), not the readers' columns and BatchNorms Torch-Pruning's group also holds;
    its Taylor score skips BatchNorms anyway (it tests for GroupNorm's pruning function).

    Under a mask (``weight = weight_orig * weight_mask``) the gradient is taken with respect to the
    parameter ``weight_orig`` and multiplied by the effective (masked) ``weight``: with a 0/1 mask
    that equals |w * dL/dw| of the effective weight, and a masked entry scores 0.

    :meth:`observe` runs the forward with the whole model in eval mode (BatchNorm on its running
    statistics, dropout off: no statistic changes, no random number drawn) and takes the gradient
    by ``torch.autograd.grad``, so no ``.grad`` is left; parameters that do not require gradients
    are switched on for it and back off; every module's train/eval flag is put back. Scoring
    needs an :meth:`observe` on the same model first (the pruner calls it once per mask update).

    Args:
        batches: how many batches of training data each :meth:`observe` uses (>= 1; default 4).

    Example:
        >>> from trainables.models import build_model
        >>> from trainables.compress.units import unit_groups
        >>> model = build_model("small_resnet", 4)
        >>> group = unit_groups(model)[1]
        >>> taylor = TaylorImportance(batches=1)
        >>> taylor.observe(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 3]))])
        >>> taylor(model, group).shape == (group.size,)
        True
    """

    name = "taylor"
    batches = 4

    def __init__(self, batches: int = 4) -> None:
        if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
            raise ValueError(f"batches must be an int >= 1 but got {batches!r}")
        self.batches = batches
        self._grads: dict[str, torch.Tensor] = {}
        self._model: weakref.ref[nn.Module] | None = None

    def observe(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """Keep dL/dw of every conv/linear weight of ``model``: the cross-entropy's gradient summed
        over ``batches`` (``(x, y)``: model inputs and int64 labels on the model's device).

        Raises:
            ValueError: ``batches`` yielded no batch.
        """
        leaves = {name: _leaf(module) for name, module in model.named_modules()
                  if isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module)}
        modes = [(module, module.training) for module in model.modules()]
        switched = [p for p in leaves.values() if not p.requires_grad]
        sums = {name: torch.zeros_like(p, dtype=torch.float32) for name, p in leaves.items()}
        seen = 0
        try:
            model.eval()
            for p in switched:
                p.requires_grad_(True)
            with torch.enable_grad():
                for x, y in batches:
                    loss = F.cross_entropy(model(x).float(), y)
                    grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
                    for name, grad in zip(leaves, grads):
                        if grad is not None:
                            sums[name] += grad.float()
                    seen += 1
        finally:
            for p in switched:
                p.requires_grad_(False)
            for module, mode in modes:
                module.training = mode
        if seen == 0:
            raise ValueError("taylor: batches yielded no (x, y) batch; it needs at least one of the training data")
        self._grads, self._model = sums, weakref.ref(model)

    @torch.no_grad()
    def __call__(self, model: nn.Module, group: UnitGroup) -> torch.Tensor:
        if self._model is None or self._model() is not model:
            raise RuntimeError("taylor: observe(model, batches) must run on this model before its groups are "
                               "scored (the pruner calls it once per mask update)")
        scores = []
        for gate, module in producers(model, group):
            grad = self._grads.get(gate.name)
            if grad is None or grad.shape != module.weight.shape:
                raise RuntimeError(f"taylor: no gradient of '{gate.name}' {tuple(module.weight.shape)} from the "
                                   "last observe; the model changed since")
            rows = (module.weight.detach().float() * grad).abs().flatten(1).sum(dim=1)
            scores.append(unit_sums(rows, gate).cpu())
        return torch.stack(scores).mean(dim=0)


def _leaf(module: nn.Module) -> nn.Parameter:
    """The parameter a conv/linear weight is computed from: ``weight_orig`` under a mask, else ``weight``."""
    return module.weight_orig if hasattr(module, "weight_mask") else module.weight
