"""Units: groups of coupled channels, found from the model's graph, that unit pruning removes together.

A *unit* (EPruning paper, sec. 2.2) is a channel that can be removed physically. In a real CNN a
channel rarely lives in one layer: channels joined by a residual add (the ResNet stream), a
concatenation (DenseNet, SqueezeNet's fire modules) or a depthwise convolution (MobileNet,
EfficientNet) must go together, or removing one of them removes nothing. A :class:`UnitGroup` is
one such set of coupled channels: unit k of the group is one channel in each of its layers
(:class:`Member` says which), removed from all of them at once. Through a grouped convolution
(ResNeXt, RegNet) a unit is one position in each of its groups, so that the groups stay equal, as
Torch-Pruning prunes them.

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
- channels cut by a split or a slice at sizes the model fixed (MixNet's mixed kernels, Res2Net's
  scales, CSP stages, ReXNet's partial residuals, DPN's dual paths): removing one would shift the cut;
- channels viewed across more than 4 dimensions (selective kernels' and split attention's stacked
  paths, a channel shuffle) or reshaped onto one axis and mixed there (ECA): Torch-Pruning's index
  mappings do not follow them;
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
import time
import warnings
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from ..errors import FrontierError

Role = Literal["out", "in"]
_NORMS = (nn.modules.batchnorm._BatchNorm,)
TRACE_LIMIT_S = 120.0
"""Seconds a model's tracing may take (the forward on one image, the graph and its walk) before
:func:`unit_groups` refuses the model with one line; the zoo traces in 0.2-6 s on 2 CPU cores."""
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
        spread: channels per unit: 1; H*W for a ``Linear`` after a flatten; the groups of a grouped
            convolution the unit runs through (one channel in each).
    """

    name: str
    role: Role
    channels: tuple[int, ...]
    spread: int = 1

    def of(self, units: torch.Tensor) -> torch.Tensor:
        """This member's channel indices of the unit indices ``units`` (a long tensor)."""
        table = torch.tensor(self.channels, dtype=torch.long).view(-1, self.spread)
        return table[units.long().cpu()].flatten()

    def per_channel(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` over the units (last dim) as values over :attr:`channels`, in their order."""
        return values.repeat_interleave(self.spread, dim=-1) if self.spread > 1 else values


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


def unit_groups(model: nn.Module, include: Sequence[str] | None = None, *, residual: bool = True,
                limit: float | None = None, clock: Callable[[], float] = time.monotonic) -> list[UnitGroup]:
    """The unit groups of ``model`` in forward order, optionally only some.

    Args:
        model: any CNN whose graph Torch-Pruning can trace with one image (its input channels are
            taken from its first conv; 64x64, then 224x224, then 32x32 are tried).
        include: shell-style patterns over layer names (``["layer3.*"]``); a group takes part
            when a pattern matches one of its gates. None: all groups.
        residual: False leaves out groups joined by a residual add (``UnitGroup.joined``): only
            channels inside a block are pruned, as before residual streams were units.
        limit: seconds of ``clock`` the tracing may take (None: :data:`TRACE_LIMIT_S`); a model
            traced before (its structure) is not traced again, and one refused stays refused.
        clock: the clock the limit is read on (tests give a fake one).

    Raises:
        FrontierError: a model whose graph cannot be traced or takes longer than ``limit`` to
            trace, or ``include`` matching nothing.
    """
    groups = _analysis(model, limit, clock).groups
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


_CACHE: OrderedDict[tuple, _Analysis | FrontierError] = OrderedDict()
_CACHE_SIZE = 16  # structures kept; a shrunk model is a new structure


def _analysis(model: nn.Module, limit: float | None = None, clock: Callable[[], float] = time.monotonic) -> _Analysis:
    """The groups of ``model``'s structure, traced once per structure (module tree and shapes); a
    structure that cannot be traced (or not in time) is refused again without tracing."""
    key = _structure(model)
    if key not in _CACHE:
        try:
            _CACHE[key] = _trace(model, TRACE_LIMIT_S if limit is None else limit, clock)
        except FrontierError as exc:
            _CACHE[key] = exc
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    _CACHE.move_to_end(key)
    result = _CACHE[key]
    if isinstance(result, FrontierError):
        raise FrontierError(str(result))
    return result


def _structure(model: nn.Module) -> tuple:
    parts = []
    for name, module in model.named_modules():
        shapes = tuple((n, tuple(p.shape)) for n, p in module.named_parameters(recurse=False))
        parts.append((name, type(module).__qualname__, shapes, getattr(module, "groups", None)))
    return (type(model).__qualname__, tuple(parts))


def _trace(model: nn.Module, limit: float, clock: Callable[[], float]) -> _Analysis:
    """Trace a plain copy of ``model`` with Torch-Pruning and turn its coupled channels into unit groups."""
    import torch_pruning as tp

    deadline = Deadline(f"unit pruning: tracing {type(model).__name__}'s graph", limit, clock,
                        "units.TRACE_LIMIT_S")
    copy = _plain(model)
    with deadline.watching(copy):
        example, order = _example_and_order(copy)
        names = {module: name for name, module in copy.named_modules()}
        modules = dict(copy.named_modules())
        head = _last_layer(copy, order)
        with warnings.catch_warnings(), torch.enable_grad():
            warnings.simplefilter("ignore")  # unwrapped parameters: reported per group below instead
            try:
                graph = tp.DependencyGraph().build_dependency(copy, example_inputs=example, verbose=False)
            except FrontierError:
                raise
            except Exception as exc:  # tracing a user's model can fail in many ways; say which model, in one line
                raise FrontierError(f"unit pruning: cannot trace {type(model).__name__}'s graph "
                                    f"({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    groups, skipped = [], []
    def opaque(module) -> bool:  # a layer frontier cannot slice that mixes channels: the walk ends there
        return isinstance(module, nn.Module) and module in names and _opaque(module)

    for root, items, why in _coupled(graph, head, deadline, opaque):
        made = _unit_group(root, items, graph, names, modules, order, why)
        if isinstance(made, UnitGroup):
            groups.append(made)
        else:
            skipped.append(made)
    groups.sort(key=lambda g: g.order)
    return _Analysis(tuple(groups), tuple(skipped))


class Deadline:
    """A time limit on work that runs a model (tracing here, surgery's equivalence check): past
    ``limit`` seconds of ``clock`` from its creation, :meth:`check` refuses in one line.

    The work calls :meth:`check` between its own steps, and :meth:`watching` calls it before every
    module of a model runs, so a slow forward cannot hold it off either. ``clock`` is read at
    creation and at every check (tests give a fake one: no test waits on the wall clock).

    Args:
        what: the work, as the refusal names it (``"unit pruning: tracing ResNet's graph"``).
        limit: seconds of ``clock`` the work may take.
        clock: a monotonic clock in seconds.
        setting: the constant that sets the limit, named in the refusal (``"units.TRACE_LIMIT_S"``).

    Example:
        >>> ticks = iter(range(100))
        >>> deadline = Deadline("counting", 2, lambda: float(next(ticks)), "LIMIT")
        >>> deadline.check()  # 1 s after the start: in time
        >>> deadline.check()  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FrontierError: counting took longer than the limit of 2 s (LIMIT); frontier refuses it rather than wait
    """

    def __init__(self, what: str, limit: float, clock: Callable[[], float], setting: str) -> None:
        self.what, self.limit, self.clock, self.setting = what, limit, clock, setting
        self.end = clock() + limit

    def check(self) -> None:
        """Raise :class:`FrontierError` when the limit has passed."""
        if self.clock() > self.end:
            raise FrontierError(f"{self.what} took longer than the limit of {self.limit:g} s ({self.setting}); "
                                "frontier refuses it rather than wait")

    @contextmanager
    def watching(self, model: nn.Module) -> Iterator[None]:
        """Inside the block, :meth:`check` runs before every module of ``model`` runs."""
        hooks = [m.register_forward_pre_hook(lambda _m, _args: self.check()) for m in model.modules()]
        try:
            yield
        finally:
            for hook in hooks:
                hook.remove()


# One coupled set of channels: the root module, then (Torch-Pruning dependency, [(channel, root channel)]) per
# (node, pruning function) it reaches, and why it is no unit group when the walk stopped early.
_Coupled = tuple[nn.Module, list[tuple[object, list[tuple[int, int]]]], str | None]
_MOST_PER_CHANNEL = 256  # pairs per root channel at one node; a flatten makes H*W (49 for VGG's 7x7 pool)
_TANGLED = ("its channels are reshaped onto another axis and mixed there (e.g. ECA's 1-d conv across the "
            "channels), so no channel can be removed alone")


def _coupled(graph, head: nn.Module | None, deadline: Deadline,
             opaque: Callable[[object], bool] = lambda _m: False) -> Iterator[_Coupled]:
    """Every coupled channel set of ``graph``, rooted at each Conv/Linear not yet reached, as
    Torch-Pruning's ``get_all_groups`` finds them.

    Hand-written (Torch-Pruning's ``get_pruning_group`` walk, with its own dependency objects and
    index mappings) for one reason: Torch-Pruning skips a node only when it was reached with the
    very same index list, so where a residual add reads a slice of a block's channels (ReXNet's
    ``cat([x[:, :c] + shortcut, x[:, c:]])``) each of the 16 blocks splits the index lists anew
    and its walk grows exponentially (rexnet_100 ran for hours). Here each (channel, root channel)
    pair is walked from a node once, the pairs waiting at a node together: every index mapping
    maps channels one by one, so the pairs reached are the same, found in time linear in them.
    The walk does not go on through an ``opaque`` module (it reaches it, so its group is left out),
    and it stops as soon as every root channel is coupled to every other (root channels that reach
    one channel of a node are one unit, as :func:`_unit_group` joins them): the set is one unit,
    removable only whole. ECA (ecaresnet26t) reshapes a block's C channels onto one and back, so
    through its elementwise ops every channel reaches every other; walked on, each of the stream's
    nodes held C*C pairs (the trace ran past 120 s); stopped, the model traces in seconds.
    """
    import torch_pruning as tp
    from torch_pruning import ops
    from torch_pruning._helpers import _HybridIndex
    from torch_pruning.dependency import index_mapping
    from torch_pruning.dependency.dependency import Dependency

    index_mapping.update_index_mapping(graph)
    ignored = ([head] if head is not None else []) + list(graph.IGNORED_LAYERS_IN_TRACING)
    visited: set[nn.Module] = set()
    for module in list(graph.module2node):
        if any(module is m for m in ignored) or not isinstance(module, (ops.TORCH_CONV, ops.TORCH_LINEAR)):
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None or module in visited:
            continue
        width = pruner.get_out_channels(module)
        fn = pruner.prune_out_channels
        if isinstance(module, ops.TORCH_CONV) and module.groups == module.out_channels and module.out_channels > 1:
            fn = tp.prune_depthwise_conv_out_channels
        node = graph.module2node[module]
        root = Dependency(fn, fn, source=node, target=node)
        everything = {(i, i) for i in range(width)}
        reached: dict[tuple, tuple[object, set[tuple[int, int]]]] = {(node, fn): (root, set(everything))}
        pending = {(node, fn): everything}  # pairs reached but not yet walked from, per (node, function)
        queue = deque([(node, fn)])
        tangled = False  # every root channel coupled to every other, or a node reached by far more pairs than
        # a flatten makes: channels mixed across the axis
        unit = list(range(width))  # union-find over the root channels: those reaching one channel are one unit
        units = width
        anchor: dict[tuple, int] = {}  # (node, function, channel) -> the first root channel that reached it

        def find(r: int) -> int:
            while unit[r] != r:
                unit[r] = unit[unit[r]]
                r = unit[r]
            return r

        while queue and not tangled:
            deadline.check()
            key = queue.popleft()
            dep, pairs = reached[key][0], list(pending.pop(key))
            if dep is not root and opaque(dep.target.module):
                continue
            for new_dep in dep.target.dependencies:
                if not new_dep.is_triggered_by(dep.handler):
                    continue
                mapped = pairs
                mappings = [m for m in new_dep.index_mapping if m is not None]
                if mappings:
                    hybrid = [_HybridIndex(idx=i, root_idx=r) for i, r in pairs]
                    for mapping in mappings:
                        hybrid = mapping(hybrid)
                    mapped = [(int(h.idx), int(h.root_idx)) for h in hybrid]
                new_key = (new_dep.target, new_dep.handler)
                _, seen = reached.setdefault(new_key, (new_dep, set()))
                fresh = [pair for pair in mapped if pair not in seen]
                if fresh:
                    seen.update(fresh)
                    for index, r in fresh:
                        a, b = find(anchor.setdefault((new_key, index), r)), find(r)
                        if a != b:
                            unit[b] = a
                            units -= 1
                    if len(seen) > _MOST_PER_CHANNEL * width or (units == 1 and width > 1):
                        tangled = True
                    if new_key in pending:
                        pending[new_key].update(fresh)
                    else:
                        pending[new_key] = set(fresh)
                        queue.append(new_key)
        items = [(dep, sorted(pairs)) for dep, pairs in reached.values() if pairs]
        prunable = True
        for dep, _ in items:
            if graph.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                prunable &= not any(dep.target.module is m for m in ignored)
        if prunable:
            yield module, items, (_TANGLED if tangled else None)


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


def _unit_group(root: nn.Module, items, graph, names: dict[nn.Module, str], modules: dict[str, nn.Module],
                order: dict[nn.Module, int], stopped: str | None = None) -> UnitGroup | tuple[str, str]:
    """One coupled channel set (:func:`_coupled`) as a :class:`UnitGroup`, or ``(first layer, why not)``.

    ``stopped``: why the walk stopped early (the set is then no unit group); a layer's or an op's
    reason among the channels reached so far is named before it, being the more concrete.

    A unit is a set of the root's channels that must go together: channels that reach one channel
    of a member, and, through a grouped convolution, the channels at one position of each of its
    groups (removed from every group alike, as Torch-Pruning prunes grouped convolutions, so the
    groups stay equal).
    """
    root_name = names.get(root, "?")
    width = max(r for _, pairs in items for _, r in pairs) + 1
    parent = list(range(width))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def join(indices) -> None:
        indices = list(indices)
        for i in indices[1:]:
            parent[find(i)] = find(indices[0])

    reasons = [_why_not(dep.target.module, names[dep.target.module]) for dep, _ in items
               if not isinstance(dep.target.module, nn.Parameter) and dep.target.module in names]
    reasons += ["its channels reach a bare nn.Parameter (e.g. a layer scale), which surgery cannot slice"
                for dep, _ in items if isinstance(dep.target.module, nn.Parameter)]
    reasons += [_why_not_op(dep.target.module, dep.target) for dep, _ in items
                if not isinstance(dep.target.module, nn.Parameter) and dep.target.module not in names]
    # a layer's reason first, then a parameter's, an op's, then why the walk stopped
    why = next((r for r in reasons if r is not None), stopped)
    if why is not None:
        return root_name, why
    channels: dict[tuple[str, Role], dict[int, set[int]]] = {}  # member -> its channel -> root channels
    added = False  # an add (or subtraction) joins these channels
    for dep, pairs in items:
        module = dep.target.module
        name = names.get(module)
        if name is None:  # Torch-Pruning's own op nodes (add, concat, split, slice, flatten): nothing to slice
            added |= type(getattr(dep.target, "grad_fn", None)).__name__.startswith(("AddBackward", "SubBackward"))
            continue
        role: Role = "out" if graph.is_out_channel_pruning_fn(dep.handler) or isinstance(module, _NORMS) \
            or is_depthwise(module) else "in"
        per_channel = channels.setdefault((name, role), {})
        for index, root_index in pairs:
            per_channel.setdefault(index, set()).add(root_index)
    for (name, role), per_channel in channels.items():
        for roots in per_channel.values():
            join(roots)  # root channels that reach one channel are one unit
        grouped = _grouped_width(modules[name], role)
        if grouped:  # one position in every group of a grouped convolution is one unit
            by_position: dict[int, list[int]] = {}
            for index, roots in per_channel.items():
                by_position.setdefault(index % grouped, []).extend(roots)
            for roots in by_position.values():
                join(roots)
    units = sorted({find(i) for i in range(width)})
    unit_of = {u: k for k, u in enumerate(units)}
    built = []
    for (name, role), per_channel in channels.items():
        per_unit: list[list[int]] = [[] for _ in units]
        for index, roots in per_channel.items():
            per_unit[unit_of[find(next(iter(roots)))]].append(index)
        spread = len(per_unit[0])
        if spread == 0 or any(len(p) != spread for p in per_unit):
            return root_name, f"'{name}' does not hold the same number of channels for every unit"
        grouped = _grouped_width(modules[name], role)
        if grouped and any(not _one_position(p, grouped, modules[name].groups) for p in per_unit):
            return root_name, (f"'{name}', a grouped convolution ({modules[name].groups} groups), reads these "
                               "channels together with others, so no unit keeps its groups equal")
        built.append(Member(name, role, tuple(i for p in per_unit for i in sorted(p)), spread))
    gates = [m for m in built if m.role == "out"]
    producers = [m for m in gates if isinstance(modules[m.name], (nn.Conv2d, nn.Linear))
                 and not is_depthwise(modules[m.name])]
    if not producers:
        return root_name, "no layer produces these channels"
    by_order = lambda m: order.get(modules[m.name], len(order))  # noqa: E731
    first_producer = min(producers, key=by_order)
    first_gate = min(gates, key=by_order)
    return UnitGroup(name=first_producer.name, size=len(units), members=tuple(sorted(built, key=by_order)),
                     joined=added and len(producers) > 1, order=by_order(first_gate), first=first_gate.name)


def _grouped_width(module: nn.Module, role: Role) -> int:
    """Channels per group of a grouped (not depthwise) convolution on side ``role``; 0 for any other module."""
    if isinstance(module, nn.Conv2d) and module.groups > 1 and not is_depthwise(module):
        return channel_count(module, role) // module.groups
    return 0


def _one_position(indices: list[int], width: int, groups: int) -> bool:
    """Do ``indices`` hold one position of each of ``groups`` groups of ``width`` channels (the same in each)?"""
    return sorted(indices) == [indices[0] % width + g * width for g in range(groups)]


def _why_not_op(op, node) -> str | None:
    """Why channels through Torch-Pruning's op node ``op`` cannot be a unit's, or None when they can.

    A split or a slice along the channels cuts at sizes the model fixed when it was built (MixNet's
    mixed kernels split at ``self.splits``, Res2Net at ``self.width``, CSP stages in halves, ReXNet's
    residual adds into a slice): removing a channel before it would shift the cut, so the model
    would crash or compute something else. Left out; a slice that keeps every channel is harmless.

    An op on a tensor of more than 4 dimensions (selective kernels' paths stacked and weighted by an
    attention viewed as (paths, channels), a channel shuffle's (groups, channels) view) has an axis
    of channels that Torch-Pruning's index mappings do not follow (they map a view as a flatten):
    left out too (skresnet18's shrunk network differed from the gated one by 8e-4 of its outputs).
    """
    from torch_pruning import ops

    grad_fn = getattr(node, "grad_fn", None)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None) or getattr(grad_fn, "_saved_self_sizes", None)
    if sizes is not None and len(sizes) > 4:
        return (f"its channels pass through a {len(sizes)}-d tensor (e.g. stacked paths, a channel shuffle), "
                "whose channel axes frontier cannot follow")
    if not isinstance(op, (ops._SplitOp, ops._UnbindOp, ops._SliceOp)):
        return None
    dim = getattr(grad_fn, "_saved_dim", 1)
    sizes = getattr(grad_fn, "_saved_self_sym_sizes", None)
    if sizes is not None and isinstance(dim, int) and dim < len(sizes) and dim != 1:
        return None  # along another axis: the channels pass whole
    if isinstance(op, (ops._SplitOp, ops._UnbindOp)):
        return "its channels are split (torch.split, chunk) at sizes the model fixed, which removing one would shift"
    if isinstance(op, ops._SliceOp):
        width = sizes[1] if sizes is not None and len(sizes) > 1 else None
        if op.start == 0 and op.step == 1 and width is not None and op.end >= width:
            return None
        end = "" if width is not None and op.end >= width else op.end  # x[:, c:] records end as 2**63 - 1
        return (f"its channels are sliced ([{op.start}:{end}]) at a width the model fixed, which removing one "
                "would shift")
    return None


def _opaque(module: nn.Module) -> bool:
    """A module with parameters of its own that is no Conv2d, Linear or norm (a Conv1d across channels)."""
    return not isinstance(module, (nn.Conv2d, nn.Linear, *_NORMS, *_ACROSS_CHANNELS)) and \
        any(True for _ in module.parameters(recurse=False))


# Conv2d/Linear subclasses whose own forward is the same function of the same weights (timm: padding, casts)
_PLAIN_CONVS = ("timm.layers.conv2d_same.Conv2dSame", "timm.layers.linear.Linear")


def _why_not(module: nn.Module, name: str) -> str | None:
    """Why channels through ``module`` cannot be a unit's, or None when they can."""
    if isinstance(module, _ACROSS_CHANNELS):
        return f"its channels are normalised together by '{name}' ({type(module).__name__})"
    for base in (nn.Conv2d, nn.Linear):
        kind = f"{type(module).__module__}.{type(module).__qualname__}"
        if isinstance(module, base) and type(module).forward is not base.forward and kind not in _PLAIN_CONVS:
            return (f"its channels pass through '{name}' ({type(module).__name__}), whose own forward (e.g. a "
                    "standardized weight) surgery cannot know to be unchanged by removing channels")
    if isinstance(module, (nn.Conv2d, nn.Linear, *_NORMS)):
        return None
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        return f"its channels pass through '{name}' ({type(module).__name__}), which surgery cannot slice"
    return None
