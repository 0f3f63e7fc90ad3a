"""Stage cache on vs off: the same 12-trial PB/PA/PBA quickstart search, same seed, side by side.

The random sampler with a fixed seed proposes the same 12 trials in both runs (TPE's proposals
would depend on measured latencies, which differ run to run), so the two runs do the same work
but for what the cache saves: the dense pretrain shared by every trial and the prefixes that
trials share (``D|50|...``). Goal (issue "Search spine"): wall time with cache / without <= 0.5.
The quickstart's space also samples the pruning method; this bench keeps the grid it was set
for, gradual pruning only (``prune.method`` left out), since EPruning stages are further prefixes
that trials rarely share (with them in the space the ratio was 0.557 on 2 CPUs).

    python bench/cache_speedup.py [--smoke]

``--smoke``: the same two searches of 2 trials, one epoch per stage (see ``_common.SMOKE_BUDGETS``);
it checks that both still run and report, not the ratio.
"""

from __future__ import annotations

import argparse

from _common import add_smoke_flag, finish, quickstart, timed_search


def main() -> None:
    parser = argparse.ArgumentParser()
    add_smoke_flag(parser)
    args = parser.parse_args()
    raw = quickstart(name="cache", sampler="random", smoke=args.smoke)
    raw["space"].pop("prune.method")
    wall_off, off = timed_search(raw, cache=False)
    wall_on, on = timed_search(raw, cache=True)
    same = sorted(off["pipeline"]) == sorted(on["pipeline"])
    ratio = wall_on / wall_off
    stages_off = off[[c for c in off.columns if c.startswith("seconds.")]].sum().sum()
    stages_on = on[[c for c in on.columns if c.startswith("seconds.")]].sum().sum()
    finish(
        [("trials", f"{len(off)} without cache, {len(on)} with"), ("same pipelines in both runs", str(same)),
         ("orders", ", ".join(f"{k}={v}" for k, v in on["order"].value_counts().items())),
         ("wall without cache (s)", f"{wall_off:.1f}"), ("wall with cache (s)", f"{wall_on:.1f}"),
         ("stage seconds without / with", f"{stages_off:.1f} / {stages_on:.1f}"),
         ("ratio with / without", f"{ratio:.3f}")],
        {"wall_off_s": round(wall_off, 2), "wall_on_s": round(wall_on, 2), "ratio": round(ratio, 4),
         "same_trials": same, "stage_s_off": round(float(stages_off), 2), "stage_s_on": round(float(stages_on), 2)},
        "cache-on wall time / cache-off wall time <= 0.5 on the 12-trial quickstart", ratio <= 0.5 and same,
        smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
