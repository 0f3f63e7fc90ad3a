"""Weight sharing (stage ``Q``) and retraining on unlabeled data (``R``), after the
quantization-retraining paper (Thonglek et al.).

*Sharing* (sec. III-A): the values of one layer's weight tensor are clustered into k centroids
(k a power of two from 1 to 256, "because the number of centroids is based on the number of
stored data bits") and each value is replaced by its centroid. Weights, biases and batch-norm
parameters are clustered separately, per layer; zeros left by pruning stay exact zeros and are not
clustered. Layers are chosen by *group* (:func:`layer_groups`): ResNet stages, or VGG's numbered
layers, or a range of numbered weight layers (:func:`group_layers`: ResNet-50's ``layers13-49``),
so a spec can say "layer4 at 256 centroids, biases at one". The HDF5 artifact recognises a
tensor with at most 256 distinct values and stores it as codebook + packed indices, so
``size_bytes`` falls with nothing more to do.

*Retraining* (sec. III-B): "we split the layers of the model into trainable layers and
non-trainable layers. We keep the quantized layers as non-trainable"; the others are trained so
that the shared model's outputs match the original model's outputs on an *unlabeled* dataset
different from the labeled one. Beside it, conventional retraining with labels (Fig. 15/16).
A layer is quantized when its *weight* was shared, and then all its parameters stay fixed; a
shared bias of a layer whose weight was not shared stays at its shared value while that weight
trains (:func:`frozen_parameters`), so the paper's configurations (every bias at one centroid,
the weights of some layers shared) retrain the other layers, the classifier included.

The offline sensitivity analysis (Fig. 7/8, 12/13: one group shared at a time at every k) is
``frontier sweep``'s, in :mod:`search.final.sensitivity`.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Iterable
from typing import Literal, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn
from torch.utils.data import DataLoader

from ..compress.clustering import cluster
from ..compress.masks import PRUNABLE, sparsity_kept
from ..errors import FrontierError
from ..stage import Context, Domain, Metrics
from ..data import model_input
from ..train import (EVAL_BATCH_SIZE, FINITE_CHECK_EVERY, DistillConfig, OptimConfig, evaluate, fit, loader,
                     make_optimizer, seed_everything, soft_target_loss, train_precision)

__all__ = ["cluster", "layer_groups", "group_layers", "share", "shared_tensors", "frozen_parameters", "nothing_to_retrain", "retrain",
           "Share", "ShareConfig", "RetrainConfig", "CENTROIDS"]

CENTROIDS = tuple(2**i for i in range(9))  # 1, 2, 4, ..., 256
Centroids = Union[int, Literal["keep"]]


def layer_groups(model: nn.Module) -> dict[str, list[str]]:
    """Named groups of ``Conv2d``/``Linear`` modules, in definition order.

    ResNets (torchvision's and ``small_resnet``): ``stem`` (conv1), ``layer1`` .. ``layer4`` (every
    conv of a stage, downsample included) and ``fc``. Other architectures: ``layer1`` .. ``layerN``,
    one group per weight layer numbered as the paper numbers VGG-16's 16 layers.
    """
    names = [name for name, m in model.named_modules() if isinstance(m, PRUNABLE)]
    if hasattr(model, "layer1") and hasattr(model, "fc"):
        groups: dict[str, list[str]] = {}
        for name in names:
            top = name.split(".")[0]
            groups.setdefault("stem" if top == "conv1" else top, []).append(name)
        return groups
    return {f"layer{i}": [name] for i, name in enumerate(names, start=1)}


_RANGE = re.compile(r"^layers(\d+)-(\d+)$")


def numbered_layers(model: nn.Module) -> list[str]:
    """The weight layers numbered as the quantization paper numbers them: ``Conv2d``/``Linear`` in
    definition order, without a ResNet's shortcut projections (``downsample``), so ResNet-50 has
    its 50 layers (49 convolutions and the classifier) and VGG-16 its 16."""
    return [name for name, m in model.named_modules() if isinstance(m, PRUNABLE) and "downsample" not in name.split(".")]


def group_layers(model: nn.Module, group: str) -> list[str] | None:
    """The ``Conv2d``/``Linear`` module names of ``group``: a group of :func:`layer_groups`, or a
    range ``layers<a>-<b>`` of :func:`numbered_layers`, both ends included (the paper's "13rd-49th
    layers" of ResNet-50 is ``layers13-49``); None when the model has no such group or the range
    falls outside its layers.

    Example:
        >>> from trainables.models import SmallResNet
        >>> group_layers(SmallResNet(10), "layers1-2")
        ['conv1', 'layer1.0.conv1']
    """
    groups = layer_groups(model)
    if group in groups:
        return groups[group]
    found = _RANGE.match(group)
    if found is None:
        return None
    first, last = int(found[1]), int(found[2])
    names = numbered_layers(model)
    return names[first - 1:last] if 1 <= first <= last <= len(names) else None


def group_choices(model: nn.Module) -> str:
    """The group names ``model`` has, and the range form, for an error message."""
    return f"{', '.join(layer_groups(model))}, or a range layers<a>-<b> of its layers 1-{len(numbered_layers(model))}"


class ShareConfig(BaseModel):
    """Which groups to share at how many centroids, the bias rule and the clustering method.

    Args:
        groups: group name -> centroid count (a power of two, 1 to 256) or ``keep``.
        bias: ``one`` shares every conv/linear bias as one centroid (its mean), the paper's choice
            for VGG-16 and ResNet-50; ``keep`` leaves biases alone.
        method: ``kmeans`` (1-D k-means) or ``equal`` (equal-count clusters, the paper's Fig. 2).
        batchnorm: centroids for every batch-norm tensor (weight, bias, running mean and variance,
            each clustered on its own), or ``keep``; the paper found sharing them costs accuracy.
    """

    model_config = ConfigDict(extra="forbid")

    groups: dict[str, Centroids] = Field(default_factory=dict)
    bias: Literal["one", "keep"] = "keep"
    method: Literal["kmeans", "equal"] = "kmeans"
    batchnorm: Centroids = "keep"

    @field_validator("groups")
    @classmethod
    def _powers_of_two(cls, groups: dict[str, Centroids]) -> dict[str, Centroids]:
        for name, k in groups.items():
            if k != "keep" and k not in CENTROIDS:
                raise ValueError(f"{name}: centroids must be a power of two from 1 to 256 or 'keep', got {k!r}")
        return groups

    @field_validator("batchnorm")
    @classmethod
    def _batchnorm_power_of_two(cls, k: Centroids) -> Centroids:
        if k != "keep" and k not in CENTROIDS:
            raise ValueError(f"centroids must be a power of two from 1 to 256 or 'keep', got {k!r}")
        return k


@torch.no_grad()
def share_tensor(tensor: torch.Tensor, k: int, method: str) -> torch.Tensor:
    """``tensor`` with its nonzero values replaced by their k centroids (zeros stay zero)."""
    flat = tensor.detach().reshape(-1)
    keep = flat != 0
    values = flat[keep]
    if values.numel() == 0:
        return tensor.clone()
    centroids, labels = cluster(values.cpu().numpy(), k, method)
    out = torch.zeros_like(flat)
    out[keep] = torch.as_tensor(centroids, dtype=tensor.dtype)[torch.as_tensor(labels, dtype=torch.long)].to(out.device)
    return out.reshape(tensor.shape)


def shared_tensors(model: nn.Module, cfg: ShareConfig) -> dict[str, int]:
    """``{tensor name: k}`` of the tensors :func:`share` shares in ``model`` for ``cfg``, without
    touching them (works on a model on the meta device, e.g. :func:`trainables.models.structure`).

    Names are ``<module>.<attr>`` (``layer3.0.conv1.weight``, ``fc.bias``, ``bn1.running_var``),
    a pruned tensor's name without its mask's ``_orig`` suffix.

    Raises:
        FrontierError: a group name the model does not have (the message lists the known ones).
    """
    members = {group: group_layers(model, group) for group in cfg.groups}
    unknown = sorted(group for group, layers in members.items() if layers is None)
    if unknown:
        raise FrontierError(f"share.groups.{unknown[0]}: no such layer group; this model has {group_choices(model)}")
    modules = dict(model.named_modules())
    shared: dict[str, int] = {}
    for group, k in cfg.groups.items():
        if k != "keep":
            shared.update({f"{name}.weight": k for name in members[group]})
    if cfg.bias == "one":
        shared.update({f"{name}.bias": 1 for name, module in modules.items()
                       if isinstance(module, PRUNABLE) and module.bias is not None})
    if cfg.batchnorm != "keep":
        for name, module in modules.items():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                shared.update({f"{name}.{attr}": cfg.batchnorm for attr in ("weight", "bias", "running_mean", "running_var")
                               if getattr(module, attr) is not None})
    return shared


@torch.no_grad()
def share(model: nn.Module, cfg: ShareConfig) -> dict[str, int]:
    """Share ``model``'s tensors in place as ``cfg`` says; returns ``{tensor name: k}`` of what was
    shared (:func:`shared_tensors`).

    Raises:
        FrontierError: a group name the model does not have (the message lists the known ones).
    """
    shared = shared_tensors(model, cfg)
    modules = dict(model.named_modules())
    for name, k in shared.items():
        module, _, attr = name.rpartition(".")
        tensor = getattr(modules[module], attr)
        tensor.copy_(share_tensor(tensor, k, cfg.method))
    return shared


class RetrainConfig(BaseModel):
    """Retraining after sharing.

    Args:
        mode: ``unlabeled`` (match the original model's outputs; the paper's method) or
            ``labeled`` (conventional: cross-entropy on the target's labeled training split).
        unlabeled: whose training images serve as the unlabeled data: ``source`` (by default: a
            dataset other than the labeled target, as the paper uses CIFAR for an ImageNet model)
            or ``target`` (its images, labels ignored).
        loss: ``kl`` (KL divergence of the softmax outputs, teacher to student) or ``mse`` (squared
            error between the softmax output vectors).
        distill: ``labeled`` mode only: distillation from the trial's teacher (the model as it
            entered the trial's first compressing stage on the target, :meth:`~trainables.stage.Context.teacher`)
            beside the labels, Hinton et al. 2015 (:func:`~trainables.train.distillation_loss`);
            weight 0 (the default) is plain cross-entropy. ``unlabeled`` mode ignores it: it is
            distillation already, from the model before sharing, at temperature 1 (the paper's).
            Searchable as ``retrain.distill.weight``.
        optim: Adam at 1e-4 by default: retraining fine-tunes a trained network. At 1e-3 (the
            default before) two epochs of unlabeled retraining on Fashion-MNIST's source classes took
            a pruned, shared ResNet-18 at 32 px from 0.944 to 0.631 on the target (0.942 at 1e-4).
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["unlabeled", "labeled"] = "unlabeled"
    unlabeled: Domain = "source"
    epochs: int = Field(3, ge=1)
    batch_size: int = Field(64, ge=1)
    loss: Literal["kl", "mse"] = "kl"
    optim: OptimConfig = OptimConfig(name="adam", lr=1e-4)
    distill: DistillConfig = DistillConfig()

    @property
    def distills(self) -> bool:
        """Whether retraining learns from the trial's teacher: ``labeled`` mode with a distill weight above 0."""
        return self.mode == "labeled" and self.distill.on


def frozen_parameters(model: nn.Module, shared: Iterable[str]) -> set[str]:
    """Names of the parameters that retraining keeps fixed: every parameter of a *quantized layer*,
    and every shared tensor.

    The quantization-retraining paper (sec. III-B) splits "the layers of the model into trainable
    layers and non-trainable layers" and keeps "the quantized layers as non-trainable". A layer
    (a module) is quantized when its *weight* is in ``shared`` (``share``'s result): then all its
    parameters stay fixed, so with ``bias: keep`` a conv whose weight was shared keeps its
    unshared bias fixed too. A layer whose weight was not shared trains its weight even when its
    bias was shared (``bias: one``, the paper's choice for VGG-16 and ResNet-50, shares every
    bias at one centroid while the weights of only some layers are shared; the paper then
    retrains the unquantized layers, the last one included).

    Such a shared bias stays at its shared value while the layer's weight trains, rather than
    training and being shared again afterwards. The paper keeps quantized values fixed because
    retraining "might be able to produce unnecessary parameter values that will just increase the
    model size"; a trained bias would hold one value per channel, so the size measured after the
    stage would count a codebook the model no longer has, or, shared again after retraining, the
    model measured would not be the one retraining fitted (its weights would have compensated for
    a bias that then moves). Fixed, the bias keeps its one centroid exactly (``size_bytes`` stays
    honest) and the weight that trains compensates for it.

    Batch-norm layers are layers of their own: with ``batchnorm: k`` each one is shared (gamma,
    beta and its statistics) and its gamma and beta stay fixed; with ``batchnorm: keep`` they are
    unshared and train (their running statistics never move during retraining either way). Names
    are as ``model.named_parameters()`` gives them, without a pruning mask's ``_orig`` suffix.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Conv2d(2, 2, 1))
        >>> sorted(frozen_parameters(m, {"0.weight"}))
        ['0.bias', '0.weight']
        >>> sorted(frozen_parameters(m, {"0.bias", "2.bias"}))  # bias: one: the weights train
        ['0.bias', '2.bias']
    """
    shared = set(shared)
    layers = {name.removesuffix(".weight") for name in shared if name.endswith(".weight")}
    names = (name.removesuffix("_orig") for name, _ in model.named_parameters())
    return {name for name in names if name in shared or name.rpartition(".")[0] in layers}


def nothing_to_retrain(model: nn.Module, shared: Iterable[str]) -> str | None:
    """Why retraining ``model`` after sharing ``shared`` would train nothing (every parameter is
    frozen: :func:`frozen_parameters`), as one line; None when some parameter trains."""
    shared = set(shared)
    params = [name.removesuffix("_orig") for name, _ in model.named_parameters()]
    if set(params) - frozen_parameters(model, shared):
        return None
    layers = sum(name.endswith(".weight") for name in shared)
    return (f"retraining would train nothing: all {len(params)} parameters are frozen (the weights of {layers} layers "
            f"are shared, every other parameter too); leave a group at 'keep' or share without retraining (Q)")


def _output_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "kl":  # KL(softmax(teacher) || softmax(student)), batch mean: the soft term at T = 1
        return soft_target_loss(student, teacher, 1.0)
    return nn.functional.mse_loss(student.softmax(1), teacher.softmax(1))


def retrain(
    model: nn.Module,
    teacher: nn.Module,
    shared: Iterable[str],
    cfg: RetrainConfig,
    *,
    unlabeled: DataLoader | None = None,
    labeled: DataLoader | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Train ``model``'s unshared layers; every parameter of a weight-shared layer, every shared
    tensor (:func:`frozen_parameters`) and the batch-norm statistics stay fixed.

    ``unlabeled`` mode needs ``unlabeled`` (images only) and the ``teacher`` (the model before
    sharing); ``labeled`` mode needs ``labeled`` ((image, label) pairs), and with ``cfg.distill`` on
    the ``teacher`` it distills from (:class:`Share` passes the trial's, ``ctx.teacher("target")``;
    None otherwise). A pruned model stays as
    pruned: the zeros and dead units of the trained tensors are kept at zero
    (:func:`~trainables.compress.masks.sparsity_kept`), so retraining cannot grow the artifact back.
    Returns the time taken and the last epoch's mean loss.

    Raises:
        FrontierError: nothing would train (:func:`nothing_to_retrain`), before any work is done.
    """
    start = time.perf_counter()
    shared = set(shared)
    if (why := nothing_to_retrain(model, shared)) is not None:
        raise FrontierError(f"retrain: shared ({len(shared)} tensors): {why}")
    model.to(device)
    fixed = frozen_parameters(model, shared)
    with sparsity_kept(model):  # a masked tensor is trained as ``<name>_orig``
        named = {name.removesuffix("_orig"): p for name, p in model.named_parameters()}
        flags = {name: p.requires_grad for name, p in named.items()}
        params = [p for name, p in named.items() if name not in fixed]
        for name, p in named.items():
            p.requires_grad_(name not in fixed)
        try:
            if cfg.mode == "labeled":
                if labeled is None:
                    raise ValueError("labeled retraining needs a labeled loader")
                result = fit(model, labeled, None, cfg.optim, cfg.epochs, device=device, params=params, frozen=model,
                             teacher=teacher if cfg.distills else None, distill=cfg.distill)
                loss = result.history[-1]["loss"]
            else:
                if unlabeled is None:
                    raise ValueError("unlabeled retraining needs an unlabeled loader")
                loss = _distill(model, teacher.to(device).eval(), unlabeled, params, cfg, device)
        finally:
            for name, p in named.items():
                p.requires_grad_(flags[name])
    return {"retrain_seconds": time.perf_counter() - start, "retrain_loss": loss}


def _distill(model, teacher, data: DataLoader, params, cfg: RetrainConfig, device: str) -> float:
    """Fit ``model``'s outputs to ``teacher``'s on unlabeled images (sec. III-B, Fig. 3)."""
    from ..train import Diverged

    opt = make_optimizer(params, cfg.optim)
    precision = train_precision(cfg.optim.precision, device)
    kind = torch.device(device).type
    autocast = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(kind, enabled=precision == "fp16")
    mean, batches = float("nan"), 0
    for _ in range(cfg.epochs):
        model.eval()  # batch-norm statistics stay those of the labeled data
        total, count = torch.zeros((), dtype=torch.float64, device=device), 0
        for x in data:
            x = model_input(x, device)  # a loader's uint8 batch is normalised on the device
            with torch.autocast(kind, dtype=autocast, enabled=autocast is not None):
                with torch.no_grad():
                    target = teacher(x)
                loss = _output_loss(model(x).float(), target.float(), cfg.loss)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            total, count, batches = total + loss.detach().double() * len(x), count + len(x), batches + 1
            if batches % FINITE_CHECK_EVERY == 0 and not torch.isfinite(total):  # one wait for the device
                raise Diverged(f"retraining loss became {float(total)} by batch {batches}")
        if not torch.isfinite(total):
            raise Diverged(f"retraining loss became {float(total)} by batch {batches}")
        mean = float(total) / max(count, 1)
    return mean


class Share:
    """Stage ``Q`` (sharing) or ``Q|R`` (sharing, then retraining).

    Metrics: ``accuracy``/``top5`` on the target's test split after the stage,
    ``shared_accuracy`` right after sharing (before retraining), ``shared_tensors``, and with
    retraining ``retrain_seconds``. With retraining, a configuration that leaves nothing to train
    (:func:`nothing_to_retrain`) raises :class:`FrontierError` before anything is shared.

    A compressing stage on the target (``compresses``, ``domain``); labeled retraining with
    ``distill`` on learns from ``ctx.teacher("target")`` (``distills``).
    """

    compresses = True
    domain: Domain = "target"

    def __init__(self, cfg: ShareConfig, retrain_cfg: RetrainConfig | None = None) -> None:
        self.cfg, self.retrain_cfg = cfg, retrain_cfg
        self.label = self.label_for(retrain_cfg is not None)
        self.slot = "Q"

    @property
    def distills(self) -> bool:
        """Whether the stage learns from the trial's teacher of the target (:attr:`RetrainConfig.distills`)."""
        return self.retrain_cfg is not None and self.retrain_cfg.distills

    @staticmethod
    def label_for(retrain: bool) -> str:
        """The pipeline label: ``Q`` (sharing), or ``Q|R`` (sharing, then retraining; one stage, two letters)."""
        return "Q|R" if retrain else "Q"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("the Q stage needs a model from an earlier stage")
        if self.retrain_cfg is not None and (why := nothing_to_retrain(model, shared_tensors(model, self.cfg))):
            raise FrontierError(f"share.groups: {why}")  # before any work: clustering a large model takes minutes
        start = time.perf_counter()
        seed_everything(ctx.seed)
        target = ctx.data("target")
        model = model.to(ctx.device)  # the stage's model and its teacher live on ctx.device
        if self.retrain_cfg is None:
            teacher = None
        elif self.retrain_cfg.mode == "unlabeled":  # the paper's teacher: the model before sharing
            teacher = copy.deepcopy(model).eval()
        else:  # labeled: the trial's teacher when distilling, none otherwise
            teacher = ctx.teacher(self.domain) if self.distills else None
        shared = share(model, self.cfg)
        test = loader(target.test, EVAL_BATCH_SIZE, shuffle=False)
        metrics: dict = {"shared_tensors": len(shared)}
        metrics["shared_accuracy"] = evaluate(model, test, ctx.device)["accuracy"]
        if self.retrain_cfg is not None:
            cfg = self.retrain_cfg
            if cfg.mode == "labeled":
                data = {"labeled": loader(target.train, cfg.batch_size, shuffle=True, seed=ctx.seed)}
            else:
                images = ctx.data(cfg.unlabeled).unlabeled("train")
                data = {"unlabeled": loader(images, cfg.batch_size, shuffle=True, seed=ctx.seed)}
            metrics.update(retrain(model, teacher, shared, cfg, device=ctx.device, **data))
        metrics.update(evaluate(model, test, ctx.device))
        metrics["seconds"] = time.perf_counter() - start
        return model, metrics
