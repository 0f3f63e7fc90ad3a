"""Model registry: architectures by name, the classifier head found from the graph, local weights.

``build_model("resnet18", num_classes=5, weights="r18.pth")`` builds torchvision's ResNet-18,
loads the ImageNet state dict from the local file (its head keeps the file's 1000 classes), then
swaps in a freshly initialised 5-class head. Weights never come from the network: either a local
state-dict file, or ``torchvision:<ENUM>`` (e.g. ``torchvision:IMAGENET1K_V1``) when torchvision's
file is already in torch's hub cache.

A name is one of (:func:`architecture` resolves it, the one place that does):

- any torchvision classification model (:data:`TORCHVISION_ARCHITECTURES`, what
  ``torchvision.models.list_models(module=torchvision.models)`` lists: resnet18..152, vgg16,
  alexnet, squeezenet1_1, mobilenet_v2/v3, efficientnet_b0.., regnet_*, convnext_*, densenet*, ...);
- ``small_resnet``, a CIFAR-style ResNet (3 stages of 16/32/64 channels) for CPU runs and tests;
- any timm model, ``"timm:<name>"`` (``timm:resnet50d``; the optional extra ``frontier[timm]``):
  built by ``timm.create_model(name, pretrained=False)``, so with random weights and never from the
  hub; its weights come from a local state-dict file (``.pth``/``.pt``, or timm's ``.safetensors``);
- the user's own model, ``"my_pkg.models:build"``: the module is imported (from ``sys.path``, else
  from the current folder) and ``build()`` is called with no arguments; it must return an
  ``nn.Module`` taking ``(batch, 3, H, W)`` images and returning ``(batch, classes)`` logits. A trial
  on a Ray worker imports it from the folder the driver found it in (``DenseConfig.model_path``).

The head is not looked up in a table: :func:`head_name` runs the model once on a small zero image
with forward hooks and takes the last ``Linear`` or ``Conv2d`` (SqueezeNet's 1x1 conv) to run,
provided that only parameter-free modules (pooling, flatten, activation, dropout) run after it and
its outputs are as many as the model's logits. The answer is cached per module structure.

:data:`CHECKED_ARCHITECTURES` are the names the tests build, export and run; every other name
is accepted on the strength of torchvision's own tests and the head search above.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable, Mapping
from functools import lru_cache
from itertools import chain
from pathlib import Path
from types import ModuleType

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


SMALL_RESNET = "small_resnet"

# torchvision's classification namespace (no detection, segmentation, video or quantized models)
TORCHVISION_ARCHITECTURES: tuple[str, ...] = tuple(tvm.list_models(module=tvm))

# The names frontier's tests build, find the head of, export to ONNX and run (tests/test_models.py,
# tests/test_export_all.py): the families the issue names, one each, plus every ResNet depth.
CHECKED_ARCHITECTURES: tuple[str, ...] = (
    "small_resnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg16", "alexnet",
    "squeezenet1_1", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf",
    "convnext_tiny", "densenet121",
)

# Smallest square input an architecture accepts where 32x32 is too small: AlexNet's stride-4 stem
# and three max-pools collapse anything smaller to nothing, Inception-v3 has torchvision's 75, MaxViT
# needs 224 (its windows are sized for it) and the ViTs take exactly 224 (their position embeddings).
MIN_INPUT_SIZE: dict[str, int] = {
    "alexnet": 63, "inception_v3": 75, "maxvit_t": 224,
    **{name: 224 for name in TORCHVISION_ARCHITECTURES if name.startswith("vit_")},
}

# Keyword arguments frontier passes to a torchvision builder: GoogLeNet and Inception-v3 otherwise
# return (logits, aux logits) while training, which no stage expects.
_TORCHVISION_KWARGS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}

_USER_NAME = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*)$")

TIMM_PREFIX = "timm:"
_TIMM_NAME = re.compile(r"^timm:[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?$")  # a timm name, optionally with its tag
TIMM_INSTALL_HINT = "pip install 'frontier[timm]'"

Builder = Callable[[int | None], nn.Module]
"""``builder(num_classes)``: a new model with random weights and a ``num_classes``-way head;
``None`` keeps the architecture's own head (torchvision's 1000 classes, the user model's own)."""


def is_user_model(name: str) -> bool:
    """True when ``name`` names the user's own model (``module:function``), not a built-in or timm one."""
    return ":" in name and not is_timm_model(name)


def is_timm_model(name: str) -> bool:
    """True when ``name`` names a timm model (``timm:<name>``)."""
    return name.startswith(TIMM_PREFIX)


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be an architecture name, judged by its form alone (nothing is imported),
    or None. A ``module:function`` or ``timm:<name>`` name passes here; :func:`architecture` imports it."""
    if is_timm_model(name):
        if _TIMM_NAME.match(name) is None:
            return f"'{name}' is not of the form 'timm:<model name>' (e.g. timm:resnet50d)"
        return None
    if is_user_model(name):
        if _USER_NAME.match(name) is None:
            return f"'{name}' is not of the form 'package.module:function'"
        return None
    if name == SMALL_RESNET or name in TORCHVISION_ARCHITECTURES:
        return None
    return (f"unknown architecture '{name}'; known: {SMALL_RESNET}, {', '.join(TORCHVISION_ARCHITECTURES)}, "
            "or your own model as 'package.module:function'")


def architecture(name: str, path: str | None = None) -> Builder:
    """The :data:`Builder` of architecture ``name`` (see the module doc for the names accepted).

    For a user model ``module:function``, ``path`` (a folder; what :func:`user_model_path` returned
    in the driver) is appended to ``sys.path`` first, so a Ray worker that does not share the
    driver's working directory imports the same module. The callable is looked up now; it is
    called by the builder.

    Raises:
        FrontierError: one line: an unknown name (listing the known ones), a module that cannot be
            imported (naming it), a missing or non-callable attribute; the builder raises it when
            the callable fails or returns something that is not an ``nn.Module``.
    """
    problem = name_problem(name)
    if problem is not None:
        raise FrontierError(f"model: {problem}")
    if name == SMALL_RESNET:
        return lambda num_classes: SmallResNet(10 if num_classes is None else num_classes)
    if is_timm_model(name):
        return _timm_builder(name)
    if not is_user_model(name):
        def build_torchvision(num_classes: int | None) -> nn.Module:
            kwargs = dict(_TORCHVISION_KWARGS.get(name, {}))
            if num_classes is not None:
                kwargs["num_classes"] = num_classes
            return tvm.get_model(name, **kwargs)

        return build_torchvision
    module_name, attr = name.split(":")
    module = _import_user_module(module_name, path)
    if not hasattr(module, attr):
        raise FrontierError(f"model: module '{module_name}' ({module.__file__}) has no attribute '{attr}'")
    function = getattr(module, attr)
    if not callable(function):
        raise FrontierError(f"model: '{name}' is a {type(function).__name__}, not a callable returning an nn.Module")

    def build_user(num_classes: int | None) -> nn.Module:
        try:
            model = function()
        except Exception as exc:  # the user's code failed: one line naming it, not frontier's traceback
            raise FrontierError(f"model: calling {name}() raised {type(exc).__name__}: {_first_line(exc)}") from exc
        if not isinstance(model, nn.Module):
            raise FrontierError(f"model: {name}() returned a {type(model).__name__}, not a torch nn.Module")
        if num_classes is not None and head_size(model) != num_classes:
            replace_head(model, num_classes)
        return model

    return build_user


def _timm_builder(name: str) -> Builder:
    """The builder of ``timm:<name>``: ``timm.create_model(name, pretrained=False)``, never the hub."""
    try:
        import timm
    except ImportError:
        raise FrontierError(f"model: {name} needs timm, which is not installed: {TIMM_INSTALL_HINT}") from None
    model_name = name.removeprefix(TIMM_PREFIX)
    if not timm.is_model(model_name):
        pattern = f"*{model_name.split('.')[0].rstrip('0123456789_')[:12]}*"
        raise FrontierError(f"model: '{model_name}' is not a timm model; list them with "
                            f"python -c \"import timm; print(timm.list_models('{pattern}'))\"")

    def build_timm(num_classes: int | None) -> nn.Module:
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        return timm.create_model(model_name, pretrained=False, **kwargs)

    return build_timm


def user_model_path(name: str) -> str:
    """The folder on ``sys.path`` that user model ``name``'s top-level package was imported from
    (importing it if needed): what a worker appends to its ``sys.path`` to import the same module."""
    module_name = name.split(":")[0]
    _import_user_module(module_name, None)
    top = sys.modules[module_name.split(".")[0]]
    locations = list(getattr(top, "__path__", None) or [])  # a package (regular or namespace)
    where = Path(locations[0]) if locations else Path(top.__file__ or ".")
    return str(where.resolve().parent)


def _import_user_module(module_name: str, path: str | None) -> ModuleType:
    if path is not None:
        _append_to_path(path)
    module = _try_import(module_name)
    cwd = os.getcwd()
    if module is None and path is None and cwd not in sys.path:  # `frontier`, a console script, has no ''
        _append_to_path(cwd)
        module = _try_import(module_name)
        if module is None:
            sys.path.remove(cwd)
    if module is None:
        where = f"in '{path}'" if path is not None else f"on sys.path or in the current folder '{cwd}'"
        raise FrontierError(f"model: module '{module_name}' is not importable (not found {where})")
    return module


def _append_to_path(folder: str) -> None:
    if folder not in sys.path:
        sys.path.append(folder)
        importlib.invalidate_caches()


def _try_import(module_name: str) -> ModuleType | None:
    """The module, or None when it (or a package above it) is not found; FrontierError when it is
    found but fails to import (a syntax error, a missing dependency of its own)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            return None
        raise FrontierError(f"model: importing '{module_name}' failed: {_first_line(exc)}") from None
    except Exception as exc:
        problem = f"{type(exc).__name__}: {_first_line(exc)}"
        raise FrontierError(f"model: importing '{module_name}' raised {problem}") from None


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def structure(name: str, path: str | None = None, num_classes: int = 2) -> nn.Module:
    """Architecture ``name`` with a ``num_classes``-way head, on the meta device (no weights
    allocated) when it can be built there, else built on the CPU and moved there (RegNet computes its
    widths with tensors, which the meta device cannot read back). For checks of a model's layers
    (and :func:`head_key`), never for training."""
    builder = architecture(name, path)
    try:
        with torch.device("meta"):
            return builder(num_classes)
    except Exception:  # not buildable on meta: build it for real (its own error, if any, surfaces here)
        return builder(num_classes).to("meta")


@lru_cache(maxsize=64)
def head_key(name: str, path: str | None = None) -> str:
    """The state-dict key of architecture ``name``'s head weight (``fc.weight``, ``classifier.1.weight``).

    Found on :func:`structure` (meta device: no compute), which also primes :func:`head_name`'s
    cache for every model of the same structure that :func:`build_model` and :func:`rebuild` make.
    """
    return head_name(structure(name, path)) + ".weight"


def build_model(
    name: str, num_classes: int | None, *, weights: str | None = None, path: str | None = None
) -> nn.Module:
    """Build architecture ``name`` with a ``num_classes``-way head.

    With ``weights``, the state dict is loaded strictly into the architecture with the file's own
    head size (read at the head's key, :func:`head_key`); if that differs from ``num_classes``, a
    new randomly initialised head replaces it (``num_classes=None`` keeps the file's head).
    ``path`` is a user model's import folder (see :func:`architecture`).

    Raises:
        FrontierError: an unknown or broken ``name`` (see :func:`architecture`), a model whose head
            cannot be found, or bad ``num_classes``.
        WeightsError: the weights file is missing or does not fit the architecture.
    """
    builder = architecture(name, path)
    if num_classes is not None and num_classes < 1:
        raise FrontierError(f"num_classes must be >= 1 but got {num_classes}")
    key = head_key(name, path)  # found on the meta structure, so head(model) needs no run of its own
    if weights is None:
        if num_classes is None:
            raise FrontierError(f"model {name}: give num_classes or weights to take the head size from")
        return builder(num_classes)
    state = read_weights(weights, name)
    if key not in state:
        raise WeightsError(f"weights '{weights}': no '{key}' entry, so they are not a {name} state dict")
    model = builder(int(state[key].shape[0]))
    _load_strict(model, state, weights, name)
    if num_classes is not None and head_size(model) != num_classes:
        replace_head(model, num_classes)
    return model


def rebuild(name: str, state: Mapping[str, torch.Tensor], *, path: str | None = None) -> nn.Module:
    """Architecture ``name`` with its head sized from ``state`` (at :func:`head_key`), loaded from
    ``state`` (a stage output); ``path`` is a user model's import folder."""
    key = head_key(name, path)
    if key not in state:
        raise WeightsError(f"state dict has no '{key}' entry, so it is not a {name} state dict")
    model = architecture(name, path)(int(state[key].shape[0]))
    model.load_state_dict(state)
    return model


def read_weights(weights: str, name: str) -> Mapping[str, torch.Tensor]:
    """A state dict from a local file (torch's format, or ``.safetensors`` as timm's are kept), or
    from torch's cache for ``torchvision:<ENUM>``; never downloads."""
    if weights.startswith("torchvision:"):
        path = _cached_torchvision_file(name, weights.split(":", 1)[1])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights: file '{weights}' does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or non-torch file: say which one, not how torch failed inside
        raise WeightsError(f"weights: '{path}' is not a readable torch state dict ({type(exc).__name__})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights: '{path}' holds a {type(state).__name__}, not a state dict of tensors")
    return state


def _cached_torchvision_file(name: str, enum_name: str) -> Path:
    if name not in TORCHVISION_ARCHITECTURES:
        raise WeightsError(f"weights: {name} has no torchvision weights; give a local state-dict file")
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


# --- the head, found from the graph -------------------------------------------------------------

_PROBE_SIZES = (32, 64, 80, 224)  # the first square size a model runs at is the one probed
_HEADS: dict[tuple[tuple[str, type], ...], str] = {}  # module structure -> the head's name


def head_name(model: nn.Module) -> str:
    """The qualified name of ``model``'s classifier head (``fc``, ``classifier.6``, ``classifier.1``).

    The model runs once, in eval mode and without gradients, on a ``1x3xSxS`` zero image on its own
    device (S the first of 32, 64, 80, 224 it accepts; its train/eval flags are restored), with
    forward hooks recording the order in which modules finish. The head is the last ``Linear`` or
    ``Conv2d`` to run, when every module that runs after it (other than its enclosing modules) has
    no parameters of its own -- pooling, flatten, activation, dropout -- and its output channels
    equal the model's logits. The answer is cached per structure (the modules' names and types),
    so a model whose head was replaced or whose channels were removed is not run again.

    Raises:
        FrontierError: one line saying why no head was found (the model does not run on such an
            image, does not return a ``(batch, classes)`` tensor, has no Linear/Conv2d, or a layer
            with parameters runs after the last one).
    """
    key = tuple((name, type(module)) for name, module in model.named_modules())
    name = _HEADS.get(key)
    if name is None:
        name = _find_head(model)
        if len(_HEADS) >= 256:
            _HEADS.clear()
        _HEADS[key] = name
    return name


def _find_head(model: nn.Module) -> str:
    kind = type(model).__name__
    names = {id(module): name for name, module in model.named_modules()}
    finished: list[nn.Module] = []
    hooks = [m.register_forward_hook(lambda m, args, out: finished.append(m)) for m in model.modules()]
    flags = [(m, m.training) for m in model.modules()]
    reference = next(chain(model.parameters(), model.buffers()), None)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else torch.float32
    output, failure = None, None
    model.eval()
    try:
        for size in _PROBE_SIZES:
            finished.clear()
            try:
                with torch.no_grad():
                    output = model(torch.zeros(1, 3, size, size, device=device, dtype=dtype))
                break
            except Exception as exc:  # too small for the model, or it does not take 3-channel images
                failure = exc
        else:
            raise FrontierError(
                f"model: {kind} does not run on a 1x3xSxS image (S = 32..224), so its head cannot be "
                f"found: {type(failure).__name__}: {_first_line(failure)}")
    finally:
        for hook in hooks:
            hook.remove()
        for module, training in flags:
            module.training = training
    if not isinstance(output, torch.Tensor) or output.dim() != 2:
        got = (f"a tensor of shape {tuple(output.shape)}" if isinstance(output, torch.Tensor)
               else f"a {type(output).__name__}")
        raise FrontierError(f"model: {kind} returns {got}, not (batch, classes) logits, so its head cannot be found")
    layers = [i for i, m in enumerate(finished) if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not layers:
        raise FrontierError(f"model: {kind} runs no Linear or Conv2d layer, so it has no head to find")
    head = finished[layers[-1]]
    name = names[id(head)]
    for later in finished[layers[-1] + 1:]:
        other = names.get(id(later), "")
        enclosing = other == "" or name.startswith(other + ".")
        if not enclosing and any(True for _ in later.parameters(recurse=False)):
            raise FrontierError(
                f"model: {kind}'s last Linear/Conv2d '{name}' is followed by '{other}' ({type(later).__name__}), "
                "which has parameters; the head must be the last layer with weights")
    units = head.out_features if isinstance(head, nn.Linear) else head.out_channels
    if units != output.shape[1] or name == "":
        raise FrontierError(
            f"model: {kind}'s last Linear/Conv2d '{name}' has {units} outputs but the model returns "
            f"{output.shape[1]} logits, so it is not the head")
    return name


def head(model: nn.Module) -> nn.Module:
    """The classifier head module (see :func:`head_name`): a ``Linear`` or a ``Conv2d``."""
    return model.get_submodule(head_name(model))


def head_size(model: nn.Module) -> int:
    """Number of classes the head predicts."""
    h = head(model)
    return h.out_features if isinstance(h, nn.Linear) else h.out_channels


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Swap in a new randomly initialised ``num_classes``-way head, in place; returns ``model``.

    A ``Linear`` head gets a ``Linear`` (PyTorch's default init); a ``Conv2d`` head (SqueezeNet's
    1x1 conv) a ``Conv2d`` of the same geometry, initialised as torchvision's SqueezeNet does.
    The new head is on the old one's device and dtype; a ``num_classes`` attribute is updated.
    """
    name = head_name(model)
    old = model.get_submodule(name)
    like = {"device": old.weight.device, "dtype": old.weight.dtype}
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, **like)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding, old.dilation,
                        bias=old.bias is not None, padding_mode=old.padding_mode, **like)
        nn.init.normal_(new.weight, mean=0.0, std=0.01)
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    if isinstance(getattr(model, "num_classes", None), int):
        model.num_classes = num_classes
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model
