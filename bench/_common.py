"""Helpers the benchmarks share: the ``--smoke`` flag, a quickstart-derived spec, a timed search on a
fresh local Ray, and the closing table + JSON line.

Every script in ``bench/`` takes ``--smoke`` (:func:`add_smoke_flag`): the tiniest configuration
that runs the same contenders through the same code (fewer trials, epochs, repeats; smaller
inputs), in seconds. ``tests/test_bench_smoke.py`` runs every script with it, so a bench that no
longer starts fails a test; the figures of a smoke run mean nothing and stay out of the tests. A
script passes ``smoke=args.smoke`` to :func:`finish`, which adds ``"smoke": true|false`` to the
JSON line; the test requires ``"smoke": true``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

# Budgets a smoke search runs with, merged over the quickstart's (see :func:`quickstart`): one
# epoch per training stage, a handful of latency runs.
SMOKE_BUDGETS: dict[str, Any] = {
    "dense": {"epochs": 1},
    "transfer": {"epochs": 1, "patience": 1},
    "prune": {"epochs": 1, "recover_epochs": 0},
    "retrain": {"epochs": 1},
    "benchmark": {"warmup": 1, "runs": 3},
}
SMOKE_TRIALS = 2  # one round of the quickstart's 2 concurrent trials
SMOKE_IMAGE_SIZE = 16  # pixels a side, both domains (the quickstart's are 32)


def add_smoke_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--smoke``: the tiniest run of the same code path, for the test suite."""
    parser.add_argument("--smoke", action="store_true",
                        help="tiniest configuration of the same code path, in seconds (the test suite "
                             "runs it); its figures mean nothing")


def merged(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update`` merged in, dicts key by key (recursively), anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def quickstart(*, budgets: dict[str, Any] | None = None, smoke: bool = False, **overrides: Any) -> dict[str, Any]:
    """The quickstart spec as a dict, with top-level keys replaced.

    ``budgets`` is merged field by field over the quickstart's (so ``{"dense": {"epochs": 8}}``
    keeps the dense stage's other fields and every other stage, such as ``share``, whose groups the
    space samples). ``smoke`` then merges :data:`SMOKE_BUDGETS` over that and sets ``trials`` to
    :data:`SMOKE_TRIALS` and both domains' ``image_size`` to :data:`SMOKE_IMAGE_SIZE`.
    """
    raw = yaml.safe_load((ROOT / "spaces" / "quickstart.yaml").read_text())
    raw.update(copy.deepcopy(overrides))
    raw["budgets"] = merged(raw["budgets"], budgets or {})
    if smoke:
        raw["budgets"] = merged(raw["budgets"], SMOKE_BUDGETS)
        raw["trials"] = SMOKE_TRIALS
        for domain in raw["data"].values():
            domain["image_size"] = SMOKE_IMAGE_SIZE
    return raw


def timed_search(raw: dict[str, Any], *, cache: bool, runs_root: Path | None = None,
                 cache_dir: Path | None = None) -> tuple[float, pd.DataFrame]:
    """Run the search ``raw`` describes on a fresh 2-CPU local Ray; returns (wall seconds, trials
    table). Arguments as :func:`timed_run`'s."""
    from search.results.files import read_trials

    wall, run_dir = timed_run(raw, cache=cache, runs_root=runs_root, cache_dir=cache_dir)
    return wall, read_trials(run_dir)


def timed_run(raw: dict[str, Any], *, cache: bool, runs_root: Path | None = None,
              cache_dir: Path | None = None) -> tuple[float, Path]:
    """Run the search ``raw`` describes on a fresh 2-CPU local Ray; returns (wall seconds, run folder).

    The run folder goes under ``runs_root``, else a new temporary folder (under the directory
    ``FRONTIER_BENCH_TMP`` names, if set); ``cache_dir``: a stage cache shared with other searches
    (``run_search``'s), else the run's own.
    """
    import ray  # here, not at the top: the benches a GPU check runs import this module on a machine without Ray

    from search.run.driver import run_search
    from search.spec.load import parse_spec

    spec = parse_spec(raw)
    # a fresh folder per search; FRONTIER_BENCH_TMP (set by the smoke test) says where
    root = runs_root or Path(tempfile.mkdtemp(prefix="frontier-bench-", dir=os.environ.get("FRONTIER_BENCH_TMP")))
    # address="local": a new instance even where another cluster is up (RAY_ADDRESS, `ray start`)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 * 1024**2)
    try:
        start = time.perf_counter()
        run_dir = run_search(spec, yaml.safe_dump(raw), cache=cache, runs_root=root, cache_dir=cache_dir)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return wall, run_dir


def finish(table: list[tuple[str, str]], figures: dict[str, Any], goal: str, met: bool, *, smoke: bool = False) -> None:
    """Print a readable table, then one JSON line with the figures, ``smoke``, the goal and whether it was met."""
    if smoke:
        table = [("mode", "--smoke: the tiniest run of the same code; its figures mean nothing"), *table]
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    print(json.dumps({**figures, "smoke": bool(smoke), "goal": goal, "goal_met": bool(met)}))
