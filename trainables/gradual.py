"""The gradual pruning stage ``P<s>``: automatic gradual pruning on the cubic schedule.

Zhu & Gupta's schedule, as eq. 1 of the pruning-order paper (sec. 3.1):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3   for t in {t0, t0 + dt, ..., t0 + n*dt}

Every ``dt`` training steps inside the window each pruned layer is brought to ``s_t`` by an
unstructured magnitude (L1) mask through ``torch.nn.utils.prune``; the network trains between
pruning steps and for ``recover_epochs`` after the window, then the masks are made permanent.
All layers are pruned "except the first input layer and the last fully connected layer"
(configurable). Pruned weights stay pruned: each step only adds to the mask. The same stage
prunes on the source domain (``PB``) or on the target domain (``PA``).
"""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils import prune

from .masks import prunable_layers, sparsity_kept, zero_fraction
from .stage import Context, Domain, Metrics
from .train import OptimConfig, evaluate, fit, loader, seed_everything


def agp_sparsity(step: int, initial: float, final: float, start: int, steps: int, frequency: int) -> float:
    """Sparsity at training step ``step`` under eq. 1 of the pruning-order paper.

    Args:
        step: the training step t.
        initial: s_i, the sparsity at (and before) ``start``.
        final: s_f, the sparsity at and after ``start + steps * frequency``.
        start: t0, the step of the first pruning step.
        steps: n, the number of pruning steps after the first.
        frequency: dt, training steps between pruning steps.

    Between pruning steps the sparsity holds the value of the last pruning step.

    Example:
        >>> round(agp_sparsity(5, 0.0, 0.8, start=0, steps=10, frequency=1), 6)
        0.7
    """
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1 but got {frequency}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0 but got {steps}")
    end = start + steps * frequency
    if step < start:
        return initial
    if step >= end:
        return final
    if step < start + frequency:  # t = t0, where eq. 1 reduces to s_i (said exactly, without rounding)
        return initial
    t = start + (step - start) // frequency * frequency
    return final + (initial - final) * (1 - (t - start) / (steps * frequency)) ** 3


def prune_to(module: nn.Module, sparsity: float) -> None:
    """Mask the smallest-magnitude weights of ``module`` until ``round(sparsity * n)`` are masked.

    Masks only grow: weights already masked stay masked and count toward the target.
    """
    n = module.weight.numel()
    masked = int((module.weight_mask == 0).sum()) if prune.is_pruned(module) else 0
    extra = round(sparsity * n) - masked
    if extra > 0:
        prune.l1_unstructured(module, "weight", amount=extra)


class PruneSchedule(BaseModel):
    """Budget of a gradual pruning stage, without its target sparsity (the search samples that).

    Args:
        epochs: length of the pruning window in epochs; n = epochs * batches_per_epoch // frequency.
        frequency: dt, batches between pruning steps (the paper uses 1).
        recover_epochs: epochs of training at the final sparsity after the window.
        skip_first / skip_last: leave the input conv / the classifier head dense.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1)
    frequency: int = Field(1, ge=1)
    recover_epochs: int = Field(1, ge=0)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.005, schedule="exponential", gamma=0.95)
    skip_first: bool = True
    skip_last: bool = True


class GradualConfig(PruneSchedule):
    """A :class:`PruneSchedule` with its sparsities.

    Args:
        final: s_f, the sparsity reached, in [0, 1).
        initial: s_i, the sparsity the schedule starts from (for ``PBA``'s second stage, s1).
    """

    final: float = Field(ge=0, lt=1)
    initial: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _initial_below_final(self) -> GradualConfig:
        if self.initial > self.final:
            raise ValueError(f"initial sparsity {self.initial} is above final sparsity {self.final}")
        return self


def gradual_prune(
    model: nn.Module, splits, cfg: GradualConfig, *, device: str = "cpu", seed: int = 0, on_epoch=None
) -> tuple[nn.Module, Metrics]:
    """Prune ``model`` to ``cfg.final`` on ``splits`` (see module doc); the masks end permanent.

    Returns metrics: ``sparsity`` (zeros over the pruned layers' weights), ``sparsity_all``
    (zeros over every conv/linear weight), ``layer_sparsity_min/max``, and top-1/3/5 and loss on
    the test split of ``splits``.
    """
    start_time = time.perf_counter()
    seed_everything(seed)
    model.to(device)
    layers = [m for _, m in prunable_layers(model, skip_first=cfg.skip_first, skip_last=cfg.skip_last)]
    train = loader(splits.train, cfg.batch_size, shuffle=True, seed=seed)
    n = cfg.epochs * len(train) // cfg.frequency

    def before_step(t: int) -> None:
        if t <= n * cfg.frequency and t % cfg.frequency == 0:
            s = agp_sparsity(t, cfg.initial, cfg.final, start=0, steps=n, frequency=cfg.frequency)
            for layer in layers:
                prune_to(layer, s)

    with sparsity_kept(model):  # zeros from an earlier pruning stage (PBA) stay zero
        fit(
            model,
            train,
            loader(splits.val, 256, shuffle=False),
            cfg.optim,
            cfg.epochs + cfg.recover_epochs,
            device=device,
            before_step=before_step,
            on_epoch=on_epoch,
        )
        for layer in layers:  # the last pruning step falls after training when recover_epochs == 0
            prune_to(layer, cfg.final)
    per_layer = [zero_fraction([m]) for m in layers]
    metrics = evaluate(model, loader(splits.test, 256, shuffle=False), device)
    metrics.update(
        sparsity=zero_fraction(layers),
        sparsity_all=zero_fraction([m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]),
        layer_sparsity_min=min(per_layer, default=0.0),
        layer_sparsity_max=max(per_layer, default=0.0),
        pruning_steps=n + 1,
        seconds=time.perf_counter() - start_time,
    )
    return model, metrics


class GradualPrune:
    """Stage ``P<s>``: :func:`gradual_prune` on the source (``PB``) or target (``PA``) domain."""

    def __init__(self, cfg: GradualConfig, domain: Domain = "target") -> None:
        self.cfg, self.domain = cfg, domain
        self.label = f"{round(cfg.final * 100):d}"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("a pruning stage needs a model from an earlier stage")
        return gradual_prune(
            model, ctx.data(self.domain), self.cfg, device=ctx.device, seed=ctx.seed, on_epoch=ctx.reporter(self.label)
        )
