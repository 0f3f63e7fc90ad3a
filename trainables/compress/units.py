"""Units and the layers that read them: the channel graph that unit pruning and surgery share.

A *unit* (EPruning paper, sec. 2.2) is a conv output channel with its kernel and bias, or a
hidden fully connected unit. This module lists, for each supported architecture, the layers
whose units may be pruned, where a unit's activation can be gated to zero, and which layers
read each unit (so that surgery can drop the matching input channels too):

- ResNets (BasicBlock, Bottleneck; ``small_resnet`` too): the convs inside a residual block
  whose output does not reach an add (``conv1``; also ``conv2`` in a Bottleneck). Channels
  joined by a residual add are kept: pruning one of them alone would not remove it.
- VGG and AlexNet: every conv of ``features`` and every hidden ``Linear`` of ``classifier``.
- SqueezeNet: the stem conv, and each fire module's squeeze and both expand convs (the expands
  are concatenated, so the reader sees them at an offset).

The classifier head is never a unit layer. A unit gated at its *gate* module (the BatchNorm after
the conv, or the layer itself) is exactly zero downstream, since ReLU, max-pooling and dropout
keep zeros at zero; so a gated network and the physically smaller one compute the same function.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..errors import FrontierError


@dataclass(frozen=True)
class Reader:
    """A layer that reads a unit layer's output.

    Args:
        name: the ``Conv2d``/``Linear`` module that reads the units.
        offset: index of unit 0 among the reader's input channels (a concatenation shifts it).
        spread: reader inputs per unit: 1 for a conv, H*W for a ``Linear`` after a flatten.
    """

    name: str
    offset: int = 0
    spread: int = 1


@dataclass(frozen=True)
class UnitLayer:
    """A layer whose output channels (or features) are units.

    Args:
        name: the ``Conv2d``/``Linear`` module that produces the units.
        size: the number of units (its output channels or features).
        gate: the module whose output is masked to zero a unit (its BatchNorm, or itself).
        readers: the layers that read these units.
    """

    name: str
    size: int
    gate: str
    readers: tuple[Reader, ...]


def unit_layers(model: nn.Module, include: Sequence[str] | None = None) -> list[UnitLayer]:
    """The unit layers of ``model`` in forward order, optionally only those matching ``include``.

    Args:
        model: a torchvision ResNet, VGG, AlexNet or SqueezeNet, or :class:`~trainables.models.SmallResNet`.
        include: shell-style patterns over layer names (``["layer3.*", "features.1*"]``); None: all.

    Raises:
        FrontierError: an architecture without a known unit graph, or ``include`` matching nothing.
    """
    from ..models import SmallResNet

    if isinstance(model, (tvm.ResNet, SmallResNet)):
        layers = _resnet_units(model)
    elif isinstance(model, (tvm.VGG, tvm.AlexNet)):
        layers = _sequential_units(model)
    elif isinstance(model, tvm.SqueezeNet):
        layers = _squeezenet_units(model)
    else:
        raise FrontierError(f"unit pruning: no unit graph for {type(model).__name__}; "
                            "supported: ResNet, VGG, AlexNet, SqueezeNet, small_resnet")
    if include is None:
        return layers
    chosen = [u for u in layers if any(fnmatch.fnmatchcase(u.name, p) for p in include)]
    if not chosen:
        raise FrontierError(f"layers: {list(include)} match no unit layer; "
                            f"unit layers are e.g. {', '.join(u.name for u in layers[:4])}")
    return chosen


def _resnet_units(model: nn.Module) -> list[UnitLayer]:
    layers = []
    for block_name, block in model.named_modules():
        if isinstance(block, BasicBlock):
            pairs = [("conv1", "bn1", "conv2")]
        elif isinstance(block, Bottleneck):
            pairs = [("conv1", "bn1", "conv2"), ("conv2", "bn2", "conv3")]
        else:
            continue
        for conv, bn, reader in pairs:
            size = getattr(block, conv).out_channels
            layers.append(UnitLayer(f"{block_name}.{conv}", size, f"{block_name}.{bn}", (Reader(f"{block_name}.{reader}"),)))
    return layers


def _sequential_units(model: nn.Module) -> list[UnitLayer]:
    """VGG and AlexNet: convs of ``features`` then hidden linears of ``classifier``, in a chain."""
    convs = [(f"features.{i}", m) for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    linears = [(f"classifier.{i}", m) for i, m in enumerate(model.classifier) if isinstance(m, nn.Linear)]
    pool = model.avgpool.output_size
    spread = pool * pool if isinstance(pool, int) else pool[0] * pool[1]
    chain = convs + linears
    layers = []
    for k, (name, module) in enumerate(chain[:-1]):  # the last linear is the head
        next_name, _ = chain[k + 1]
        flat = isinstance(module, nn.Conv2d) and next_name.startswith("classifier")
        gate = _batchnorm_after(model.features, name) if isinstance(module, nn.Conv2d) else None
        size = module.out_channels if isinstance(module, nn.Conv2d) else module.out_features
        layers.append(UnitLayer(name, size, gate or name, (Reader(next_name, spread=spread if flat else 1),)))
    return layers


def _batchnorm_after(features: nn.Sequential, name: str) -> str | None:
    index = int(name.split(".")[1])
    if index + 1 < len(features) and isinstance(features[index + 1], nn.BatchNorm2d):
        return f"features.{index + 1}"
    return None


def _squeezenet_units(model: tvm.SqueezeNet) -> list[UnitLayer]:
    fires = [(f"features.{i}", m) for i, m in enumerate(model.features) if isinstance(m, tvm.squeezenet.Fire)]
    head = f"classifier.{next(i for i, m in enumerate(model.classifier) if isinstance(m, nn.Conv2d))}"
    stem = next(f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d))
    layers = [UnitLayer(stem, model.features[int(stem.split(".")[1])].out_channels, stem,
                        (Reader(f"{fires[0][0]}.squeeze"),))]
    for k, (name, fire) in enumerate(fires):
        next_reader = f"{fires[k + 1][0]}.squeeze" if k + 1 < len(fires) else head
        e1 = fire.expand1x1.out_channels
        layers += [
            UnitLayer(f"{name}.squeeze", fire.squeeze.out_channels, f"{name}.squeeze",
                      (Reader(f"{name}.expand1x1"), Reader(f"{name}.expand3x3"))),
            UnitLayer(f"{name}.expand1x1", e1, f"{name}.expand1x1", (Reader(next_reader),)),
            UnitLayer(f"{name}.expand3x3", fire.expand3x3.out_channels, f"{name}.expand3x3",
                      (Reader(next_reader, offset=e1),)),
        ]
    return layers


def unit_count(layers: Sequence[UnitLayer]) -> int:
    """D, the length of a state vector over ``layers``."""
    return sum(u.size for u in layers)


def gate_batchnorm(model: nn.Module, unit: UnitLayer) -> nn.modules.batchnorm._BatchNorm | None:
    """The BatchNorm that gates ``unit``'s channels, or None where the layer gates itself.

    Surgery slices its ``weight``, ``bias``, ``running_mean`` and ``running_var`` with the layer's
    output channels; channel pruning masks its ``weight`` and ``bias`` so a pruned unit is dead.
    """
    if unit.gate == unit.name:
        return None
    gate = model.get_submodule(unit.gate)
    if not isinstance(gate, nn.modules.batchnorm._BatchNorm):
        raise FrontierError(f"unit layer '{unit.name}': gate '{unit.gate}' is a {type(gate).__name__}, not a BatchNorm")
    return gate
