"""EPruning: unit pruning by binary differential evolution under an energy loss (Salehinejad & Valaee).

A population of S binary states over the D units of the network (:mod:`trainables.compress.units`)
evolves during training (Algorithm 1 of the EPruning paper):

- every training batch (one *generation*), each state gets a child by mutation (eq. 4) and crossover (eq. 5); the
  child replaces its parent when its energy loss (eq. 3, F = -logits by eq. 2) is not higher
  (eq. 6); the lowest-energy state s_b masks the network for that batch's forward and backward
  (the first, dropout-like phase);
- after every epoch Δs = E_b - mean(E) (eq. 7); when Δs = 0 or every state is the same (the
  population converged: early state convergence) or after Δs_T epochs (stagnation), s_b is frozen
  and the sub-network is fine-tuned (the second phase).

In Algorithm 1 a parent keeps the energy it was scored with, on an earlier batch and with earlier
weights, while its child is scored on this batch (``selection: stored``, the paper's way); with
``selection: rescored`` parents and children are scored on the same batch in one forward of 2S
candidates, so eq. 6 compares like with like. Stored energies that almost never tie also keep
Δs = 0 from ever holding, hence the second convergence test (all S states equal).

With ``constrain`` the states hold exactly ``round((1 - rate) * D)`` active units (the paper's
"predefined number of active states"), repaired after crossover; every group keeps at least one
unit. At the end the pruned units are zeroed in the weights (kernels, biases, BatchNorm and the
readers' inputs), so :func:`trainables.compress.surgery.shrink` can remove them physically. The paper
trains with horizontal flips and Cutout; ``augment: flip_cutout`` does the same.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ..augment import Augment, named, then
from ..compress.gating import gated_states
from ..compress.units import UnitGroup, unit_groups
from ..curriculum import flip_cutout
from ..stage import Context, Domain, Metrics, prune_slot
from ..train import EVAL_BATCH_SIZE, DistillConfig, OptimConfig, evaluate, fit, loader, seed_everything
from .evolution import converged, convergence, crossover, init_population, mutate, repair, select
from .benchmark import BenchmarkConfig
from .latency_budget import LatencyBudget, LatencyTarget, stage_budget
from .population import Evaluator, make_evaluator, sample_energies
from .pruners import BudgetFactory


def energy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 3 of the EPruning paper, mean over the batch.

    With F = -logits (eq. 2), a sample's energy loss is the target class's energy minus the
    lowest energy among the other classes: F(y_c, X) - min{F(y_c', X) : c' != c}.

    Args:
        logits: ``(B, C)`` network outputs, C >= 2.
        target: ``(B,)`` class indices.
    """
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (batch, classes >= 2) but got {tuple(logits.shape)}")
    return sample_energies(logits, target).mean()


class EPruningConfig(BaseModel):
    """The population search of EPruning (Algorithm 1); specs set it under ``budgets.prune.epruning``.

    Args:
        population: S, the number of states (the paper uses 8).
        mutation: F of eq. 4.
        crossover: Cr of eq. 5.
        init_p: p, each unit's probability of being active in S^(0) (paper: 0.5).
        stagnation: Δs_T, epochs after which the search stops even without convergence
            (None: the pruning window, ``prune.epochs``).
        constrain: hold exactly ``round((1 - s) * D)`` active units, s being the stage's target
            sparsity; without it the search finds its own rate and s is not used.
        layers: shell patterns over layer names: the unit groups with a matching gate take part
            (None: every unit group).
        evaluator: how the population's energies are computed (same energies each way).
        selection: what eq. 6 compares a child with. ``rescored`` (the default): the parent's
            energy on the child's batch, both scored in one forward of 2S candidates (twice the
            evaluation work per batch). ``stored`` (Algorithm 1 as written): the energy the parent
            was last scored with, on an earlier batch with earlier weights; a surviving parent's
            energy is the lowest of its draws, so children rarely beat it and the acceptance falls
            toward 0 (``bench/epruning_selection.py`` compares the two).
        actors / actor_cpus / actor_gpus: the Ray actor pool of ``evaluator: actors``.
        chunk: at most this many candidates per forward in ``batched`` and ``actors`` (None: all
            S at once, ``S * batch_size`` images). Set it for big inputs on a small device; on a
            GPU that runs out of memory the chunk is also halved by itself.
        augment: ``flip_cutout``, the paper's training augmentation (horizontal flip and Cutout,
            :func:`~trainables.curriculum.flip_cutout`), or ``none`` (the default: a flip is not
            harmless on every dataset, e.g. digits).
    """

    model_config = ConfigDict(extra="forbid")

    population: int = Field(8, ge=4)
    mutation: float = Field(0.5, ge=0, le=1)
    crossover: float = Field(0.5, ge=0, le=1)
    init_p: float = Field(0.5, gt=0, lt=1)
    stagnation: int | None = Field(None, ge=1)
    constrain: bool = True
    layers: list[str] | None = None
    evaluator: Literal["batched", "actors", "reference"] = "batched"
    selection: Literal["stored", "rescored"] = "rescored"
    actors: int = Field(2, ge=1)
    actor_cpus: float = Field(1.0, gt=0)
    actor_gpus: float = Field(0.0, ge=0)
    augment: Literal["none", "flip_cutout"] = "none"
    chunk: int | None = Field(None, ge=1)


class EPruneSchedule(BaseModel):
    """The budget of an EPruning stage: the fields of the spec's ``budgets.prune`` schedule it reads.

    The gradual schedule's ``frequency``, ``granularity`` and ``skip_first``/``skip_last`` are not
    here: the population search picks units in every unit group at every batch, so those fields
    would change nothing but the stage's cache key.

    Args:
        epochs: the search window, in epochs (the default of ``cfg.stagnation``).
        recover_epochs: fine-tuning epochs after the window.
        batch_size: training batch.
        optim: the training optimizer.
        augment: the spec's training augmentation, applied before ``epruning.augment``.
        residual: residual streams are units too (``budgets.prune.residual``; False: only
            channels inside a block, :func:`trainables.compress.units.unit_groups`).
        distill: distillation from the trial's teacher (``budgets.prune.distill``; Hinton et al.
            2015, :func:`~trainables.train.distillation_loss`) in the stage's one training run, the
            search window and the fine-tuning after it; weight 0 (the default) is off.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(2, ge=1)
    recover_epochs: int = Field(1, ge=0)
    batch_size: int = Field(64, ge=1)
    optim: OptimConfig = OptimConfig()
    augment: Augment = "none"
    residual: bool = True
    distill: DistillConfig = DistillConfig()

    @field_validator("distill", mode="after")
    @classmethod
    def _unset_is_off(cls, distill: DistillConfig) -> DistillConfig:
        # an unset weight (the prune budget's default) is no distillation for EPruning
        return distill if distill.weight is not None else distill.model_copy(update={"weight": 0.0})


def epruning(model: nn.Module, splits, cfg: EPruningConfig, schedule: EPruneSchedule, *, sparsity: float | None,
             device: str = "cpu", seed: int = 0, on_epoch=None, teacher: nn.Module | None = None,
             budget: BudgetFactory | None = None) -> tuple[nn.Module, Metrics]:
    """Prune ``model``'s units with EPruning on ``splits`` (see the module doc); the units end zeroed.

    Trains ``schedule.epochs + schedule.recover_epochs`` epochs in batches of ``schedule.batch_size``
    with ``schedule.optim``; the search runs for at most ``cfg.stagnation`` (default
    ``schedule.epochs``) of them, one generation per training batch. Returns metrics: ``pruning_rate`` (share of trainable parameters removed,
    1 - the paper's R), ``unit_sparsity`` (share of units pruned), ``search_epochs``, the search
    history as one value per search epoch: ``energy_best`` and ``energy_mean`` (the population's
    lowest and mean energy at the epoch's end), ``delta_s`` (Δs of eq. 7) and ``acceptance`` (the
    share of that epoch's children that replaced their parent by eq. 6); and top-1/3/5 and loss on
    the test split.

    ``schedule.augment`` is the pruning schedule's augmentation (``shift_mirror``,
    :mod:`trainables.augment`), applied before ``cfg.augment``'s flip and Cutout when both are set.
    ``schedule.residual=False`` leaves residual streams out of the units
    (:func:`trainables.compress.units.unit_groups`). With ``schedule.distill`` on, the training
    loss is :func:`~trainables.train.distillation_loss` from ``teacher`` (the unmasked teacher's
    outputs, the student's under s_b's mask); the search's energies (eq. 3) stay on the labels.

    With a latency ``budget`` (:data:`~trainables.stages.pruners.BudgetFactory`; ``sparsity`` None)
    every group's count of active units comes from the budget's ``uniform`` allocation (the least
    common share of units the latency model predicts under the target: on the fashion_mnist task
    at L50 it was 1.3-2.2 points more accurate than the ``latency`` allocation's widths on 3 of 3
    seeds), made once before the search from the units' L1 importance and checked on the engine
    (:meth:`~trainables.stages.latency_budget.LatencyBudget.allocate`), and the repair holds each
    group to its count (:func:`~trainables.stages.evolution.repair`); the population searches which
    units. The metrics add the budget's ``latency_*`` record.
    """
    from ..compress.surgery import scoring_copy, zero_units

    start = time.perf_counter()
    seed_everything(seed)
    model.to(device)
    groups = unit_groups(model, cfg.layers, residual=schedule.residual)
    if (sparsity is None) == (budget is None):
        raise ValueError(f"EPruning prunes to exactly one of a sparsity and a latency budget; got sparsity={sparsity!r}, "
                         f"budget={budget!r}")
    counts = _latency_counts(model, groups, budget(model, groups)) if budget is not None else None
    search = _Search(model, groups, cfg, sparsity, seed, device, counts=counts[0] if counts else None)
    limit = cfg.stagnation or schedule.epochs
    history: list[dict] = []

    def epoch_done(record: dict) -> None:
        record.update(search.epoch_end(int(record["epoch"]), limit))
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)

    unaugmented = splits.train.augment
    splits.train.augment = then(named(schedule.augment), flip_cutout() if cfg.augment == "flip_cutout" else None)
    try:
        fit(model, loader(splits.train, schedule.batch_size, shuffle=True, seed=seed), None, schedule.optim,
            schedule.epochs + schedule.recover_epochs, device=device, on_epoch=epoch_done,
            forward_context=lambda x, y: gated_states(model, groups, search.generation(x, y)),
            teacher=teacher, distill=schedule.distill)
    finally:
        search.close()
        splits.train.augment = unaugmented
    keep = search.keep()
    rate = removed_share(model, keep, groups)
    zero_units(model, keep, groups)
    scored = scoring_copy(model, tuple(splits.test[0][0].shape), device)  # one image's shape
    metrics = evaluate(scored, loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), device)
    metrics.update(
        pruning_rate=rate,
        unit_sparsity=1.0 - float(search.best.float().mean()),
        search_epochs=float(search.search_epochs),
        **{key: [h[key] for h in history if h["searched"]]
           for key in ("energy_best", "energy_mean", "delta_s", "acceptance")},
        seconds=time.perf_counter() - start,
        **(counts[1] if counts else {}),
    )
    return model, metrics


def _latency_counts(model: nn.Module, groups: list[UnitGroup], budget: LatencyBudget) -> tuple[list[int], dict]:
    """Every group's active units under the latency ``budget`` (``uniform`` allocation; L1 scores pick
    which units the check times), and its record."""
    from ..compress.importance import importance
    from ..compress.surgery import alive_units

    alive = {name: keep.cpu() for name, keep in alive_units(model, groups).items()}
    l1 = importance("l1")
    scores = {g.name: l1(model, g).cpu() for g in groups}
    counts = budget.allocate(alive, scores, allocation="uniform", floor=0.0, round_to=1)
    return [counts[g.name] for g in groups], budget.metrics()



class _Search:
    """The population, its energies and the best state s_b: one generation per training batch."""

    def __init__(self, model: nn.Module, groups: list[UnitGroup], cfg: EPruningConfig, sparsity: float | None,
                 seed: int, device: str, counts: list[int] | None = None) -> None:
        self.model, self.groups, self.cfg, self.device = model, groups, cfg, device
        from ..compress.surgery import alive_units

        self.sizes = [g.size for g in groups]
        units = sum(self.sizes)
        alive = alive_units(model, groups)
        self.allowed = torch.cat([alive[g.name].cpu() for g in groups])
        self.counts = counts  # a latency target's active units per group (repair holds each)
        if counts is None:
            target = max(len(groups), round((1 - sparsity) * units))
            self.active = min(target, int(self.allowed.sum())) if cfg.constrain else None
        else:
            self.active = sum(counts)
        self.generator = torch.Generator().manual_seed(seed)
        self.states = self._repair(init_population(cfg.population, units, cfg.init_p, self.generator))
        self.energies: torch.Tensor | None = None
        self.evaluate: Evaluator = make_evaluator(cfg.evaluator, model, groups, actors=cfg.actors,
                                                  actor_cpus=cfg.actor_cpus, actor_gpus=cfg.actor_gpus, chunk=cfg.chunk)
        self.best = self.states[0]
        self.searching, self.search_epochs = True, 0
        self.accepted = self.offered = 0  # children that replaced their parent / children, this epoch

    def generation(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One generation (eq. 4-6) on batch ``(x, y)`` while searching; returns s_b.

        ``stored``: the children are scored on this batch, the parents keep their energies.
        ``rescored``: parents and children are scored on this batch in one call of 2S states.
        """
        if not self.searching:
            return self.best
        mutants = mutate(self.states, self.cfg.mutation, self.generator)
        children = self._repair(crossover(self.states, mutants, self.cfg.crossover, self.generator))
        if self.cfg.selection == "rescored":
            both = self.evaluate(self.model, x, y, torch.cat([self.states, children]))
            parent_energy, child_energy = both[:len(children)], both[len(children):]
        else:
            if self.energies is None:  # t = 1: the energies of S^(0)
                self.energies = self.evaluate(self.model, x, y, self.states)
            parent_energy, child_energy = self.energies, self.evaluate(self.model, x, y, children)
        self.accepted += int((child_energy <= parent_energy).sum())
        self.offered += len(children)
        self.states, self.energies = select(self.states, parent_energy, children, child_energy)
        self.best = self.states[int(torch.argmin(self.energies))]
        return self.best

    def _repair(self, states: torch.Tensor) -> torch.Tensor:
        return repair(states, self.sizes, self.active, self.generator, self.allowed, self.counts)

    def epoch_end(self, epoch: int, limit: int) -> dict:
        """Eq. 7 after an epoch; stops the search on convergence (:func:`converged`) or after ``limit`` epochs.

        The record holds the epoch's ``acceptance``: the share of its children that replaced their
        parent (eq. 6), 0 when no generation ran.
        """
        energies = self.energies if self.energies is not None else torch.zeros(1)
        delta, searched = convergence(energies), self.searching
        record = {"energy_best": float(energies.min()), "energy_mean": float(energies.mean()), "delta_s": delta,
                  "acceptance": self.accepted / self.offered if self.offered else 0.0, "searched": float(searched),
                  "converged": 0.0, "units_active": float(self.best.float().mean())}
        self.accepted = self.offered = 0
        if self.searching:
            self.search_epochs = epoch
            done = converged(self.states, energies)
            record["converged"] = float(done)
            if done or epoch >= limit:
                self.searching = False
                self.close()
        return record

    def keep(self) -> dict[str, torch.Tensor]:
        """s_b as keep masks per unit group."""
        return {g.name: part.clone() for g, part in zip(self.groups, torch.split(self.best, self.sizes))}

    def close(self) -> None:
        close = getattr(self.evaluate, "close", None)
        if close is not None:
            close()


def removed_share(model: nn.Module, keep: dict[str, torch.Tensor], groups: list[UnitGroup] | None = None) -> float:
    """Share of ``model``'s parameters that the units ``keep`` prunes take with them (1 - the
    paper's R): counted on the physically smaller network :func:`~trainables.compress.surgery.shrink` builds,
    so a unit's kernel and bias, its BatchNorm entries and its readers' inputs all count."""
    from ..compress.surgery import shrink

    total = sum(p.numel() for p in model.parameters())
    kept = sum(p.numel() for p in shrink(model, keep, groups).parameters())
    return 1.0 - kept / total if total else 0.0


class EPrune:
    """Stage ``P<s>`` by EPruning, labelled ``E<s>``: prune units of the model on one domain (slot
    ``P1`` on the source, ``P2`` on the target), with the budget ``schedule`` (default
    ``EPruneSchedule()``); with ``schedule.distill`` on it learns from ``ctx.teacher(domain)``."""

    compresses = True

    def __init__(self, cfg: EPruningConfig, schedule: EPruneSchedule | None = None, *, sparsity: float | None,
                 domain: Domain = "target", latency: LatencyTarget | None = None,
                 benchmark: BenchmarkConfig | None = None) -> None:
        self.cfg, self.schedule, self.sparsity, self.domain = cfg, schedule or EPruneSchedule(), sparsity, domain
        self.latency, self.benchmark = latency, benchmark
        if (sparsity is None) == (latency is None) or (latency is not None and benchmark is None):
            raise ValueError("EPrune takes exactly one of sparsity and latency (with benchmark, its engine); got "
                             f"sparsity={sparsity!r}, latency={latency!r}, benchmark={benchmark!r}")
        self.label = f"E{latency.label}" if latency is not None else self.label_for(sparsity, cfg.constrain)
        self.slot = prune_slot(domain)

    @staticmethod
    def label_for(sparsity: float, constrain: bool) -> str:
        """The pipeline label: ``E50`` for a stage held to 0.5, a bare ``E`` for one finding its own rate."""
        return f"E{round(sparsity * 100):d}" if constrain else "E"

    @property
    def distills(self) -> bool:
        """Whether the stage learns from its domain's teacher (``schedule.distill`` on)."""
        return self.schedule.distill.on

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("a pruning stage needs a model from an earlier stage")
        return epruning(model, ctx.data(self.domain), self.cfg, self.schedule, sparsity=self.sparsity,
                        device=ctx.device, seed=ctx.seed, on_epoch=ctx.reporter(self.label),
                        teacher=ctx.teacher(self.domain) if self.distills else None,
                        budget=None if self.latency is None else stage_budget(self.latency, self.benchmark, ctx))

