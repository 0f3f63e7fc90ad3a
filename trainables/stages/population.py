"""Energies of a population of unit states on one batch: reference, batched and Ray-actor evaluators.

Each evaluator takes the model's current weights, a batch ``(x, y)`` and a population of binary
states ``S x D`` over the unit groups of :mod:`trainables.compress.units`, and returns the energy loss
(EPruning paper, eq. 3) of every state, shape ``(S,)``. All three give the same energies (within
float rounding); they differ in how the S sub-networks run:

- :class:`ReferenceEvaluator`: one candidate at a time, zeroing the pruned units in the weights,
  running the batch, restoring the weights (the plain loop, kept for tests and the benchmark).
- :class:`BatchedEvaluator`: one forward of all S candidates at once: the batch is repeated S
  times where the first gate's block begins (everything before it runs once), and each
  gate's output is multiplied by its candidate's unit mask on that candidate's slice of the
  batch. No weight is copied.
- :class:`ActorPoolEvaluator`: Ray actors each run :class:`BatchedEvaluator` on a share of the
  population; the weights travel through the object store once per call.

Energies are taken in eval mode (BatchNorm's running statistics) without gradients, so the S
candidates do not share batch statistics and evaluating them does not move the running averages.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..compress.gating import gated_states, split_states
from ..compress.units import UnitGroup

logger = logging.getLogger(__name__)


def sample_energies(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. 3 per sample: F(y_c) - min_{c' != c} F(y_c'), with F = -logits (eq. 2); shape ``(B,)``."""
    energy = -logits
    own = energy.gather(1, target[:, None]).squeeze(1)
    others = energy.scatter(1, target[:, None], float("inf"))
    return own - others.min(dim=1).values


class Evaluator(Protocol):
    """``evaluator(model, x, y, states) -> energies``: eq. 3 of each state on ``(x, y)``, shape ``(S,)``."""

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor: ...


class ReferenceEvaluator:
    """One candidate at a time: zero its pruned units in the weights, forward, restore."""

    def __init__(self, groups: Sequence[UnitGroup]) -> None:
        self.groups = list(groups)

    @torch.no_grad()
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        with _eval_mode(model):
            energies = []
            for state in states:
                with _zeroed(model, self.groups, state):
                    energies.append(sample_energies(model(x), y).mean())
            return torch.stack(energies).cpu()


@contextmanager
def _zeroed(model: nn.Module, groups: Sequence[UnitGroup], state: torch.Tensor) -> Iterator[None]:
    """Zero the gate parameters of pruned units (each gate's rows and bias, BatchNorm gamma and beta)."""
    saved = []
    try:
        for group, mask in zip(groups, split_states(state[None], groups)):
            off = (mask[0] == 0).nonzero().flatten()
            if off.numel() == 0:
                continue
            for gate in group.gates:
                module = model.get_submodule(gate.name)
                channels = gate.of(off).to(module.weight.device)
                for tensor in (t.data for t in (module.weight, module.bias) if t is not None):
                    saved.append((tensor, channels, tensor[channels].clone()))
                    tensor[channels] = 0
        yield
    finally:
        for tensor, channels, values in reversed(saved):
            tensor[channels] = values


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class BatchedEvaluator:
    """All candidates in one forward: each unit mask applied to its slice of an ``S * B`` batch.

    Args:
        groups: the unit groups the states run over.
        chunk: at most this many candidates per forward (bounds memory: ``chunk * B`` images go
            through the network at once; None: all of them). When a forward runs out of device
            memory, the chunk is halved (rounding up) and that part run again; later calls keep it.
    """

    def __init__(self, groups: Sequence[UnitGroup], chunk: int | None = None) -> None:
        if chunk is not None and chunk < 1:
            raise ValueError(f"chunk must be >= 1 or None but got {chunk}")
        self.groups, self.chunk = list(groups), chunk

    @torch.no_grad()
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        out, start = [], 0
        with _eval_mode(model):
            while start < len(states):
                part = states[start:start + (self.chunk or len(states))]
                try:
                    out.append(self._energies(model, x, y, part))
                except torch.OutOfMemoryError:
                    if len(part) == 1:
                        raise
                    self.chunk = (len(part) + 1) // 2
                    logger.warning("EPruning population: out of device memory with %d candidates per forward; "
                                   "now %d", len(part), self.chunk)
                    continue
                start += len(part)
        return torch.cat(out).cpu()

    def _energies(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, part: torch.Tensor) -> torch.Tensor:
        with gated_states(model, self.groups, part, expand=True):
            logits = model(x)
        return sample_energies(logits, y.repeat(part.shape[0])).reshape(part.shape[0], -1).mean(dim=1)


class _PopulationWorker:
    """A Ray actor holding a copy of the model; evaluates a share of the population per call."""

    def __init__(self, model: nn.Module, groups: list[UnitGroup], threads: int, chunk: int | None) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = model
        self.device = "cuda" if torch.cuda.is_available() and _assigned_gpus() else "cpu"
        self.model.to(self.device)
        self.evaluate = BatchedEvaluator(groups, chunk)

    def energies(self, state: dict, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # the store's arrays are read-only; load_state_dict only reads them
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.model.load_state_dict({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                        for k, v in state.items()})
        return self.evaluate(self.model, x.to(self.device), y.to(self.device), states)


def _assigned_gpus() -> list:
    import ray

    return ray.get_gpu_ids()


class ActorPoolEvaluator:
    """A pool of Ray actors, each evaluating a share of the population on the current weights.

    Per call the weights are put in the object store once (every actor reads the same object)
    and the population is split evenly over the actors. Inside a Ray Tune trial the actors are
    scheduled in the trial's placement group, which must hold one bundle per actor
    (``resources_per_actor``); elsewhere they go to the local or connected Ray cluster.

    Args:
        model: the model (its architecture travels once, at start).
        groups: the unit groups the states run over.
        actors: number of actors.
        cpus / gpus: resources of each actor.
        chunk: candidates per forward inside each actor (see :class:`BatchedEvaluator`).
    """

    def __init__(self, model: nn.Module, groups: Sequence[UnitGroup], actors: int = 2,
                 cpus: float = 1.0, gpus: float = 0.0, chunk: int | None = None) -> None:
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1 but got {actors}")
        if not ray.is_initialized():  # a stage run outside a search: RAY_ADDRESS's cluster, else a local one
            ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False)
        worker = ray.remote(_PopulationWorker).options(num_cpus=cpus, num_gpus=gpus, **_placement())
        skeleton = ray.put(copy.deepcopy(model).cpu())
        self.actors = [worker.remote(skeleton, list(groups), max(1, int(cpus)), chunk) for _ in range(actors)]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        import ray

        state = ray.put(_as_arrays(model.state_dict()))
        x, y = x.cpu(), y.cpu()
        shares = [s for s in torch.tensor_split(states.cpu(), len(self.actors)) if len(s)]
        futures = [actor.energies.remote(state, x, y, share) for actor, share in zip(self.actors, shares)]
        return torch.cat(ray.get(futures))

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def _as_arrays(state: dict[str, torch.Tensor]) -> dict[str, object]:
    """The state dict with NumPy arrays for tensors NumPy can hold.

    Ray stores NumPy arrays as raw buffers that actors on the node read in place; a torch tensor
    goes through pickle instead. For ResNet-18's weights that is 16 ms against 130 ms from put to
    loaded in an actor. Tensors of other dtypes (bfloat16) travel as they are.
    """
    return {k: v.detach().cpu().numpy() if v.dtype in _NUMPY_DTYPES else v.detach().cpu() for k, v in state.items()}


_NUMPY_DTYPES = {torch.float64, torch.float32, torch.float16, torch.int64, torch.int32, torch.int16, torch.int8,
                 torch.uint8, torch.bool}


def _placement() -> dict:
    """Schedule actors in the current placement group (a Tune trial's), if there is one."""
    from ray.util import get_current_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = get_current_placement_group()
    if group is None:
        return {}
    return {"scheduling_strategy": PlacementGroupSchedulingStrategy(group, placement_group_capture_child_tasks=True)}


def make_evaluator(kind: str, model: nn.Module, groups: Sequence[UnitGroup], *, actors: int = 2,
                   actor_cpus: float = 1.0, actor_gpus: float = 0.0, chunk: int | None = None) -> Evaluator:
    """The evaluator named ``kind``: ``batched``, ``actors`` or ``reference``.

    ``chunk`` bounds the candidates per forward of the batched evaluator (the actors' too).
    """
    if kind == "batched":
        return BatchedEvaluator(groups, chunk)
    if kind == "reference":
        return ReferenceEvaluator(groups)
    if kind == "actors":
        return ActorPoolEvaluator(model, groups, actors, actor_cpus, actor_gpus, chunk)
    raise ValueError(f"evaluator must be batched, actors or reference but got {kind!r}")
