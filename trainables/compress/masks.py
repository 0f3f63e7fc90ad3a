"""Masks as reparametrizations: listing prunable layers and making masks permanent.

A mask is never a new layer type (ARCHITECTURE.md): it is a ``torch.nn.utils.prune`` hook on an
existing ``Conv2d`` or ``Linear``. Before export every hook is removed with ``prune.remove``,
which folds ``weight_orig * weight_mask`` back into a plain ``weight`` parameter.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.utils import prune

PRUNABLE = (nn.Conv2d, nn.Linear)


def prunable_layers(
    model: nn.Module, *, skip_first: bool = True, skip_last: bool = True
) -> list[tuple[str, nn.Module]]:
    """The ``Conv2d``/``Linear`` modules of ``model`` in definition order.

    Args:
        model: any torch module.
        skip_first: leave out the first prunable layer (the input conv), as the pruning-order
            paper does ("we prune all layers except the first input layer and the last fully
            connected layer", sec. 3.1).
        skip_last: leave out the last prunable layer (the classifier head; SqueezeNet's final
            1x1 conv).
    """
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    start = 1 if skip_first else 0
    end = len(layers) - 1 if skip_last else len(layers)
    return layers[start:end]


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove every pruning reparametrization in place, keeping the masked values; returns ``model``."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def is_masked(model: nn.Module) -> bool:
    """True while any module of ``model`` still carries a pruning mask."""
    return prune.is_pruned(model)


@contextmanager
def sparsity_kept(model: nn.Module) -> Iterator[nn.Module]:
    """Keep the zeros of already-sparse layers at zero while ``model`` trains inside the block.

    Each ``Conv2d``/``Linear`` weight that has zeros gets a mask of its nonzeros
    (``prune.custom_from_mask``); on exit every mask is made permanent. A pruned model that is
    transferred (the ``T`` of ``D|50|T``) stays exactly as sparse as it came in.

    Dead units stay dead too: a BatchNorm channel whose ``weight`` (gamma) and ``bias`` (beta) are
    both 0, and a conv/linear output whose weight row and bias are all 0, get masks on those
    entries; otherwise beta or the bias would train away from 0 and revive a unit that channel
    pruning removed (:mod:`trainables.compress.surgery` would then no longer find it dead).
    """
    for _, module in prunable_layers(model, skip_first=False, skip_last=False):
        if not prune.is_pruned(module) and bool((module.weight == 0).any()):
            prune.custom_from_mask(module, "weight", mask=module.weight != 0)
    _keep_dead_units(model)
    try:
        yield model
    finally:
        make_permanent(model)


def _keep_dead_units(model: nn.Module) -> None:
    """Mask the gamma/beta of dead BatchNorm channels and the bias of all-zero conv/linear rows."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
            dead = (module.weight == 0) & (module.bias == 0)
            names = ("weight", "bias")
        elif isinstance(module, PRUNABLE) and module.bias is not None:
            dead = (module.weight.flatten(1) == 0).all(dim=1) & (module.bias == 0)
            names = ("bias",)  # the row's weights are kept at zero by the weight mask already
        else:
            continue
        if not bool(dead.any()):
            continue
        for name in names:
            if not hasattr(module, f"{name}_mask"):
                prune.custom_from_mask(module, name, mask=~dead)


def zero_fraction(modules: list[nn.Module]) -> float:
    """Share of exactly-zero weights over the ``weight`` tensors of ``modules`` (masks applied)."""
    total = sum(m.weight.numel() for m in modules)
    zeros = sum(int((m.weight == 0).sum()) for m in modules)
    return zeros / total if total else 0.0


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU, in eval mode, with its pruning masks made permanent.

    ``copy.deepcopy`` alone fails on a masked model: the hook's computed ``weight`` is a non-leaf
    tensor (``weight_orig * weight_mask``), which torch refuses to deep-copy. Such tensors are
    copied detached; the hook recomputes them anyway and ``make_permanent`` folds them in.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return make_permanent(copy.deepcopy(model, memo)).cpu().eval()
