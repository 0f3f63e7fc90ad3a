"""Pruning to a latency: per-group widths chosen against the engine, against one share for every group.

Workload (issue 27). Two parts, side by side in one run, on ONNX Runtime's CPU engine (2 threads,
batch 1):

1. **Targets at 224 px** (``--archs``: torchvision resnet18 and mobilenet_v2, trained by frontier's
   ``D`` and ``T`` on the Fashion-MNIST task below so that their L1 importances mean something).
   For each target share of the dense latency (``--targets`` 0.3, 0.5, 0.7), the latency budget
   (:mod:`trainables.stages.latency_budget`) allocates the units two ways: ``latency`` (the most
   normalised importance under the latency model's prediction) and ``uniform`` (the least common
   share that the model predicts under the target); each is checked on the engine and corrected.
   Every candidate is then timed again, in rounds over all of them in turn (``--rounds``), and the
   table shows target, prediction, measurement and the share of normalised L1 importance kept.
2. **Accuracy on the real-data task** (the fashion_mnist task of the recovery bench: resnet18 at
   32 px, five classes transferred to the other five, ``--per-class`` images a class): the real
   gradual stage (one shot, distillation 0.7) prunes to each ``--accuracy-targets`` share of the
   dense latency at 32 px with both allocations, per seed (``--seeds``) and per recovery budget
   (``--epochs``: the default recipe's 4 epochs, and 1, where recovery is cut short and what the
   allocation left decides more); test accuracy of each beside the dense network's (the ceiling a
   pruned network recovers toward), and every network timed in rounds.

Goals: measured latency within 10% of every target; at the same measured latency (+-5%) the
latency allocation keeps more importance than the uniform one; and it is more accurate on at least
2 of 3 seeds at every target and recovery budget. The latency model's build time per architecture
is printed (goal: under 60 s).

    python bench/latency_target.py [--archs resnet18 mobilenet_v2] [--targets 0.3 0.5 0.7] [--seeds 0 1 2]
                                   [--accuracy-targets 0.3 0.5] [--epochs 4 1] [--out DIR] [--smoke]

Needs Debian's ``dataset-fashion-mnist`` (``--root``); ``--smoke`` runs sklearn's digits at 16 px
and small_resnet, one target and one seed.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SMOKE_IMAGE_SIZE, add_smoke_flag, finish  # noqa: E402

from trainables import Context, DataSpec, Dense, DenseConfig  # noqa: E402
from trainables.data import load_data  # noqa: E402
from trainables.compress.surgery import alive_units, shrink  # noqa: E402
from trainables.measure.metrics import export_onnx  # noqa: E402
from trainables.pipeline.run import frozen_copy  # noqa: E402
from trainables.stages.benchmark import BenchmarkConfig  # noqa: E402
from trainables.stages.gradual import GradualConfig, GradualPrune  # noqa: E402
from trainables.stages.latency_budget import LatencyTarget, keep_masks, latency_budget  # noqa: E402
from trainables.stages.pruners import Channel  # noqa: E402
from trainables.stages.transfer import Transfer, TransferConfig  # noqa: E402
from trainables.train import OptimConfig, evaluate, loader  # noqa: E402

ENGINE = BenchmarkConfig(backend="onnxruntime", threads=2, batch_size=1, warmup=5, runs=30, end_to_end=False)
ALLOCATIONS = ("latency", "uniform")
RECIPE = dict(granularity="channel", pace="oneshot", distill={"weight": 0.7}, batch_size=64, frequency=8,
              optim=OptimConfig(name="adam", lr=0.0005))  # the default unit recipe, as the recovery bench runs it
CHECK_TOLERANCE = 0.025  # the bench's checks: tighter than a trial's 5%, so both allocations land within 5% of each other


def trained(arch: str, ctx: Context, epochs: tuple[int, int], out: Path) -> nn.Module:
    """``arch`` trained by frontier's D on the source classes and T on the target's, cached in ``out``."""
    path = out / f"{arch}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    model, _ = Dense(DenseConfig(model=arch, epochs=epochs[0], batch_size=64, optim=OptimConfig(name="adam"))).run(None, ctx)
    model, _ = Transfer(TransferConfig(mode="finetune", epochs=epochs[1], batch_size=64,
                                       optim=OptimConfig(name="adam", lr=0.0005))).run(model, ctx)
    torch.save(model, path)
    return model


def channel_pruner(model: nn.Module) -> Channel:
    """The channel pruner a latency stage runs (its groups: the stem left whole; its L1 importance)."""
    cfg = GradualConfig(latency=LatencyTarget(latency=0.5), benchmark=ENGINE, **RECIPE)
    return Channel(model, cfg)


def importance_kept(scores: dict, alive: dict, counts: dict) -> float:
    """The share of the normalised importance (each unit's L1 score over its group's mean) the counts keep."""
    masks = keep_masks(alive, scores, counts)
    total = sum(float((scores[g] / scores[g].mean()).sum()) for g in scores)
    return sum(float((scores[g] / scores[g].mean())[masks[g]].sum()) for g in scores) / total


def targets_part(arch: str, model: nn.Module, shape: tuple[int, int, int], targets: list[float], out: Path,
                 checks: int = 6) -> list[dict]:
    """Part 1: both allocations at every target, checked on the engine (at most ``checks`` times); the
    candidates' ONNX files."""
    model = copy.deepcopy(model).eval()
    pruner = channel_pruner(model)
    groups = pruner.groups
    alive = {g.name: torch.ones(g.size, dtype=torch.bool) for g in groups}
    scores = {g.name: pruner.importance(model, g).cpu() for g in groups}
    rows = []
    for share in targets:
        budget = latency_budget(model, groups, LatencyTarget(latency=share), ENGINE, input_shape=shape,
                                workdir=out / arch)
        budget.tolerance, budget.rounds = CHECK_TOLERANCE, checks
        for allocation in ALLOCATIONS:
            t0 = time.perf_counter()
            counts = budget.allocate(alive, scores, allocation=allocation, floor=0.1, round_to=1)
            small = shrink(model, keep_masks(alive, scores, counts), groups)
            onnx = export_onnx(small, out / arch / f"{allocation}-{share}.onnx", shape)
            rows.append({"arch": arch, "target": share, "allocation": allocation, **budget.metrics(),
                         "importance_kept": importance_kept(scores, alive, counts),
                         "params_kept": sum(p.numel() for p in small.parameters()) / sum(p.numel() for p in model.parameters()),
                         "onnx": str(onnx), "seconds": time.perf_counter() - t0})
            print(f"{arch} L{round(share * 100)} {allocation:<8} predicted {rows[-1]['latency_predicted_ms']:.2f} ms, "
                  f"checked {rows[-1]['latency_checked_ms']:.2f} ms (target {rows[-1]['latency_target_ms']:.2f}), "
                  f"importance {rows[-1]['importance_kept']:.3f}, model {rows[-1]['latency_model_seconds']:.1f} s"
                  f"{' (cached)' if rows[-1]['latency_model_cached'] else ''}", flush=True)
    dense = export_onnx(model, out / arch / "dense.onnx", shape)
    rows.append({"arch": arch, "target": 1.0, "allocation": "dense", "onnx": str(dense)})
    return rows


def accuracy_part(model: nn.Module, ctx: Context, shares: list[float], seeds: list[int], budgets: list[int],
                  folder: Path) -> list[dict]:
    """Part 2: the real gradual stage to each share of the dense latency at the task's input, both
    allocations, each recovery budget (epochs); ``folder`` holds the architecture's latency models
    (the targets part's too)."""
    rows = []
    for share, epochs, seed in ((s, e, k) for s in shares for e in budgets for k in seeds):
        for allocation in ALLOCATIONS:
            t0 = time.perf_counter()
            cfg = GradualConfig(latency=LatencyTarget(latency=share), benchmark=ENGINE, allocation=allocation,
                                epochs=epochs, recover_epochs=0, **RECIPE)
            run_ctx = Context(source=ctx.source, target=ctx.target, workdir=folder, seed=seed,
                              teachers=ctx.teachers)
            pruned, metrics = GradualPrune(cfg, "target").run(copy.deepcopy(model), run_ctx)
            keep = alive_units(pruned)
            small = shrink(pruned, keep)
            onnx = export_onnx(small, folder / "accuracy" / f"{allocation}-{share}-{epochs}-{seed}.onnx", ctx.input_shape)
            rows.append({"target": share, "epochs": epochs, "seed": seed, "allocation": allocation,
                         "accuracy": metrics["accuracy"],
                         **{k: v for k, v in metrics.items() if k.startswith("latency_")},
                         "unit_sparsity": metrics["unit_sparsity"], "onnx": str(onnx),
                         "seconds": time.perf_counter() - t0})
            print(f"accuracy L{round(share * 100)} {epochs} epochs seed {seed} {allocation:<8} acc {metrics['accuracy']:.3f} "
                  f"checked {metrics['latency_checked_ms']:.3f} ms ({rows[-1]['seconds']:.0f} s)", flush=True)
    return rows


def retime(rows: list[dict], rounds: int, runs: int) -> None:
    """Every row's ``latency_ms``: the least of its medians over ``rounds`` rounds over all rows in turn
    (as the latency model and the stage's checks take it: another process's load, or this VM's
    slow spells, only add time; here a whole process read every model 2.2x slower than the next one
    did), timed in a fresh process after a pause."""
    script = (
        "import json, sys, time\n"
        "from trainables.measure.backends import onnx_latency\n"
        "paths, rounds, runs, threads, pause = json.loads(sys.argv[1])\n"
        "time.sleep(pause)\n"
        "medians = [[] for _ in paths]\n"
        "for _ in range(rounds):\n"
        "    for i, path in enumerate(paths):\n"
        "        medians[i].append(onnx_latency(path, threads=threads, warmup=5, runs=runs).median_ms)\n"
        "print(json.dumps([min(m) for m in medians]))\n")
    argument = json.dumps([[r["onnx"] for r in rows], rounds, runs, ENGINE.threads, 5 if rounds > 1 else 0])
    done = subprocess.run([sys.executable, "-c", script, argument], check=True, capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent.parent)
    for row, ms in zip(rows, json.loads(done.stdout.strip().splitlines()[-1])):
        row["latency_ms"] = ms


def goals(target_rows: list[dict], accuracy_rows: list[dict], build: dict[str, float]) -> tuple[bool, list]:
    """The issue's goals, one line of evidence each."""
    lines, met = [], True
    for arch in sorted({r["arch"] for r in target_rows}):
        dense = next(r for r in target_rows if r["arch"] == arch and r["allocation"] == "dense")["latency_ms"]
        for share in sorted({r["target"] for r in target_rows if r["arch"] == arch and r["allocation"] != "dense"}):
            pair = {r["allocation"]: r for r in target_rows if r["arch"] == arch and r["target"] == share}
            misses = {a: pair[a]["latency_ms"] / (share * dense) - 1 for a in ALLOCATIONS}
            within = all(abs(m) <= 0.10 for m in misses.values())
            same = abs(pair["latency"]["latency_ms"] / pair["uniform"]["latency_ms"] - 1) <= 0.05
            more = pair["latency"]["importance_kept"] > pair["uniform"]["importance_kept"]
            met &= within and (more or not same)
            lines.append((f"{arch} L{round(share * 100)}: measured/target",
                          f"latency {misses['latency']:+.1%}, uniform {misses['uniform']:+.1%} "
                          f"({'within 10%' if within else 'NOT within 10%'}); importance kept "
                          f"{pair['latency']['importance_kept']:.3f} vs {pair['uniform']['importance_kept']:.3f}"
                          f"{'' if same else ' (latencies differ by more than 5%)'}"))
    for share, epochs in sorted({(r["target"], r["epochs"]) for r in accuracy_rows}):
        runs = [r for r in accuracy_rows if r["target"] == share and r["epochs"] == epochs]
        pairs = [{r["allocation"]: r["accuracy"] for r in runs if r["seed"] == seed}
                 for seed in sorted({r["seed"] for r in runs})]
        wins = sum(p["latency"] > p["uniform"] for p in pairs)
        differences = torch.tensor([p["latency"] - p["uniform"] for p in pairs], dtype=torch.float64)
        spread = float(differences.std() / len(pairs) ** 0.5) if len(pairs) > 1 else float("nan")
        met &= wins >= (2 * len(pairs) + 2) // 3  # 2 of 3
        lines.append((f"accuracy L{round(share * 100)}, {epochs} recovery epochs: latency allocation more accurate",
                      f"{wins} of {len(pairs)} seeds; latency - uniform {float(differences.mean()) * 100:+.2f} points "
                      f"(standard error {spread * 100:.2f})"))
    for arch, seconds in build.items():
        met &= seconds < 60
        lines.append((f"{arch}: latency model build", f"{seconds:.1f} s ({'under' if seconds < 60 else 'OVER'} 60 s)"))
    return met, lines


def run_parts(args, source: DataSpec, target: DataSpec, base_epochs: tuple[int, int],
              out: Path) -> tuple[list[dict], list[dict]]:
    """Both parts' rows (each with its ONNX file, not yet timed), the dense networks' rows among them."""
    ctx = Context(source=source, target=target, workdir=out, seed=0)
    models = {arch: trained(arch, ctx, base_epochs, out) for arch in args.archs}
    target_rows = []
    for arch in args.archs:
        target_rows += targets_part(arch, models[arch], (3, args.size, args.size), args.targets, out,
                                    checks=2 if args.smoke else 6)
    ctx.teachers["target"] = frozen_copy(models[args.archs[0]])
    first = args.archs[0]
    accuracy_rows = accuracy_part(models[first], ctx, args.accuracy_targets, args.seeds, args.epochs, out / first)
    dense = export_onnx(models[first], out / first / "accuracy" / "dense.onnx", ctx.input_shape)
    ceiling = evaluate(models[first], loader(load_data(target).test, 256, shuffle=False))["accuracy"]
    return target_rows, accuracy_rows + [{"target": 1.0, "allocation": "dense", "onnx": str(dense), "accuracy": ceiling}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--archs", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--accuracy-targets", type=float, nargs="*", default=[0.3, 0.5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, nargs="+", default=[4, 1],
                        help="recovery budgets (epochs) of the accuracy runs, each run at every target and seed")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--size", type=int, default=224, help="input pixels a side of the targets part")
    parser.add_argument("--task-size", type=int, default=32, help="input pixels a side of the Fashion-MNIST task")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--retime", action="store_true",
                        help="time the networks of the run saved in --out again (latency_target.json), prune nothing")
    add_smoke_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(2)
    out = args.out or Path(tempfile.mkdtemp(prefix="frontier-latency-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        size = SMOKE_IMAGE_SIZE
        source = DataSpec(name="digits", classes=[0, 1, 2, 3, 4], image_size=size, max_per_class=12)
        target = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=size, max_per_class=12)
        args.archs, args.targets, args.accuracy_targets, args.seeds = ["small_resnet"], [0.5], [0.5], [0]
        args.epochs, args.size, args.rounds, args.runs, base_epochs = [1], size, 1, 3, (1, 1)
    else:
        common = dict(name="fashion_mnist", root=args.root, image_size=args.task_size, max_per_class=args.per_class)
        source, target, base_epochs = DataSpec(classes=[0, 1, 2, 3, 4], **common), DataSpec(classes=[5, 6, 7, 8, 9], **common), (3, 2)
    start = time.perf_counter()
    saved = out / "latency_target.json"
    if args.retime:
        target_rows, accuracy_rows = (json.loads(saved.read_text())[k] for k in ("targets", "accuracy"))
    else:
        target_rows, accuracy_rows = run_parts(args, source, target, base_epochs, out)
    retime(target_rows + accuracy_rows, args.rounds, args.runs)
    saved.write_text(json.dumps({"targets": target_rows, "accuracy": accuracy_rows}, indent=1))
    build = {r["arch"]: r["latency_model_seconds"] for r in target_rows if r["allocation"] != "dense"}
    task_dense, ceiling = next((r["latency_ms"], r.get("accuracy", math.nan)) for r in accuracy_rows
                               if r["allocation"] == "dense")
    accuracy_rows = [{**r, "share": r["latency_ms"] / task_dense} for r in accuracy_rows if r["allocation"] != "dense"]
    table = [(f"{r['arch']} L{round(r['target'] * 100)} {r['allocation']}",
              f"target {r['latency_target_ms']:.2f}  predicted {r['latency_predicted_ms']:.2f}  checked "
              f"{r['latency_checked_ms']:.2f}  measured {r['latency_ms']:.2f} ms   importance {r['importance_kept']:.3f}"
              f"   params {r['params_kept']:.3f}") for r in target_rows if r["allocation"] != "dense"]
    table += [(f"{r['arch']} dense", f"{r['latency_ms']:.2f} ms") for r in target_rows if r["allocation"] == "dense"]
    table += [(f"{target.name} {target.image_size} px L{round(r['target'] * 100)} {r['epochs']} epochs seed {r['seed']} "
               f"{r['allocation']}",
               f"accuracy {r['accuracy']:.3f}   measured {r['latency_ms']:.3f} ms = {r['share']:.2f} of dense "
               f"(target {r['target']:.2f})   units pruned {r['unit_sparsity']:.3f}") for r in accuracy_rows]
    table += [(f"{target.name} {target.image_size} px dense", f"{task_dense:.3f} ms, accuracy {ceiling:.3f} "
               "(the ceiling: recovery distils the pruned network toward it)")]
    met, lines = goals(target_rows, accuracy_rows, build)
    finish(table + lines, {"seconds": round(time.perf_counter() - start, 1),
                           **{f"build_seconds.{a}": round(s, 1) for a, s in build.items()}},
           "measured latency within 10% of each target; more importance kept than uniform at the same latency; "
           "more accurate on 2 of 3 seeds; latency model built in under 60 s", met, smoke=args.smoke)


if __name__ == "__main__":
    main()
