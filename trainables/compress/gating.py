"""Gating units by forward hooks: the sub-networks of unit states, run without copying a weight.

A unit (:mod:`trainables.compress.units`) is silenced by multiplying its gate module's output
channel by 0. :func:`gated_states` runs one or S candidate states at once (EPruning's population,
:mod:`trainables.stages.population`); :func:`expanded` repeats the batch where the first unit
layer's block begins, so the part before it runs once for all S; :func:`trainables.compress.surgery.gated`
is the same hooks for keep masks by layer name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .units import UnitLayer


def split_states(states: torch.Tensor, layers: Sequence[UnitLayer]) -> list[torch.Tensor]:
    """Cut ``(S, D)`` states into one ``(S, size)`` float mask per unit layer, in order."""
    sizes = [u.size for u in layers]
    if states.shape[-1] != sum(sizes):
        raise ValueError(f"states have {states.shape[-1]} units but the layers have {sum(sizes)}")
    return list(torch.split(states.float(), sizes, dim=-1))


@contextmanager
def gated_states(model: nn.Module, layers: Sequence[UnitLayer], states: torch.Tensor,
                 expand: bool = False) -> Iterator[None]:
    """Inside the block, ``model`` runs the sub-networks of ``states`` (``(S, D)`` or ``(D,)``).

    Each gate's output is multiplied by its unit mask: with S states, a batch of ``S * B`` holds
    candidate k's samples at ``[k * B, (k + 1) * B)``. With ``expand``, the batch of B given to
    the model is repeated S times at the input of the first unit layer's block (the part of the
    network before it runs once). Hooks are removed on exit.
    """
    states = states.reshape(-1, states.shape[-1]) if states.dim() == 1 else states
    count = states.shape[0]
    masks = split_states(states.to(next(model.parameters()).device), layers)
    handles = []
    try:
        with expanded(model, layers, count if expand else 1):
            for layer, mask in zip(layers, masks):
                handles.append(model.get_submodule(layer.gate).register_forward_hook(_mask_hook(mask)))
            yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def expanded(model: nn.Module, layers: Sequence[UnitLayer], count: int) -> Iterator[None]:
    """Inside the block, ``model`` repeats its batch ``count`` times where the first unit layer's block begins.

    The part of the network before that point runs once; the hook is removed on exit. Without
    masks, this is the dense forward that the batched evaluator masks: its floor
    (:class:`~trainables.stages.population.BatchedEvaluator`).
    """
    if count <= 1:
        yield
        return
    repeat = lambda _m, args: (args[0].repeat(count, *[1] * (args[0].dim() - 1)), *args[1:])  # noqa: E731
    handle = _expansion_point(model, layers[0].name).register_forward_pre_hook(repeat)
    try:
        yield
    finally:
        handle.remove()


def _mask_hook(mask: torch.Tensor):
    def hook(_module: nn.Module, _args, out: torch.Tensor) -> torch.Tensor:
        count = mask.shape[0]
        shaped = out.reshape(count, out.shape[0] // count, *out.shape[1:])
        scale = mask.reshape(count, 1, mask.shape[1], *[1] * (out.dim() - 2)).to(out.dtype)
        if torch.is_grad_enabled():
            return (shaped * scale).reshape(out.shape)
        # Without autograd the gate's fresh output is ours to overwrite: one pass, no new tensor.
        return shaped.mul_(scale).reshape(out.shape)

    return hook


def _expansion_point(model: nn.Module, first_unit: str) -> nn.Module:
    """The innermost module holding ``first_unit`` whose input is the only tensor flowing there.

    A child of an ``nn.Sequential`` receives everything that flows at its position, so
    repeating its input repeats the whole computation after it (for a ResNet: the residual
    block holding the first unit conv, whose identity path then sees the repeated batch too).
    Without such an ancestor, the model's own input is repeated.
    """
    parts = first_unit.split(".")
    for depth in range(len(parts), 0, -1):
        parent = model.get_submodule(".".join(parts[: depth - 1])) if depth > 1 else model
        if isinstance(parent, nn.Sequential):
            return parent.get_submodule(parts[depth - 1])
    return model
