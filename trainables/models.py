"""Model registry: architectures by name, a new head for the target classes, local weights.

``build_model("resnet18", num_classes=5, weights="r18.pth")`` builds torchvision's ResNet-18,
loads the ImageNet state dict from the local file (its head keeps the file's 1000 classes), then
swaps in a freshly initialised 5-class head. Weights never come from the network: either a local
state-dict file, or ``torchvision:<ENUM>`` (e.g. ``torchvision:IMAGENET1K_V1``) when torchvision's
file is already in torch's hub cache.

Names: resnet18/34/50/101/152, vgg16, alexnet, squeezenet1_1 (torchvision) and small_resnet, a
CIFAR-style ResNet (3 stages of 16/32/64 channels) for CPU runs and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision import models as tvm
from torchvision.models.resnet import BasicBlock

from .errors import FrontierError, WeightsError


class SmallResNet(nn.Module):
    """A CIFAR-style ResNet (He et al. 2016, sec. 4.2) built from torchvision's ``BasicBlock``.

    Attribute names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1..3``, ``fc``) so the
    head swap and, later, channel surgery treat both alike.

    Args:
        num_classes: outputs of the ``fc`` head.
        widths: channels of the three stages.
        blocks: BasicBlocks per stage.
    """

    def __init__(
        self, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64), blocks: tuple[int, ...] = (1, 1, 1)
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, (width, count) in enumerate(zip(widths, blocks), start=1):
            stride = 1 if i == 1 else 2
            setattr(self, f"layer{i}", _stage(inplanes, width, count, stride))
            inplanes = width
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stage(inplanes: int, planes: int, count: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or inplanes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
        )
    layers = [BasicBlock(inplanes, planes, stride, downsample)]
    layers += [BasicBlock(planes, planes) for _ in range(count - 1)]
    return nn.Sequential(*layers)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": tvm.resnet18,
    "resnet34": tvm.resnet34,
    "resnet50": tvm.resnet50,
    "resnet101": tvm.resnet101,
    "resnet152": tvm.resnet152,
    "vgg16": tvm.vgg16,
    "alexnet": tvm.alexnet,
    "squeezenet1_1": tvm.squeezenet1_1,
    "small_resnet": SmallResNet,
}

# State-dict prefix of each architecture's classifier head.
HEAD_OF: dict[str, str] = {
    **{f"resnet{d}": "fc" for d in (18, 34, 50, 101, 152)},
    "vgg16": "classifier.6",
    "alexnet": "classifier.6",
    "squeezenet1_1": "classifier.1",
    "small_resnet": "fc",
}

# Smallest square input each architecture accepts (AlexNet's stride-4 stem and three max-pools
# collapse anything smaller to nothing).
MIN_INPUT_SIZE: dict[str, int] = {"alexnet": 63}


def build_model(name: str, num_classes: int | None, *, weights: str | None = None) -> nn.Module:
    """Build architecture ``name`` with a ``num_classes``-way head.

    With ``weights``, the state dict is loaded strictly into the architecture with the file's own
    head size; if that differs from ``num_classes``, a new randomly initialised head replaces it
    (``num_classes=None`` keeps the file's head).

    Raises:
        FrontierError: unknown ``name`` (the message lists the known ones) or bad ``num_classes``.
        WeightsError: the weights file is missing or does not fit the architecture.
    """
    if name not in ARCHITECTURES:
        raise FrontierError(f"model: unknown architecture '{name}'; known: {', '.join(ARCHITECTURES)}")
    if num_classes is not None and num_classes < 1:
        raise FrontierError(f"num_classes must be >= 1 but got {num_classes}")
    if weights is None:
        if num_classes is None:
            raise FrontierError(f"model {name}: give num_classes or weights to take the head size from")
        return ARCHITECTURES[name](num_classes=num_classes)
    state = read_weights(weights, name)
    head_key = HEAD_OF[name] + ".weight"
    if head_key not in state:
        raise WeightsError(f"weights '{weights}': no '{head_key}' entry, so they are not a {name} state dict")
    model = ARCHITECTURES[name](num_classes=state[head_key].shape[0])
    _load_strict(model, state, weights, name)
    if num_classes is not None and head_size(model) != num_classes:
        replace_head(model, num_classes)
    return model


def rebuild(name: str, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Architecture ``name`` with its head sized from ``state``, loaded from ``state`` (a stage output)."""
    model = ARCHITECTURES[name](num_classes=state[HEAD_OF[name] + ".weight"].shape[0])
    model.load_state_dict(state)
    return model


def read_weights(weights: str, name: str) -> Mapping[str, torch.Tensor]:
    """A state dict from a local file, or from torch's cache for ``torchvision:<ENUM>``; never downloads."""
    if weights.startswith("torchvision:"):
        path = _cached_torchvision_file(name, weights.split(":", 1)[1])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights: file '{weights}' does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or non-torch file: say which one, not how torch failed inside
        raise WeightsError(f"weights: '{path}' is not a readable torch state dict ({type(exc).__name__})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights: '{path}' holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _cached_torchvision_file(name: str, enum_name: str) -> Path:
    if name == "small_resnet":
        raise WeightsError("weights: small_resnet has no torchvision weights; give a local state-dict file")
    enum = tvm.get_model_weights(name)
    if enum_name not in enum.__members__:
        raise WeightsError(
            f"weights: '{enum_name}' is not a torchvision weight of {name}; known: {', '.join(enum.__members__)}"
        )
    filename = Path(enum[enum_name].url).name
    path = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not path.is_file():
        raise WeightsError(
            f"weights: torchvision:{enum_name} for {name} is not in torch's cache ('{path}'); "
            "copy the file there or give a local path (frontier never downloads)"
        )
    return path


def _load_strict(model: nn.Module, state: Mapping[str, torch.Tensor], weights: str, name: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. '{missing[0]}')")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. '{unexpected[0]}')")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of '{k}' is {tuple(state[k].shape)}, {name} needs {tuple(own[k].shape)}")
        raise WeightsError(f"weights '{weights}' do not fit {name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the classifier head."""
    if isinstance(model, (tvm.ResNet, SmallResNet)):
        return "fc"
    if isinstance(model, (tvm.VGG, tvm.AlexNet)):
        return f"classifier.{len(model.classifier) - 1}"
    if isinstance(model, tvm.SqueezeNet):
        return "classifier.1"
    raise FrontierError(f"no known classifier head for {type(model).__name__}")


def head(model: nn.Module) -> nn.Module:
    """The classifier head module (the last ``Linear``, or SqueezeNet's final 1x1 conv)."""
    return model.get_submodule(_head_prefix(model))


def head_size(model: nn.Module) -> int:
    """Number of classes the head predicts."""
    h = head(model)
    return h.out_features if isinstance(h, nn.Linear) else h.out_channels


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap in a new randomly initialised ``num_classes``-way head, in place; returns ``model``."""
    old = head(model)
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes)
    else:  # SqueezeNet: the classifier is a 1x1 conv followed by ReLU and global pooling
        new = nn.Conv2d(old.in_channels, num_classes, kernel_size=1)
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        nn.init.zeros_(new.bias)
        model.num_classes = num_classes
    parent, _, attr = _head_prefix(model).rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new.to(old.weight.device))
    return model
