"""The gradual pruning stage ``P<s>``: automatic gradual pruning on the cubic schedule.

Zhu & Gupta's schedule, as eq. 1 of the pruning-order paper (sec. 3.1):

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))**3   for t in {t0, t0 + dt, ..., t0 + n*dt}

Every ``dt`` steps inside the window each pruned layer is brought to ``s_t`` by a magnitude (L1)
mask through ``torch.nn.utils.prune`` (unstructured by default, see below); the network trains
between pruning steps and for ``recover_epochs`` after the window, then the masks are made permanent.

``frequency`` gives dt a unit (:class:`Frequency`, see :func:`pruning_schedule`):

- ``{every: k, unit: batch}`` (a bare int ``k`` means the same): a pruning step before every k-th
  training batch, t counting batches: n = epochs * batches_per_epoch // k, the n + 1 steps at
  batches 0, k, ..., n * k, the last one at the first batch after the window.
- ``{every: k, unit: epoch}``: the paper's setting (sec. 3.1, "we set dt = 1"; it prunes "for 10
  epochs", in Distiller, whose AGP steps once per epoch): t counts epochs and the steps fall
  before the first batch of epochs 0, k, 2k, ... inside the window, so with ``epochs: 10`` and
  k = 1 there are n + 1 = 10 steps of eq. 1 (n = 9) and s_f is reached at the start of the
  window's last epoch, as Distiller's AGP reaches it at its ending epoch - 1.
All layers are pruned "except the first input layer and the last fully connected layer"
(configurable). Pruned weights stay pruned: each step only adds to the mask. The same stage
prunes on the source domain (``PB``) or on the target domain (``PA``).

``granularity`` picks what one mask entry is (searchable as ``prune.granularity``):

- ``unstructured`` (the paper's): single weights, each layer masked to s_t by magnitude.
- ``channel``: units (:mod:`trainables.compress.units`, groups of coupled channels, residual
  streams included): in each unit group the lowest-L1-norm units are masked until the group's
  share of pruned units reaches s_t, at every gate of the group (rows, biases, BatchNorm gamma
  and beta), so the units are dead and :mod:`trainables.compress.surgery` can remove them: unlike
  unstructured zeros, this buys latency on any engine.
- ``2:4``: semi-structured sparsity for the sparse tensor cores TensorRT uses: in each group of 4
  consecutive input channels (at every output channel and kernel position) the smallest
  magnitudes are masked, round(4 * s_t) per group on the schedule, capped at 2, and exactly the
  2:4 pattern (2 of 4 kept) from the end of the window on. So s_f must be <= 0.5; a smaller s_f
  only delays the pattern to the window's last step. Layers whose input channels are not a
  multiple of 4 (the 3-channel input conv) stay dense and are counted.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.utils import prune

from ..augment import Augment, augmented, named
from ..compress.masks import prunable_layers, sparsity_kept, zero_fraction
from ..compress.surgery import alive_units, zero_units
from ..compress.units import UnitGroup, l1_importance, unit_groups
from ..stage import Context, Domain, Metrics
from ..train import EVAL_BATCH_SIZE, OptimConfig, evaluate, fit, loader, seed_everything

Granularity = Literal["unstructured", "channel", "2:4"]
GRANULARITIES: tuple[str, ...] = ("unstructured", "channel", "2:4")
MAX_SEMI_STRUCTURED = 0.5  # 2:4 keeps 2 of every 4 weights


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
    if granularity == "2:4" and sparsity > MAX_SEMI_STRUCTURED:
        return (f"sparsity {sparsity} is above {MAX_SEMI_STRUCTURED}, the most that granularity '2:4' "
                "reaches (it keeps 2 of every 4 weights)")
    return None


def semi_structured_mask(weight: torch.Tensor, zeros: int = 2, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Bool keep mask of ``weight``'s shape masking ``zeros`` of every 4 consecutive input channels.

    Groups run along dim 1, the input channels of a conv weight [out, in, kh, kw] (one group per
    4 inputs at every (out, kh, kw)) or the inputs of a Linear weight [out, in]; in each group the
    ``zeros`` smallest magnitudes are masked. Entries already 0 in ``mask`` rank lowest and stay
    masked, so masks only grow. Hand-written: torch's ``to_sparse_semi_structured`` needs CUDA and
    groups along a 2-D matrix's last dim, while TensorRT's sparse convs group input channels.

    Args:
        weight: a weight whose dim 1 is a multiple of 4.
        zeros: entries masked per group of 4, 0 to 4 (2 for the 2:4 pattern).
        mask: the current mask (1/True = kept), or None.

    Raises:
        ValueError: dim 1 of ``weight`` not a multiple of 4, or ``zeros`` outside 0..4.
    """
    if weight.dim() < 2 or weight.shape[1] % 4:
        raise ValueError(
            f"weight must have input channels (dim 1) in multiples of 4 but got shape {tuple(weight.shape)}"
        )
    if not 0 <= zeros <= 4:
        raise ValueError(f"zeros must be in 0..4 but got {zeros}")
    score = weight.detach().abs()
    if mask is not None:
        score = score.masked_fill(mask == 0, -1.0)
    moved = score.movedim(1, -1)  # [..., in]: groups of 4 consecutive input channels last
    groups = moved.reshape(*moved.shape[:-1], -1, 4)
    lowest = groups.argsort(dim=-1)[..., :zeros]
    drop = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, lowest, True)
    keep = ~drop.reshape(moved.shape).movedim(-1, 1)
    return keep if mask is None else keep & (mask != 0)


class Frequency(BaseModel):
    """dt of eq. 1 with its unit: a pruning step every ``every`` batches or epochs.

    A bare int is read as batches (``4`` is ``{every: 4, unit: batch}``), for short runs.

    Example:
        >>> Frequency.model_validate(4)
        Frequency(every=4, unit='batch')
        >>> Frequency(every=1, unit="epoch").unit
        'epoch'

    Args:
        every: dt, in ``unit``s between pruning steps, >= 1.
        unit: ``batch`` (training steps) or ``epoch`` (the paper's, at epoch starts).
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


def pruning_schedule(cfg: GradualConfig, batches_per_epoch: int) -> dict[int, float]:
    """The pruning steps of ``cfg``: ``{global batch index: s_t}``, the step falling before that batch.

    Eq. 1 with t0 = 0 and dt = ``cfg.frequency.every`` in its unit (see the module doc):

    - batch unit: n = epochs * batches_per_epoch // every, steps at batches 0, every, ..., n * every;
    - epoch unit: n = ceil(epochs / every) - 1, steps at the first batch of epochs 0, every, ...,
      n * every (all inside the window; s_f at the last).

    Example (the paper's PB: 10 epochs, dt = 1 epoch; 3 batches per epoch here):
        >>> cfg = GradualConfig(final=0.8, epochs=10, frequency={"every": 1, "unit": "epoch"})
        >>> steps = pruning_schedule(cfg, batches_per_epoch=3)
        >>> len(steps), sorted(steps)[:3], steps[27]
        (10, [0, 3, 6], 0.8)
    """
    if batches_per_epoch < 1:
        raise ValueError(f"batches_per_epoch must be >= 1 but got {batches_per_epoch}")
    every = cfg.frequency.every
    if cfg.frequency.unit == "batch":
        n, scale = cfg.epochs * batches_per_epoch // every, 1
    else:
        n, scale = math.ceil(cfg.epochs / every) - 1, batches_per_epoch
    return {k * every * scale: agp_sparsity(k * every, cfg.initial, cfg.final, start=0, steps=n, frequency=every)
            for k in range(n + 1)}


class PruneSchedule(BaseModel):
    """Budget of a gradual pruning stage, without its target sparsity (the search samples that).

    Args:
        epochs: length of the pruning window in epochs.
        frequency: dt of eq. 1 with its unit (:class:`Frequency`): ``{every: 1, unit: epoch}`` is
            the paper's; a bare int counts batches. See :func:`pruning_schedule` for n.
        recover_epochs: epochs of training at the final sparsity after the window.
        skip_first / skip_last: leave the input conv / the classifier head dense.
        granularity: ``unstructured`` weights, ``channel`` units, or the ``2:4`` pattern (see
            the module doc); searchable as ``prune.granularity``.
        augment: ``shift_mirror``, the paper's shifting and mirroring of the training images
            while the stage trains (:mod:`trainables.augment`), or ``none`` (the default).
            EPruning applies it too, before its own ``epruning.augment`` (flip and Cutout).
        residual: for unit pruning (``channel`` granularity and EPruning), residual streams are
            units too (the default); False prunes only channels inside a block.
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
        problem = granularity_problem(self.granularity, self.final)
        if problem is not None:
            raise ValueError(f"final {problem}")
        return self


def gradual_prune(
    model: nn.Module, splits, cfg: GradualConfig, *, device: str = "cpu", seed: int = 0, on_epoch=None
) -> tuple[nn.Module, Metrics]:
    """Prune ``model`` to ``cfg.final`` on ``splits`` (see module doc); the masks end permanent.

    Returns metrics: ``sparsity``, ``sparsity_all`` (zeros over every conv/linear weight),
    ``layer_sparsity_min/max``, and top-1/3/5 and loss on the test split of ``splits``.
    ``sparsity`` is the zero share of the pruned layers' weights, except for ``channel``
    granularity, where it is the share of pruned units over the unit groups (also reported as
    ``unit_sparsity``, per layer in ``layer_sparsity_min/max``), the zero share being
    ``weight_sparsity``. ``2:4`` adds ``layers_skipped`` (layers left dense: input channels not a
    multiple of 4).
    """
    start_time = time.perf_counter()
    seed_everything(seed)
    model.to(device)
    train = loader(splits.train, cfg.batch_size, shuffle=True, seed=seed)
    schedule = pruning_schedule(cfg, len(train))
    last_step, done = max(schedule), []

    # zeros (and dead units) from an earlier pruning stage (PBA) stay zero; the augmentation is on while training
    with sparsity_kept(model), augmented(splits.train, named(cfg.augment)):
        pruner = _PRUNERS[cfg.granularity](model, cfg)

        def before_step(t: int) -> None:
            if t in schedule:
                pruner.step(schedule[t], last=t == last_step)
                done.append(t)

        fit(
            model,
            train,
            loader(splits.val, EVAL_BATCH_SIZE, shuffle=False),
            cfg.optim,
            cfg.epochs + cfg.recover_epochs,
            device=device,
            before_step=before_step,
            on_epoch=on_epoch,
        )
        if last_step not in done:  # the last pruning step falls after training when recover_epochs == 0
            pruner.step(cfg.final, last=True)
            done.append(last_step)
    pruner.finish()
    metrics = evaluate(model, loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), device)
    metrics.update(
        pruner.metrics(),
        sparsity_all=zero_fraction([m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]),
        pruning_steps=len(done),
        seconds=time.perf_counter() - start_time,
    )
    return model, metrics


class _Unstructured:
    """Each pruned layer's smallest weights masked to s_t (the paper's method)."""

    def __init__(self, model: nn.Module, cfg: GradualConfig) -> None:
        self.layers = [m for _, m in prunable_layers(model, skip_first=cfg.skip_first, skip_last=cfg.skip_last)]

    def step(self, sparsity: float, last: bool) -> None:
        for layer in self.layers:
            prune_to(layer, sparsity)

    def finish(self) -> None:
        pass

    def metrics(self) -> Metrics:
        per_layer = [zero_fraction([m]) for m in self.layers]
        return {"sparsity": zero_fraction(self.layers), "layer_sparsity_min": min(per_layer, default=0.0),
                "layer_sparsity_max": max(per_layer, default=0.0)}


class _SemiStructured(_Unstructured):
    """The 2:4 pattern along input channels, reached in steps of one more zero per group of 4."""

    def __init__(self, model: nn.Module, cfg: GradualConfig) -> None:
        super().__init__(model, cfg)
        self.candidates = self.layers  # the metrics count the skipped (dense) layers too
        self.layers = [m for m in self.candidates if m.weight.shape[1] % 4 == 0]
        self.zeros = 0

    def step(self, sparsity: float, last: bool) -> None:
        zeros = 2 if last else min(2, round(4 * sparsity))
        if zeros <= self.zeros:  # masks only grow, and they change only when a group loses one more
            return
        self.zeros = zeros
        for layer in self.layers:
            current = layer.weight_mask if hasattr(layer, "weight_mask") else None
            _mask_entries(layer, "weight", semi_structured_mask(layer.weight, zeros, current))

    def metrics(self) -> Metrics:
        per_layer = [zero_fraction([m]) for m in self.candidates]
        return {"sparsity": zero_fraction(self.candidates), "layer_sparsity_min": min(per_layer, default=0.0),
                "layer_sparsity_max": max(per_layer, default=0.0),
                "layers_skipped": len(self.candidates) - len(self.layers)}


class _Channel:
    """Each unit group's lowest-L1 units masked until the group's pruned-unit share is s_t.

    A unit's importance is the L1 norm of the weight rows its group's producers spend on it (a
    residual stream's channel: the rows of every layer adding into it), so a group's units are
    ranked as one. A unit is masked at every gate of its group (producers' rows and biases,
    BatchNorm gamma and beta, depthwise filters), so that it is dead
    (:func:`trainables.compress.surgery.alive_units` reads it as not alive). Units already dead
    when the stage starts (pruned by an earlier stage) count as pruned and are masked again. Each
    group keeps at least one unit, which surgery needs. ``skip_first`` leaves out the group whose
    channels the model's input conv produces; ``residual=False`` leaves out residual streams; the
    head is never a unit group.
    """

    def __init__(self, model: nn.Module, cfg: GradualConfig) -> None:
        groups = unit_groups(model, residual=cfg.residual)
        if cfg.skip_first:
            first, _ = prunable_layers(model, skip_first=False, skip_last=False)[0]
            groups = [g for g in groups if all(m.name != first for m in g.gates)]
        self.model, self.groups = model, groups
        self.layers = [m for _, m in prunable_layers(model, skip_first=cfg.skip_first, skip_last=cfg.skip_last)]
        self.pruned = {name: ~keep for name, keep in alive_units(model, groups).items()}
        for group in groups:
            if bool(self.pruned[group.name].any()):
                self._mask(group)

    def step(self, sparsity: float, last: bool) -> None:
        for group in self.groups:
            pruned = self.pruned[group.name]
            extra = min(round(sparsity * group.size), group.size - 1) - int(pruned.sum())
            if extra <= 0:
                continue
            norms = l1_importance(self.model, group).masked_fill(pruned, float("inf"))
            pruned[torch.topk(norms, extra, largest=False).indices] = True
            self._mask(group)

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
                rows[channels] = keep
                rows = rows.to(tensor.device).view((-1,) + (1,) * (tensor.dim() - 1)).expand_as(tensor)
                _mask_entries(module, name, rows)

    def finish(self) -> None:
        """Zero the readers' inputs of the pruned units too (dead anyway), so the artifact compresses."""
        zero_units(self.model, {name: ~pruned for name, pruned in self.pruned.items()}, self.groups)

    def metrics(self) -> Metrics:
        per_group = [float(self.pruned[g.name].float().mean()) for g in self.groups]
        units = sum(g.size for g in self.groups)
        share = sum(int(self.pruned[g.name].sum()) for g in self.groups) / units if units else 0.0
        return {"sparsity": share, "unit_sparsity": share, "weight_sparsity": zero_fraction(self.layers),
                "layer_sparsity_min": min(per_group, default=0.0), "layer_sparsity_max": max(per_group, default=0.0)}


_PRUNERS = {"unstructured": _Unstructured, "channel": _Channel, "2:4": _SemiStructured}


def _mask_entries(module: nn.Module, name: str, keep: torch.Tensor) -> None:
    """Mask ``module.<name>`` where ``keep`` is False, adding to any mask it already has.

    The first mask is a ``prune.custom_from_mask`` reparametrization; later ones multiply into
    its ``<name>_mask`` buffer in place: another ``custom_from_mask`` would stack a full-size
    copy of the mask in a ``PruningContainer`` at every pruning step.
    """
    mask = getattr(module, f"{name}_mask", None)
    if mask is None:
        prune.custom_from_mask(module, name, mask=keep.clone())
        return
    mask.mul_(keep.to(mask.dtype))
    setattr(module, name, getattr(module, f"{name}_orig") * mask)  # what the pre-forward hook computes


class GradualPrune:
    """Stage ``P<s>``: :func:`gradual_prune` on the source (``PB``) or target (``PA``) domain."""

    def __init__(self, cfg: GradualConfig, domain: Domain = "target") -> None:
        self.cfg, self.domain = cfg, domain
        self.label = self.label_for(cfg.final)

    @staticmethod
    def label_for(final: float) -> str:
        """The pipeline label of a stage pruning to ``final``: the percentage, ``80`` for 0.8."""
        return f"{round(final * 100):d}"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("a pruning stage needs a model from an earlier stage")
        return gradual_prune(
            model, ctx.data(self.domain), self.cfg, device=ctx.device, seed=ctx.seed, on_epoch=ctx.reporter(self.label)
        )
