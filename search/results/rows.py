"""``trials.csv``'s rows: one per finished trial, from its config, last result and error.

``trials.csv`` has one row per trial: ``trial_id, status, pipeline, order, accuracy, top5,
size_bytes, latency_ms, sparsity``, accuracy's standard error and test images (``accuracy_se``,
``accuracy_n``), the seconds of each stage (``seconds.D``, ``seconds.T``, ...) and what each cost
when it was computed (``compute.D``, ...: equal for a stage run now, the first run's for a cache hit),
``error`` for failed trials, ``optuna_trial`` (its number in the run's Optuna study), ``reference``
(True for the trial of the dense model as it is, the front's reference row), ``feasible``
(whether it meets the spec's ``select``), ``stopped_at`` (the boundary where early stopping stopped
it), ``boundary_seconds`` (the seconds the trial spent measuring itself at stage boundaries for early
stopping: what early stopping itself cost it; 0 with it off), and every sampled parameter as ``param.<name>``. A trial of a spec with ``repeats: k`` > 1
reports the mean of its k seeds in the objectives' columns, with ``repeats`` (k), each objective's
standard deviation over the seeds (``accuracy_std``, ...), each run's own value (``repeat.<r>.<name>``)
and ``accuracy_se`` the standard error of the mean (:mod:`trainables.pipeline.repeats`). ``status`` is
:func:`trainables.pipeline.result.classify`'s: ``ok`` for a trial whose final result holds every
objective as a finite float, ``stopped`` for one the early-stopping scheduler ended at a stage
boundary, else ``failed``; only ok trials not marked infeasible make the front.
:func:`rows_and_plans` is the one way rows are made, for the files written while the search runs
(:mod:`search.run.live`) and at its end (:func:`search.run.driver.run_search`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from search.spec.constraints import feasible
from trainables.objectives import ACCURACY_FIELDS, INT8_FIELDS, LATENCY_FIELDS, OBJECTIVES
from trainables.pipeline.repeats import REPEAT_FIELDS, REPEAT_PREFIX
from trainables.pipeline.result import BOUNDARY, BOUNDARY_SECONDS, FAILED, OK, STOPPED, classify

OBJECTIVE_COLUMNS = [o.column for o in OBJECTIVES.values()]
BASE_COLUMNS = ["trial_id", "status", "pipeline", "order", *OBJECTIVE_COLUMNS]
PARAMS_KEY = "params"  # the trial config's field holding the sampled parameters, by Optuna name
OPTUNA_TRIAL_KEY = "optuna_trial"  # the config's field (and trials.csv column): the Optuna trial's number
FULL_PLAN_KEY = "full_plan"  # the config's field: the plan at the full budget, when the search ran at a lower fidelity
REFERENCE_KEY = "reference"  # the config's field (and trials.csv column): the trial runs the dense model as it is
# the latency backend's record rides along with the objectives
EXTRA_METRICS = (*ACCURACY_FIELDS, "top3", "real_sparsity", *LATENCY_FIELDS, "units_removed", "params_timed", "cached_stages",
                 "resumed_at", BOUNDARY_SECONDS, "time_total_s", "timestamp", "node_ip", "pid", *INT8_FIELDS, *REPEAT_FIELDS)
# time_total_s: Tune's seconds of the trial; timestamp (its last result, Unix seconds), node_ip and pid
# (the worker that ran it): the report's timeline


def trial_row(trial_id: str, config: dict[str, Any], metrics: dict[str, Any], error: str | None) -> dict[str, Any]:
    """One ``trials.csv`` row from a trial's config, last result and error (Tune's, or the reason the
    trial gave in its result's ``failed`` when it ended without raising)."""
    status = classify(metrics, error)
    params = {f"param.{k}": v for k, v in (config.get(PARAMS_KEY) or {}).items()}
    row: dict[str, Any] = {"trial_id": trial_id, "pipeline": config.get("pipeline", metrics.get("pipeline"))}
    row["order"] = config.get("order", "none")
    row[OPTUNA_TRIAL_KEY] = config.get(OPTUNA_TRIAL_KEY)
    row[REFERENCE_KEY] = bool(config.get(REFERENCE_KEY, False))
    for objective in OBJECTIVES.values():
        row[objective.column] = metrics.get(objective.name, math.nan)
    row.update({k: v for k, v in metrics.items()
                if k.startswith(("seconds.", "compute.", "stage.", REPEAT_PREFIX)) or k in EXTRA_METRICS})
    row["status"] = status
    row["stopped_at"] = metrics.get(BOUNDARY) if status == STOPPED else None
    reason = error or metrics.get(FAILED) or "did not report every objective"
    row["error"] = "" if status in (OK, STOPPED) else reason.strip().splitlines()[-1][:300]
    row.update(params)
    return row


def mark_feasible(row: dict[str, Any], bounds: dict[str, float]) -> dict[str, Any]:
    """``row`` with ``feasible``: whether an ok trial meets the spec's ``select`` (``bounds``,
    :func:`search.spec.constraints.active_constraints`); None for a trial that is not ok or a spec without one."""
    row["feasible"] = feasible(bounds, row) if bounds and row.get("status") == "ok" else None
    return row


@dataclass(frozen=True)
class FinishedTrial:
    """A trial whose final result is in: what :func:`rows_and_plans` reads of it.

    Args:
        trial_id: Tune's trial id.
        config: the trial's config (:class:`search.run.space_function.SpaceFunction` made it).
        result: its last result.
        error: Tune's error as text, None when it ended without raising.
    """

    trial_id: str
    config: dict[str, Any]
    result: dict[str, Any]
    error: str | None = None


@dataclass
class Rows:
    """``trials.csv``'s rows, ``plans.json``'s plans and ``plans.full.json``'s (a search at a
    ``fidelity`` below 1), by trial id."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    plans: dict[str, Any] = field(default_factory=dict)
    full_plans: dict[str, Any] = field(default_factory=dict)


def rows_and_plans(trials: Iterable[FinishedTrial], bounds: dict[str, float]) -> Rows:
    """The rows (each marked ``feasible`` under ``bounds``, :func:`mark_feasible`) and plans of ``trials``."""
    out = Rows()
    for trial in trials:
        out.rows.append(mark_feasible(trial_row(trial.trial_id, trial.config, trial.result, trial.error), bounds))
        out.plans[trial.trial_id] = trial.config.get("plan")
        if trial.config.get(FULL_PLAN_KEY) is not None:
            out.full_plans[trial.trial_id] = trial.config[FULL_PLAN_KEY]
    return out


def trials_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Rows as a table with the ARCHITECTURE.md columns first, stage seconds next, parameters last."""
    frame = pd.DataFrame(list(rows))
    for col in BASE_COLUMNS:
        if col not in frame:
            frame[col] = pd.Series(dtype=object)
    seconds = sorted(c for c in frame.columns if c.startswith("seconds."))
    params = sorted(c for c in frame.columns if c.startswith("param."))
    # accuracy's error, then the seeds' count and spread (repeats), right after the objectives
    beside = [c for c in (*ACCURACY_FIELDS, *REPEAT_FIELDS) if c in frame]
    rest = [c for c in frame.columns if c not in BASE_COLUMNS + beside + seconds + params]
    return frame[BASE_COLUMNS + beside + seconds + rest + params].sort_values("trial_id").reset_index(drop=True)


