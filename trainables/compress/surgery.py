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

:func:`checked_shrink` is :func:`shrink` followed by the equivalence check, the shrunk network run
against the gated one on one image, within a time limit (:data:`CHECK_LIMIT_S`): what the benchmark
times and exports must be the function the trial measured, so a unit table wrong for some model
(a CNN nobody checked) is refused in one line, never timed, never a crash deep inside a trial.

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

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..errors import FrontierError
from .gating import gated_states
from .masks import plain_copy
from .units import Deadline, Member, UnitGroup, channel_count, is_depthwise, unit_groups

Keep = Mapping[str, torch.Tensor]
CHECK_LIMIT_S = 120.0
"""Seconds :func:`checked_shrink` may take (the surgery, then one forward of the gated and of the shrunk
network on one image, on the CPU) before it refuses the model in one line; tracing has its own
limit (:data:`trainables.compress.units.TRACE_LIMIT_S`). Res2Net-50 and dpn48b at 32x32 and ResNet-50 at
224x224 check in 1.5-7 s on 2 busy CPU cores."""
CHECK_TOLERANCE = 1e-4
"""The largest difference :func:`checked_shrink` allows between the shrunk and the gated network's
outputs, as a share of the gated outputs' largest magnitude. Float32 rounding of the shorter sums
stays under 1e-6 of it (every timm family of ``tests/test_timm_zoo.py`` at half its units, and
ResNet-50, DenseNet-121 at 224x224); wrong tables seen were 6e-4 (a stem's BatchNorm reversed) and
8e-4 (skresnet18's selective kernels) of it, at half of every group's units."""
CHECK_SEED = 0  # the check's image comes from its own generator: no global random number is drawn


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
    return _shrink(model, keep, unit_groups(model) if groups is None else list(groups), step=lambda: None)


def checked_shrink(model: nn.Module, keep: Keep, input_shape: tuple[int, int, int],
                   groups: Sequence[UnitGroup] | None = None, *, limit: float | None = None,
                   clock: Callable[[], float] = time.monotonic) -> nn.Module:
    """:func:`shrink`, checked: the shrunk copy must compute what ``model`` computes gated by ``keep``.

    After the surgery, the shrunk copy and ``model`` inside :func:`gated` run on one image
    (``2 x input_shape``, normal noise from a generator of its own, :data:`CHECK_SEED`), both on the
    CPU in eval mode and float32 (plain copies where they are not), so the caller's models keep their
    device, modes and hooks, and no global random number is drawn. Their outputs must agree within
    :data:`CHECK_TOLERANCE` of the gated output's largest magnitude. The surgery and the two
    forwards together may take ``limit`` seconds of ``clock`` (checked between the layers the
    surgery slices and before every module runs); tracing ``model`` (``groups`` None) has its own limit.

    Args:
        model: as for :func:`shrink`.
        keep: as for :func:`shrink`.
        input_shape: (channels, height, width) of one image the model takes.
        groups: as for :func:`shrink`.
        limit: seconds the check may take (None: :data:`CHECK_LIMIT_S`).
        clock: the clock the limit is read on (tests give a fake one).

    Returns:
        The shrunk copy, as :func:`shrink` returns it (on ``model``'s device, in its modes).

    Raises:
        FrontierError: in one line naming the model: the check ran past ``limit``, the shrunk copy
            fails on the image, or it computes something else than the gated model (a unit table
            wrong for this model: report it); and :func:`shrink`'s own refusals.
    """
    groups = unit_groups(model) if groups is None else list(groups)  # tracing: its own limit
    kind = type(model).__name__
    deadline = Deadline(f"surgery: checking {kind}'s shrunk network against the gated one",
                        CHECK_LIMIT_S if limit is None else limit, clock, "surgery.CHECK_LIMIT_S")
    small = _shrink(model, keep, groups, step=deadline.check)
    image = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(CHECK_SEED))
    reference_model, small_copy = _checkable(model), _checkable(small)
    with torch.no_grad():
        with deadline.watching(reference_model), gated(reference_model, keep, groups):
            try:
                reference = _outputs(reference_model(image))
            except FrontierError:
                raise
            except Exception as exc:  # the caller's input_shape, most likely
                raise FrontierError(f"surgery: {kind} does not run on a {_shape(image)} image "
                                    f"({_first_line(exc)}); input_shape must be an image it takes") from None
        with deadline.watching(small_copy):
            try:
                got = _outputs(small_copy(image))
            except FrontierError:
                raise
            except Exception as exc:  # a wrong table slices a layer out of step with its input: say so in one line
                raise FrontierError(f"surgery: {kind}'s shrunk network fails on a {_shape(image)} image, where the "
                                    f"gated one runs ({_first_line(exc)}); its unit table is wrong for this model") \
                    from None
    if [r.shape for r in reference] != [g.shape for g in got]:
        raise FrontierError(f"surgery: {kind}'s shrunk network outputs {[tuple(g.shape) for g in got]}, the gated "
                            f"one {[tuple(r.shape) for r in reference]}; its unit table is wrong for this model")
    scale = max((float(r.abs().max()) for r in reference if r.numel()), default=0.0)
    diff = max((float((r - g).abs().max()) for r, g in zip(reference, got) if r.numel()), default=0.0)
    if not diff <= CHECK_TOLERANCE * scale:  # NaN fails too
        raise FrontierError(f"surgery: {kind}'s shrunk network differs from the gated one by {diff:.3g} on a "
                            f"{_shape(image)} image (outputs up to {scale:.3g}; allowed {CHECK_TOLERANCE:g} of that): "
                            "its unit table is wrong for this model, so frontier refuses to time or export it")
    return small


def without_dead_units(plain: nn.Module, input_shape: tuple[int, int, int]) -> tuple[nn.Module, float]:
    """A copy of ``plain`` (a plain model, :func:`~trainables.compress.masks.plain_copy`'s: on the CPU,
    eval mode, masks permanent) without the units dead in its weights (:func:`alive_units`), by
    :func:`checked_shrink`, and the share of units removed. A model without dead units, or whose graph
    cannot be traced into unit groups, comes back as it is, with 0.0.

    The copy computes what ``model`` computes (the check), at the smaller network's cost: what the
    benchmark times and exports, and what a stage evaluates a pruned model on (:func:`scoring_copy`).

    Raises:
        FrontierError: :func:`checked_shrink`'s refusal (a unit table wrong for this model).
    """
    try:
        groups = unit_groups(plain)
    except FrontierError:
        return plain, 0.0
    keep = alive_units(plain, groups)
    kept = sum(int(k.sum()) for k in keep.values())
    total = sum(g.size for g in groups)
    if kept == total:
        return plain, 0.0
    return checked_shrink(plain, keep, input_shape, groups), 1.0 - kept / total


def scoring_copy(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device | str) -> nn.Module:
    """What to evaluate ``model`` on: :func:`without_dead_units`'s copy on ``device``, or ``model``
    itself when that copy removes nothing or is refused (the benchmark's export then says why).

    A pruned model holds its dead units as zeros until the benchmark removes them, and a forward pass
    through them costs the dense network's time: scoring the test split on the copy instead gives the
    same accuracy and loss (within float rounding, :data:`CHECK_TOLERANCE`) in a fraction of the time
    (2.9x less at 83% of ResNet-18's units removed, 32 px, one CPU thread). Hand-written: the surgery is
    this project's own (Torch-Pruning's functions do the slicing)."""
    try:
        small, removed = without_dead_units(plain_copy(model), input_shape)
    except FrontierError:
        return model
    return small.to(device) if removed > 0 else model


def _shrink(model: nn.Module, keep: Keep, groups: list[UnitGroup], step: Callable[[], None]) -> nn.Module:
    """:func:`shrink`'s work; ``step()`` runs before each layer is sliced (a deadline's check)."""
    import torch_pruning as tp

    masks = _resolve(groups, keep, allow_empty=False)
    removed: dict[tuple[str, str], set[int]] = {}
    for group in groups:
        pruned = (~masks[group.name]).nonzero().flatten()
        if pruned.numel():
            for member in group.members:
                removed.setdefault((member.name, member.role), set()).update(member.of(pruned).tolist())
    small = _copy(model)
    for (name, role), channels in removed.items():
        step()
        module = small.get_submodule(name)
        _check_width(module, name, role, channels)
        _pruner(tp, module, role)(module, sorted(channels))
    return small


def _checkable(model: nn.Module) -> nn.Module:
    """``model`` itself when it is already on the CPU, float32 and in eval mode everywhere (the
    check adds hooks and removes them), else a plain copy on the CPU in eval mode, as float32."""
    tensors = list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors) and \
            not any(m.training for m in model.modules()):
        return model
    return plain_copy(model).float()


def _outputs(output: object) -> list[torch.Tensor]:
    """The tensors of a model's output (a tensor, or a tuple, list or dict of them), in order."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in _outputs(item)]
    return []


def _shape(image: torch.Tensor) -> str:
    return "x".join(str(d) for d in image.shape)


def _first_line(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"


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
