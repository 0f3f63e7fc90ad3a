"""Helpers the benchmarks share: a quickstart-derived spec and a timed search on a fresh local Ray."""

from __future__ import annotations

import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def quickstart(**overrides: Any) -> dict[str, Any]:
    """The quickstart spec as a dict, with top-level keys replaced."""
    raw = yaml.safe_load((ROOT / "spaces" / "quickstart.yaml").read_text())
    raw.update(copy.deepcopy(overrides))
    return raw


def timed_search(raw: dict[str, Any], *, cache: bool, runs_root: Path | None = None) -> tuple[float, pd.DataFrame]:
    """Run the search ``raw`` describes on a fresh 2-CPU local Ray; returns (wall seconds, trials table)."""
    from search.runner import run_search
    from search.spec import parse_spec

    spec = parse_spec(raw)
    root = runs_root or Path(tempfile.mkdtemp(prefix="frontier-bench-"))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 1024**2)
    try:
        start = time.perf_counter()
        run_dir = run_search(spec, yaml.safe_dump(raw), cache=cache, runs_root=root)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return wall, pd.read_csv(run_dir / "trials.csv")


def finish(table: list[tuple[str, str]], figures: dict[str, Any], goal: str, met: bool) -> None:
    """Print a readable table, then one JSON line with the figures, the goal and whether it was met."""
    width = max(len(k) for k, _ in table)
    for key, value in table:
        print(f"{key:<{width}}  {value}")
    print(json.dumps({**figures, "goal": goal, "goal_met": bool(met)}))
