"""Masks as reparametrizations: listing prunable layers, growing masks and making them permanent.

A mask is never a new layer type (ARCHITECTURE.md): it is a ``torch.nn.utils.prune`` hook on an
existing ``Conv2d`` or ``Linear``. Before export every hook is removed with ``prune.remove``,
which folds ``weight_orig * weight_mask`` back into a plain ``weight`` parameter.

The mask primitives the pruners (:mod:`trainables.stages.pruners`) build on live here too: a
magnitude mask to a share of a layer's weights (:func:`prune_to`), the 2:4 pattern along input
channels (:func:`semi_structured_mask`) and adding entries to a mask in place
(:func:`mask_entries`). Masks only grow: a masked entry stays masked.
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


def prune_to(module: nn.Module, sparsity: float) -> None:
    """Mask the smallest-magnitude weights of ``module`` until ``round(sparsity * n)`` are masked.

    Masks only grow: weights already masked stay masked and count toward the target.
    """
    n = module.weight.numel()
    masked = int((module.weight_mask == 0).sum()) if prune.is_pruned(module) else 0
    extra = round(sparsity * n) - masked
    if extra > 0:
        prune.l1_unstructured(module, "weight", amount=extra)


def semi_structured_mask(weight: torch.Tensor, zeros: int = 2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bool keep mask of ``weight``'s shape masking ``zeros`` of every 4 consecutive input channels.

    Groups run along dim 1, the input channels of a conv weight [out, in, kh, kw] (one group per
    4 inputs at every (out, kh, kw)) or the inputs of a Linear weight [out, in]; in each group the
    ``zeros`` smallest magnitudes are masked. Entries already 0 in ``mask`` rank lowest and stay
    masked, so masks only grow. Hand-written: torch's ``to_sparse_semi_structured`` needs CUDA and
    groups along a 2-D matrix's last dim, while TensorRT's sparse convs group input channels.

    Args:
        weight: a weight whose dim 1 is a multiple of 4.
        zeros: entries masked per group of 4, 0 to 4 (2 for the 2:4 pattern).
        mask: the current mask (1/True = kept), or None.

    Raises:
        ValueError: dim 1 of ``weight`` not a multiple of 4, or ``zeros`` outside 0..4.
    """
    if weight.dim() < 2 or weight.shape[1] % 4:
        raise ValueError(
            f"weight must have input channels (dim 1) in multiples of 4 but got shape {tuple(weight.shape)}"
        )
    if not 0 <= zeros <= 4:
        raise ValueError(f"zeros must be in 0..4 but got {zeros}")
    score = weight.detach().abs()
    if mask is not None:
        score = score.masked_fill(mask == 0, -1.0)
    moved = score.movedim(1, -1)  # [..., in]: groups of 4 consecutive input channels last
    groups = moved.reshape(*moved.shape[:-1], -1, 4)
    lowest = groups.argsort(dim=-1)[..., :zeros]
    drop = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True)
    keep = ~drop.reshape(moved.shape).movedim(-1, 1)
    return keep if mask is None else keep & (mask != 0)


def mask_entries(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Mask ``module.<name>`` where ``keep`` is False, adding to any mask it already has.

    The first mask is a ``prune.custom_from_mask`` reparametrization; later ones multiply into
    its ``<name>_mask`` buffer in place: another ``custom_from_mask`` would stack a full-size
    copy of the mask in a ``PruningContainer`` at every mask update.
    """
    mask = getattr(module, f"{name}_mask", None)
    if mask is None:
        prune.custom_from_mask(module, name, mask=keep.clone())
        return
    mask.mul_(keep.to(mask.dtype))
    setattr(module, name, getattr(module, f"{name}_orig") * mask)  # what the pre-forward hook computes
