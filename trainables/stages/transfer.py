"""The transfer stage ``T``: a new head for the target classes, then freeze-and-train or fine-tune.

Both methods of the transfer paper (sec. IV-B): *freeze-and-train* keeps every pre-trained
parameter (and batch-norm statistic) fixed and trains only the new head; *fine-tune* trains all
layers. Training stops early when validation accuracy stops rising; with ``curriculum > 0`` it
first steps augmentation up while the training accuracy is near 100%
(``curriculum_train_accuracy``), as in the paper's curriculum (sec. IV-C 2, see
:mod:`trainables.curriculum`). The weights of the best validation epoch are kept, and top-1/3/5
and loss are reported on the target's test split.

Zeros already in the model (a ``PB`` pruned model) stay zero: transfer does not undo pruning.
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..augment import Augment, named, then
from ..compress.masks import sparsity_kept
from ..curriculum import LEVELS, Curriculum
from ..data import Splits
from ..models import head, head_size, replace_head
from ..stage import Context, Metrics
from ..train import EVAL_BATCH_SIZE, OptimConfig, evaluate, fit, loader, seed_everything


class TransferConfig(BaseModel):
    """Budget and method of the transfer stage.

    Args:
        mode: ``finetune`` (all layers learn) or ``freeze`` (only the new head learns).
        epochs: the most epochs trained.
        patience: epochs without a new best validation accuracy before stepping the curriculum
            up or, at its last level, stopping.
        curriculum: the highest curriculum level (0 = no augmentation, 4 = the paper's full curriculum).
        curriculum_train_accuracy: the training accuracy, in [0, 1], that counts as "nearly 100%":
            a validation plateau steps the curriculum up only when the epoch's training accuracy
            reaches it, else training stops (:class:`~trainables.curriculum.Curriculum`).
        new_head: replace the head even when its size already equals the target's class count.
        augment: ``shift_mirror`` shifts and mirrors the training images (the pruning-order
            paper's standard scheme, :mod:`trainables.augment`) before the curriculum level's
            transform; ``none`` (the default) leaves the curriculum alone.
    """

    model_config = ConfigDict(extra="forbid")

    mode: Literal["finetune", "freeze"] = "finetune"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig()
    patience: int = Field(3, ge=1)
    curriculum: int = Field(0, ge=0, le=len(LEVELS) - 1)
    curriculum_train_accuracy: float = Field(0.99, ge=0, le=1)
    new_head: bool = True
    augment: Augment = "none"


def transfer(
    model: nn.Module, target: Splits, cfg: TransferConfig, *, device: str = "cpu", seed: int = 0, on_epoch=None
) -> tuple[nn.Module, Metrics]:
    """Transfer ``model`` to ``target``; returns the model and its test metrics (see module doc)."""
    start = time.perf_counter()
    seed_everything(seed)
    if cfg.new_head or head_size(model) != target.num_classes:
        replace_head(model, target.num_classes)
    model.to(device)
    curriculum = Curriculum(patience=cfg.patience, max_level=cfg.curriculum,
                            train_accuracy=cfg.curriculum_train_accuracy)
    own = named(cfg.augment)  # the stage's own augmentation, under each curriculum level's
    target.train.augment = then(own, curriculum.transform)

    def step_curriculum(record: dict[str, float]) -> bool:
        done = curriculum.update(record["val_accuracy"], record["train_accuracy"])
        target.train.augment = then(own, curriculum.transform)
        return done

    frozen = cfg.mode == "freeze"
    trainable = list(head(model).parameters()) if frozen else list(model.parameters())
    saved = _require_grad_only(model, trainable)
    try:
        with sparsity_kept(model):
            result = fit(
                model,
                loader(target.train, cfg.batch_size, shuffle=True, seed=seed),
                loader(target.val, EVAL_BATCH_SIZE, shuffle=False),
                cfg.optim,
                cfg.epochs,
                device=device,
                params=trainable,
                frozen=model if frozen else None,
                stop_epoch=step_curriculum,
                restore_best=True,
                on_epoch=on_epoch,
            )
    finally:
        target.train.augment = None
        for p, flag in saved:
            p.requires_grad_(flag)
    metrics = evaluate(model, loader(target.test, EVAL_BATCH_SIZE, shuffle=False), device)
    metrics.update(
        val_accuracy=result.best_val,
        epochs=result.epochs,
        curriculum_level=curriculum.level,
        seconds=time.perf_counter() - start,
    )
    return model, metrics


def _require_grad_only(model: nn.Module, trainable: list[nn.Parameter]) -> list[tuple[nn.Parameter, bool]]:
    """Turn gradients off for every parameter not in ``trainable``; returns the old flags."""
    keep = {id(p) for p in trainable}
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    return saved


class Transfer:
    """Stage ``T``: :func:`transfer` to the context's target domain."""

    label = "T"
    slot = "T"

    def __init__(self, cfg: TransferConfig | None = None) -> None:
        self.cfg = cfg or TransferConfig()

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("the T stage needs a model from an earlier stage")
        return transfer(
            model, ctx.data("target"), self.cfg, device=ctx.device, seed=ctx.seed, on_epoch=ctx.reporter(self.label)
        )
