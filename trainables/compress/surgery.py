"""Unit surgery: turn unit (channel) masks into a physically smaller network.

A keep mask ``keep: dict[str, BoolTensor]`` maps a unit layer's name (see
:func:`trainables.compress.units.unit_layers`) to a bool vector over its units, True = kept; a layer left
out of ``keep`` keeps every unit. Three views of the same pruned network, equal on every input:

- **gated**: :func:`gated` multiplies the gate module's output channel of each pruned unit by 0
  (forward hooks; nothing in the weights changes). This is the reference semantics, the one
  EPruning's unit masks use.
- **zeroed**: :func:`zero_units` writes the zeros into the weights (layer rows and bias, the gate
  BatchNorm's gamma and beta, the readers' input columns), so the pruned units are dead in the
  file and :func:`alive_units` can find them again from the weights alone.
- **shrunk**: :func:`shrink` deletes them: each unit layer loses its pruned output channels, its
  gate BatchNorm the matching entries, and each reader the matching input channels. Only this one
  is faster on a real engine (ARCHITECTURE.md: "a unit mask can be applied physically").

Channels joined by a residual add are never units (see :mod:`trainables.compress.units`), so surgery never
has to keep two sides of an add in step: a ResNet loses only block-internal channels.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> model = resnet18(num_classes=10).eval()
    >>> keep = {"layer1.0.conv1": torch.arange(64) % 2 == 0}
    >>> small = shrink(model, keep)
    >>> small.layer1[0].conv1.out_channels, small.layer1[0].conv2.in_channels
    (32, 32)
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
from .units import UnitLayer, gate_batchnorm, unit_layers

Keep = Mapping[str, torch.Tensor]


def shrink(model: nn.Module, keep: Keep) -> nn.Module:
    """A physically smaller copy of ``model`` without the units that ``keep`` prunes.

    The copy (``model`` itself is untouched) has its pruning masks made permanent and keeps the
    original's device and train/eval modes. Each unit layer loses its pruned output channels
    (weight rows, bias), its gate BatchNorm the matching ``weight``, ``bias``, ``running_mean``
    and ``running_var`` entries, and each reader the matching input channels (``spread``
    consecutive input features per unit for a ``Linear`` after a flatten, shifted by ``offset``
    inside a concatenation). ``in_channels``/``out_channels``/``in_features``/``out_features``/
    ``num_features`` follow, so the modules stay plain torchvision modules that export to ONNX.

    ``shrink(model, keep)(x)`` equals ``model(x)`` computed inside ``gated(model, keep)``.

    Args:
        model: a model :func:`~trainables.compress.units.unit_layers` knows.
        keep: unit layer name -> bool vector of its ``size`` units, True = keep.

    Raises:
        FrontierError: an unknown layer name, a vector of the wrong shape or dtype, or a layer
            that would lose every unit (surgery refuses it rather than keep one silently:
            :func:`alive_units` already keeps one unit of an all-dead layer).
    """
    layers = unit_layers(model)
    masks = _resolve(layers, keep, allow_empty=False)
    small = _copy(model)
    reader_keep: dict[str, torch.Tensor] = {}  # reader name -> keep over its input channels
    for unit in layers:
        if not bool(masks[unit.name].all()):
            _mark_reader_inputs(small, unit, masks[unit.name], reader_keep)
    # Outputs and inputs are independent axes of a weight, and the reader masks were built on the
    # original sizes, so the order of the slicing below does not matter.
    for unit in layers:
        kept = masks[unit.name]
        if bool(kept.all()):
            continue
        index = kept.nonzero().flatten()
        layer = small.get_submodule(unit.name)
        _input_width(layer, unit.name)  # checks the type
        _slice_outputs(layer, index)
        bn = gate_batchnorm(small, unit)
        if bn is not None:
            _slice_batchnorm(bn, index)
    for name, kept in reader_keep.items():
        _slice_inputs(small.get_submodule(name), kept.nonzero().flatten())
    return small


@contextmanager
def gated(model: nn.Module, keep: Keep) -> Iterator[nn.Module]:
    """Inside the block, ``model``'s pruned units output 0: their gate channel is multiplied by 0.

    This is the reference that :func:`shrink` and :func:`zero_units` must match. Forward hooks on
    the gate modules do the masking; they are removed on exit. A layer may lose every unit here.

    Example:
        >>> with gated(model, keep):   # doctest: +SKIP
        ...     reference = model(x)

    Raises:
        FrontierError: an unknown layer name, or a vector of the wrong shape or dtype.
    """
    layers = unit_layers(model)
    masks = _resolve(layers, keep, allow_empty=True)
    with gated_states(model, layers, torch.cat([masks[u.name] for u in layers])):
        yield model


def zero_units(model: nn.Module, keep: Keep) -> nn.Module:
    """Zero the units that ``keep`` prunes in ``model``'s weights, in place; returns ``model``.

    Zeroed: each unit layer's weight rows and bias of the pruned units, its gate BatchNorm's
    ``weight`` and ``bias`` (gamma, beta) for them, and the readers' input weights that read them
    (dead already, zeroed so that the artifact compresses). A pruning-masked tensor is zeroed both
    in ``<name>_orig`` and in the computed ``<name>``. Outputs then equal the gated model's, and
    ``alive_units(model)`` returns ``keep`` (for every layer that keeps at least one unit).

    Raises:
        FrontierError: an unknown layer name, or a vector of the wrong shape or dtype.
    """
    layers = unit_layers(model)
    masks = _resolve(layers, keep, allow_empty=True)
    with torch.no_grad():
        for unit in layers:
            pruned = (~masks[unit.name]).nonzero().flatten()
            if pruned.numel() == 0:
                continue
            layer = model.get_submodule(unit.name)
            _zero(layer, "weight", pruned, dim=0)
            _zero(layer, "bias", pruned, dim=0)
            bn = gate_batchnorm(model, unit)
            if bn is not None:
                _zero(bn, "weight", pruned, dim=0)
                _zero(bn, "bias", pruned, dim=0)
            for reader in unit.readers:
                columns = _reader_columns(pruned, reader.offset, reader.spread)
                _zero(model.get_submodule(reader.name), "weight", columns, dim=1)
    return model


def alive_units(model: nn.Module, layers: Sequence[UnitLayer] | None = None) -> dict[str, torch.Tensor]:
    """Keep masks of the alive units: True for each unit not provably dead, i.e. whose gate output
    may be nonzero for some input.

    A unit is dead when, for a BatchNorm gate, its ``weight`` (gamma) and ``bias`` (beta) are both
    0 (the BN then outputs exactly 0 whatever its input and running statistics), or, for a layer
    that gates itself, its weight slice and bias are all 0. Masked values count (a pruning
    reparametrization's computed weight is read). A layer whose units are all dead keeps its
    first one (dead, so the function is unchanged), so that :func:`shrink` accepts the result.

    Args:
        model: a model :func:`~trainables.compress.units.unit_layers` knows, pruned units zeroed in the
            weights (by :func:`zero_units` or by channel-granularity gradual pruning).
        layers: the unit layers to look at; None: all of ``model``'s.

    Returns:
        unit layer name -> bool vector over its units, True = alive (kept), for every layer.
    """
    layers = unit_layers(model) if layers is None else list(layers)
    result = {}
    with torch.no_grad():
        for unit in layers:
            keep = ~_dead(model, unit)
            if not bool(keep.any()):
                keep[0] = True
            result[unit.name] = keep
    return result


def _dead(model: nn.Module, unit: UnitLayer) -> torch.Tensor:
    bn = gate_batchnorm(model, unit)
    if bn is not None:
        if bn.weight is None or bn.bias is None:  # affine=False: it can never output a constant 0
            return torch.zeros(unit.size, dtype=torch.bool)
        return ((bn.weight == 0) & (bn.bias == 0)).cpu()
    layer = model.get_submodule(unit.name)
    dead = (layer.weight.flatten(1) == 0).all(dim=1)
    if layer.bias is not None:
        dead &= layer.bias == 0
    return dead.cpu()


def _resolve(layers: Sequence[UnitLayer], keep: Keep, *, allow_empty: bool) -> dict[str, torch.Tensor]:
    """``keep`` checked against ``layers`` and completed: every layer's bool vector, on the CPU."""
    sizes = {u.name: u.size for u in layers}
    unknown = sorted(set(keep) - set(sizes))
    if unknown:
        raise FrontierError(f"keep: '{unknown[0]}' is not a unit layer of this model; "
                            f"unit layers are e.g. {', '.join(list(sizes)[:4])}")
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
            raise FrontierError(f"keep['{name}'] removes all {size} units of layer '{name}'; "
                                "surgery keeps at least one unit per layer")
        masks[name] = vector.detach().cpu()
    return masks


def _copy(model: nn.Module) -> nn.Module:
    """A deep copy with masks made permanent, on ``model``'s device, each module in its own mode."""
    copy = plain_copy(model)
    for original, copied in zip(model.modules(), copy.modules()):
        copied.training = original.training
    parameter = next(model.parameters(), None)
    return copy if parameter is None else copy.to(parameter.device)


def _mark_reader_inputs(
    model: nn.Module, unit: UnitLayer, kept: torch.Tensor, reader_keep: dict[str, torch.Tensor]
) -> None:
    """Clear, in ``reader_keep``, the input channels of ``unit``'s readers that carry pruned units."""
    for reader in unit.readers:
        width = _input_width(model.get_submodule(reader.name), reader.name)
        end = reader.offset + unit.size * reader.spread
        if end > width:
            raise FrontierError(f"unit graph: '{reader.name}' reads {width} inputs, but '{unit.name}' "
                                f"needs inputs {reader.offset}..{end - 1}")
        vector = reader_keep.setdefault(reader.name, torch.ones(width, dtype=torch.bool))
        vector[reader.offset:end] &= kept.repeat_interleave(reader.spread)  # flatten order: unit-major


def _reader_columns(pruned: torch.Tensor, offset: int, spread: int) -> torch.Tensor:
    """Input indices of a reader that carry the ``pruned`` units (each unit spans ``spread``)."""
    return (offset + pruned[:, None] * spread + torch.arange(spread)).flatten()


def _input_width(module: nn.Module, name: str) -> int:
    """Input channels/features of ``module``, which must be an ungrouped Conv2d or a Linear."""
    if isinstance(module, nn.Conv2d):
        if module.groups != 1:
            raise FrontierError(f"surgery: '{name}' is a grouped conv ({module.groups} groups); not supported")
        return module.in_channels
    if isinstance(module, nn.Linear):
        return module.in_features
    raise FrontierError(f"surgery: '{name}' must be a Conv2d or Linear but is a {type(module).__name__}")


def _slice_outputs(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _sliced(module.weight, index, 0)
    if module.bias is not None:
        module.bias = _sliced(module.bias, index, 0)
    if isinstance(module, nn.Conv2d):
        module.out_channels = len(index)
    else:
        module.out_features = len(index)


def _slice_inputs(module: nn.Module, index: torch.Tensor) -> None:
    module.weight = _sliced(module.weight, index, 1)
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(index)
    else:
        module.in_features = len(index)


def _slice_batchnorm(bn: nn.Module, index: torch.Tensor) -> None:
    if bn.weight is not None:
        bn.weight = _sliced(bn.weight, index, 0)
        bn.bias = _sliced(bn.bias, index, 0)
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[index.to(bn.running_mean.device)].clone()
        bn.running_var = bn.running_var[index.to(bn.running_var.device)].clone()
    bn.num_features = len(index)


def _sliced(parameter: nn.Parameter, index: torch.Tensor, dim: int) -> nn.Parameter:
    data = parameter.detach().index_select(dim, index.to(parameter.device)).clone()
    return nn.Parameter(data, requires_grad=parameter.requires_grad)


def _zero(module: nn.Module, name: str, index: torch.Tensor, *, dim: int) -> None:
    """Zero ``index`` along ``dim`` of ``module.<name>`` and, when pruning-masked, ``<name>_orig``."""
    for attr in (name, f"{name}_orig"):
        tensor = getattr(module, attr, None)
        if isinstance(tensor, torch.Tensor):
            tensor.index_fill_(dim, index.to(tensor.device), 0.0)
