"""A run's results on disk: ``trials.csv``, ``front.json`` and ``plans.json`` (ARCHITECTURE.md names).

``trials.csv`` has one row per trial: ``trial_id, status, pipeline, order, accuracy, top5,
size_bytes, latency_ms, sparsity``, the seconds of each stage (``seconds.D``, ``seconds.T``, ...),
``error`` for failed trials, ``optuna_trial`` (its number in the run's Optuna study), ``feasible``
(whether it meets the spec's ``select``), ``stopped_at`` (the boundary where early stopping stopped
it), and every sampled parameter as ``param.<name>``. ``status`` is ``ok`` for a trial that
reported every objective as a finite float, ``stopped`` for one the early-stopping scheduler ended
at a stage boundary, else ``failed``; only ok trials not marked infeasible make the front. ``front.json`` holds
the objectives and their directions, the reference point, the hypervolume and the front's trial
ids with their values. All files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from trainables.files import atomic_write
from trainables.layout import RunFolder
from trainables.objectives import FAILED, INT8_FIELDS, LATENCY_FIELDS, OBJECTIVES

from .constraints import feasible
from .front import hypervolume, ideal_point, normalized_hypervolume, pareto_front

OBJECTIVE_COLUMNS = [o.column for o in OBJECTIVES.values()]
BASE_COLUMNS = ["trial_id", "status", "pipeline", "order", *OBJECTIVE_COLUMNS]
PARAMS_KEY = "params"  # the trial config's field holding the sampled parameters, by Optuna name
OPTUNA_TRIAL_KEY = "optuna_trial"  # the config's field (and trials.csv column): the Optuna trial's number
FULL_PLAN_KEY = "full_plan"  # the config's field: the plan at the full budget, when the search ran at a lower fidelity
FULL_PLANS_FILE = "plans.full.json"  # each trial's full-budget plan (fidelity < 1), what `rerun` runs
# the latency backend's record rides along with the objectives
EXTRA_METRICS = ("top3", "real_sparsity", *LATENCY_FIELDS, "units_removed", "params_timed", "cached_stages",
                 "resumed_at", "time_total_s", "timestamp", "node_ip", "pid", *INT8_FIELDS)
# time_total_s: Tune's seconds of the trial; timestamp (its last result, Unix seconds), node_ip and pid
# (the worker that ran it): the report's timeline


def trial_row(trial_id: str, config: dict[str, Any], metrics: dict[str, Any], error: str | None) -> dict[str, Any]:
    """One ``trials.csv`` row from a trial's config, last result and error (Tune's, or the reason the
    trial gave in its result's ``failed`` when it ended without raising)."""
    error = error or metrics.get(FAILED) or None
    params = {f"param.{k}": v for k, v in (config.get(PARAMS_KEY) or {}).items()}
    row: dict[str, Any] = {"trial_id": trial_id, "pipeline": config.get("pipeline", metrics.get("pipeline"))}
    row["order"] = config.get("order", "none")
    row[OPTUNA_TRIAL_KEY] = config.get(OPTUNA_TRIAL_KEY)
    for objective in OBJECTIVES.values():
        row[objective.column] = metrics.get(objective.name, math.nan)
    row.update({k: v for k, v in metrics.items() if k.startswith(("seconds.", "stage.")) or k in EXTRA_METRICS})
    finished = metrics.get("stage_index") is not None and metrics.get("stage_index") == metrics.get("stages")
    ok = error is None and finished and all(_finite(row[k]) for k in OBJECTIVE_COLUMNS)
    # ended without an error before its last stage: the early-stopping scheduler stopped it
    stopped = error is None and not ok and metrics.get("stage_index") is not None and not finished
    row["status"] = "ok" if ok else "stopped" if stopped else "failed"
    row["stopped_at"] = metrics.get("boundary") if stopped else None
    row["error"] = "" if ok or stopped else (error or "did not report every objective").strip().splitlines()[-1][:300]
    row.update(params)
    return row


def mark_feasible(row: dict[str, Any], bounds: dict[str, float]) -> dict[str, Any]:
    """``row`` with ``feasible``: whether an ok trial meets the spec's ``select`` (``bounds``,
    :func:`search.constraints.active_constraints`); None for a trial that is not ok or a spec without one."""
    row["feasible"] = feasible(bounds, row) if bounds and row.get("status") == "ok" else None
    return row


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def trials_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with the ARCHITECTURE.md columns first, stage seconds next, parameters last."""
    frame = pd.DataFrame(list(rows))
    for col in BASE_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype=object)
    seconds = sorted(c for c in frame.columns if c.startswith("seconds."))
    params = sorted(c for c in frame.columns if c.startswith("param."))
    rest = [c for c in frame.columns if c not in BASE_COLUMNS + seconds + params]
    return frame[BASE_COLUMNS + seconds + rest + params].sort_values("trial_id").reset_index(drop=True)


def default_reference(frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str]) -> list[float]:
    """A reference point every ok trial dominates: 0 for a maximised accuracy-like objective,
    1.1 x the worst value seen for a minimised one."""
    ref = []
    for name, direction in zip(names, directions):
        column = frame[name].astype(float)
        if direction == "max":
            ref.append(min(0.0, float(column.min())) if len(column) else 0.0)
        else:
            ref.append(float(column.max()) * 1.1 if len(column) else 1.0)
    return ref


def spreads(frame: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """Each row's measurement noise per objective: ``ObjectiveInfo.spread``'s column (e.g.
    ``latency_iqr_ms``), but at least ``ObjectiveInfo.repeatability`` times the value (2% of a
    latency: medians of one model timed in separate sessions differ by that much even where each
    session's IQR is tighter); 0 for an exact objective, a missing column or a missing value."""
    columns = []
    for name in names:
        info = OBJECTIVES.get(name)
        column = info.spread if info is not None else None
        if column and column in frame:
            measured = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
            floor = info.repeatability * np.abs(pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float))
            columns.append(np.nan_to_num(np.maximum(measured, floor), nan=0.0))
        else:
            columns.append(np.zeros(len(frame)))
    return np.stack(columns, axis=1) if len(names) else np.zeros((len(frame), 0))


def front_summary(frame: pd.DataFrame, names: Sequence[str], directions: Sequence[str],
                  reference: Sequence[float] | None = None, *, all_trials: bool = False,
                  running: int = 0) -> dict[str, Any]:
    """The front of the ok trials of ``frame`` that are not marked infeasible (all ok trials with
    ``all_trials``), with its hypervolume; what ``front.json`` holds.

    Noise cannot decide the front: values within their combined spread (:func:`spreads`) are equal
    (:func:`search.front.pareto_front`). ``hypervolume`` is the front's raw volume (the objectives'
    units multiplied, for scripts); ``hypervolume_normalized`` is its share of the box between
    ``reference`` and ``ideal`` (the best value of each objective among these trials), 0 to 1.
    ``running``: trials of the search still running when this was written (0 once it ended).
    """
    ok = frame[(frame["status"] == "ok") & (all_trials | ~infeasible(frame))].reset_index(drop=True)
    values = ok[list(names)].astype(float).to_numpy() if len(ok) else []
    reference = list(reference) if reference is not None else default_reference(ok, names, directions)
    index = pareto_front(values, directions, spreads(ok, names)) if len(ok) else []
    front = ok.iloc[index]
    front_values = front[list(names)].astype(float).to_numpy() if len(front) else []
    ideal = ideal_point(values, directions) if len(ok) else None
    return {
        "objectives": [{"name": n, "direction": d} for n, d in zip(names, directions)],
        "reference": reference,
        "ideal": ideal,
        "hypervolume": hypervolume(front_values, directions, reference) if len(front) else 0.0,
        "hypervolume_normalized": (normalized_hypervolume(front_values, directions, reference, ideal)
                                   if len(front) else 0.0),
        "trials_finished": int(len(frame)),
        "running": int(running),
        "trials": [
            {"trial_id": row["trial_id"], "pipeline": row["pipeline"], **{n: float(row[n]) for n in names},
             **deployment(row)}
            for _, row in front.iterrows()
        ],
    }


def infeasible(frame: pd.DataFrame) -> pd.Series:
    """Rows whose ``feasible`` column says False (a column read back from CSV may hold text)."""
    if "feasible" not in frame:
        return pd.Series(False, index=frame.index)
    return frame["feasible"].map(lambda v: v is False or str(v).lower() == "false")


def deployment(row: pd.Series) -> dict[str, Any]:
    """What a trial was deployed as: its ``precision`` (``fp32``, ``fp16``, ``int8``) next to its
    nominal ``sparsity``, and for INT8 whether it ``ran_in_float``: the engine ran none of its layers
    with integer kernels (a backend that ignores QDQ nodes); None where that was not checked."""
    def value(name: str) -> Any:
        v = row.get(name)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    precision = value("precision") or value("latency_precision") or "fp32"
    out: dict[str, Any] = {"precision": str(precision), "sparsity": value("sparsity")}
    if out["sparsity"] is not None:
        out["sparsity"] = float(out["sparsity"])
    if precision == "int8":
        ops = value("int8_integer_ops")
        out["ran_in_float"] = None if ops is None else int(ops) == 0
    return out


def write_results(run_dir: str | Path, rows: Sequence[dict[str, Any]], names: Sequence[str],
                  directions: Sequence[str], plans: dict[str, Any], *,
                  running: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Write ``trials.csv``, ``front.json`` and ``plans.json`` in the run folder ``run_dir``;
    ``running``: trials not finished yet (a search in progress, :mod:`search.live`), kept in ``front.json``."""
    run = RunFolder(Path(run_dir))
    frame = trials_frame(rows)
    atomic_write(run.trials_csv, frame.to_csv(index=False))
    summary = front_summary(frame, names, directions, running=running)
    atomic_write(run.front_json, json.dumps(summary, indent=2))
    atomic_write(run.plans_json, json.dumps(plans, indent=1))
    return frame, summary


def read_trials(run_dir: str | Path) -> pd.DataFrame:
    """``trials.csv`` of ``run_dir``, trial ids as strings (``5293e221`` is an id, not 5.293e224, and
    ``01234567`` keeps its zero); a missing file names the folder."""
    from trainables.errors import FrontierError

    path = RunFolder(Path(run_dir)).trials_csv
    if not path.is_file():
        raise FrontierError(f"run_dir: '{run_dir}' has no trials.csv (is it a frontier run, and has a trial of it ended yet?)")
    return pd.read_csv(path, dtype={"trial_id": str})
