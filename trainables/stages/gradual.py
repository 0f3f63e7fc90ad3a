"""The gradual pruning stage ``P<s>``: automatic gradual pruning (Zhu & Gupta), eq. 1 of the
pruning-order paper (sec. 3.1).

The network trains while a pruner (:mod:`trainables.stages.pruners`, one per ``granularity``)
masks it on a schedule (:mod:`trainables.stages.schedule`: the cubic AGP schedule by default,
``{batch index: s_t}``): at each update, before that batch, each pruned layer (or unit group) is
brought to s_t through ``torch.nn.utils.prune``; it trains between updates and for
``recover_epochs`` after the window, then the masks are made permanent.

All layers are pruned "except the first input layer and the last fully connected layer"
(configurable). Pruned weights stay pruned: each update only adds to the mask. The same stage
prunes on the source domain (``PB``) or on the target domain (``PA``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import (BaseModel, ConfigDict, Field, SerializationInfo, SerializerFunctionWrapHandler, field_validator, model_serializer,
                      model_validator)
from torch import nn

from ..augment import Augment, augmented, named
from ..compress.importance import Importance, importance_names
from ..compress.masks import plain_copy, prunable_layers, sparsity_kept, zero_fraction
from ..compress.surgery import scoring_copy
from ..stage import Context, Domain, Metrics, prune_slot
from ..train import EVAL_BATCH_SIZE, DistillConfig, OptimConfig, evaluate, fit, loader, seed_everything
from .batches import training_batches
from .allocation import Allocation
from .benchmark import BenchmarkConfig
from .latency_budget import LatencyTarget, stage_budget
from .pruners import BudgetFactory, Granularity, granularity_problem, pruner_class
from .schedule import SCHEDULES, Frequency, Pace, Schedule, Sparsity


class PruneSchedule(BaseModel):
    """Budget of a gradual pruning stage, without its target sparsity (the search samples that).

    Args:
        epochs: length of the pruning window in epochs.
        frequency: dt of eq. 1 with its unit (:class:`Frequency`): ``{every: 1, unit: epoch}`` is
            the paper's; a bare int counts batches. See
            :func:`~trainables.stages.schedule.agp_schedule` for n.
        recover_epochs: epochs of training at the final sparsity after the window.
        skip_first / skip_last: leave the input conv / the classifier head dense.
        granularity: ``unstructured`` weights, ``channel`` units, or the ``2:4`` pattern (the
            pruners of :mod:`trainables.stages.pruners`); searchable as ``prune.granularity``.
        augment: ``shift_mirror``, the paper's shifting and mirroring of the training images
            while the stage trains (:mod:`trainables.augment`), or ``none`` (the default).
            EPruning applies it too, before its own ``epruning.augment`` (flip and Cutout).
        residual: for unit pruning (``channel`` granularity and EPruning), residual streams are
            units too (the default); False prunes only channels inside a block.
        distill: distillation from the trial's teacher while the stage trains (the window and its
            recovery; EPruning's search and fine-tuning), Hinton et al. 2015
            (:func:`~trainables.train.distillation_loss`); weight 0 is off. Unset (``weight:
            None``), a plan's gradual stage takes its granularity's default (:func:`with_unit_recipe`:
            :data:`UNIT_RECIPE` for ``channel``, else 0; a ``GradualConfig`` made by hand, 0) and
            EPruning 0. Searchable as ``prune.distill.weight`` and
            ``prune.distill.temperature``.
        pace: the schedule (:data:`~trainables.stages.schedule.SCHEDULES`): ``agp``, eq. 1's cubic
            ramp, or ``oneshot``, the final sparsity at the first batch, so that the whole window
            and the recovery train the final structure; searchable as ``prune.pace``. Unset, a
            plan's gradual stage takes its granularity's default (:func:`with_unit_recipe`: ``agp``,
            or :data:`UNIT_RECIPE`'s for ``channel``; a ``GradualConfig`` made by hand, ``agp``).
        importance: the unit importance of ``channel`` granularity, by name
            (:func:`~trainables.compress.importance.importance`; ``l1`` by default); searchable.
        allocation: ``channel`` granularity's share per unit group (:mod:`trainables.stages.allocation`):
            ``uniform`` (every group to s) or ``global`` (one ranking across groups), or, for a
            latency target only, ``latency`` (the most importance under the target); searchable.
            A latency target's default is ``uniform`` too: the least common share that meets it
            (``bench/latency_target.py`` on the fashion_mnist task: after 4 recovery epochs as accurate
            as ``latency``'s widths, which keep more importance, and after 1 epoch 15-23 points more
            accurate; README, "Measured figures").
        floor: ``global`` allocation's least kept share of each group.
        round_to: ``channel`` granularity's kept units per group are a multiple of it (aligned widths).

    ``pace``, ``importance``, ``allocation``, ``floor`` and ``round_to`` are dumped to JSON only when
    not their defaults (:data:`RECIPE_DEFAULTS`), so plans and cache keys made before they existed are
    unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1)
    frequency: Frequency = Frequency()
    recover_epochs: int = Field(1, ge=0)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig(name="sgd", lr=0.005, schedule="exponential", gamma=0.95)
    skip_first: bool = True
    skip_last: bool = True
    granularity: Granularity = "unstructured"
    augment: Augment = "none"
    residual: bool = True
    distill: DistillConfig = DistillConfig(weight=None)
    pace: Pace | None = None
    importance: str = "l1"
    allocation: Allocation = "uniform"
    floor: float = Field(0.1, ge=0, lt=1)
    round_to: int = Field(1, ge=1)

    @field_validator("importance")
    @classmethod
    def _known_importance(cls, name: str) -> str:
        known = importance_names()
        if name not in known:
            raise ValueError(f"importance must be one of {', '.join(known)} but got {name!r}")
        return name

    @model_serializer(mode="wrap")
    def _recipe_when_set(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict[str, Any]:
        data = handler(self)
        if info.mode != "json":  # a plan's JSON (its cache keys) leaves them out; a Python dump has every field
            return data
        for name, default in RECIPE_DEFAULTS.items():
            if data.get(name) in (default, None):
                data.pop(name, None)
        for name in UNSET_TARGET_FIELDS:  # a sparsity stage's JSON is what it was before latency targets
            if data.get(name, 0) is None:
                data.pop(name)
        return data


RECIPE_DEFAULTS: dict[str, Any] = {"pace": "agp", "importance": "l1", "allocation": "uniform", "floor": 0.1,
                                   "round_to": 1}
"""The recovery recipe's fields of :class:`PruneSchedule` with the defaults they are not dumped at."""

UNSET_TARGET_FIELDS = ("final", "latency", "benchmark")
""":class:`GradualConfig`'s target fields, dumped only when set (a latency stage has no ``final``)."""

UNIT_RECIPE: dict[str, Any] = {"pace": "oneshot", "distill_weight": 0.7}
"""What ``channel`` granularity gets where the spec leaves ``pace`` and ``distill.weight`` unset: the
recipe ``bench/recovery.py`` measured best on the fashion_mnist task (README, "Measured figures").
Other granularities get eq. 1's ``agp`` and no distillation (the pruning-order paper's protocol)."""


def with_unit_recipe(schedule: PruneSchedule) -> PruneSchedule:
    """``schedule`` with its unset ``pace`` and ``distill.weight`` filled for its granularity: the
    :data:`UNIT_RECIPE` for ``channel``, ``agp`` and no distillation otherwise. A plan is made of
    the result (:func:`~trainables.pipeline.plan.make_plan`), so its JSON holds what runs.

    Example:
        >>> unit = with_unit_recipe(PruneSchedule(granularity="channel"))
        >>> unit.pace, unit.distill.weight, with_unit_recipe(PruneSchedule()).pace
        ('oneshot', 0.7, 'agp')
    """
    channel = schedule.granularity == "channel"
    update: dict[str, Any] = {}
    if schedule.pace is None:
        update["pace"] = UNIT_RECIPE["pace"] if channel else "agp"
    if schedule.distill.weight is None:
        update["distill"] = schedule.distill.model_copy(
            update={"weight": UNIT_RECIPE["distill_weight"] if channel else 0.0})
    return schedule.model_copy(update=update)


class GradualConfig(PruneSchedule):
    """A :class:`PruneSchedule` with its target: a sparsity, or a latency on the trial's engine.

    Args:
        final: s_f, the sparsity reached, in [0, 1); None for a latency target.
        initial: s_i, the sparsity the schedule starts from (for ``PBA``'s second stage, s1).
        latency: instead of ``final``, a latency target (:class:`~trainables.stages.latency_budget.LatencyTarget`,
            ``channel`` granularity only): the schedule then runs from 0 to 1, the progress from the
            stage's starting widths to the widths that meet the target.
        benchmark: the trial's benchmark settings, the engine a latency target is measured on
            (required with ``latency``, absent otherwise).
    """

    final: Sparsity | None = None
    initial: Sparsity = 0.0
    latency: LatencyTarget | None = None
    benchmark: BenchmarkConfig | None = None

    @model_validator(mode="after")
    def _unset_recipe_is_the_plain_one(self) -> GradualConfig:
        # a stage's own config: unset pace and distill.weight are eq. 1's AGP without distillation,
        # what a plan made before they existed ran (a plan's JSON leaves them out at those values);
        # the spec's defaults for units (UNIT_RECIPE) are filled in when a plan is made (with_unit_recipe)
        if self.pace is None:
            self.pace = "agp"
        if self.distill.weight is None:
            self.distill = self.distill.model_copy(update={"weight": 0.0})
        return self

    @model_validator(mode="after")
    def _one_target(self) -> GradualConfig:
        if (self.final is None) == (self.latency is None):
            raise ValueError("a gradual stage prunes to exactly one of final (a sparsity) and latency "
                             f"(a latency target); got final={self.final!r}, latency={self.latency!r}")
        if self.latency is not None:
            if self.granularity != "channel":
                raise ValueError(f"a latency target needs unit pruning (granularity channel), but granularity is "
                                 f"{self.granularity!r}: its zeros buy no latency an engine can measure")
            if self.benchmark is None:
                raise ValueError("a latency target needs benchmark: the trial's benchmark settings, the engine "
                                 "its latency is measured on")
        elif self.allocation == "latency":
            raise ValueError("allocation 'latency' needs a latency target; a sparsity stage uses uniform or global")
        return self

    @model_validator(mode="after")
    def _initial_below_final(self) -> GradualConfig:
        if self.final is None:
            return self
        if self.initial > self.final:
            raise ValueError(f"initial sparsity {self.initial} is above final sparsity {self.final}")
        problem = granularity_problem(self.granularity, self.final)
        if problem is not None:
            raise ValueError(f"final {problem}")
        return self


def gradual_prune(
    model: nn.Module, splits, cfg: GradualConfig, *, device: str = "cpu", seed: int = 0, on_epoch=None,
    schedule: Schedule | None = None, importance: Importance | None = None, teacher: nn.Module | None = None,
    budget: BudgetFactory | None = None,
) -> tuple[nn.Module, Metrics]:
    """Prune ``model`` to ``cfg.final`` (or ``cfg.latency``) on ``splits`` (see module doc); the masks end permanent.

    ``schedule`` gives the updates (:class:`~trainables.stages.schedule.Schedule`; default the
    one ``cfg.pace`` names: the cubic AGP schedule, eq. 1, or one shot); the pruner of ``cfg.granularity``
    (:class:`~trainables.stages.pruners.Pruner`) makes each, scoring units with ``importance``
    (default L1) where it removes units.

    A latency target (``cfg.latency``) needs ``budget``, the factory of its
    :class:`~trainables.stages.latency_budget.LatencyBudget` (the stage makes it from its context):
    the schedule then runs from 0 to 1 (:class:`Progress`) and the channel pruner moves every group
    that share of the way to the counts the budget allocates; the metrics add the budget's
    ``latency_*`` record.

    With ``cfg.distill`` on, the window and the recovery epochs train on the distillation loss from
    ``teacher`` (:func:`~trainables.train.distillation_loss`, Hinton et al. 2015); None: a frozen
    copy of ``model`` as it enters the stage (the teacher the runner gives a trial's first
    compressing stage; later ones get theirs from the runner's ``ctx.teachers``).

    Returns metrics: ``sparsity``, ``sparsity_all`` (zeros over every conv/linear weight),
    ``layer_sparsity_min/max``, ``pruning_updates`` (the updates made), and top-1/3/5 and loss on
    the test split of ``splits``. ``sparsity`` is the zero share of the pruned layers' weights,
    except for ``channel`` granularity, where it is the share of pruned units over the unit groups
    (also reported as ``unit_sparsity``, per layer in ``layer_sparsity_min/max``), the zero share
    being ``weight_sparsity``. ``2:4`` adds ``layers_skipped`` (layers left dense: input channels
    not a multiple of 4).
    """
    start_time = time.perf_counter()
    seed_everything(seed)
    model.to(device)
    if cfg.distill.on and teacher is None:
        teacher = plain_copy(model).requires_grad_(False)
    train = loader(splits.train, cfg.batch_size, shuffle=True, seed=seed)
    if (cfg.latency is None) != (budget is None):
        raise ValueError("a latency target needs a budget (and a budget a latency target); "
                         f"got latency={cfg.latency!r}, budget={budget!r}")
    updates = (schedule or SCHEDULES[cfg.pace])(cfg if cfg.latency is None else Progress.of(cfg), len(train))
    last_update, done = max(updates), []

    # zeros (and dead units) from an earlier pruning stage (PBA) stay zero; the augmentation is on while training
    with sparsity_kept(model), augmented(splits.train, named(cfg.augment)):
        pruner = pruner_class(cfg.granularity)(
            model, cfg, importance, batches=training_batches(splits.train, cfg.batch_size, device, seed=seed),
            budget=budget)

        def before_batch(t: int) -> None:
            if t in updates:
                pruner.update(updates[t], last=t == last_update)
                done.append(t)

        fit(
            model,
            train,
            loader(splits.val, EVAL_BATCH_SIZE, shuffle=False),
            cfg.optim,
            cfg.epochs + cfg.recover_epochs,
            device=device,
            before_batch=before_batch,
            on_epoch=on_epoch,
            teacher=teacher,
            distill=cfg.distill,
        )
        if last_update not in done:  # the last update falls after training when recover_epochs == 0
            pruner.update(updates[last_update], last=True)
            done.append(last_update)
    pruner.finish()
    scored = scoring_copy(model, tuple(splits.test[0][0].shape), device)  # one image's shape
    metrics = evaluate(scored, loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), device)
    metrics.update(
        pruner.metrics(),
        sparsity_all=zero_fraction([m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]),
        pruning_updates=len(done),
        seconds=time.perf_counter() - start_time,
    )
    return model, metrics


@dataclass(frozen=True)
class Progress:
    """A latency stage's schedule settings: its window and frequency, from 0 (the widths it starts
    with) to 1 (the widths that meet the target): a :class:`~trainables.stages.schedule.ScheduleSettings`."""

    epochs: int
    frequency: Frequency
    initial: float = 0.0
    final: float = 1.0

    @classmethod
    def of(cls, cfg: GradualConfig) -> Progress:
        return cls(epochs=cfg.epochs, frequency=cfg.frequency)


class GradualPrune:
    """Stage ``P<s>``: :func:`gradual_prune` on the source (``PB``, slot ``P1``) or target
    (``PA``, slot ``P2``) domain; ``schedule`` and ``importance`` as there."""

    def __init__(self, cfg: GradualConfig, domain: Domain = "target", *, schedule: Schedule | None = None,
                 importance: Importance | None = None) -> None:
        self.cfg, self.domain, self.schedule, self.importance = cfg, domain, schedule, importance
        self.label = cfg.latency.label if cfg.latency is not None else self.label_for(cfg.final)
        self.slot = prune_slot(domain)

    compresses = True  # the model entering the first compressing stage of a domain is its teacher

    @property
    def distills(self) -> bool:
        """Whether the stage learns from its domain's teacher (``cfg.distill`` on)."""
        return self.cfg.distill.on

    @staticmethod
    def label_for(final: float) -> str:
        """The pipeline label of a stage pruning to ``final``: the percentage, ``80`` for 0.8."""
        return f"{round(final * 100):d}"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("a pruning stage needs a model from an earlier stage")
        return gradual_prune(
            model, ctx.data(self.domain), self.cfg, device=ctx.device, seed=ctx.seed, on_epoch=ctx.reporter(self.label),
            schedule=self.schedule, importance=self.importance,
            teacher=ctx.teachers.get(self.domain) if self.distills else None,
            budget=None if self.cfg.latency is None else stage_budget(self.cfg.latency, self.cfg.benchmark, ctx),
        )

