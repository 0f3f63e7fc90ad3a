"""EPruning selection (eq. 6): parents' stored energies vs parents rescored on the child's batch.

Algorithm 1 of the EPruning paper compares each child, scored on this batch with these weights,
with its parent's energy as stored when the parent was last scored, on an earlier batch with
earlier weights (``selection: stored``). ``selection: rescored`` scores parents and children on
the same batch in one forward of 2S candidates. Workload: a small ResNet trained dense on digits
0-4 (the source), then EPruning on digits 5-9 (the target) at constrained unit sparsity 0.5 (the
stage trains the network on the target while it searches), both selections from the same dense
model, seed, data order and initial population; repeated over seeds.

Per run: the acceptance per search epoch (share of children that replaced their parent), Δs per
epoch (eq. 7), the epochs searched, ``pruning_rate`` (share of parameters removed), unit
sparsity and test accuracy. The goal: the default selection (``EPruningConfig().selection``) is
at least as accurate as the other, mean over seeds, at the same constrained sparsity.

    python bench/epruning_selection.py [--seeds 0 1 2] [--epochs 3] [--recover 2] [--smoke]

``--smoke``: one seed, one epoch each of dense training and search, no fine-tuning, 12 images per
class at 16x16 pixels.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SMOKE_IMAGE_SIZE, add_smoke_flag, finish  # noqa: E402

from trainables import Context, DataSpec, Dense, DenseConfig  # noqa: E402
from trainables.stages.epruning import EPrune, EPruneSchedule, EPruningConfig  # noqa: E402
from trainables.train import OptimConfig  # noqa: E402

SELECTIONS = ("stored", "rescored")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3, help="search epochs (the stagnation threshold)")
    parser.add_argument("--recover", type=int, default=2, help="fine-tuning epochs after the search")
    parser.add_argument("--dense-epochs", type=int, default=5)
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=2)
    add_smoke_flag(parser)
    args = parser.parse_args()
    size, per_class = 32, None
    if args.smoke:
        args.seeds, args.epochs, args.recover, args.dense_epochs = [0], 1, 0, 1
        size, per_class = SMOKE_IMAGE_SIZE, 12
    torch.set_num_threads(args.threads)
    default = EPruningConfig().selection

    runs = []
    for seed in args.seeds:
        digits = dict(name="digits", image_size=size, max_per_class=per_class, seed=seed)
        ctx = Context(source=DataSpec(classes=[0, 1, 2, 3, 4], **digits),
                      target=DataSpec(classes=[5, 6, 7, 8, 9], **digits),
                      workdir=Path(tempfile.mkdtemp(prefix="frontier-bench-")), seed=seed)
        dense, _ = Dense(DenseConfig(model="small_resnet", epochs=args.dense_epochs, batch_size=32,
                                     optim=OptimConfig(name="adam", lr=0.001))).run(None, ctx)
        for selection in SELECTIONS:
            schedule = EPruneSchedule(epochs=args.epochs, recover_epochs=args.recover, batch_size=32,
                                      optim=OptimConfig(name="adam", lr=0.0005))
            stage = EPrune(EPruningConfig(selection=selection), schedule, sparsity=args.sparsity)
            _, m = stage.run(copy.deepcopy(dense), ctx)
            runs.append({"seed": seed, "selection": selection, "accuracy": m["accuracy"],
                         "pruning_rate": m["pruning_rate"], "unit_sparsity": m["unit_sparsity"],
                         "search_epochs": m["search_epochs"], "acceptance": m["acceptance"],
                         "delta_s": m["delta_s"], "seconds": m["seconds"]})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)  # progress, one run a line

    def fmt(values: list[float], spec: str) -> str:
        return "/".join(format(v, spec) for v in values)

    table = [(f"seed {r['seed']} {r['selection']:<8}",
              f"acc {r['accuracy']:.4f}  pruning_rate {r['pruning_rate']:.3f}  unit_sparsity "
              f"{r['unit_sparsity']:.3f}  epochs {r['search_epochs']:.0f}  acceptance {fmt(r['acceptance'], '.3f')}"
              f"  Δs {fmt(r['delta_s'], '.3g')}  {r['seconds']:.0f} s") for r in runs]
    means = {}
    for selection in SELECTIONS:
        mine = [r for r in runs if r["selection"] == selection]
        means[selection] = {key: statistics.mean(r[key] for r in mine)
                            for key in ("accuracy", "pruning_rate", "unit_sparsity", "seconds")}
        means[selection]["acceptance"] = statistics.mean(a for r in mine for a in r["acceptance"])
        table.append((f"mean {selection:<8}", "  ".join(f"{k} {v:.4f}" for k, v in means[selection].items())))
    other = next(s for s in SELECTIONS if s != default)
    gap = means[default]["accuracy"] - means[other]["accuracy"]
    table.append((f"accuracy {default} - {other}", f"{gap:+.4f} (mean over {len(args.seeds)} seeds)"))
    figures = {"seeds": args.seeds, "search_epochs_limit": args.epochs,
               "recover_epochs": args.recover, "sparsity": args.sparsity, "default": default,
               "runs": runs, "means": means, "accuracy_gap_default_minus_other": gap}
    finish(table, figures, f"default selection ({default}) at least as accurate as {other}, mean over seeds, "
           f"at constrained unit sparsity {args.sparsity}", gap >= 0, smoke=args.smoke)


if __name__ == "__main__":
    main()
