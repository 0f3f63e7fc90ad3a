"""Multi-objective early stopping vs none, at equal compute: hypervolume per trial-second.

The quickstart space (order, sparsities, pruning method, sharing, INT8) searched by TPE with the same
seed twice, without and with ``early_stop`` (:mod:`search.run.early_stop`), each until ``--trials``
trials finished that were not stopped, for each of ``--seeds`` seeds. Compute is the sum of the
trials' seconds (Tune's ``time_total_s``: stages, boundary measurements, checkpoints), stopped
trials included; what the boundary measurements alone cost is the early search's summed
``boundary_seconds``. The hypervolume curve of a search is its front's hypervolume after each trial in
the order the trials started, against its cumulated compute, under one reference point per seed
(0 accuracy; 1.1 x the worst size and latency of both searches). Per seed it prints each search's
final hypervolume and compute, the hypervolume each reached at the compute the cheaper one spent in
all (equal compute), and the compute each needed to reach the other's final hypervolume (None: never).

Goal (issue 17): early stopping reaches the same hypervolume at <= 0.6x the compute, or a higher
hypervolume at equal compute, on the median seed.

    python bench/early_stop.py [--seeds 3] [--trials 10] [--smoke]

``--smoke``: one seed, 2 trials per search at one epoch per stage; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import pandas as pd
from _common import ROOT, add_smoke_flag, finish, quickstart, timed_search

sys.path.insert(0, str(ROOT))
from search.results.front import hypervolume  # noqa: E402

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
EARLY_STOP = {"enabled": True, "grace": 4, "eta": 2, "margin": 0.02, "runs": 5}


def curve(frame: pd.DataFrame, reference: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """(cumulated compute, hypervolume of the ok trials so far) after each trial, in start order."""
    frame = frame.sort_values("optuna_trial").reset_index(drop=True)
    compute = frame["time_total_s"].fillna(0.0).astype(float).cumsum().to_numpy()
    volumes = []
    for k in range(1, len(frame) + 1):
        ok = frame.iloc[:k]
        ok = ok[ok["status"] == "ok"]
        volumes.append(hypervolume(ok[NAMES].astype(float).to_numpy(), DIRECTIONS, reference) if len(ok) else 0.0)
    return compute, np.array(volumes)


def at(compute: np.ndarray, volumes: np.ndarray, budget: float) -> float:
    """Hypervolume reached within ``budget`` trial-seconds."""
    done = compute <= budget + 1e-9
    return float(volumes[done].max()) if done.any() else 0.0


def needed(compute: np.ndarray, volumes: np.ndarray, target: float) -> float | None:
    """Trial-seconds needed to reach hypervolume ``target`` (None: never reached)."""
    hit = np.nonzero(volumes >= target - 1e-12)[0]
    return float(compute[hit[0]]) if len(hit) else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=10)
    add_smoke_flag(parser)
    args = parser.parse_args()
    seeds = 1 if args.smoke else args.seeds
    table, per_seed = [], []
    for seed in range(seeds):
        frames = {}
        for label, early in (("plain", {"enabled": False}), ("early", EARLY_STOP)):
            raw = quickstart(name=f"es-{label}-{seed}", seed=seed, sampler="tpe", concurrency=2, smoke=args.smoke,
                             early_stop=early, select={})
            raw["trials"] = 2 if args.smoke else args.trials
            _, frames[label] = timed_search(raw, cache=True)
        ok = pd.concat([f[f["status"] == "ok"] for f in frames.values()])
        reference = [0.0, float(ok["size_bytes"].max()) * 1.1, float(ok["latency_ms"].max()) * 1.1]
        curves = {k: curve(f, reference) for k, f in frames.items()}
        final = {k: float(v[1][-1]) for k, v in curves.items()}
        spent = {k: float(v[0][-1]) for k, v in curves.items()}
        equal = min(spent.values())
        at_equal = {k: at(*curves[k], equal) for k in curves}
        reach = {"early_to_plain_final": needed(*curves["early"], final["plain"]),
                 "plain_to_early_final": needed(*curves["plain"], final["early"])}
        ratio = None if reach["early_to_plain_final"] is None else reach["early_to_plain_final"] / spent["plain"]
        stopped = int((frames["early"]["status"] == "stopped").sum())
        early_frame = frames["early"]  # early stopping's own cost: its boundary measurements
        measuring = (float(pd.to_numeric(early_frame["boundary_seconds"], errors="coerce").fillna(0.0).sum())
                     if "boundary_seconds" in early_frame else 0.0)
        per_seed.append({"seed": seed, "hv_plain": final["plain"], "hv_early": final["early"],
                         "compute_plain_s": round(spent["plain"], 1), "compute_early_s": round(spent["early"], 1),
                         "hv_at_equal_compute_plain": at_equal["plain"], "hv_at_equal_compute_early": at_equal["early"],
                         "early_s_to_plain_hv": reach["early_to_plain_final"],
                         "plain_s_to_early_hv": reach["plain_to_early_final"],
                         "compute_ratio_to_plain_hv": None if ratio is None else round(ratio, 3),
                         "trials_plain": len(frames["plain"]), "trials_early": len(frames["early"]), "stopped": stopped,
                         "boundary_seconds_early": round(measuring, 1)})
        table += [
            (f"seed {seed}: hypervolume plain / early", f"{final['plain']:.4g} / {final['early']:.4g}"),
            (f"seed {seed}: compute plain / early (trial-s)", f"{spent['plain']:.0f} / {spent['early']:.0f}"),
            (f"seed {seed}: hypervolume at equal compute ({equal:.0f} s)",
             f"plain {at_equal['plain']:.4g}, early {at_equal['early']:.4g}"),
            (f"seed {seed}: compute early needs for plain's hv", _seconds(reach["early_to_plain_final"])
             + ("" if ratio is None else f" ({ratio:.2f}x plain's)")),
            (f"seed {seed}: compute plain needs for early's hv", _seconds(reach["plain_to_early_final"])),
            (f"seed {seed}: trials plain / early (stopped)",
             f"{len(frames['plain'])} / {len(frames['early'])} ({stopped})"),
            (f"seed {seed}: early's boundary measurements (trial-s)", f"{measuring:.1f}"),
        ]
    ratios = [s["compute_ratio_to_plain_hv"] for s in per_seed]
    higher = [s["hv_at_equal_compute_early"] > s["hv_at_equal_compute_plain"] for s in per_seed]
    cheaper = [r is not None and r <= 0.6 for r in ratios]
    met = sum(a or b for a, b in zip(cheaper, higher)) > len(per_seed) / 2
    finish(table, {"seeds": per_seed, "median_hv_gain_at_equal_compute": statistics.median(
                       s["hv_at_equal_compute_early"] - s["hv_at_equal_compute_plain"] for s in per_seed)},
           "early stopping: the same hypervolume at <= 0.6x the compute, or a higher one at equal compute "
           "(on most seeds)", met, smoke=args.smoke)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


if __name__ == "__main__":
    main()
