"""Gating units by forward hooks: the sub-networks of unit states, run without copying a weight.

A unit (:mod:`trainables.compress.units`) is silenced by multiplying its channel at the output of
every *gate* member of its group (producers, BatchNorms, depthwise convs) by 0. :func:`gated_states`
runs one or S candidate states at once (EPruning's population, :mod:`trainables.stages.population`);
:func:`expanded` repeats the batch where the first gated module's block begins, so the part before
it runs once for all S; :func:`trainables.compress.surgery.gated` is the same hooks for keep masks
by group name.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from .units import UnitGroup, channel_count


def split_states(states: torch.Tensor, groups: Sequence[UnitGroup]) -> list[torch.Tensor]:
    """Cut ``(S, D)`` states into one ``(S, size)`` float mask per unit group, in order."""
    sizes = [g.size for g in groups]
    if states.shape[-1] != sum(sizes):
        raise ValueError(f"states have {states.shape[-1]} units but the groups have {sum(sizes)}")
    return list(torch.split(states.float(), sizes, dim=-1))


@contextmanager
def gated_states(model: nn.Module, groups: Sequence[UnitGroup], states: torch.Tensor,
                 expand: bool = False) -> Iterator[None]:
    """Inside the block, ``model`` runs the sub-networks of ``states`` (``(S, D)`` or ``(D,)``).

    Each gate module's output is multiplied by a scale over its channels made of its groups'
    unit masks: with S states, a batch of ``S * B`` holds candidate k's samples at
    ``[k * B, (k + 1) * B)``. With ``expand``, the batch of B given to the model is repeated S
    times at the input of the first gate's block (the part of the network before it runs once).
    Hooks are removed on exit.
    """
    states = states.reshape(-1, states.shape[-1]) if states.dim() == 1 else states
    count = states.shape[0]
    device = next(model.parameters()).device
    masks = split_states(states.to(device), groups)
    handles = []
    try:
        with expanded(model, groups, count if expand else 1):
            for name, scale in _gate_scales(model, groups, masks, count, device).items():
                module = model.get_submodule(name)
                dim = -1 if isinstance(module, nn.Linear) else 1
                handles.append(module.register_forward_hook(_mask_hook(scale, dim)))
            yield
    finally:
        for handle in handles:
            handle.remove()


def _gate_scales(model: nn.Module, groups: Sequence[UnitGroup], masks: Sequence[torch.Tensor], count: int,
                 device: torch.device) -> dict[str, torch.Tensor]:
    """Gate module name -> ``(S, channels)`` scale: 1, except its groups' unit masks at their channels."""
    scales: dict[str, torch.Tensor] = {}
    for group, mask in zip(groups, masks):
        for gate in group.gates:
            scale = scales.get(gate.name)
            if scale is None:
                width = channel_count(model.get_submodule(gate.name), "out")
                scale = scales[gate.name] = torch.ones(count, width, device=device)
            scale[:, torch.tensor(gate.channels, device=device)] = gate.per_channel(mask)
    return scales


@contextmanager
def expanded(model: nn.Module, groups: Sequence[UnitGroup], count: int) -> Iterator[None]:
    """Inside the block, ``model`` repeats its batch ``count`` times where the first gate's block begins.

    The part of the network before that point runs once; the hook is removed on exit. Without
    masks, this is the dense forward that the batched evaluator masks: its floor
    (:class:`~trainables.stages.population.BatchedEvaluator`).
    """
    if count <= 1:
        yield
        return
    repeat = lambda _m, args: (args[0].repeat(count, *[1] * (args[0].dim() - 1)), *args[1:])  # noqa: E731
    first = min(groups, key=lambda g: g.order).first
    handle = _expansion_point(model, first).register_forward_pre_hook(repeat)
    try:
        yield
    finally:
        handle.remove()


def _mask_hook(scale: torch.Tensor, dim: int):
    """Multiply the output's channel axis ``dim`` (1, or -1 for a Linear) by ``scale``, per candidate."""

    def hook(_module: nn.Module, _args, out: torch.Tensor) -> torch.Tensor:
        count = scale.shape[0]
        shaped = out.reshape(count, out.shape[0] // count, *out.shape[1:])
        view = [count] + [1] * (out.dim())
        view[dim if dim < 0 else dim + 1] = scale.shape[1]
        factor = scale.reshape(view).to(out.dtype)
        if torch.is_grad_enabled():
            return (shaped * factor).reshape(out.shape)
        # Without autograd the gate's fresh output is ours to overwrite: one pass, no new tensor.
        return shaped.mul_(factor).reshape(out.shape)

    return hook


def _expansion_point(model: nn.Module, first_gate: str) -> nn.Module:
    """The innermost module holding ``first_gate`` whose input is the only tensor flowing there.

    A child of an ``nn.Sequential`` receives everything that flows at its position, so
    repeating its input repeats the whole computation after it (for a ResNet: the residual
    block holding the first gate, whose identity path then sees the repeated batch too).
    Without such an ancestor, the model's own input is repeated.
    """
    parts = first_gate.split(".")
    for depth in range(len(parts), 0, -1):
        parent = model.get_submodule(".".join(parts[: depth - 1])) if depth > 1 else model
        if isinstance(parent, nn.Sequential):
            return parent.get_submodule(parts[depth - 1])
    return model
