"""The dense stage ``D``: the pre-trained model a pipeline starts from.

With ``weights``, the architecture is built with the file's head and loaded from the local file
(see :func:`trainables.models.build_model`). Without weights, or with ``epochs > 0``, it trains
on the source domain, from scratch when there are no weights: that is how the CPU pipeline on
digits gets its "ImageNet" (classes 0-4) before transferring to 5-9.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ..errors import FrontierError
from ..models import ARCHITECTURES, build_model
from ..stage import Context, Metrics
from ..train import EVAL_BATCH_SIZE, OptimConfig, evaluate, fit, loader, seed_everything


class DenseBudget(BaseModel):
    """Source-training budget of the dense stage.

    Args:
        epochs: epochs of training on the source domain (0 = use the weights as they are).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig()


class DenseConfig(DenseBudget):
    """A :class:`DenseBudget` with the architecture and its weights.

    Args:
        model: an architecture name of :data:`trainables.models.ARCHITECTURES`.
        weights: a local state-dict path, ``torchvision:<ENUM>`` from torch's cache, or None.
    """

    model: str
    weights: str | None = None


class Dense:
    """Stage ``D``."""

    label = "D"

    def __init__(self, cfg: DenseConfig) -> None:
        if cfg.model not in ARCHITECTURES:
            raise FrontierError(f"model: unknown architecture '{cfg.model}'; known: {', '.join(ARCHITECTURES)}")
        if cfg.weights is None and cfg.epochs == 0:
            raise FrontierError("dense: with no weights, 'epochs' must be > 0 (the model is trained on the source)")
        self.cfg = cfg

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        start = time.perf_counter()
        seed_everything(ctx.seed)
        if self.cfg.epochs == 0:
            num_classes = ctx.data("source").num_classes if ctx.source is not None else None
            model = build_model(self.cfg.model, num_classes, weights=self.cfg.weights).to(ctx.device)
            return model, {"seconds": time.perf_counter() - start}
        source = ctx.data("source")
        model = build_model(self.cfg.model, source.num_classes, weights=self.cfg.weights).to(ctx.device)
        result = fit(
            model,
            loader(source.train, self.cfg.batch_size, shuffle=True, seed=ctx.seed),
            loader(source.val, EVAL_BATCH_SIZE, shuffle=False),
            self.cfg.optim,
            self.cfg.epochs,
            device=ctx.device,
            restore_best=True,
            on_epoch=ctx.reporter(self.label),
        )
        metrics = evaluate(model, loader(source.test, EVAL_BATCH_SIZE, shuffle=False), ctx.device)
        metrics.update(val_accuracy=result.best_val, epochs=result.epochs, seconds=time.perf_counter() - start)
        return model, metrics
