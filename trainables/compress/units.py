"""Units: groups of coupled channels, found from the model's graph, that unit pruning removes together.

A *unit* (EPruning paper, sec. 2.2) is a channel that can be removed physically. In a real CNN a
channel rarely lives in one layer: channels joined by a residual add (the ResNet stream), a
concatenation (DenseNet, SqueezeNet's fire modules) or a depthwise convolution (MobileNet,
EfficientNet) must go together, or removing one of them removes nothing. A :class:`UnitGroup` is
one such set of coupled channels: unit k of the group is one channel in each of its layers
(:class:`Member` says which), removed from all of them at once.

The groups come from Torch-Pruning's ``DependencyGraph`` (DepGraph, Fang et al., CVPR 2023),
which traces the model once with autograd and follows every add, concatenation, flatten and
depthwise conv. It replaced the hand-written graphs of nine architectures: it covers any
torchvision CNN and a user's own, the residual stream included, in well under a second. Kept
from it: the grouping and each layer's channel indices per unit. Not kept: its pruners' own
bookkeeping (frontier gates, zeros and shrinks by the member table below, so that a unit mask
is plain data that travels to Ray actors and into the stage cache).

A group is a unit group only when removing a unit is *exactly* the same function as gating it
to zero; groups where that is not so are left out, with the reason kept (:func:`excluded`):

- channels normalised together by a LayerNorm or GroupNorm (ConvNeXt's stream): removing a
  channel changes the others' statistics;
- channels through a grouped, non-depthwise convolution (RegNet's bottlenecks): a unit mask
  would leave the groups unequal;
- channels that reach a module or parameter frontier cannot slice (anything but Conv2d, Linear
  and BatchNorm; a bare ``nn.Parameter`` such as ConvNeXt's layer scale).

The classifier head's outputs are never units (its inputs are: it reads the last group).
A unit whose every *gate* member outputs 0 (its producers' rows and biases, its BatchNorms'
gamma and beta, its depthwise filters) is exactly zero downstream, since ReLU-like activations,
pooling and dropout keep zeros at zero and every join that mixes it is in the group; so a gated
network and the physically smaller one compute the same function (:mod:`trainables.compress.surgery`).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import FrontierError

Role = Literal["out", "in"]
_NORMS = (nn.modules.batchnorm._BatchNorm,)
_ACROSS_CHANNELS = (nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class Member:
    """One layer's share of a unit group.

    Args:
        name: the module (``Conv2d``, ``Linear`` or ``BatchNorm``) holding the channels.
        role: ``out``: the units are its output channels (a producer's weight rows and bias, a
            BatchNorm's entries, a depthwise conv's filters), so it is a *gate*: its output
            channel is what gating multiplies by 0. ``in``: it reads the units (input columns).
        channels: this module's channel indices, ``spread`` per unit, unit by unit: unit k is
            ``channels[k * spread:(k + 1) * spread]``.
        spread: channels per unit: 1, or H*W for a ``Linear`` after a flatten.
    """

    name: str
    role: Role
    channels: tuple[int, ...]
    spread: int = 1

    def of(self, units: torch.Tensor) -> torch.Tensor:
        """This member's channel indices of the unit indices ``units`` (a long tensor)."""
        table = torch.tensor(self.channels, dtype=torch.long).view(-1, self.spread)
        return table[units.long().cpu()].flatten()


@dataclass(frozen=True)
class UnitGroup:
    """A set of coupled channels, pruned together; unit k is ``channels[k]`` of every member.

    Args:
        name: the first producing layer (a ``Conv2d`` or ``Linear``) in forward order; what
            ``layers`` patterns and keep masks name the group by.
        size: the number of units.
        members: every layer holding the group's channels (:class:`Member`).
        joined: more than one layer produces these channels and an add joins them: a residual
            stream (a squeeze-excitation's product joins channels too, but is not a stream).
        order: the forward-order index of the group's first gate, for :func:`trainables.compress.gating.expanded`.
        first: that gate's module name.
    """

    name: str
    size: int
    members: tuple[Member, ...]
    joined: bool
    order: int
    first: str

    @property
    def gates(self) -> tuple[Member, ...]:
        """Members whose output channels are the units."""
        return tuple(m for m in self.members if m.role == "out")

    @property
    def readers(self) -> tuple[Member, ...]:
        """Members that read the units as input channels."""
        return tuple(m for m in self.members if m.role == "in")


def unit_groups(model: nn.Module, include: Sequence[str] | None = None, *, residual: bool = True) -> list[UnitGroup]:
    """The unit groups of ``model`` in forward order, optionally only some.

    Args:
        model: any CNN whose graph Torch-Pruning can trace with one image (its input channels are
            taken from its first conv; 64x64, then 224x224, then 32x32 are tried).
        include: shell-style patterns over layer names (``["layer3.*"]``); a group takes part
            when a pattern matches one of its gates. None: all groups.
        residual: False leaves out groups joined by a residual add (``UnitGroup.joined``): only
            channels inside a block are pruned, as before residual streams were units.

    Raises:
        FrontierError: a model whose graph cannot be traced, or ``include`` matching nothing.
    """
    groups = _analysis(model).groups
    if not residual:
        groups = [g for g in groups if not g.joined]
    if include is None:
        return list(groups)
    chosen = [g for g in groups if any(fnmatch.fnmatchcase(m.name, p) for m in g.gates for p in include)]
    if not chosen:
        raise FrontierError(f"layers: {list(include)} match no unit group; unit groups are e.g. "
                            f"{', '.join(g.name for g in groups[:4])}")
    return chosen


def excluded(model: nn.Module) -> dict[str, str]:
    """The coupled channel groups of ``model`` that are not unit groups: first layer -> why."""
    return dict(_analysis(model).excluded)


def unit_count(groups: Sequence[UnitGroup]) -> int:
    """D, the length of a state vector over ``groups``."""
    return sum(g.size for g in groups)


def channel_count(module: nn.Module, role: Role) -> int:
    """Output (``out``) or input (``in``) channels of a member module."""
    if isinstance(module, nn.Conv2d):
        return module.out_channels if role == "out" else module.in_channels
    if isinstance(module, nn.Linear):
        return module.out_features if role == "out" else module.in_features
    if isinstance(module, _NORMS):
        return module.num_features
    raise FrontierError(f"unit member must be a Conv2d, Linear or BatchNorm but is a {type(module).__name__}")


def is_depthwise(module: nn.Module) -> bool:
    """A conv with one filter per input channel (its input and output channels are one unit)."""
    return isinstance(module, nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels \
        == module.out_channels


@dataclass(frozen=True)
class _Analysis:
    groups: tuple[UnitGroup, ...]
    excluded: tuple[tuple[str, str], ...]


_CACHE: OrderedDict[tuple, _Analysis] = OrderedDict()
_CACHE_SIZE = 16  # structures kept; a shrunk model is a new structure


def _analysis(model: nn.Module) -> _Analysis:
    """The groups of ``model``'s structure, traced once per structure (module tree and shapes)."""
    key = _structure(model)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = _trace(model)
    _CACHE[key] = result
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _structure(model: nn.Module) -> tuple:
    parts = []
    for name, module in model.named_modules():
        shapes = tuple((n, tuple(p.shape)) for n, p in module.named_parameters(recurse=False))
        parts.append((name, type(module).__qualname__, shapes, getattr(module, "groups", None)))
    return (type(model).__qualname__, tuple(parts))


def _trace(model: nn.Module) -> _Analysis:
    """Trace a plain copy of ``model`` with Torch-Pruning and turn its groups into unit groups."""
    import torch_pruning as tp

    copy = _plain(model)
    example, order = _example_and_order(copy)
    names = {module: name for name, module in copy.named_modules()}
    modules = dict(copy.named_modules())
    head = _last_layer(copy, order)
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")  # unwrapped parameters: reported per group below instead
        try:
            graph = tp.DependencyGraph().build_dependency(copy, example_inputs=example, verbose=False)
        except Exception as exc:  # tracing a user's model can fail in many ways; say which model, in one line
            raise FrontierError(f"unit pruning: cannot trace {type(model).__name__}'s graph "
                                f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
        raw = list(graph.get_all_groups(ignored_layers=[head] if head is not None else []))
    groups, skipped = [], []
    for group in raw:
        made = _unit_group(group, graph, names, modules, order)
        if isinstance(made, UnitGroup):
            groups.append(made)
        else:
            skipped.append(made)
    groups.sort(key=lambda g: g.order)
    return _Analysis(tuple(groups), tuple(skipped))


def _plain(model: nn.Module) -> nn.Module:
    """A copy to trace (tracing runs the model): masks permanent, eval mode; a meta model stays on meta."""
    from .masks import plain_copy

    if any(p.is_meta for p in model.parameters()):
        import copy

        return copy.deepcopy(model).eval()
    return plain_copy(model)


def _example_and_order(model: nn.Module) -> tuple[torch.Tensor, dict[nn.Module, int]]:
    """An input the model accepts, and the order in which its modules first run on it."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise FrontierError(f"unit pruning: {type(model).__name__} has no Conv2d; frontier prunes CNNs")
    order: dict[nn.Module, int] = {}

    def seen(module: nn.Module, _args) -> None:
        order.setdefault(module, len(order))

    hooks = [m.register_forward_pre_hook(seen) for m in model.modules()]
    error = None
    try:
        for size in (64, 224, 32):
            example = torch.randn(1, first.in_channels, size, size, device=first.weight.device)
            order.clear()
            try:
                with torch.no_grad():
                    model(example)
                return example, dict(order)
            except Exception as exc:  # try the next size; report the last failure
                error = exc
    finally:
        for hook in hooks:
            hook.remove()
    raise FrontierError(f"unit pruning: {type(model).__name__} runs on no 1x{first.in_channels}xSxS image "
                        f"(S = 64, 224, 32): {type(error).__name__}: {str(error).splitlines()[0][:160]}")


def _last_layer(model: nn.Module, order: dict[nn.Module, int]) -> nn.Module | None:
    """The last Conv2d/Linear to run: the head, whose outputs (the logits) are never units."""
    layers = [m for m in order if isinstance(m, (nn.Conv2d, nn.Linear))]
    return max(layers, key=order.__getitem__) if layers else None


def _unit_group(group, graph, names: dict[nn.Module, str], modules: dict[str, nn.Module],
                order: dict[nn.Module, int]) -> UnitGroup | tuple[str, str]:
    """A Torch-Pruning group as a :class:`UnitGroup`, or ``(first layer, why not)``."""
    root = group[0].dep.target.module
    root_name = names.get(root, "?")
    size = len(group[0].idxs)
    members: dict[tuple[str, Role], list[list[int]]] = {}
    added = False  # an add (or subtraction) joins these channels
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.Parameter):
            return root_name, "its channels reach a bare nn.Parameter (e.g. a layer scale), which surgery cannot slice"
        name = names.get(module)
        if name is None:  # Torch-Pruning's own op nodes (add, concat, flatten): nothing to slice
            added |= type(getattr(item.dep.target, "grad_fn", None)).__name__.startswith(("AddBackward", "SubBackward"))
            continue
        why = _why_not(module, name)
        if why is not None:
            return root_name, why
        role: Role = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) or isinstance(module, _NORMS) \
            or is_depthwise(module) else "in"
        per_unit = members.setdefault((name, role), [[] for _ in range(size)])
        for index, root_index in zip(item.idxs, item.root_idxs):
            if index not in per_unit[root_index]:
                per_unit[root_index].append(index)
    built = []
    for (name, role), per_unit in members.items():
        spread = len(per_unit[0])
        if spread == 0 or any(len(p) != spread for p in per_unit) or (role == "out" and spread != 1):
            return root_name, f"'{name}' does not hold the same number of channels for every unit"
        built.append(Member(name, role, tuple(i for p in per_unit for i in sorted(p)), spread))
    gates = [m for m in built if m.role == "out"]
    producers = [m for m in gates if isinstance(modules[m.name], (nn.Conv2d, nn.Linear))
                 and not is_depthwise(modules[m.name])]
    if not producers:
        return root_name, "no layer produces these channels"
    by_order = lambda m: order.get(modules[m.name], len(order))  # noqa: E731
    first_producer = min(producers, key=by_order)
    first_gate = min(gates, key=by_order)
    return UnitGroup(name=first_producer.name, size=size, members=tuple(sorted(built, key=by_order)),
                     joined=added and len(producers) > 1, order=by_order(first_gate), first=first_gate.name)


def _why_not(module: nn.Module, name: str) -> str | None:
    """Why channels through ``module`` cannot be a unit's, or None when they can."""
    if isinstance(module, _ACROSS_CHANNELS):
        return f"its channels are normalised together by '{name}' ({type(module).__name__})"
    if isinstance(module, nn.Conv2d) and module.groups > 1 and not is_depthwise(module):
        return f"its channels pass through '{name}', a grouped convolution ({module.groups} groups)"
    if isinstance(module, (nn.Conv2d, nn.Linear, *_NORMS)):
        return None
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        return f"its channels pass through '{name}' ({type(module).__name__}), which surgery cannot slice"
    return None
