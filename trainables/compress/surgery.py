"""Unit surgery: turn unit masks into a physically smaller network.

A keep mask ``keep: dict[str, BoolTensor]`` maps a unit group's name (see
:func:`trainables.compress.units.unit_groups`) to a bool vector over its units, True = kept; a group left
out of ``keep`` keeps every unit. Three views of the same pruned network, equal on every input:

- **gated**: :func:`gated` multiplies each pruned unit's channel by 0 at the output of every gate
  member of its group (forward hooks; nothing in the weights changes). This is the reference
  semantics, the one EPruning's unit masks use.
- **zeroed**: :func:`zero_units` writes the zeros into the weights (the gates' rows, biases,
  BatchNorm gamma and beta, depthwise filters, and the readers' input columns), so the pruned units
  are dead in the file and :func:`alive_units` can find them again from the weights alone.
- **shrunk**: :func:`shrink` deletes them from every member of the group, residual streams and
  concatenations included, with Torch-Pruning's per-layer pruning functions. Only this one is
  faster on a real engine (ARCHITECTURE.md: "a unit mask can be applied physically").

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=10).eval()
    >>> keep = {"conv1": torch.arange(64) % 2 == 0}   # the first stage's residual stream
    >>> small = shrink(model, keep)
    >>> small.conv1.out_channels, small.layer1[1].conv2.out_channels, small.layer2[0].conv1.in_channels
    (32, 32, 32)
    >>> x = torch.randn(1, 3, 32, 32)
    >>> with gated(model, keep):
    ...     bool((model(x) - small(x)).abs().max() < 1e-4)
    True
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import FrontierError
from .gating import gated_states
from .masks import plain_copy
from .units import Member, UnitGroup, channel_count, is_depthwise, unit_groups

Keep = Mapping[str, torch.Tensor]


def shrink(model: nn.Module, keep: Keep, groups: Sequence[UnitGroup] | None = None) -> nn.Module:
    """A physically smaller copy of ``model`` without the units that ``keep`` prunes.

    The copy (``model`` itself is untouched) has its pruning masks made permanent and keeps the
    original's device and train/eval modes. Every member of a group loses the pruned units'
    channels: a producer its weight rows and bias, a BatchNorm its entries and running
    statistics, a depthwise conv its filters, a reader its input columns (``spread`` per unit
    after a flatten, at their offset inside a concatenation). The module attributes
    (``out_channels``, ``in_features``, ``num_features``, ``groups``) follow, so the modules stay
    plain torch modules that export to ONNX.

    ``shrink(model, keep)(x)`` equals ``model(x)`` computed inside ``gated(model, keep)``.

    Args:
        model: a model whose graph :func:`~trainables.compress.units.unit_groups` can trace.
        keep: unit group name -> bool vector of its ``size`` units, True = keep.
        groups: the groups ``keep`` refers to (default: all of ``model``'s).

    Raises:
        FrontierError: an unknown group name, a vector of the wrong shape or dtype, or a group
            that would lose every unit (surgery refuses it rather than keep one silently:
            :func:`alive_units` already keeps one unit of an all-dead group).
    """
    import torch_pruning as tp

    groups = unit_groups(model) if groups is None else list(groups)
    masks = _resolve(groups, keep, allow_empty=False)
    removed: dict[tuple[str, str], set[int]] = {}
    for group in groups:
        pruned = (~masks[group.name]).nonzero().flatten()
        if pruned.numel():
            for member in group.members:
                removed.setdefault((member.name, member.role), set()).update(member.of(pruned).tolist())
    small = _copy(model)
    for (name, role), channels in removed.items():
        module = small.get_submodule(name)
        _check_width(module, name, role, channels)
        _pruner(tp, module, role)(module, sorted(channels))
    return small


def _pruner(tp, module: nn.Module, role: str):
    """Torch-Pruning's pruning function for ``module``'s ``role`` channels."""
    if is_depthwise(module):
        return tp.prune_depthwise_conv_out_channels
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return tp.prune_batchnorm_out_channels
    if isinstance(module, nn.Conv2d):
        return tp.prune_conv_out_channels if role == "out" else tp.prune_conv_in_channels
    return tp.prune_linear_out_channels if role == "out" else tp.prune_linear_in_channels


def _check_width(module: nn.Module, name: str, role: str, channels: set[int]) -> None:
    width = channel_count(module, role)
    if max(channels) >= width:
        raise FrontierError(f"unit graph: '{name}' has {width} {role}put channels, but a unit needs channel "
                            f"{max(channels)}; the groups were traced on another structure")


@contextmanager
def gated(model: nn.Module, keep: Keep, groups: Sequence[UnitGroup] | None = None) -> Iterator[nn.Module]:
    """Inside the block, ``model``'s pruned units output 0 at every gate of their group.

    This is the reference that :func:`shrink` and :func:`zero_units` must match. Forward hooks on
    the gate modules do the masking; they are removed on exit. A group may lose every unit here.

    Example:
        >>> with gated(model, keep):   # doctest: +SKIP
        ...     reference = model(x)

    Raises:
        FrontierError: an unknown group name, or a vector of the wrong shape or dtype.
    """
    groups = unit_groups(model) if groups is None else list(groups)
    masks = _resolve(groups, keep, allow_empty=True)
    with gated_states(model, groups, torch.cat([masks[g.name] for g in groups])):
        yield model


def zero_units(model: nn.Module, keep: Keep, groups: Sequence[UnitGroup] | None = None) -> nn.Module:
    """Zero the units that ``keep`` prunes in ``model``'s weights, in place; returns ``model``.

    Zeroed, for every member of a pruned unit's group: a gate's weight rows and bias (a
    BatchNorm's gamma and beta, a depthwise conv's filter), and a reader's input weights that read
    it (dead already, zeroed so that the artifact compresses). A pruning-masked tensor is zeroed
    both in ``<name>_orig`` and in the computed ``<name>``. Outputs then equal the gated model's,
    and ``alive_units(model)`` returns ``keep`` (for every group that keeps at least one unit).

    Raises:
        FrontierError: an unknown group name, or a vector of the wrong shape or dtype.
    """
    groups = unit_groups(model) if groups is None else list(groups)
    masks = _resolve(groups, keep, allow_empty=True)
    with torch.no_grad():
        for group in groups:
            pruned = (~masks[group.name]).nonzero().flatten()
            if pruned.numel() == 0:
                continue
            for member in group.members:
                module = model.get_submodule(member.name)
                channels = member.of(pruned)
                if member.role == "out":
                    _zero(module, "weight", channels, dim=0)
                    _zero(module, "bias", channels, dim=0)
                else:  # a grouped conv's weight holds one group's inputs: a unit is one position in each
                    width = channel_count(module, "in") // getattr(module, "groups", 1)
                    _zero(module, "weight", (channels % width).unique(), dim=1)
    return model


def alive_units(model: nn.Module, groups: Sequence[UnitGroup] | None = None) -> dict[str, torch.Tensor]:
    """Keep masks of the alive units: True for each unit not provably dead.

    A unit is dead when every gate member of its group outputs exactly 0 on its channel whatever
    the input: a producer's (or depthwise conv's) weight slice and bias are all 0, a BatchNorm's
    ``weight`` (gamma) and ``bias`` (beta) are both 0. Masked values count (a pruning
    reparametrization's computed weight is read). A group whose units are all dead keeps its
    first one (dead, so the function is unchanged), so that :func:`shrink` accepts the result.

    Args:
        model: a model :func:`~trainables.compress.units.unit_groups` can trace, pruned units
            zeroed in the weights (by :func:`zero_units` or by channel-granularity gradual pruning).
        groups: the unit groups to look at; None: all of ``model``'s.

    Returns:
        unit group name -> bool vector over its units, True = alive (kept), for every group.
    """
    groups = unit_groups(model) if groups is None else list(groups)
    result = {}
    with torch.no_grad():
        for group in groups:
            dead = torch.ones(group.size, dtype=torch.bool)
            for gate in group.gates:
                dead &= _dead(model.get_submodule(gate.name), gate)
            keep = ~dead
            if not bool(keep.any()):
                keep[0] = True
            result[group.name] = keep
    return result


def _dead(module: nn.Module, gate: Member) -> torch.Tensor:
    """Per unit: does ``gate`` output exactly 0 on the unit's channels whatever its input?"""
    index = torch.tensor(gate.channels, dtype=torch.long)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        if module.weight is None or module.bias is None:  # affine=False: it never outputs a constant 0
            return torch.zeros(len(index) // gate.spread, dtype=torch.bool)
        weight, bias = module.weight.detach().cpu(), module.bias.detach().cpu()
        dead = (weight[index] == 0) & (bias[index] == 0)
    else:
        dead = (module.weight.detach().cpu().flatten(1)[index] == 0).all(dim=1)
        if module.bias is not None:
            dead &= module.bias.detach().cpu()[index] == 0
    return dead.view(-1, gate.spread).all(dim=1)  # a unit's channels in each group of a grouped conv


def _resolve(groups: Sequence[UnitGroup], keep: Keep, *, allow_empty: bool) -> dict[str, torch.Tensor]:
    """``keep`` checked against ``groups`` and completed: every group's bool vector, on the CPU."""
    sizes = {g.name: g.size for g in groups}
    unknown = sorted(set(keep) - set(sizes))
    if unknown:
        raise FrontierError(f"keep: '{unknown[0]}' is not a unit group of this model; "
                            f"unit groups are e.g. {', '.join(list(sizes)[:4])}")
    masks = {}
    for name, size in sizes.items():
        if name not in keep:
            masks[name] = torch.ones(size, dtype=torch.bool)
            continue
        vector = keep[name]
        if not isinstance(vector, torch.Tensor) or vector.dtype != torch.bool or tuple(vector.shape) != (size,):
            got = f"{vector.dtype} {tuple(vector.shape)}" if isinstance(vector, torch.Tensor) else type(vector).__name__
            raise FrontierError(f"keep['{name}'] must be a bool tensor of shape ({size},) but got {got}")
        if not allow_empty and not bool(vector.any()):
            raise FrontierError(f"keep['{name}'] removes all {size} units of group '{name}'; "
                                "surgery keeps at least one unit per group")
        masks[name] = vector.detach().cpu()
    return masks


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy with masks made permanent, on ``model``'s device, each module in its own mode."""
    copy = plain_copy(model)
    for original, copied in zip(model.modules(), copy.modules()):
        copied.training = original.training
    parameter = next(model.parameters(), None)
    return copy if parameter is None else copy.to(parameter.device)


def _zero(module: nn.Module, name: str, index: torch.Tensor, *, dim: int) -> None:
    """Zero ``index`` along ``dim`` of ``module.<name>`` and, when pruning-masked, ``<name>_orig``."""
    for attr in (name, f"{name}_orig"):
        tensor = getattr(module, attr, None)
        if isinstance(tensor, torch.Tensor):
            tensor.index_fill_(dim, index.to(tensor.device), 0.0)
