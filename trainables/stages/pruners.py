"""How a gradual pruning stage masks: one :class:`Pruner` per ``granularity``.

The stage (:func:`~trainables.stages.gradual.gradual_prune`) owns the training and the schedule
(:mod:`trainables.stages.schedule`); a pruner owns the masks. ``granularity`` picks one
(searchable as ``prune.granularity``):

- ``unstructured`` (the paper's, :class:`Unstructured`): single weights, each layer masked to s_t
  by magnitude.
- ``channel`` (:class:`Channel`): units (:mod:`trainables.compress.units`, groups of coupled
  channels, residual streams included): in each unit group the least important units (an
  :class:`~trainables.compress.importance.Importance`, L1 by default) are masked until the group's
  share of pruned units reaches s_t, at every gate of the group (rows, biases, BatchNorm gamma and
  beta), so the units are dead and :mod:`trainables.compress.surgery` can remove them: unlike
  unstructured zeros, this buys latency on any engine.
- ``2:4`` (:class:`SemiStructured`): semi-structured sparsity for the sparse tensor cores TensorRT
  uses: in each group of 4 consecutive input channels (at every output channel and kernel
  position) the smallest magnitudes are masked, round(4 * s_t) per group on the schedule, capped
  at 2, and exactly the 2:4 pattern (2 of 4 kept) from the last update on. So s_f must be <= 0.5; a
  smaller s_f only delays the pattern to the last update. Layers whose input channels are not a
  multiple of 4 (the 3-channel input conv) stay dense and are counted.

Adding a granularity is a :class:`Pruner` subclass here with its ``granularity`` name, and that
name added to :data:`Granularity` (the spec's choices).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol, get_args

import torch
from torch import nn

from ..compress.importance import Importance
from ..compress.importance import importance as importance_named
from ..compress.masks import mask_entries, prunable_layers, prune_to, semi_structured_mask, zero_fraction
from ..compress.surgery import alive_units, zero_units
from ..compress.units import UnitGroup, unit_groups
from ..stage import Metrics
from .allocation import kept_counts
from .batches import TrainingBatches

if TYPE_CHECKING:
    from .latency_budget import LatencyBudget

BudgetFactory = Callable[[nn.Module, Sequence[UnitGroup]], "LatencyBudget"]
"""``(model, unit groups) -> LatencyBudget``: how a stage pruning to a latency gives its pruner the
target (:func:`~trainables.stages.latency_budget.latency_budget` with the stage's engine and folders)."""

Granularity = Literal["unstructured", "channel", "2:4"]
GRANULARITIES: tuple[str, ...] = get_args(Granularity)


class PrunerSettings(Protocol):
    """What a pruner reads of its stage's config (:class:`~trainables.stages.gradual.GradualConfig`)."""

    skip_first: bool
    skip_last: bool
    residual: bool
    importance: str
    allocation: str
    floor: float
    round_to: int


class Pruner(ABC):
    """The masks of one gradual pruning stage: made once, updated on the schedule, then finished.

    The contract of an implementation (the stage calls these in this order):

    1. ``__init__(model, cfg, importance)``: the model as the stage received it (on the stage's
       device; zeros and dead units of an earlier stage already held by
       :func:`~trainables.compress.masks.sparsity_kept`) and the stage's settings
       (:class:`PrunerSettings`: ``skip_first``/``skip_last`` leave the input conv / the head
       dense, ``residual`` whether residual streams are units). ``importance`` scores units for a
       pruner that removes units; others ignore it. ``batches`` (:data:`~trainables.stages.batches.TrainingBatches`)
       gives the stage's training batches to an importance that observes data (:meth:`observe`).
       ``budget`` (a :data:`BudgetFactory`) makes the stage's target a latency: only a pruner that
       removes units takes one. It may mask already.
    2. ``update(sparsity, last)``, once per update of the schedule, in order, before that batch's
       forward: bring the masks to ``sparsity`` (the schedule's s_t; non-decreasing) by
       ``torch.nn.utils.prune`` reparametrizations (:func:`~trainables.compress.masks.mask_entries`),
       never unmasking an entry. ``last`` is True exactly once, at the schedule's last update, where
       the final pattern must be reached. With a ``budget`` the value is the progress toward the
       latency target instead, from 0 to 1 on the same schedule.
    3. ``finish()``, once, after training, when the stage has made the masks permanent: any zeroing
       beyond the masks (default: none).
    4. ``metrics()``, once, after ``finish``: ``sparsity`` (what the pruner prunes: the share of
       weights or of units), ``layer_sparsity_min``/``layer_sparsity_max``, and its own keys.

    A pruner never trains, never changes the model's structure (surgery comes later), and draws no
    random numbers (the stage's random streams must not depend on the granularity).
    """

    granularity: ClassVar[str]
    max_sparsity: ClassVar[float | None] = None  # the most this granularity reaches (None: below 1)
    limit_reason: ClassVar[str] = ""  # why, for the message of granularity_problem

    def __init__(self, model: nn.Module, cfg: PrunerSettings, importance: Importance | None = None,
                 batches: TrainingBatches | None = None, budget: BudgetFactory | None = None) -> None:
        self.model, self.cfg, self.batches = model, cfg, batches
        self.importance = importance or importance_named(cfg.importance)
        if budget is not None and not self.removes_units:
            raise ValueError(f"granularity {self.granularity!r} cannot prune to a latency: it removes no unit "
                             "(use channel granularity or EPruning)")
        self.budget_factory = budget

    removes_units: ClassVar[bool] = False  # whether it can prune to a latency (its zeros are whole units)

    def observe(self) -> None:
        """Show the importance ``importance.batches`` training batches (its ``observe`` hook); a
        pruner that scores units calls this once per mask update, before scoring. Nothing when the
        importance wants none.

        Raises:
            ValueError: the importance wants batches and the pruner was given ``batches=None``.
        """
        wanted = self.importance.batches
        if not wanted:
            return
        if self.batches is None:
            raise ValueError(f"importance {self.importance.name!r} observes {wanted} batches of training data "
                             "at each mask update but the pruner got batches=None")
        self.importance.observe(self.model, self.batches(wanted))

    @abstractmethod
    def update(self, sparsity: float, last: bool) -> None:
        """Bring the masks to ``sparsity`` (an update of the schedule); masks only grow."""

    def finish(self) -> None:
        """After training, with the masks made permanent: nothing by default."""

    @abstractmethod
    def metrics(self) -> Metrics:
        """``sparsity``, ``layer_sparsity_min``/``max`` and the pruner's own metrics."""


class Unstructured(Pruner):
    """Each pruned layer's smallest weights masked to s_t (the paper's method)."""

    granularity = "unstructured"

    def __init__(self, model: nn.Module, cfg: PrunerSettings, importance: Importance | None = None,
                 batches: TrainingBatches | None = None, budget: BudgetFactory | None = None) -> None:
        super().__init__(model, cfg, importance, batches, budget)
        self.layers = [m for _, m in prunable_layers(model, skip_first=cfg.skip_first, skip_last=cfg.skip_last)]

    def update(self, sparsity: float, last: bool) -> None:
        for layer in self.layers:
            prune_to(layer, sparsity)

    def metrics(self) -> Metrics:
        per_layer = [zero_fraction([m]) for m in self.layers]
        return {"sparsity": zero_fraction(self.layers), "layer_sparsity_min": min(per_layer, default=0.0),
                "layer_sparsity_max": max(per_layer, default=0.0)}


class SemiStructured(Unstructured):
    """The 2:4 pattern along input channels, reached in updates of one more zero per group of 4."""

    granularity = "2:4"
    max_sparsity = 0.5  # 2:4 keeps 2 of every 4 weights
    limit_reason = "it keeps 2 of every 4 weights"

    def __init__(self, model: nn.Module, cfg: PrunerSettings, importance: Importance | None = None,
                 batches: TrainingBatches | None = None, budget: BudgetFactory | None = None) -> None:
        super().__init__(model, cfg, importance, batches, budget)
        self.candidates = self.layers  # the metrics count the skipped (dense) layers too
        self.layers = [m for m in self.candidates if m.weight.shape[1] % 4 == 0]
        self.zeros = 0

    def update(self, sparsity: float, last: bool) -> None:
        zeros = 2 if last else min(2, round(4 * sparsity))
        if zeros <= self.zeros:  # masks only grow, and they change only when a group loses one more
            return
        self.zeros = zeros
        for layer in self.layers:
            current = layer.weight_mask if hasattr(layer, "weight_mask") else None
            mask_entries(layer, "weight", semi_structured_mask(layer.weight, zeros, current))

    def metrics(self) -> Metrics:
        per_layer = [zero_fraction([m]) for m in self.candidates]
        return {"sparsity": zero_fraction(self.candidates), "layer_sparsity_min": min(per_layer, default=0.0),
                "layer_sparsity_max": max(per_layer, default=0.0),
                "layers_skipped": len(self.candidates) - len(self.layers)}


class Channel(Pruner):
    """Each unit group's least important units masked until the group's pruned-unit share is s_t.

    A unit's importance comes from ``importance`` (L1 by default: the L1 norm of the weight rows
    its group's producers spend on it, a residual stream's channel counting the rows of every
    layer adding into it), so a group's units are ranked as one. A unit is masked at every gate of
    its group (producers' rows and biases, BatchNorm gamma and beta, depthwise filters), so that it
    is dead (:func:`trainables.compress.surgery.alive_units` reads it as not alive). Units already
    dead when the stage starts (pruned by an earlier stage) count as pruned and are masked again.
    Each group keeps at least one unit, which surgery needs. ``skip_first`` leaves out the group
    whose channels the model's input conv produces; ``residual=False`` leaves out residual streams;
    the head is never a unit group.

    With a latency ``budget``, the first update scores the units and asks the budget for every
    group's final count (:meth:`~trainables.stages.latency_budget.LatencyBudget.allocate`, checked on
    the engine); each update then brings every group the schedule's share of the way from the
    count it started with to its final count (the cubic AGP ramp, or at once), re-ranking the
    units within each group by their scores at that update.
    """

    granularity = "channel"
    removes_units = True

    def __init__(self, model: nn.Module, cfg: PrunerSettings, importance: Importance | None = None,
                 batches: TrainingBatches | None = None, budget: BudgetFactory | None = None) -> None:
        super().__init__(model, cfg, importance, batches, budget)
        groups = unit_groups(model, residual=cfg.residual)
        if cfg.skip_first:
            first, _ = prunable_layers(model, skip_first=False, skip_last=False)[0]
            groups = [g for g in groups if all(m.name != first for m in g.gates)]
        self.groups = groups
        self.layers = [m for _, m in prunable_layers(model, skip_first=cfg.skip_first, skip_last=cfg.skip_last)]
        self.pruned = {name: ~keep for name, keep in alive_units(model, groups).items()}
        for group in groups:
            if bool(self.pruned[group.name].any()):
                self._mask(group)
        self.budget: LatencyBudget | None = None
        self.start: dict[str, int] = {}  # a latency target's counts: where each group started,
        self.final: dict[str, int] = {}  # and where it ends

    def update(self, sparsity: float, last: bool) -> None:
        self.observe()
        alive = {group.name: ~self.pruned[group.name] for group in self.groups}
        scores = {group.name: self.importance(self.model, group) for group in self.groups}
        if self.budget_factory is None:
            kept = kept_counts(alive, scores, sparsity, allocation=self.cfg.allocation, floor=self.cfg.floor,
                               round_to=self.cfg.round_to)
        else:
            kept = self._toward_latency(alive, scores, 1.0 if last else sparsity)
        for group in self.groups:
            pruned = self.pruned[group.name]
            extra = int(alive[group.name].sum()) - kept[group.name]
            if extra <= 0:
                continue
            ranked = scores[group.name].masked_fill(pruned, float("inf"))
            pruned[torch.topk(ranked, extra, largest=False).indices] = True
            self._mask(group)

    def _toward_latency(self, alive: dict[str, torch.Tensor], scores: dict[str, torch.Tensor],
                        progress: float) -> dict[str, int]:
        """Counts ``progress`` of the way from the start to the latency budget's final counts."""
        if self.budget is None:
            self.budget = self.budget_factory(self.model, self.groups)
            self.start = {name: int(keep.sum()) for name, keep in alive.items()}
            self.final = self.budget.allocate(alive, scores, allocation=self.cfg.allocation, floor=self.cfg.floor,
                                              round_to=self.cfg.round_to)
        return {name: self.start[name] - round(progress * (self.start[name] - self.final[name])) for name in alive}

    def _mask(self, group: UnitGroup) -> None:
        keep = ~self.pruned[group.name]
        for gate in group.gates:
            module = self.model.get_submodule(gate.name)
            channels = torch.tensor(gate.channels)
            for name in ("weight", "bias"):
                tensor = getattr(module, name, None)
                if tensor is None:
                    continue
                rows = torch.ones(tensor.shape[0], dtype=torch.bool)
                rows[channels] = gate.per_channel(keep)
                rows = rows.to(tensor.device).view((-1,) + (1,) * (tensor.dim() - 1)).expand_as(tensor)
                mask_entries(module, name, rows)

    def finish(self) -> None:
        """Zero the readers' inputs of the pruned units too (dead anyway), so the artifact compresses."""
        zero_units(self.model, {name: ~pruned for name, pruned in self.pruned.items()}, self.groups)

    def metrics(self) -> Metrics:
        per_group = [float(self.pruned[g.name].float().mean()) for g in self.groups]
        units = sum(g.size for g in self.groups)
        share = sum(int(self.pruned[g.name].sum()) for g in self.groups) / units if units else 0.0
        return {"sparsity": share, "unit_sparsity": share, "weight_sparsity": zero_fraction(self.layers),
                "layer_sparsity_min": min(per_group, default=0.0), "layer_sparsity_max": max(per_group, default=0.0),
                **(self.budget.metrics() if self.budget is not None else {})}


def pruner_class(granularity: str) -> type[Pruner]:
    """The pruner of ``granularity`` (a subclass of :class:`Pruner` in this module, by its ``granularity``)."""
    found = {cls.granularity: cls for cls in _subclasses(Pruner)}
    if granularity not in found:
        raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)} but got {granularity!r}")
    return found[granularity]


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def granularity_problem(granularity: str, sparsity: float) -> str | None:
    """Why ``sparsity`` cannot be pruned at ``granularity``, in one line; None when it can.

    ``2:4`` keeps 2 of every 4 weights, so it cannot go above 0.5. The spec check calls this for
    every sparsity the search space can sample.

    Example:
        >>> granularity_problem("2:4", 0.8)
        "sparsity 0.8 is above 0.5, the most that granularity '2:4' reaches (it keeps 2 of every 4 weights)"
        >>> granularity_problem("channel", 0.8) is None
        True
    """
    if granularity not in GRANULARITIES:
        return f"granularity must be one of {', '.join(GRANULARITIES)} but got {granularity!r}"
    limit = pruner_class(granularity).max_sparsity
    if limit is not None and sparsity > limit:
        reason = pruner_class(granularity).limit_reason
        return (f"sparsity {sparsity} is above {limit}, the most that granularity '{granularity}' "
                f"reaches ({reason})")
    return None
