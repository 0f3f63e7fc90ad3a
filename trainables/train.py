"""The training loop every stage shares: optimizer and schedule from config, epochs, evaluation.

Stages (dense pretraining, transfer, gradual pruning) differ only in which parameters learn,
what happens between batches (a mask update) and when to stop; :func:`fit` takes those as
arguments. A non-finite loss raises :class:`Diverged`, so a trial fails cleanly instead of
reporting NaN.

Fast on a GPU, no slower on a CPU: :func:`loader` yields uint8 batches of images decoded once
(:class:`trainables.data.Batched`) from workers that live as long as the loader (a ``forkserver``
context, safe inside a Ray worker), into pinned memory; :func:`fit` copies them without blocking,
normalises them on the device (:func:`trainables.data.model_input`), trains in the precision
:attr:`OptimConfig.precision` resolves to (bf16 autocast on a GPU that has it, fp32 on a CPU;
fp16 with a gradient scaler), in channels-last layout with ``cudnn.benchmark`` on a GPU, and
keeps the loss and hit counts on the device: the host waits for the device only every
:data:`FINITE_CHECK_EVERY` steps (the divergence check) and at the end of each epoch.

Distillation (Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"): given a
``teacher`` and a :class:`DistillConfig` whose ``weight`` is above 0, :func:`fit` trains on
:func:`distillation_loss`, cross-entropy on the labels mixed with the temperature-softened KL
divergence from the teacher's outputs; the teacher runs once per batch, in eval mode, without
gradients, in the step's precision.
"""

from __future__ import annotations

import copy
import functools
import math
import multiprocessing
import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import as_batch, batched, model_input
from .errors import FrontierError


class Diverged(RuntimeError):
    """The training loss became NaN or infinite; the stage (and its trial) has failed."""


class OptimConfig(BaseModel):
    """Optimizer and per-epoch learning-rate schedule.

    The pruning-order paper uses SGD at 0.005 decaying 5% per epoch (``schedule: exponential``,
    ``gamma: 0.95``); the transfer paper uses Adam at 1e-3.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["sgd", "adam", "adamw", "adadelta"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "exponential", "cosine", "step"] = "constant"
    gamma: float = Field(0.95, gt=0, le=1)
    step_size: int = Field(10, ge=1)
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"


class DistillConfig(BaseModel):
    """Knowledge distillation as recovery (Hinton, Vinyals & Dean 2015, sec. 2): the student learns
    from a teacher's softened outputs beside the labels (:func:`distillation_loss`).

    Example:
        >>> DistillConfig(weight=0.5).on, DistillConfig().on
        (True, False)

    Args:
        weight: w in [0, 1], the share of the loss that is the teacher's term; 0 (the default) is
            off: plain cross-entropy, and no teacher is needed or run.
        temperature: T > 0, the softmax temperature of both outputs in the teacher's term (Hinton
            et al. use 1 to 20; 4 is a common choice for small image classifiers).
    """

    model_config = ConfigDict(extra="forbid")

    weight: float | None = Field(0.0, ge=0, le=1)  # None: the stage's default (a gradual stage's granularity decides)
    temperature: float = Field(4.0, gt=0)

    @property
    def on(self) -> bool:
        """Whether the teacher's term counts (``weight > 0``; an unset weight counts as 0)."""
        return bool(self.weight)


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), summed over classes and averaged over
    the batch: the soft-target term of Hinton et al. 2015 (sec. 2; the T^2 keeps its gradients'
    scale independent of T). Computed in float32; no gradient flows into ``teacher``.

    At T = 1 it is the quantization-retraining paper's output matching (``retrain.loss: kl``).

    Args:
        student, teacher: ``(batch, classes)`` logits.
        temperature: T > 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 but got {temperature!r}")
    t = float(temperature)
    return nn.functional.kl_div((student.float() / t).log_softmax(1), (teacher.detach().float() / t).log_softmax(1),
                                log_target=True, reduction="batchmean") * (t * t)


def distillation_loss(student: torch.Tensor, target: torch.Tensor | None, teacher: torch.Tensor | None,
                      cfg: DistillConfig) -> torch.Tensor:
    """The distillation loss of Hinton et al. 2015 (sec. 2):
    ``(1 - w) * CE(student, target) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T))``
    with w = ``cfg.weight`` and T = ``cfg.temperature`` (:func:`soft_target_loss`).

    At w = 0 it is exactly the cross-entropy (``teacher`` may be None); at w = 1 exactly the soft
    term (``target`` may be None: unlabeled images). No gradient flows into ``teacher``.

    Raises:
        ValueError: a term with a nonzero weight whose input is None.
    """
    if cfg.weight < 1 and target is None:
        raise ValueError(f"distillation_loss: weight {cfg.weight} < 1 needs labels (target) but got None")
    if cfg.weight == 0:
        return nn.functional.cross_entropy(student, target)
    if teacher is None:
        raise ValueError(f"distillation_loss: weight {cfg.weight} > 0 needs the teacher's logits but got None")
    soft = soft_target_loss(student, teacher, cfg.temperature)
    if cfg.weight == 1:
        return soft
    return (1 - cfg.weight) * nn.functional.cross_entropy(student, target) + cfg.weight * soft


PRECISIONS = ("bf16", "fp16", "fp32")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
FINITE_CHECK_EVERY = 50  # training steps between two checks that the loss is finite (each waits for the device)


def train_precision(requested: str, device: torch.device | str) -> str:
    """The precision a training stage runs in on ``device``: ``auto`` is bf16 on a CUDA GPU that
    supports it (Ampere and later) and fp32 elsewhere (a CPU, or an older GPU); ``bf16`` and
    ``fp32`` run anywhere; ``fp16`` (autocast with a gradient scaler) needs a CUDA GPU.

    Example:
        >>> train_precision("auto", "cpu")
        'fp32'

    Raises:
        FrontierError: an unknown ``requested``, or fp16 off a GPU.
    """
    cuda = str(device).startswith("cuda")
    if requested == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "fp32"
    if requested not in PRECISIONS:
        raise FrontierError(f"optim.precision must be one of auto, {', '.join(PRECISIONS)} but got {requested!r}")
    if requested == "fp16" and not cuda:
        raise FrontierError(f"optim.precision: fp16 trains on a CUDA GPU only, but this stage runs on {str(device)!r}")
    return requested


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` names over ``params``."""
    params = [p for p in params if p.requires_grad]
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(opt: torch.optim.Optimizer, cfg: OptimConfig, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """A scheduler stepped once per epoch."""
    sched = torch.optim.lr_scheduler
    if cfg.schedule == "exponential":
        return sched.ExponentialLR(opt, gamma=cfg.gamma)
    if cfg.schedule == "cosine":
        return sched.CosineAnnealingLR(opt, T_max=max(1, epochs))
    if cfg.schedule == "step":
        return sched.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    return sched.ConstantLR(opt, factor=1.0, total_iters=0)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a torch generator for data shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


MAX_LOADER_WORKERS = 8
EVAL_BATCH_SIZE = 256  # batch of every evaluation pass (validation, test, sensitivity): no gradients, so large
_loader_workers = 0  # set per process, like torch.set_num_threads: see set_loader_workers
_pin_memory = False
WORKER_CONTEXT = "forkserver"  # not fork: a Ray worker holds threads a forked child would inherit locked
WORKER_PRELOAD = ["trainables.data"]  # imported once by the fork server (torch with it), not by every worker


@functools.cache
def worker_context() -> multiprocessing.context.BaseContext:
    """The context loader workers start in: ``forkserver``, whose server process has no threads
    (Ray's, OpenMP's) to inherit and has imported torch and :mod:`trainables.data` once, so that
    each worker is a cheap fork of it instead of a fresh interpreter importing torch."""
    context = multiprocessing.get_context(WORKER_CONTEXT)
    context.set_forkserver_preload(WORKER_PRELOAD)
    return context


def loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
           num_workers: int | None = None) -> Batches | DataLoader:
    """Batches of ``dataset`` whose shuffling order depends only on ``seed``.

    An :class:`~trainables.data.ImageDataset` (or its unlabeled view) gives a :class:`Batches`:
    uint8 image batches (labels beside them unless unlabeled), decoded once, for
    :func:`~trainables.data.model_input` to normalise on the device. Any other dataset gives a
    plain ``DataLoader`` over its items.

    ``num_workers`` None takes the process's setting (:func:`set_loader_workers`; 0 unless set).
    """
    workers = _loader_workers if num_workers is None else num_workers
    view = batched(dataset)
    if view is None:
        gen = torch.Generator().manual_seed(seed) if shuffle else None
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers,
                          pin_memory=_pin_memory)
    return Batches(view, batch_size, shuffle=shuffle, seed=seed, num_workers=workers, pin_memory=_pin_memory)


class Batches:
    """Iterable batches of a :class:`~trainables.data.Batched` view, through one ``DataLoader``
    whose workers live from the first pass to the last.

    Workers copy the dataset when they start, so a change of its ``augment`` (a curriculum stepping
    up between epochs) starts a new ``DataLoader`` at the next pass; the shuffling generator is the
    same throughout, so the order of every epoch is what one long-lived loader would give.
    Before the first pass the dataset's images are decoded into memory once
    (:meth:`~trainables.data.ImageDataset.decode`), so workers never decode. An ``augment`` must be
    picklable to reach workers (torchvision's transforms are).

    Args:
        view: the dataset, batch at a time.
        batch_size: images per batch (the last may be smaller).
        shuffle: a new order each pass, from ``seed``.
        num_workers: loading processes (0: in the training loop).
        pin_memory: batches in page-locked memory, so the copy to a GPU can overlap computation.
    """

    def __init__(self, view, batch_size: int, *, shuffle: bool, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False) -> None:
        self.view, self.batch_size, self.shuffle = view, batch_size, shuffle
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.generator = torch.Generator().manual_seed(seed) if shuffle else None
        self._loader: DataLoader | None = None
        self._augment: str | None = None

    @property
    def dataset(self):
        return self.view.base

    def __len__(self) -> int:
        return math.ceil(len(self.view) / self.batch_size)

    def __iter__(self):
        augment = repr(self.view.base.augment) if self.view.labeled else None
        if self._loader is None or augment != self._augment:
            self.view.base.decode()
            self._loader, self._augment = self._new_loader(), augment
        return iter(self._loader)

    def _new_loader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(self.view, batch_size=self.batch_size, shuffle=self.shuffle, generator=self.generator,
                          num_workers=workers, collate_fn=as_batch, pin_memory=self.pin_memory,
                          persistent_workers=workers > 0, multiprocessing_context=worker_context() if workers else None)


def set_loader_workers(workers: int, pin_memory: bool = False) -> None:
    """Load batches in ``workers`` processes from now on in this process (0: in the training loop),
    into page-locked memory when ``pin_memory`` (a process that trains on a GPU)."""
    global _loader_workers, _pin_memory
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 but got {workers!r}")
    _loader_workers, _pin_memory = workers, bool(pin_memory)


def loader_workers_for(device: str, cpus: float) -> int:
    """Data-loading processes for a trial: on a GPU the trial's CPUs but one (the one driving
    the GPU) decode, resize and augment images while the GPU computes, up to
    ``MAX_LOADER_WORKERS``; on a CPU none, as loading would take cores from the computation."""
    if not str(device).startswith("cuda"):
        return 0
    return max(0, min(MAX_LOADER_WORKERS, int(cpus) - 1))


@torch.no_grad()
def evaluate(model: nn.Module, data: DataLoader | Batches, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean loss and top-1/3/5 accuracy of ``model`` over ``data`` (k clipped to the class count).

    Runs in float32 whatever the training precision (the objectives are the exported model's), with
    the sums kept on the device: one wait for it, at the end.
    """
    model.eval()
    total = 0
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, hits@1, hits@3, hits@5
    for x, y in data:
        x, y = model_input(x, device), y.to(device, non_blocking=True)
        logits = model(x).float()
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = ranked == y[:, None]
        sums += torch.stack([nn.functional.cross_entropy(logits, y, reduction="sum"),
                             *(hit[:, :k].any(dim=1).sum() for k in (1, 3, 5))]).double()
        total += len(y)
    if total == 0:
        raise ValueError("evaluate: the data loader yielded no samples")
    loss, top1, top3, top5 = (sums / total).tolist()
    return {"accuracy": top1, "top3": top3, "top5": top5, "loss": loss}


BatchHook = Callable[[int], None]  # called with the global step before each optimizer step


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch history and the best validation accuracy."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = -math.inf
    steps: int = 0
    precision: str = "fp32"  # what the training ran in (:func:`train_precision`)

    @property
    def epochs(self) -> int:
        return len(self.history)


def fit(
    model: nn.Module,
    train: DataLoader,
    val: DataLoader | None,
    optim: OptimConfig,
    epochs: int,
    *,
    device: torch.device | str = "cpu",
    params: Iterable[nn.Parameter] | None = None,
    frozen: nn.Module | None = None,
    before_batch: BatchHook | None = None,
    stop: Callable[[float], bool] | None = None,
    stop_epoch: Callable[[dict[str, float]], bool] | None = None,
    restore_best: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    forward_context: Callable[[torch.Tensor, torch.Tensor], AbstractContextManager] | None = None,
    teacher: nn.Module | None = None,
    distill: DistillConfig | None = None,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs with cross-entropy, or with the distillation loss
    of Hinton et al. 2015 (:func:`distillation_loss`) when ``distill`` is on.

    Args:
        params: the parameters that learn (default: all of ``model``'s).
        frozen: a submodule kept in eval mode throughout (its batch-norm statistics do not move),
            used by freeze-and-train.
        before_batch: called with the global batch index before each batch (a mask update).
        stop: called after each epoch with the validation accuracy; returning True ends training.
        stop_epoch: like ``stop``, but called with the epoch's whole record (``train_accuracy``,
            ``val_accuracy``, ``loss``, ``epoch``), for rules that also look at the training
            accuracy (the transfer paper's curriculum).
        restore_best: load the weights of the epoch with the best validation accuracy at the end.
        on_epoch: called after each epoch with that epoch's record.
        forward_context: called with each batch ``(x, y)`` on the device; the training forward
            runs inside the context it returns (EPruning masks the sub-network there); the
            teacher's forward runs outside it.
        teacher: the model whose outputs the student matches when ``distill`` is on. It is moved
            to ``device`` and put in eval mode, runs once per batch under ``torch.no_grad`` in the
            training precision, and is never trained (its parameters are not the optimizer's
            unless the caller passes them in ``params``); unused when ``distill`` is off.
        distill: the loss's teacher weight and temperature (None: off).

    Raises:
        Diverged: the loss became NaN or infinite.
        ValueError: ``distill`` is on and ``teacher`` is None, or ``teacher`` is ``model`` itself.
    """
    distill = distill or DistillConfig()
    if distill.on and teacher is None:
        raise ValueError(f"fit: distill.weight {distill.weight} > 0 needs a teacher but got None")
    if teacher is not None and teacher is model:
        raise ValueError("fit: teacher must be another module than the model it teaches (a frozen copy)")
    if distill.on:
        teacher = teacher.to(device).eval()
    opt = make_optimizer(model.parameters() if params is None else params, optim)
    sched = make_scheduler(opt, optim, epochs)
    result, best_state = FitResult(), None
    step = _Step(model, opt, device, train_precision(optim.precision, device), forward_context,
                 teacher=teacher if distill.on else None, distill=distill)
    result.precision = step.precision
    for epoch in range(epochs):
        with step.layout():
            record = _train_epoch(model, train, step, frozen, before_batch, result)
        sched.step()
        if val is not None:
            record["val_accuracy"] = evaluate(model, val, device)["accuracy"]
            if record["val_accuracy"] > result.best_val:
                result.best_val = record["val_accuracy"]
                best_state = copy.deepcopy(model.state_dict()) if restore_best else None
        record["epoch"] = epoch + 1
        result.history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if stop is not None and val is not None and stop(record["val_accuracy"]):
            break
        if stop_epoch is not None and val is not None and stop_epoch(record):
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return result


class _Step:
    """One optimizer step of :func:`fit` in its precision and layout; nothing in it waits for the device.

    bf16 and fp16 run the forward and the loss under ``torch.autocast`` (the parameters, gradients
    and optimizer state stay float32); fp16 scales the loss (``torch.amp.GradScaler``) so that small
    gradients survive. On a GPU the model trains channels-last with ``cudnn.benchmark`` on.

    With a ``teacher`` the loss is :func:`distillation_loss` under ``distill``; the teacher's logits
    come from one forward per batch under ``torch.no_grad`` in the same autocast (and layout), outside
    ``forward_context``. Without one the loss is the plain cross-entropy, computed as before
    distillation existed (bit for bit).
    """

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, device: torch.device | str, precision: str,
                 forward_context=None, *, teacher: nn.Module | None = None,
                 distill: DistillConfig | None = None) -> None:
        self.model, self.opt, self.device, self.precision = model, opt, device, precision
        self.teacher, self.distill = teacher, distill or DistillConfig()
        self.kind = torch.device(device).type
        self.cuda = self.kind == "cuda"
        self.forward_context = forward_context
        self.scaler = torch.amp.GradScaler(self.kind, enabled=precision == "fp16")
        if self.cuda:
            torch.backends.cudnn.benchmark = True

    @contextmanager
    def layout(self):
        """Channels-last for the block on a GPU; the model leaves it in the default layout."""
        if not self.cuda:
            yield
            return
        models = [self.model] if self.teacher is None else [self.model, self.teacher]
        for model in models:
            model.to(memory_format=torch.channels_last)
        try:
            yield
        finally:
            for model in models:
                model.to(memory_format=torch.contiguous_format)

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch already on the device; returns the loss and the logits (not synced)."""
        soft = None
        if self.teacher is not None:
            with torch.no_grad(), self._autocast():
                soft = self.teacher(x)
        with self.forward_context(x, y) if self.forward_context is not None else nullcontext():
            with self._autocast():
                logits = self.model(x)
                if soft is None:
                    loss = nn.functional.cross_entropy(logits, y)
                else:
                    loss = distillation_loss(logits, y, soft, self.distill)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach().float(), logits.detach()

    def _autocast(self) -> AbstractContextManager:
        """The step's precision: ``torch.autocast`` for bf16 and fp16, nothing for fp32."""
        return torch.autocast(self.kind, dtype=_AUTOCAST.get(self.precision), enabled=self.precision in _AUTOCAST)


def _train_epoch(model, data, step: _Step, frozen, before_batch, result) -> dict[str, float]:
    model.train()
    if frozen is not None:
        frozen.eval()
    seen = 0
    sums = torch.zeros(2, dtype=torch.float64, device=step.device)  # loss * n, correct
    for x, y in data:
        if before_batch is not None:
            before_batch(result.steps)
        x, y = model_input(x, step.device, channels_last=step.cuda), y.to(step.device, non_blocking=True)
        loss, logits = step(x, y)
        result.steps += 1
        seen += len(y)
        sums += torch.stack([loss.double() * len(y), (logits.argmax(1) == y).sum().double()])
        if result.steps % FINITE_CHECK_EVERY == 0:
            _check_finite(sums[0], result.steps)
    _check_finite(sums[0], result.steps)
    loss_sum, correct = sums.tolist()
    return {"loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}


def _check_finite(loss_sum: torch.Tensor, steps: int) -> None:
    """Raise :class:`Diverged` when the epoch's summed loss is not finite (one wait for the device)."""
    if not torch.isfinite(loss_sum):
        raise Diverged(f"training loss became {float(loss_sum)} by step {steps}")
