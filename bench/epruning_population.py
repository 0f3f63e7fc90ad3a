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
- actor pool: 2 Ray actors with 1 CPU each, 4 candidates each (batched inside), the weights put
  in the object store once per call.

All energies are checked against the reference loop's (max abs difference printed). The goal on
a CPU: batched within 1.10x of its dense floor (the masks cost next to nothing) and at least 1.3x
faster than the reference loop, energies equal (to 1e-4). On 2 CPU threads both paths are
bound by the convolutions and the reference loop zeroes only the gates (BatchNorm's gamma and
beta), so batched cannot beat it by much more: the floor's own speed-up over the loop is printed.
With ``--device cuda`` (a GPU machine) the goal is batched within 1.5x of one plain forward,
energies equal.

    python bench/epruning_population.py [--device cuda] [--threads 2] [--smoke]

``--smoke``: a batch of 2, one warm-up and one timed call per contender.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def median_seconds(fn: Callable[[], object], device: str, runs: int = RUNS, warmup: int = WARMUP) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    add_smoke_flag(parser)
    args = parser.parse_args()
    batch, runs, warmup = (2, 1, 1) if args.smoke else (BATCH, RUNS, WARMUP)
    timed = lambda fn: median_seconds(fn, args.device, runs, warmup)  # noqa: E731
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
    try:
        pool = ActorPoolEvaluator(model, layers, actors=2, cpus=max(1, args.threads // 2))
        energies["actor pool"] = pool(model, x, y, states)
        seconds["actor pool (2 actors)"] = timed(lambda: pool(model, x, y, states))
        pool.close()
    finally:
        ray.shutdown()

    worst = max(float((e - energies["reference loop"]).abs().max()) for e in energies.values())
    plain = seconds["plain forward (1 network)"]
    speedup = seconds["reference loop"] / seconds["batched"]
    over_plain = seconds["batched"] / plain
    table = [(name, f"{s * 1000:8.1f} ms   {s / plain:5.2f}x plain") for name, s in seconds.items()]
    floor = seconds["dense floor (8x batch, no masks)"]
    over_floor = seconds["batched"] / floor
    table += [("batched speed-up over reference", f"{speedup:.2f}x"),
              ("batched / dense floor", f"{over_floor:.2f}x"),
              ("best speed-up at the floor", f"{seconds['reference loop'] / floor:.2f}x"),
              ("max |energy - reference|", f"{worst:.2e}")]
    figures = {"device": args.device, "threads": args.threads, "population": S, "batch": batch,
               "ms": {k: round(v * 1000, 2) for k, v in seconds.items()},
               "batched_speedup_over_reference": round(speedup, 3), "batched_over_plain": round(over_plain, 3),
               "batched_over_dense_floor": round(over_floor, 3),
               "max_energy_difference": worst}
    same = worst < SAME_ENERGY
    if args.device == "cuda":
        goal = f"batched within {GPU_OVER_PLAIN}x of one plain forward, energies equal (GPU)"
        met = over_plain <= GPU_OVER_PLAIN and same
    else:
        goal = (f"batched within {CPU_FLOOR:.2f}x of its dense floor and >= {CPU_SPEEDUP}x faster than the reference "
                f"loop, energies equal (CPU)")
        met = over_floor <= CPU_FLOOR and speedup >= CPU_SPEEDUP and same
    finish(table, figures, goal, met, smoke=args.smoke)


if __name__ == "__main__":
    main()
