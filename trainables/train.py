"""The training loop every stage shares: optimizer and schedule from config, epochs, evaluation.

Stages (dense pretraining, transfer, gradual pruning) differ only in which parameters learn,
what happens between batches (a pruning step) and when to stop; :func:`fit` takes those as
arguments. A non-finite loss raises :class:`Diverged`, so a trial fails cleanly instead of
reporting NaN.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import DataLoader, Dataset


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


def loader(dataset: Dataset, batch_size: int, *, shuffle: bool, seed: int = 0,
           num_workers: int | None = None) -> DataLoader:
    """A DataLoader whose shuffling order depends only on ``seed``.

    ``num_workers`` None takes the process's setting (:func:`set_loader_workers`; 0 unless set).
    Workers are started anew for each pass over the data, never kept (``persistent_workers``):
    they copy the dataset when they start, and a curriculum changes its ``augment`` between
    epochs, which kept workers would not see.
    """
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    workers = _loader_workers if num_workers is None else num_workers
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers)


def set_loader_workers(workers: int) -> None:
    """Load batches in ``workers`` processes from now on in this process (0: in the training loop)."""
    global _loader_workers
    if not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 but got {workers!r}")
    _loader_workers = workers


def loader_workers_for(device: str, cpus: float) -> int:
    """Data-loading processes for a trial: on a GPU the trial's CPUs but one (the one driving
    the GPU) decode, resize and augment images while the GPU computes, up to
    ``MAX_LOADER_WORKERS``; on a CPU none, as loading would take cores from the computation."""
    if not str(device).startswith("cuda"):
        return 0
    return max(0, min(MAX_LOADER_WORKERS, int(cpus) - 1))


@torch.no_grad()
def evaluate(model: nn.Module, data: DataLoader, device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean loss and top-1/3/5 accuracy of ``model`` over ``data`` (k clipped to the class count)."""
    model.eval()
    total, loss_sum = 0, 0.0
    hits = {1: 0, 3: 0, 5: 0}
    for x, y in data:
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += nn.functional.cross_entropy(logits, y, reduction="sum").item()
        ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
        for k in hits:
            hits[k] += (ranked[:, :k] == y[:, None]).any(dim=1).sum().item()
        total += len(y)
    if total == 0:
        raise ValueError("evaluate: the data loader yielded no samples")
    return {
        "accuracy": hits[1] / total,
        "top3": hits[3] / total,
        "top5": hits[5] / total,
        "loss": loss_sum / total,
    }


BatchHook = Callable[[int], None]  # called with the global step before each optimizer step


@dataclass
class FitResult:
    """What :func:`fit` did: per-epoch history and the best validation accuracy."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val: float = -math.inf
    steps: int = 0

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
    before_step: BatchHook | None = None,
    stop: Callable[[float], bool] | None = None,
    stop_epoch: Callable[[dict[str, float]], bool] | None = None,
    restore_best: bool = False,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    forward_context: Callable[[torch.Tensor, torch.Tensor], AbstractContextManager] | None = None,
) -> FitResult:
    """Train ``model`` for up to ``epochs`` epochs with cross-entropy.

    Args:
        params: the parameters that learn (default: all of ``model``'s).
        frozen: a submodule kept in eval mode throughout (its batch-norm statistics do not move),
            used by freeze-and-train.
        before_step: called with the global step index before each batch (a pruning step).
        stop: called after each epoch with the validation accuracy; returning True ends training.
        stop_epoch: like ``stop``, but called with the epoch's whole record (``train_accuracy``,
            ``val_accuracy``, ``loss``, ``epoch``), for rules that also look at the training
            accuracy (the transfer paper's curriculum).
        restore_best: load the weights of the epoch with the best validation accuracy at the end.
        on_epoch: called after each epoch with that epoch's record.
        forward_context: called with each batch ``(x, y)`` on the device; the training forward
            runs inside the context it returns (EPruning masks the sub-network there).

    Raises:
        Diverged: the loss became NaN or infinite.
    """
    opt = make_optimizer(model.parameters() if params is None else params, optim)
    sched = make_scheduler(opt, optim, epochs)
    result, best_state = FitResult(), None
    for epoch in range(epochs):
        record = _train_epoch(model, train, opt, device, frozen, before_step, result, forward_context)
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


def _train_epoch(model, data, opt, device, frozen, before_step, result, forward_context=None) -> dict[str, float]:
    model.train()
    if frozen is not None:
        frozen.eval()
    seen, loss_sum, correct = 0, 0.0, 0
    for x, y in data:
        if before_step is not None:
            before_step(result.steps)
        x, y = x.to(device), y.to(device)
        with forward_context(x, y) if forward_context is not None else nullcontext():
            logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise Diverged(f"training loss became {loss.item()} at step {result.steps}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        result.steps += 1
        seen += len(y)
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
    return {"loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)}
