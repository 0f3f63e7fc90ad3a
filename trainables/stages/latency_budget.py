"""A pruning stage's latency target: the spec's ``{latency: 0.4}`` or ``{latency_ms: 2.0}`` instead
of a sparsity, and how a unit-pruning stage meets it.

The target is a latency on the trial's own engine (its benchmark settings: backend, precision,
batch, threads): ``latency`` a share of the dense network's latency there, ``latency_ms``
milliseconds. A :class:`LatencyBudget` holds what meeting it takes:

1. a latency model of the architecture on that engine
   (:func:`~trainables.measure.latency_model.latency_model`: per-layer lookup tables, built once per
   architecture, input shape and engine and cached in the run folder beside TensorRT's timing cache);
2. an allocation (:func:`~trainables.stages.allocation.counts_for_latency`) that chooses every
   group's kept width under the model's prediction, keeping the most importance (``latency``) or
   cutting every group alike (``uniform``);
3. a check: the chosen network, shrunk, measured on the engine for real beside the dense one
   (:func:`~trainables.measure.latency_model.relative_latency`; a share target is judged by the
   measured share, on the scale of the model's ``dense_ms``). The model predicts, the engine decides:
   when the measurement misses the target by more than ``tolerance``, the allocation is made again
   against the target scaled by the miss (predicted over measured), up to ``rounds`` times, and the
   closest measured candidate is kept.

The stage then prunes to those counts (gradual pruning on its pace, EPruning holding each group's
count) and reports ``latency_target_ms``, ``latency_predicted_ms``, ``latency_checked_ms`` (the
check's measurement of the kept candidate), ``latency_dense_ms``, ``latency_checks`` and the latency
model's ``latency_model_seconds`` / ``latency_model_cached``; the benchmark times the final model as
it times every trial.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..compress.units import UnitGroup, unit_groups
from .allocation import counts_for_latency

if TYPE_CHECKING:
    from ..measure.latency_model import LatencyModel
    from ..stage import Context
    from .benchmark import BenchmarkConfig

ROUNDS = 4
"""Allocations a stage tries at most: the first, then corrections by the measured miss."""
TOLERANCE = 0.05
"""A check within this share of the target ends the corrections (the issue's goal is 10%; half of it
leaves room for the benchmark's own noise)."""


class LatencyTarget(BaseModel):
    """A pruning stage's target as a latency on the trial's engine: exactly one of

    Args:
        latency: a share of the dense network's measured latency, in (0, 1); label ``L40`` for 0.4.
        latency_ms: milliseconds; label ``L2ms`` for 2.0.

    Example:
        >>> LatencyTarget(latency=0.4).label, LatencyTarget(latency_ms=2.0).label
        ('L40', 'L2ms')
        >>> LatencyTarget(latency=0.4).ms(dense_ms=10.0)
        4.0
    """

    model_config = ConfigDict(extra="forbid")

    latency: float | None = Field(None, gt=0, lt=1)
    latency_ms: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _exactly_one(self) -> LatencyTarget:
        if (self.latency is None) == (self.latency_ms is None):
            raise ValueError("a latency target is exactly one of latency (a share of the dense latency, in (0, 1)) "
                             f"and latency_ms (milliseconds), got {self.model_dump(exclude_none=True)}")
        return self

    def ms(self, dense_ms: float) -> float:
        """The target in milliseconds, for a dense network measured at ``dense_ms``."""
        return self.latency * dense_ms if self.latency is not None else float(self.latency_ms)

    @property
    def label(self) -> str:
        """Its part of the pipeline string: ``L40``, ``L2ms``."""
        if self.latency is not None:
            return f"L{round(self.latency * 100):d}"
        return f"L{self.latency_ms:g}ms"


def is_latency_target(value: object) -> bool:
    """Whether ``value`` (a plan's ``s1``/``s2``) is a latency target: a :class:`LatencyTarget` or its dict."""
    return isinstance(value, LatencyTarget) or (
        isinstance(value, Mapping) and bool(value) and set(value) <= {"latency", "latency_ms"})


Check = Callable[[Mapping[str, torch.Tensor]], tuple[float, float]]
"""``{group: keep mask} -> (pruned ms, dense ms)``: the network pruned so and the dense one, measured on
the engine in the same rounds (:func:`~trainables.measure.latency_model.relative_latency`)."""


@dataclass
class LatencyBudget:
    """A latency target with the latency model and the engine check that meet it (module doc).

    Args:
        target: the stage's target.
        model: the architecture's latency model on the trial's engine (``predict``, ``dense_ms``).
        check: measures a candidate on the engine; None: trust the prediction (tests of the loop's
            arithmetic, or no engine).
        rounds / tolerance: see :data:`ROUNDS`, :data:`TOLERANCE`.
    """

    target: LatencyTarget
    model: LatencyModel
    check: Check | None = None
    rounds: int = ROUNDS
    tolerance: float = TOLERANCE
    record: dict[str, float] = field(default_factory=dict)

    @property
    def target_ms(self) -> float:
        return self.target.ms(self.model.dense_ms)

    def allocate(self, alive: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor], *,
                 allocation: str, floor: float, round_to: int) -> dict[str, int]:
        """Kept units per group that meet the target (module doc), from the ``alive`` units and their
        ``scores``; ``round_to`` 1 takes the engine's preferred multiple. Fills :attr:`record`."""
        round_to = round_to if round_to > 1 else self.model.multiple
        target, aim = self.target_ms, self.target_ms
        tried: list[tuple[float, dict[str, int], float, float]] = []  # (miss, counts, predicted, checked ms)
        for _ in range(self.rounds):
            counts = counts_for_latency(alive, scores, self.model.predict, aim, allocation=allocation, floor=floor,
                                        round_to=round_to)
            predicted = self.model.predict(counts)
            checked = self._checked(keep_masks(alive, scores, counts)) if self.check is not None else predicted
            tried.append((abs(checked - target) / target, counts, predicted, checked))
            if self.check is None or tried[-1][0] <= self.tolerance or not checked > 0:
                break
            aim = aim * target / checked
        miss, counts, predicted, checked = min(tried, key=lambda t: t[0])
        self.record = {"latency_target_ms": target, "latency_predicted_ms": predicted,
                       "latency_checked_ms": checked if self.check is not None else math.nan,
                       "latency_dense_ms": self.model.dense_ms, "latency_checks": float(len(tried)),
                       "latency_model_seconds": self.model.build_seconds,
                       "latency_model_cached": float(self.model.cached)}
        return counts

    def _checked(self, keep: Mapping[str, torch.Tensor]) -> float:
        """The check of ``keep`` on the dense latency's scale: a share target is judged by the pruned
        network's measured share of the dense one measured beside it (the machine's speed may have
        drifted since the model measured ``dense_ms``), a ``latency_ms`` target by the milliseconds."""
        pruned, dense = self.check(keep)
        if self.target.latency is not None and dense > 0:
            return pruned / dense * self.model.dense_ms
        return pruned

    def metrics(self) -> dict[str, float]:
        """What :meth:`allocate` found (empty before it ran)."""
        return dict(self.record)


def keep_masks(alive: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
               counts: Mapping[str, int]) -> dict[str, torch.Tensor]:
    """Per group, the ``counts[group]`` highest-scored alive units (True: kept), as the pruner keeps them."""
    masks = {}
    for name, keep in alive.items():
        ranked = scores[name].float().masked_fill(~keep.to(scores[name].device), -math.inf)
        mask = torch.zeros(len(keep), dtype=torch.bool)
        mask[torch.topk(ranked, counts.get(name, int(keep.sum()))).indices.cpu()] = True
        masks[name] = mask
    return masks


def latency_budget(model: nn.Module, groups: Sequence[UnitGroup], target: LatencyTarget,
                   benchmark: BenchmarkConfig, *, input_shape: tuple[int, int, int], workdir: Path,
                   device: str = "cpu") -> LatencyBudget:
    """The :class:`LatencyBudget` of a stage pruning ``model`` (its ``groups``) to ``target`` on the engine
    ``benchmark`` describes, for a trial working in ``workdir`` (the latency model's cache is the run's)."""
    from ..layout import RunFolder
    from ..measure.latency_model import latency_model, relative_latency

    settings: dict[str, Any] = benchmark.measurement(Path(workdir))
    run = RunFolder.holding(Path(workdir))
    cache = run.root if run is not None else Path(workdir)  # its latency/ folder: RUN/latency/, shared by the run's trials
    # the model covers every unit group (a stage prunes a subset: the stem left whole, EPruning's layers),
    # so that one model per architecture serves every stage; groups a stage leaves out are predicted whole
    lm = latency_model(model, unit_groups(model), input_shape, settings, device=device, cache_dir=cache)

    def check(keep: Mapping[str, torch.Tensor]) -> tuple[float, float]:
        return relative_latency(model, dict(keep), groups, input_shape, settings, device=device,
                               workdir=Path(workdir) / "latency_check")

    return LatencyBudget(target=target, model=lm, check=check)


def stage_budget(target: LatencyTarget, benchmark: BenchmarkConfig,
                 ctx: Context) -> Callable[[nn.Module, Sequence[UnitGroup]], LatencyBudget]:
    """A pruning stage's :data:`~trainables.stages.pruners.BudgetFactory` for a run in ``ctx``: the target on
    the trial's engine, its latency model in the run folder, the checks under the stage's workdir."""

    def make(model: nn.Module, groups: Sequence[UnitGroup]) -> LatencyBudget:
        return latency_budget(model, groups, target, benchmark, input_shape=ctx.input_shape, workdir=ctx.workdir,
                              device=ctx.device)

    return make
