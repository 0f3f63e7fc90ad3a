"""The dense stage ``D``: the pre-trained model a pipeline starts from.

With ``weights``, the architecture is built with the file's head and loaded from the local file
(see :func:`trainables.models.build_model`). Without weights, or with ``epochs > 0``, it trains
on its ``domain``, from scratch when there are no weights: on the source by default (that is how
the CPU pipeline on digits gets its "ImageNet", classes 0-4, before transferring to 5-9), or on
the target for a pipeline without transfer (``domain: target``: the model is, or becomes, the
target's own, and is compressed as it is: ``D|50|B``).

A user model (``package.module:function``) carries the folder its module was imported from
(``model_path``), so a Ray worker, whose ``sys.path`` need not hold the driver's folders, imports
the same module.
"""

from __future__ import annotations

import time

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator
from torch import nn

from ..errors import FrontierError
from ..models import architecture, build_model, head_size, is_user_model, user_model_path
from ..stage import Context, Domain, Metrics
from ..train import EVAL_BATCH_SIZE, OptimConfig, evaluate, fit, loader, seed_everything


class DenseBudget(BaseModel):
    """Training budget of the dense stage.

    Args:
        epochs: epochs of training on the model's domain, the source unless the model is the
            target's own (0 = use the weights as they are).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(0, ge=0)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig()


class DenseConfig(DenseBudget):
    """A :class:`DenseBudget` with the architecture and its weights.

    Args:
        model: an architecture name (see :func:`trainables.models.architecture`): torchvision's,
            ``small_resnet``, or the user's own ``package.module:function``.
        weights: a local state-dict path, ``torchvision:<ENUM>`` from torch's cache, or None.
        model_path: for a user model, the folder its top-level package is imported from; filled in
            where the config is made (the driver, which can import it) when not given, and put on
            ``sys.path`` where the stage is built (a Ray worker). None for built-in names.
        domain: the data the model is trained on (``epochs > 0``) or was trained on (its head has
            that domain's classes): ``source`` (a transfer follows) or ``target`` (no transfer).
    """

    model: str
    weights: str | None = None
    model_path: str | None = None
    domain: Domain = "source"

    @model_validator(mode="after")
    def _locate_user_model(self) -> DenseConfig:
        if is_user_model(self.model) and self.model_path is None:
            self.model_path = user_model_path(self.model)  # FrontierError (one line) if not importable
        return self

    @model_serializer(mode="wrap")
    def _without_empty_path(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a built-in model on the source dumps as it did before model_path and domain existed: same
        # plans, same cache keys
        data = handler(self)
        if data.get("model_path") is None:
            data.pop("model_path", None)
        if data.get("domain") == "source":
            data.pop("domain", None)
        return data


class Dense:
    """Stage ``D``."""

    label = "D"
    slot = "D"

    def __init__(self, cfg: DenseConfig) -> None:
        architecture(cfg.model, cfg.model_path)  # FrontierError (one line) for a name that does not resolve
        if cfg.weights is None and cfg.epochs == 0:
            raise FrontierError(f"dense: with no weights, 'epochs' must be > 0 (the model is trained on the {cfg.domain})")
        self.cfg = cfg

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        start = time.perf_counter()
        seed_everything(ctx.seed)
        domain = self.cfg.domain
        if self.cfg.epochs == 0:
            if domain == "target":  # the target's own model: its head must already be the target's
                model = build_model(self.cfg.model, None, weights=self.cfg.weights, path=self.cfg.model_path)
                _check_head(model, ctx.data("target").num_classes, self.cfg.weights)
            else:
                num_classes = ctx.data("source").num_classes if ctx.source is not None else None
                model = build_model(self.cfg.model, num_classes, weights=self.cfg.weights, path=self.cfg.model_path)
            return model.to(ctx.device), {"seconds": time.perf_counter() - start}
        splits = ctx.data(domain)
        model = build_model(self.cfg.model, splits.num_classes, weights=self.cfg.weights, path=self.cfg.model_path)
        model = model.to(ctx.device)
        result = fit(
            model,
            loader(splits.train, self.cfg.batch_size, shuffle=True, seed=ctx.seed),
            loader(splits.val, EVAL_BATCH_SIZE, shuffle=False),
            self.cfg.optim,
            self.cfg.epochs,
            device=ctx.device,
            restore_best=True,
            on_epoch=ctx.reporter(self.label),
        )
        metrics = evaluate(model, loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), ctx.device)
        metrics.update(val_accuracy=result.best_val, epochs=result.epochs, seconds=time.perf_counter() - start)
        return model, metrics


def _check_head(model: nn.Module, classes: int, weights: str | None) -> None:
    """A model said to be trained on the target must classify the target's classes as it is."""
    found = head_size(model)
    if found != classes:
        raise FrontierError(f"model.weights: '{weights}' has a {found}-class head but data.target has {classes} "
                            "classes; a model trained on the target (model.trained_on: target) keeps its head")
