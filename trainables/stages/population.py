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
  population; per call, the weights that changed since the actors' last call travel through the
  object store as one flat byte array (:class:`WeightLayout`, :class:`WeightShipper`), none when
  the weights did not change.

Energies are taken in eval mode (BatchNorm's running statistics) without gradients, so the S
candidates do not share batch statistics and evaluating them does not move the running averages.
"""

from __future__ import annotations

import copy
import logging
import math
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


class WeightLayout:
    """Where each parameter and buffer of a model sits in one flat byte buffer.

    Each tensor's bytes start at a multiple of ``ALIGN`` bytes, so a slice of the buffer can be
    viewed as the tensor's dtype (or as 8-byte integers, to compare it) without a copy. The layout
    is plain data (names, dtypes, shapes, byte offsets), so it travels to Ray actors with the model.

    Example::

        layout = WeightLayout.of(model)
        flat = layout.gather(model)              # one uint8 tensor on the model's device
        layout.bind(model, flat)                 # the model's tensors are now views of flat

    Args:
        entries: ``(name, dtype, shape)`` of every tensor, in buffer order (see :meth:`of`).
    """

    ALIGN = 64  # bytes: a cache line, and a multiple of every dtype's size

    def __init__(self, entries: Sequence[tuple[str, torch.dtype, tuple[int, ...]]]) -> None:
        self.names = [name for name, _, _ in entries]
        self.dtypes = [dtype for _, dtype, _ in entries]
        self.shapes = [tuple(shape) for _, _, shape in entries]
        self.sizes = [math.prod(shape) * dtype.itemsize for _, dtype, shape in entries]
        self.offsets, end = [], 0
        for size in self.sizes:
            self.offsets.append(end)
            end += -(-size // self.ALIGN) * self.ALIGN
        self.total = end

    @classmethod
    def of(cls, model: nn.Module) -> WeightLayout:
        """The layout of ``model``'s parameters, then its buffers (a tensor two modules share, once)."""
        return cls([(name, t.dtype, tuple(t.shape)) for name, t in [*model.named_parameters(), *model.named_buffers()]])

    def tensors(self, model: nn.Module) -> list[torch.Tensor]:
        """``model``'s tensors in buffer order; a ValueError names the first that no longer fits the layout."""
        found = {**dict(model.named_parameters()), **dict(model.named_buffers())}
        out = []
        for name, dtype, shape in zip(self.names, self.dtypes, self.shapes):
            tensor = found.get(name)
            if tensor is None or tensor.dtype != dtype or tuple(tensor.shape) != shape:
                got = None if tensor is None else f"{tensor.dtype} {tuple(tensor.shape)}"
                raise ValueError(f"model: {name} must be {dtype} {shape} as when the actors started but got {got}")
            out.append(tensor.detach())
        return out

    def gather(self, model: nn.Module) -> torch.Tensor:
        """``model``'s tensors copied into one new uint8 tensor on their device."""
        tensors = self.tensors(model)
        flat = torch.zeros(self.total, dtype=torch.uint8, device=tensors[0].device if tensors else "cpu")
        for piece, tensor in zip(self.segments(flat), tensors):
            piece.copy_(_as_bytes(tensor))
        return flat

    def segments(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """The byte slices of ``flat``, one per tensor (without the padding between them)."""
        return [flat[o:o + n] for o, n in zip(self.offsets, self.sizes)]

    def bind(self, model: nn.Module, flat: torch.Tensor) -> None:
        """Make ``model``'s tensors views of ``flat`` (already holding their values, :meth:`gather`):
        writing a byte slice of ``flat`` then changes that tensor, with no copy into the model."""
        self.tensors(model)  # the model fits the layout
        views = {name: piece.view(dtype).view(shape) for name, dtype, shape, piece
                 in zip(self.names, self.dtypes, self.shapes, self.segments(flat))}
        name_of = {id(b): name for name, b in model.named_buffers()}  # a buffer two modules share: one name
        holders = [(module, leaf, name_of[id(b)]) for module in model.modules()
                   for leaf, b in module.named_buffers(recurse=False)]
        for module, leaf, name in holders:
            setattr(module, leaf, views[name])
        for name, param in model.named_parameters():
            param.data = views[name]  # the same Parameter object: tied weights stay tied


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor``'s values as 1-D uint8 in row-major order (a view when it is contiguous)."""
    return tensor.reshape(-1).view(torch.uint8)


def _widest(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two uint8 tensors of one length viewed as the widest integers that tile both (int64 where
    their length and offsets allow, else int32, int16, uint8), so that a comparison reads up to 8
    bytes per element; equal views mean equal bytes."""
    for width, dtype in ((8, torch.int64), (4, torch.int32), (2, torch.int16)):
        if a.numel() % width == 0 and a.storage_offset() % width == 0 and b.storage_offset() % width == 0:
            return a.view(dtype), b.view(dtype)
    return a, b


class WeightShipper:
    """What the actors need of the driver's weights: the bytes that changed since they last got any.

    Keeps, on the model's device, the flat bytes the actors hold (:class:`WeightLayout`). Each
    :meth:`changes` compares every tensor of the model bit for bit with its copy there (NaN equals
    NaN, -0.0 differs from 0.0; on CUDA one host sync for all of them) and returns the changed
    tensors' bytes, or None when nothing changed. On CUDA they are gathered on the device and
    copied to the host once, into pinned memory, as one array; on a CPU they are the tensors' own
    memory, one array each, which the object store copies once. :meth:`commit` records them as
    delivered; after a failed delivery :meth:`forget` makes the next call send everything.

    Args:
        model: the model whose weights the actors mirror (they start with its weights as of now).
    """

    def __init__(self, model: nn.Module) -> None:
        self.layout = WeightLayout.of(model)
        self.sent = self.layout.gather(model)
        self.host = torch.empty(self.layout.total, dtype=torch.uint8, pin_memory=True) if self.sent.is_cuda else None
        self.stale = False  # True: the actors' copy is unknown (a delivery failed): send everything
        self.pending: list[tuple[int, torch.Tensor]] = []

    def changes(self, model: nn.Module) -> tuple[list[np.ndarray], list[int] | None] | None:
        """``(arrays, tensors)``: the changed tensors' bytes, in layout order, as one array or one per
        tensor, and their indices in the layout (None: every tensor), or None when the actors hold
        these weights already."""
        now = [_as_bytes(t) for t in self.layout.tensors(model)]
        if self.stale:
            changed = list(range(len(now)))
        else:
            pairs = [_widest(a, b) for a, b in zip(now, self.layout.segments(self.sent))]  # bit for bit
            if self.sent.is_cuda:  # one host sync for all the tensors
                changed = torch.stack([torch.ne(a, b).any() for a, b in pairs]).nonzero().flatten().tolist()
            else:  # no sync to save: equal is the cheaper test
                changed = [i for i, (a, b) in enumerate(pairs) if not torch.equal(a, b)]
        self.pending = [(i, now[i]) for i in changed]
        if not changed:
            return None
        tensors = None if len(changed) == len(now) else changed
        if self.host is None:
            return [piece.numpy() for _, piece in self.pending], tensors
        source = torch.cat([piece for _, piece in self.pending])
        host = self.host[:source.numel()]
        host.copy_(source)
        self.pending = list(zip(changed, source.split([self.layout.sizes[i] for i in changed])))
        return [host.numpy()], tensors

    def commit(self) -> None:
        """The last :meth:`changes` reached every actor: they now hold the bytes it returned."""
        segments = self.layout.segments(self.sent)
        for i, piece in self.pending:
            segments[i].copy_(piece)
        self.pending, self.stale = [], False

    def forget(self) -> None:
        """A delivery failed: the next :meth:`changes` sends every tensor."""
        self.pending, self.stale = [], True


def apply_changes(layout: WeightLayout, flat: torch.Tensor, arrays: Sequence[np.ndarray | torch.Tensor],
                  tensors: list[int] | None) -> None:
    """Write the bytes :meth:`WeightShipper.changes` returned into ``flat``: each array is copied to
    ``flat``'s device once, then into the tensors' slices."""
    indices = range(len(layout.names)) if tensors is None else tensors
    with warnings.catch_warnings():  # the object store's arrays are read-only; they are only read here
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        sources = [(torch.from_numpy(a) if isinstance(a, np.ndarray) else a).to(flat.device) for a in arrays]
    pieces = sources[0].split([layout.sizes[i] for i in indices]) if len(sources) == 1 else sources
    segments = layout.segments(flat)
    for i, piece in zip(indices, pieces, strict=True):
        segments[i].copy_(piece)


class _PopulationWorker:
    """A Ray actor holding a copy of the model whose tensors are views of one flat device buffer;
    evaluates a share of the population per call, after writing the weights that changed into it."""

    def __init__(self, model: nn.Module, layout: WeightLayout, groups: list[UnitGroup], threads: int,
                 chunk: int | None) -> None:
        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() and _assigned_gpus() else "cpu"
        self.model, self.layout = model.to(self.device), layout
        self.flat = layout.gather(self.model)
        layout.bind(self.model, self.flat)
        self.evaluate = BatchedEvaluator(groups, chunk)

    def energies(self, shipment: tuple, states: torch.Tensor) -> torch.Tensor:
        """Energies of ``states`` on the shipment's batch, with its weight changes applied first.

        ``shipment``: ``(changes, x, y)``, ``changes`` being :meth:`WeightShipper.changes`' result.
        """
        changes, x, y = shipment
        if changes is not None:
            apply_changes(self.layout, self.flat, *changes)
        if len(states) == 0:
            return torch.empty(0)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            x, y = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        return self.evaluate(self.model, x, y, states)


def _assigned_gpus() -> list:
    import ray

    return ray.get_gpu_ids()


class ActorPoolEvaluator:
    """A pool of Ray actors, each evaluating a share of the population on the current weights.

    Per call one object goes to the object store, which every actor reads: the batch and the
    parameters and buffers that changed since the actors last got any (:class:`WeightShipper`: on
    CUDA one flat byte array from one pinned device-to-host copy, on a CPU the tensors' own memory;
    nothing when the weights did not change, as when ``selection: stored`` scores S^(0) and then
    its children on the same batch). Each actor writes those bytes into the one device buffer its
    model's tensors are views of (one host-to-device copy), with no ``load_state_dict``. The
    population is split evenly over the actors; an actor without a share still takes the weights.
    Inside a Ray Tune trial the actors are scheduled in the trial's placement group, which must
    hold one bundle per actor (``resources_per_actor``); elsewhere they go to the local or
    connected Ray cluster.

    Args:
        model: the model (its architecture and current weights travel once, at start).
        groups: the unit groups the states run over.
        actors: number of actors.
        cpus / gpus: resources of each actor.
        chunk: candidates per forward inside each actor (see :class:`BatchedEvaluator`).

    Attributes:
        shipped: bytes of weights the last call sent (0: the actors had them already).
    """

    def __init__(self, model: nn.Module, groups: Sequence[UnitGroup], actors: int = 2,
                 cpus: float = 1.0, gpus: float = 0.0, chunk: int | None = None) -> None:
        import ray

        if actors < 1:
            raise ValueError(f"actors must be >= 1 but got {actors}")
        if not ray.is_initialized():  # a stage run outside a search: RAY_ADDRESS's cluster, else a local one
            ray.init(address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, log_to_driver=False)
        self.weights = WeightShipper(model)
        self.shipped = 0
        worker = ray.remote(_PopulationWorker).options(num_cpus=cpus, num_gpus=gpus, **_placement())
        skeleton = ray.put(copy.deepcopy(model).cpu())
        self.actors = [worker.remote(skeleton, self.weights.layout, list(groups), max(1, int(cpus)), chunk)
                       for _ in range(actors)]

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        import ray

        changes = self.weights.changes(model)
        self.shipped = 0 if changes is None else sum(a.nbytes for a in changes[0])
        shipment = ray.put((changes, x.detach().cpu().numpy(), y.detach().cpu().numpy()))
        shares = torch.tensor_split(states.cpu(), len(self.actors))  # an actor without a share still takes the weights
        futures = [actor.energies.remote(shipment, share) for actor, share in zip(self.actors, shares)]
        try:
            energies = torch.cat(ray.get(futures))
        except BaseException:
            self.weights.forget()
            raise
        self.weights.commit()
        return energies

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


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
