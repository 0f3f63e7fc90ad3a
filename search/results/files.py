"""A run's result files: ``trials.csv``, ``front.json`` and ``plans.json`` written (atomically:
a temporary file, then a rename) and ``trials.csv`` read back."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.errors import FrontierError
from trainables.files import atomic_write
from trainables.layout import RunFolder

from .rows import trials_frame
from .summary import front_summary


def write_results(run_dir: str | Path, rows: Sequence[dict[str, Any]], names: Sequence[str],
                  directions: Sequence[str], plans: dict[str, Any], *, running: int = 0,
                  full_plans: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write ``trials.csv``, ``front.json`` and ``plans.json`` in the run folder ``run_dir`` (and
    ``plans.full.json`` when ``full_plans`` holds any); ``running``: trials not finished yet (a
    search in progress, :mod:`search.run.live`), kept in ``front.json``."""
    run = RunFolder(Path(run_dir))
    frame = trials_frame(rows)
    atomic_write(run.trials_csv, frame.to_csv(index=False))
    summary = front_summary(frame, names, directions, running=running)
    atomic_write(run.front_json, json.dumps(summary, indent=2))
    atomic_write(run.plans_json, json.dumps(plans, indent=1))
    if full_plans:
        atomic_write(run.plans_full_json, json.dumps(full_plans, indent=1))
    return frame, summary


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    """``trials.csv`` of ``run_dir``, trial ids as strings (``5293e221`` is an id, not 5.293e224, and
    ``01234567`` keeps its zero); a missing file names the folder."""
    path = RunFolder(Path(run_dir)).trials_csv
    if not path.is_file():
        raise FrontierError(f"run_dir: '{run_dir}' has no trials.csv (is it a frontier run, and has a trial of it ended yet?)")
    return pd.read_csv(path, dtype={"trial_id": str})
