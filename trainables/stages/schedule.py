"""When a gradual pruning stage updates its masks, and to what sparsity: the schedule.

A schedule maps batch indices to target sparsities: ``{global batch index: s_t}``, one entry per
*update* (a mask update, falling before that training batch). :class:`Schedule` is its contract;
:func:`agp_schedule` is the default, Zhu & Gupta's automatic gradual pruning on the cubic
schedule, as eq. 1 of the pruning-order paper (sec. 3.1):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3   for t in {t0, t0 + dt, ..., t0 + n*dt}

``frequency`` gives dt a unit (:class:`Frequency`, see :func:`agp_schedule`):

- ``{every: k, unit: batch}`` (a bare int ``k`` means the same): an update before every k-th
  training batch, t counting batches: n = epochs * batches_per_epoch // k, the n + 1 updates at
  batches 0, k, ..., n * k, the last one at the first batch after the window.
- ``{every: k, unit: epoch}``: the paper's setting (sec. 3.1, "we set dt = 1"; it prunes "for 10
  epochs", in Distiller, whose AGP updates once per epoch): t counts epochs and the updates fall
  before the first batch of epochs 0, k, 2k, ... inside the window, so with ``epochs: 10`` and
  k = 1 there are n + 1 = 10 updates of eq. 1 (n = 9) and s_f is reached at the start of the
  window's last epoch, as Distiller's AGP reaches it at its ending epoch - 1.

A sparsity (a stage's target, a milestone, s_i) is checked in one place, :func:`sparsity_problem`
and :func:`milestones_problem` (the :data:`Sparsity` type of the configs, the plan's milestones and
the spec checks all use them).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator



def sparsity_problem(value: object) -> str | None:
    """Why ``value`` is not a sparsity (a number in [0, 1)), in one line; None when it is.

    Example:
        >>> sparsity_problem(1.2)
        'a sparsity must be a number in [0, 1), got 1.2'
        >>> sparsity_problem(0.5) is None
        True
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        return f"a sparsity must be a number in [0, 1), got {value!r}"
    return None


def milestones_problem(values: Sequence[object]) -> str | None:
    """Why ``values`` are not milestones (sparsities increasing strictly), in one line; None when they are.

    Example:
        >>> milestones_problem([0.5, 0.3])
        'milestones must increase strictly, got [0.5, 0.3]'
    """
    for value in values:
        if (problem := sparsity_problem(value)) is not None:
            return problem
    if any(b <= a for a, b in zip(values, values[1:])):
        return f"milestones must increase strictly, got {list(values)}"
    return None


def _checked_sparsity(value: float) -> float:
    if (problem := sparsity_problem(value)) is not None:
        raise ValueError(problem)
    return value


Sparsity = Annotated[float, AfterValidator(_checked_sparsity)]
"""A sparsity field of a config: a float in [0, 1), checked by :func:`sparsity_problem`."""


def agp_sparsity(t: int, initial: float, final: float, start: int, updates: int, frequency: int) -> float:
    """Sparsity at training batch ``t`` under eq. 1 of the pruning-order paper.

    Args:
        t: the time t, in batches (or epochs, as :func:`agp_schedule` counts them).
        initial: s_i, the sparsity at (and before) ``start``.
        final: s_f, the sparsity at and after ``start + updates * frequency``.
        start: t0, the time of the first update.
        updates: n, the number of updates after the first.
        frequency: dt, time between updates.

    Between updates the sparsity holds the value of the last update.

    Example:
        >>> round(agp_sparsity(5, 0.0, 0.8, start=0, updates=10, frequency=1), 6)
        0.7
    """
    if frequency < 1:
        raise ValueError(f"frequency must be >= 1 but got {frequency}")
    if updates < 0:
        raise ValueError(f"updates must be >= 0 but got {updates}")
    end = start + updates * frequency
    if t < start:
        return initial
    if t >= end:
        return final
    if t < start + frequency:  # t = t0, where eq. 1 reduces to s_i (said exactly, without rounding)
        return initial
    t = start + (t - start) // frequency * frequency
    return final + (initial - final) * (1 - (t - start) / (updates * frequency)) ** 3


class Frequency(BaseModel):
    """dt of eq. 1 with its unit: an update every ``every`` batches or epochs.

    A bare int is read as batches (``4`` is ``{every: 4, unit: batch}``), for short runs.

    Example:
        >>> Frequency.model_validate(4)
        Frequency(every=4, unit='batch')
        >>> Frequency(every=1, unit="epoch").unit
        'epoch'

    Args:
        every: dt, in ``unit``s between updates, >= 1.
        unit: ``batch`` (training batches) or ``epoch`` (the paper's, at epoch starts).
    """

    model_config = ConfigDict(extra="forbid")

    every: int = Field(1, ge=1)
    unit: Literal["batch", "epoch"] = "batch"

    @model_validator(mode="before")
    @classmethod
    def _bare_int_is_batches(cls, value):
        if isinstance(value, int) and not isinstance(value, bool):
            return {"every": value, "unit": "batch"}
        return value


class ScheduleSettings(Protocol):
    """What a schedule reads of a stage's config (:class:`~trainables.stages.gradual.GradualConfig` has it)."""

    epochs: int
    frequency: Frequency
    initial: float
    final: float


class Schedule(Protocol):
    """The contract of a schedule: ``schedule(cfg, batches_per_epoch) -> {batch index: sparsity}``.

    It receives the stage's settings (:class:`ScheduleSettings`) and the number of training
    batches per epoch, and returns the updates: for each global batch index at which the masks
    are updated (before that batch), the target sparsity there. The pruning loop
    (:func:`~trainables.stages.gradual.gradual_prune`) updates at exactly those batches; the
    largest index is the last update (the pruner is told ``last=True`` there; when training ends
    before it, it runs after training). A schedule never lowers the sparsity, and its last update
    is ``cfg.final``. It draws no random numbers.
    """

    def __call__(self, cfg: ScheduleSettings, batches_per_epoch: int) -> Mapping[int, float]: ...


def agp_schedule(cfg: ScheduleSettings, batches_per_epoch: int) -> dict[int, float]:
    """The updates of ``cfg`` on eq. 1 (a :class:`Schedule`): ``{global batch index: s_t}``.

    Eq. 1 with t0 = 0 and dt = ``cfg.frequency.every`` in its unit (see the module doc):

    - batch unit: n = epochs * batches_per_epoch // every, updates at batches 0, every, ..., n * every;
    - epoch unit: n = ceil(epochs / every) - 1, updates at the first batch of epochs 0, every, ...,
      n * every (all inside the window; s_f at the last).

    Example (the paper's PB: 10 epochs, dt = 1 epoch; 3 batches per epoch here):
        >>> from trainables.stages.gradual import GradualConfig
        >>> cfg = GradualConfig(final=0.8, epochs=10, frequency={"every": 1, "unit": "epoch"})
        >>> updates = agp_schedule(cfg, batches_per_epoch=3)
        >>> len(updates), sorted(updates)[:3], updates[27]
        (10, [0, 3, 6], 0.8)
    """
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch must be >= 1 but got {batches_per_epoch}")
    every = cfg.frequency.every
    if cfg.frequency.unit == "batch":
        n, scale = cfg.epochs * batches_per_epoch // every, 1
    else:
        n, scale = math.ceil(cfg.epochs / every) - 1, batches_per_epoch
    return {k * every * scale: agp_sparsity(k * every, cfg.initial, cfg.final, start=0, updates=n, frequency=every)
            for k in range(n + 1)}


def oneshot_schedule(cfg: ScheduleSettings, batches_per_epoch: int) -> dict[int, float]:
    """One update, before the first batch, straight to ``cfg.final`` (a :class:`Schedule`):
    the final structure at once, every epoch of the window and of the recovery training it.

    Example:
        >>> from trainables.stages.gradual import GradualConfig
        >>> oneshot_schedule(GradualConfig(final=0.75, epochs=4), batches_per_epoch=3)
        {0: 0.75}
    """
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch must be >= 1 but got {batches_per_epoch}")
    return {0: cfg.final}


Pace = Literal["agp", "oneshot"]
SCHEDULES: dict[str, Schedule] = {"agp": agp_schedule, "oneshot": oneshot_schedule}
"""The schedule of each ``prune.pace`` (searchable): ``agp`` (eq. 1) or ``oneshot``."""
