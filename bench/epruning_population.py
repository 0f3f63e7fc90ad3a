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
- actor pool: 2 Ray actors (1 CPU each; on a GPU half of it each), 4 candidates each (batched
  inside), three ways: the weights changed before every call (as after a training step) and
  shipped as the changed bytes of one flat buffer (``ActorPoolEvaluator``); the same weights again
  (nothing shipped); and, for comparison, the way it was before issue 23, the whole state dict
  put as NumPy arrays and loaded with ``load_state_dict`` in each actor (``StateDictPool`` below);
- weights to the actors: the same two ways of shipping changed weights, in calls with no candidate
  to score, so the time is the shipping's (put, transfer, writing into the actors' models) alone.

All energies are checked against the reference loop's (max abs difference printed). The goal on
a CPU: batched within 1.10x of its dense floor (the masks cost next to nothing) and at least 1.3x
faster than the reference loop, energies equal (to 1e-4), changed weights shipped the flat way
no slower than the state dict (within 10%: the time is mostly the object store's copy and the
actors' copy of the bytes, the same either way), and unchanged weights in at most 0.6x of that
(compared on the driver, not sent). On 2 CPU threads both paths are bound by the convolutions and
the reference loop zeroes only the gates (BatchNorm's gamma and beta), so batched cannot beat it
by much more: the floor's own speed-up over the loop is printed. With ``--device cuda`` (a GPU
machine) the goal is batched within 1.5x of one plain forward, energies equal, changed weights
shipped in at most 0.9x of the state dict's time (one pinned device-to-host copy instead of one
per tensor, one host-to-device copy per actor instead of one per tensor), unchanged ones in 0.6x.

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
from trainables.stages.epruning import init_population  # noqa: E402
from trainables.stages.population import ActorPoolEvaluator, BatchedEvaluator, ReferenceEvaluator  # noqa: E402

S, BATCH, SIZE, RUNS, WARMUP = 8, 32, 32, 7, 2
CPU_FLOOR, CPU_SPEEDUP, GPU_OVER_PLAIN, SAME_ENERGY = 1.10, 1.3, 1.5, 1e-4
# weights to the actors, the flat way's time over the state dict's: changed weights (CPU: no slower,
# within the noise of a shared machine; GPU: faster), and unchanged ones (compared, not sent)
CPU_SHIP_RATIO, GPU_SHIP_RATIO, UNCHANGED_RATIO = 1.10, 0.9, 0.6


def median_seconds(fn: Callable[[], object], device: str, runs: int = RUNS, warmup: int = WARMUP,
                   before: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` over ``runs`` calls after ``warmup``; ``before`` runs untimed before each."""
    for _ in range(warmup):
        if before is not None:
            before()
        fn()
    times = []
    for _ in range(runs):
        if before is not None:
            before()
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


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

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    cpus, gpus = max(1, args.threads // 2), (0.5 if args.device == "cuda" else 0.0)  # 2 actors: one GPU between them
    params = list(model.parameters())

    def training_step() -> None:
        """Every weight moves, as after an optimizer step (untimed)."""
        with torch.no_grad():
            torch._foreach_add_(params, 1e-4)

    none = states[:0]  # no candidate: each actor takes the weights and returns
    try:
        pool = ActorPoolEvaluator(model, layers, actors=2, cpus=cpus, gpus=gpus)
        training_step()
        checks = [(pool(model, x, y, states), reference(model, x, y, states))]  # on weights a step moved
        seconds["actor pool, weights changed (flat)"] = timed(lambda: pool(model, x, y, states), training_step)
        shipped = pool.shipped
        seconds["actor pool, same weights (flat: nothing sent)"] = timed(lambda: pool(model, x, y, states))
        seconds["weights to 2 actors, changed (flat)"] = timed(lambda: pool(model, x, y, none), training_step)
        seconds["weights to 2 actors, unchanged (flat: compared, not sent)"] = timed(lambda: pool(model, x, y, none))
        pool.close()  # the two pools one after the other: together they would ask for twice the resources
        before = StateDictPool(model, layers, actors=2, cpus=cpus, gpus=gpus)
        checks.append((before(model, x, y, states), reference(model, x, y, states)))
        seconds["actor pool, weights changed (state dict, before)"] = timed(lambda: before(model, x, y, states),
                                                                          training_step)
        seconds["weights to 2 actors, changed (state dict, before)"] = timed(lambda: before(model, x, y, none),
                                                                            training_step)
        before.close()
    finally:
        ray.shutdown()

    worst = max([float((e - energies["reference loop"]).abs().max()) for e in energies.values()]
                + [float((e - expected).abs().max()) for e, expected in checks])
    plain = seconds["plain forward (1 network)"]
    speedup = seconds["reference loop"] / seconds["batched"]
    over_plain = seconds["batched"] / plain
    legacy_ship = seconds["weights to 2 actors, changed (state dict, before)"]
    ship_ratio = seconds["weights to 2 actors, changed (flat)"] / legacy_ship
    unchanged_ratio = seconds["weights to 2 actors, unchanged (flat: compared, not sent)"] / legacy_ship
    pool_ratio = (seconds["actor pool, weights changed (flat)"]
                  / seconds["actor pool, weights changed (state dict, before)"])
    table = [(name, f"{s * 1000:8.1f} ms   {s / plain:5.2f}x plain") for name, s in seconds.items()]
    floor = seconds["dense floor (8x batch, no masks)"]
    over_floor = seconds["batched"] / floor
    table += [("batched speed-up over reference", f"{speedup:.2f}x"),
              ("batched / dense floor", f"{over_floor:.2f}x"),
              ("best speed-up at the floor", f"{seconds['reference loop'] / floor:.2f}x"),
              ("weights to actors, changed: flat / state dict", f"{ship_ratio:.2f}x"),
              ("weights to actors, unchanged: flat / state dict", f"{unchanged_ratio:.2f}x"),
              ("actor pool, weights changed: flat / state dict", f"{pool_ratio:.2f}x"),
              ("bytes shipped per call, weights changed", f"{shipped / 1e6:.1f} MB"),
              ("max |energy - reference|", f"{worst:.2e}")]
    figures = {"device": args.device, "threads": args.threads, "population": S, "batch": batch,
               "ms": {k: round(v * 1000, 2) for k, v in seconds.items()},
               "batched_speedup_over_reference": round(speedup, 3), "batched_over_plain": round(over_plain, 3),
               "batched_over_dense_floor": round(over_floor, 3),
               "ship_flat_over_state_dict": round(ship_ratio, 3),
               "unchanged_over_state_dict": round(unchanged_ratio, 3),
               "pool_flat_over_state_dict": round(pool_ratio, 3),
               "shipped_bytes": shipped, "max_energy_difference": worst}
    same = worst < SAME_ENERGY
    ship_goal = GPU_SHIP_RATIO if args.device == "cuda" else CPU_SHIP_RATIO
    ship = ship_ratio <= ship_goal and unchanged_ratio <= UNCHANGED_RATIO
    shipping = (f"weights to the actors: changed in <= {ship_goal}x the state dict's time, unchanged in "
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
