"""EPruning population evaluation: plain forward vs reference loop vs batched vs Ray actor pool.

Workload (issue 4): ResNet-18 (torchvision, random weights, 10 classes), 32x32 inputs, a batch of
32, a population of S = 8 unit states over its block-internal conv channels, drawn Bernoulli(0.5).
Contenders, each timed as the median of ``RUNS`` calls after a warm-up, in one process:

- plain forward: one forward of the batch through the unmasked network (the floor);
- reference loop: per candidate, zero its pruned units in the weights, forward, restore;
- batched: one forward of all 8 candidates, each unit mask on its slice of the batch;
- dense floor: the same forward without masks (the batch repeated 8 times where the first unit
  block begins, as batched does): the arithmetic batched cannot go below without skipping pruned
  units, which would need each candidate's own copy of the weights;
- actor pool: 2 Ray actors (1 CPU each; on a GPU a quarter of it each, as the two pools share
  it), 4 candidates each (batched inside), three ways: the weights changed before every call (as
  after a training step) and shipped as only the changed tensors' bytes (``ActorPoolEvaluator``);
  the same weights again (nothing shipped); and, for comparison, the way it was before issue 23,
  the whole state dict put as NumPy arrays and loaded with ``load_state_dict`` in each actor
  (``StateDictPool`` below);
- weights to the actors: the same two ways of shipping changed weights, in calls with no candidate
  to score, so the time is the shipping's (put, transfer, writing into the actors' models) alone;
- weights to an actor's buffer, in process: the same two ways without Ray (the driver's side, a
  host copy standing for the object store's, the actor's side on the same device), for a machine
  without Ray (``bench/gpu_check.py``'s GPU machine), where the actor pools are skipped with their
  reason and the shipping goal reads these rows instead.

The shipping and actor-pool rows take turns in every round (:func:`interleaved`), so the load of a
shared machine falls on the contenders alike. All energies are checked against the reference
loop's (max abs difference printed). The goal on a CPU: batched within 1.10x of its dense floor
(the masks cost next to nothing) and at least 1.3x faster than the reference loop, energies equal
(to 1e-4), changed weights shipped to the actors the flat way no slower than the state dict
(within 10%: the time is mostly the object store's copy and the actors' copy of the bytes, the
same either way; ``SHIP_RATIO`` for the other cases), and unchanged weights in at most 0.6x of
that (compared on the driver, not sent). On 2 CPU threads both paths are bound by the
convolutions and the reference loop zeroes only the gates (BatchNorm's gamma and beta), so
batched cannot beat it by much more: the floor's own speed-up over the loop is printed. With
``--device cuda`` (a GPU machine) the goal is batched within 1.5x of one plain forward, energies
equal, changed weights shipped in at most 0.9x of the state dict's time (one pinned
device-to-host copy instead of one per tensor, one host-to-device copy per actor instead of one
per tensor), unchanged ones in 0.6x.

    python bench/epruning_population.py [--device cuda] [--threads 2] [--smoke]

``--smoke``: a batch of 2, one warm-up and one timed call per contender.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_smoke_flag, finish  # noqa: E402

from trainables.compress.gating import expanded  # noqa: E402
from trainables.compress.units import unit_count, unit_groups  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.stages.evolution import init_population  # noqa: E402
from trainables.stages.population import (  # noqa: E402
    ActorPoolEvaluator,
    BatchedEvaluator,
    ReferenceEvaluator,
    WeightShipper,
    apply_changes,
)

S, BATCH, SIZE, RUNS, WARMUP = 8, 32, 32, 7, 2
CPU_FLOOR, CPU_SPEEDUP, GPU_OVER_PLAIN, SAME_ENERGY = 1.10, 1.3, 1.5, 1e-4
# Weights to the actors, the flat way's time over the state dict's, for changed weights: on a GPU
# faster (one pinned device-to-host copy instead of one per tensor, one host-to-device copy per actor
# instead of one per tensor); on a CPU through the actor pools no slower, within the noise of a
# shared machine (the object store's and the actors' copies of the bytes are the same either way);
# on a CPU in process (no Ray) at most 1.5x: the snapshot of what the actors hold, one more copy of
# the weights per call, is then paid in full. Unchanged weights: compared, not sent.
SHIP_RATIO = {("cuda", "2 actors"): 0.9, ("cuda", "in process"): 0.9, ("cpu", "2 actors"): 1.10,
              ("cpu", "in process"): 1.5}
UNCHANGED_RATIO = 0.6


def median_seconds(fn: Callable[[], object], device: str, runs: int = RUNS, warmup: int = WARMUP,
                   before: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``runs`` calls after ``warmup``; ``before`` runs untimed before each."""
    return interleaved({"fn": (fn, before)}, device, runs, warmup)["fn"]


def interleaved(contenders: dict[str, tuple[Callable[[], object], Callable[[], object] | None]], device: str,
                runs: int = RUNS, warmup: int = WARMUP) -> dict[str, float]:
    """Median wall time of each contender ``name: (fn, before)``, the contenders taking turns in every
    round (``before`` untimed, just before its ``fn``), so that a shared machine's load changes
    touch them all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(warmup + runs):
        for name, (fn, before) in contenders.items():
            if before is not None:
                before()
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


class _StateDictWorker:
    """The actor as it was before issue 23: loads the whole state dict at every call."""

    def __init__(self, model: torch.nn.Module, groups: list, threads: int) -> None:
        import ray

        torch.set_num_threads(max(1, threads))
        self.device = "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"
        self.model = model.to(self.device)
        self.evaluate = BatchedEvaluator(groups)

    def energies(self, state: dict, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            self.model.load_state_dict({k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v
                                        for k, v in state.items()})
        if len(states) == 0:  # the weights alone (the "weights to 2 actors" rows)
            return torch.empty(0)
        return self.evaluate(self.model, x.to(self.device), y.to(self.device), states)


class StateDictPool:
    """The actor pool as it was before issue 23: at every call each tensor of the state dict goes to
    the host on its own and the dict is put in the object store as NumPy arrays."""

    def __init__(self, model: torch.nn.Module, groups: list, actors: int, cpus: float, gpus: float) -> None:
        import ray

        worker = ray.remote(_StateDictWorker).options(num_cpus=cpus, num_gpus=gpus)
        skeleton = ray.put(copy.deepcopy(model).cpu())
        self.actors = [worker.remote(skeleton, list(groups), max(1, int(cpus))) for _ in range(actors)]

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        import ray

        state = ray.put({k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
        x, y = x.cpu(), y.cpu()
        shares = torch.tensor_split(states.cpu(), len(self.actors))
        return torch.cat(ray.get([a.energies.remote(state, x, y, s) for a, s in zip(self.actors, shares)]))

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)


def in_process_shipping(model: torch.nn.Module, device: str, runs: int, warmup: int,
                        training_step: Callable[[], None]) -> dict[str, float]:
    """Changed weights from ``model`` into an actor's copy on the same device, both ways, without Ray
    (the GPU machine has none): the driver's side, a host copy standing for the object store's, and
    the actor's side. Seconds per row, the rows taking turns (:func:`interleaved`)."""
    shipper = WeightShipper(model)
    actor, legacy_actor = copy.deepcopy(model), copy.deepcopy(model)
    flat = shipper.layout.gather(actor)
    shipper.layout.bind(actor, flat)

    def flat_way() -> None:
        changes = shipper.changes(model)
        if changes is not None:
            arrays, tensors = changes
            apply_changes(shipper.layout, flat, [a.copy() for a in arrays], tensors)
        shipper.commit()

    def state_dict_way() -> None:
        arrays = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
        legacy_actor.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()})

    where = "weights to an actor's buffer, in process"
    rows = interleaved({f"{where}, changed (flat)": (flat_way, training_step),
                        f"{where}, unchanged (flat: compared, not sent)": (flat_way, flat_way),
                        f"{where}, changed (state dict, before)": (state_dict_way, training_step)},
                       device, runs, warmup)
    flat_way()
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), actor.state_dict().values()))
    return rows


def actor_pools(ray, model: torch.nn.Module, layers: list, states: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                args: argparse.Namespace, runs: int, warmup: int,
                training_step: Callable[[], None]) -> tuple[dict, list, int]:
    """The two actor pools side by side on a local Ray, the rows taking turns (:func:`interleaved`):
    seconds per row, (energies, reference energies) pairs on moved weights, and the bytes a call
    with changed weights ships."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # 4 actors, 2 per pool, idle but for their pool's turn: twice the CPUs in Ray's books, a quarter of the GPU each
    ray.init(address="local", num_cpus=2 * args.threads, include_dashboard=False, log_to_driver=False,
             object_store_memory=300 * 1024**2)
    cpus, gpus = max(1, args.threads // 2), (0.25 if args.device == "cuda" else 0.0)
    reference = ReferenceEvaluator(layers)
    none = states[:0]  # no candidate: each actor takes the weights and returns
    try:
        pool = ActorPoolEvaluator(model, layers, actors=2, cpus=cpus, gpus=gpus)
        before = StateDictPool(model, layers, actors=2, cpus=cpus, gpus=gpus)
        training_step()
        expected = reference(model, x, y, states)  # on weights a step moved
        checks = [(pool(model, x, y, states), expected)]
        shipped = pool.shipped
        checks.append((before(model, x, y, states), expected))
        catch_up = lambda: pool(model, x, y, none)  # noqa: E731  (untimed: the actors get the weights first)
        seconds = interleaved({
            "actor pool, weights changed (flat)": (lambda: pool(model, x, y, states), training_step),
            "actor pool, weights changed (state dict, before)": (lambda: before(model, x, y, states), training_step),
            "actor pool, same weights (flat: nothing sent)": (lambda: pool(model, x, y, states), catch_up),
            "weights to 2 actors, changed (flat)": (lambda: pool(model, x, y, none), training_step),
            "weights to 2 actors, changed (state dict, before)": (lambda: before(model, x, y, none), training_step),
            "weights to 2 actors, unchanged (flat: compared, not sent)": (lambda: pool(model, x, y, none), catch_up),
        }, args.device, runs, warmup)
        pool.close()
        before.close()
    finally:
        ray.shutdown()
    return seconds, checks, shipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    add_smoke_flag(parser)
    args = parser.parse_args()
    batch, runs, warmup = (2, 1, 1) if args.smoke else (BATCH, RUNS, WARMUP)
    timed = lambda fn, before=None: median_seconds(fn, args.device, runs, warmup, before)  # noqa: E731
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model("resnet18", 10).to(args.device).eval()
    layers = unit_groups(model)
    states = init_population(S, unit_count(layers), 0.5, torch.Generator().manual_seed(0))
    x = torch.randn(batch, 3, SIZE, SIZE, device=args.device)
    y = torch.randint(0, 10, (batch,), device=args.device)

    reference, batched = ReferenceEvaluator(layers), BatchedEvaluator(layers)
    energies = {"reference loop": reference(model, x, y, states), "batched": batched(model, x, y, states)}
    with torch.no_grad():
        seconds = {"plain forward (1 network)": timed(lambda: model(x))}
    seconds["reference loop"] = timed(lambda: reference(model, x, y, states))
    seconds["batched"] = timed(lambda: batched(model, x, y, states))
    with torch.no_grad(), expanded(model, layers, S):
        seconds["dense floor (8x batch, no masks)"] = timed(lambda: model(x))

    params = list(model.parameters())

    def training_step() -> None:
        """Every weight moves, as after an optimizer step (untimed)."""
        with torch.no_grad():
            torch._foreach_add_(params, 1e-4)

    seconds.update(in_process_shipping(model, args.device, runs, warmup, training_step))
    checks, shipped, pools = [], None, "ran"
    try:
        import ray
    except ImportError as exc:  # the GPU machine of bench/gpu_check.py has torch but no Ray
        pools = f"skipped: Ray does not import ({exc})"
    else:
        found, checks, shipped = actor_pools(ray, model, layers, states, x, y, args, runs, warmup, training_step)
        seconds.update(found)

    worst = max([float((e - energies["reference loop"]).abs().max()) for e in energies.values()]
                + [float((e - expected).abs().max()) for e, expected in checks])
    plain = seconds["plain forward (1 network)"]
    speedup = seconds["reference loop"] / seconds["batched"]
    over_plain = seconds["batched"] / plain
    where = "2 actors" if pools == "ran" else "an actor's buffer, in process"  # what the shipping goal reads
    legacy_ship = seconds[f"weights to {where}, changed (state dict, before)"]
    ship_ratio = seconds[f"weights to {where}, changed (flat)"] / legacy_ship
    unchanged_ratio = seconds[f"weights to {where}, unchanged (flat: compared, not sent)"] / legacy_ship
    table = [(name, f"{s * 1000:8.1f} ms   {s / plain:5.2f}x plain") for name, s in seconds.items()]
    floor = seconds["dense floor (8x batch, no masks)"]
    over_floor = seconds["batched"] / floor
    table += [("batched speed-up over reference", f"{speedup:.2f}x"),
              ("batched / dense floor", f"{over_floor:.2f}x"),
              ("best speed-up at the floor", f"{seconds['reference loop'] / floor:.2f}x"),
              (f"weights to {where}, changed: flat / state dict", f"{ship_ratio:.2f}x"),
              (f"weights to {where}, unchanged: flat / state dict", f"{unchanged_ratio:.2f}x")]
    figures = {"device": args.device, "threads": args.threads, "population": S, "batch": batch,
               "ms": {k: round(v * 1000, 2) for k, v in seconds.items()},
               "batched_speedup_over_reference": round(speedup, 3), "batched_over_plain": round(over_plain, 3),
               "batched_over_dense_floor": round(over_floor, 3), "actor_pools": pools, "shipping_goal_reads": where,
               "ship_flat_over_state_dict": round(ship_ratio, 3),
               "unchanged_over_state_dict": round(unchanged_ratio, 3), "max_energy_difference": worst}
    if pools == "ran":
        pool_ratio = (seconds["actor pool, weights changed (flat)"]
                      / seconds["actor pool, weights changed (state dict, before)"])
        table += [("actor pool, weights changed: flat / state dict", f"{pool_ratio:.2f}x"),
                  ("bytes shipped per call, weights changed", f"{shipped / 1e6:.1f} MB")]
        figures.update(pool_flat_over_state_dict=round(pool_ratio, 3), shipped_bytes=shipped)
    else:
        table.append(("actor pools", pools))
    table.append(("max |energy - reference|", f"{worst:.2e}"))
    same = worst < SAME_ENERGY
    ship_goal = SHIP_RATIO["cuda" if args.device == "cuda" else "cpu", "2 actors" if pools == "ran" else "in process"]
    ship = ship_ratio <= ship_goal and unchanged_ratio <= UNCHANGED_RATIO
    shipping = (f"weights to {where}: changed in <= {ship_goal}x the state dict's time, unchanged in "
                f"<= {UNCHANGED_RATIO}x")
    if args.device == "cuda":
        goal = f"batched within {GPU_OVER_PLAIN}x of one plain forward, energies equal, {shipping} (GPU)"
        met = over_plain <= GPU_OVER_PLAIN and same and ship
    else:
        goal = (f"batched within {CPU_FLOOR:.2f}x of its dense floor and >= {CPU_SPEEDUP}x faster than the reference "
                f"loop, energies equal, {shipping} (CPU)")
        met = over_floor <= CPU_FLOOR and speedup >= CPU_SPEEDUP and same and ship
    finish(table, figures, goal, met, smoke=args.smoke)


if __name__ == "__main__":
    main()
