"""Ray + Optuna overhead: the share of a search's wall time not spent inside stages.

Trials of about 30 s each (the quickstart pipeline with larger budgets) run two at a time on
2 CPUs with the stage cache off. Stage time is what the trials report per stage (``seconds.*``);
the capacity is wall time x concurrency; overhead = 1 - stage time / capacity. It includes Ray's
worker start-up, imports, data loading, Optuna's sampling, per-stage checkpoints and the driver's
bookkeeping. Goal (issue "Search spine"): overhead <= 10%.

    python bench/search_overhead.py [--trials 8] [--smoke]

``--smoke``: 2 trials of one epoch per stage (seconds each, so the overhead share is large and
the goal not met); it checks that the search still starts and reports.
"""

from __future__ import annotations

import argparse

from _common import add_smoke_flag, finish, quickstart, timed_search


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=8)  # 4 full rounds of 2: start-up amortised as in a real search
    add_smoke_flag(parser)
    args = parser.parse_args()
    # merged over the quickstart's budgets: the share groups its space samples stay listed
    raw = quickstart(
        name="overhead", trials=args.trials, concurrency=2, sampler="random", smoke=args.smoke,
        budgets={"dense": {"epochs": 8, "batch_size": 32}, "transfer": {"epochs": 8, "batch_size": 32, "patience": 8},
                 "prune": {"epochs": 2, "recover_epochs": 1, "frequency": 4, "batch_size": 32},
                 "benchmark": {"warmup": 5, "runs": 30}},
    )
    wall, frame = timed_search(raw, cache=False)
    seconds = frame[[c for c in frame.columns if c.startswith("seconds.")]].sum(axis=1)
    in_stages = float(seconds.sum())
    capacity = wall * raw["concurrency"]
    overhead = 1 - in_stages / capacity
    finish(
        [("trials", str(len(frame))), ("mean trial time in stages (s)", f"{seconds.mean():.1f}"),
         ("search wall time (s)", f"{wall:.1f}"), ("capacity = wall x 2 slots (s)", f"{capacity:.1f}"),
         ("time inside stages (s)", f"{in_stages:.1f}"), ("overhead share", f"{overhead:.3f}")],
        {"trials": len(frame), "mean_trial_stage_seconds": round(float(seconds.mean()), 2), "wall_s": round(wall, 2),
         "stage_s": round(in_stages, 2), "overhead": round(overhead, 4)},
        "overhead <= 0.10 for ~30 s trials on 2 CPUs", overhead <= 0.10, smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
