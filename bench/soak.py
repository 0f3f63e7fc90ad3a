"""Soak: 200 trials of the quickstart space at the tiniest budgets, and what stays flat as it grows.

The quickstart spec (its space: orders, pruning methods, sharing, INT8) on digits at 16x16, one
epoch per stage (``_common.SMOKE_BUDGETS``), an EPruning population of 4, 2 trials at a time,
200 trials. Every 20 finished
trials a Tune callback in the driver samples: the driver's resident memory, its open file
descriptors, the seconds of overhead per trial in the window just ended (wall seconds times the
concurrency, less the trials' own seconds, per trial), the run folder's bytes per trial and its
model copies per trial (the bytes of every state dict under the run folder, cache entries and
stage checkpoints, per trial, divided by the dense model's state dict).

Goals (issue 19): at most 2.5 model copies per trial; driver memory grows less than 20% from
trial 40 to the last; open files flat (at most 8 more at the end than at trial 40); overhead per
trial does not grow (the last window's at most 1.5 times trial 40's, plus a second); every trial
completes (no trial errored).

    python bench/soak.py [--trials 200] [--every 20] [--smoke]

``--smoke``: 2 trials sampled after each; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch
import yaml
from _common import add_smoke_flag, finish, quickstart
from ray import tune

from search.run.driver import run_search
from search.spec.load import parse_spec
from trainables.models import build_model
from search.results.files import read_trials


def rss_mb() -> float:
    """This process's resident memory (Linux ``/proc/self/status``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def open_fds() -> int:
    """This process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


def state_dict_bytes(root: Path) -> int:
    """Bytes of every state dict (``model.pt``) under ``root``: cache entries, checkpoints, reruns."""
    return sum(p.stat().st_size for p in root.rglob("model.pt") if p.is_file())


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


class Probe(tune.Callback):
    """Samples the driver every ``every`` finished trials into ``out`` (one JSON line per sample).

    Args:
        run_dir: the run folder measured.
        out: the JSON-lines file the samples go to (a file: Tune may run a copy of a callback).
        every: finished trials between samples.
        concurrency: trials at a time (the wall seconds of a window times this is its trial capacity).
        dense_bytes: bytes of the dense model's saved state dict (one model copy).
    """

    def __init__(self, run_dir: Path, out: Path, every: int, concurrency: int, dense_bytes: int) -> None:
        self.run_dir, self.out, self.every = run_dir, out, every
        self.concurrency, self.dense_bytes = concurrency, dense_bytes
        self.finished, self.errors, self.trial_seconds = 0, 0, 0.0
        self.window_start, self.window_trial_seconds = time.time(), 0.0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial, error=True)

    def _finished(self, trial: Any, error: bool) -> None:
        self.finished += 1
        self.errors += int(error)
        self.window_trial_seconds += float((trial.last_result or {}).get("time_total_s") or 0.0)
        if self.finished % self.every:
            return
        now = time.time()
        overhead = ((now - self.window_start) * self.concurrency - self.window_trial_seconds) / self.every
        sample = {"trials": self.finished, "errors": self.errors, "rss_mb": round(rss_mb(), 1), "fds": open_fds(),
                  "overhead_s_per_trial": round(overhead, 2),
                  "bytes_per_trial": round(folder_bytes(self.run_dir) / self.finished),
                  "copies_per_trial": round(state_dict_bytes(self.run_dir) / self.finished / self.dense_bytes, 3),
                  "folder_copies_per_trial": round(folder_bytes(self.run_dir) / self.finished / self.dense_bytes, 3),
                  "wall_s": round(now - self.started, 1) if hasattr(self, "started") else None}
        with open(self.out, "a") as f:
            f.write(json.dumps(sample) + "\n")
        print(json.dumps(sample), flush=True)
        self.window_start, self.window_trial_seconds = now, 0.0

    def setup(self, **info: Any) -> None:
        self.started = self.window_start = time.time()


def main() -> None:
    parser = argparse.ArgumentParser()
    add_smoke_flag(parser)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--every", type=int, default=20)
    parser.add_argument("--runs", help="folder for the run (default: a new temporary folder)")
    args = parser.parse_args()
    trials, every = (2, 1) if args.smoke else (args.trials, args.every)
    raw = quickstart(name="soak", smoke=True, trials=trials, concurrency=2)
    raw["budgets"]["prune"]["epruning"] = {**raw["budgets"]["prune"].get("epruning", {}), "population": 4}
    raw["trials"] = trials
    spec = parse_spec(raw)
    root = Path(args.runs or tempfile.mkdtemp(prefix="frontier-soak-", dir=os.environ.get("FRONTIER_BENCH_TMP")))
    run_dir = root / "soak"
    buffer = io.BytesIO()
    torch.save(build_model(spec.model.name, len(spec.data.source.classes)).state_dict(), buffer)
    dense_bytes = len(buffer.getvalue())
    samples_file = root / "soak.samples.jsonl"
    probe = Probe(run_dir, samples_file, every, spec.concurrency, dense_bytes)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    try:
        start = time.perf_counter()
        run_search(spec, yaml.safe_dump(raw), runs_root=root, callbacks=[probe])
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
    frame = read_trials(run_dir)
    completed = int((frame["error"].isna()).sum()) if "error" in frame else len(frame)
    base = next((s for s in samples if s["trials"] >= 2 * every), samples[0])
    last = samples[-1]
    rss_growth = last["rss_mb"] / base["rss_mb"] - 1
    fds_flat = last["fds"] <= base["fds"] + 8
    overhead_flat = last["overhead_s_per_trial"] <= 1.5 * max(base["overhead_s_per_trial"], 0.0) + 1.0
    copies = last["copies_per_trial"]
    table = [("trials", f"{len(frame)} rows, {completed} completed without error, wall {wall:.0f} s"),
             ("dense state dict", f"{dense_bytes / 1e3:.0f} KB (one model copy)")]
    table += [(f"at {s['trials']:>3} trials",
               f"rss {s['rss_mb']:7.1f} MB  fds {s['fds']:4d}  overhead {s['overhead_s_per_trial']:6.2f} s/trial  "
               f"{s['bytes_per_trial'] / 1e3:8.0f} KB/trial  {s['copies_per_trial']:.2f} copies/trial "
               f"({s['folder_copies_per_trial']:.2f} whole folder)") for s in samples]
    table.append((f"rss growth from trial {base['trials']}", f"{100 * rss_growth:+.1f}%"))
    met = (copies <= 2.5 and rss_growth < 0.2 and fds_flat and overhead_flat and completed == trials
           and len(frame) == trials)
    finish(table, {"trials": len(frame), "completed": completed, "wall_s": round(wall, 1), "samples": samples,
                   "copies_per_trial": copies, "rss_growth": round(rss_growth, 4), "fds_flat": fds_flat,
                   "overhead_flat": overhead_flat, "dense_state_bytes": dense_bytes},
           "<= 2.5 model copies per trial; driver RSS +<20% from trial 40 to the end; open fds flat; "
           "overhead per trial not growing; every trial completes", met, smoke=args.smoke)


if __name__ == "__main__":
    main()
