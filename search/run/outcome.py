"""What became of a trial, told to Optuna: its status, objectives, constraints and user attributes.

The status is :func:`trainables.pipeline.result.classify`'s (``trials.csv`` says the same); Optuna
hears ``ok`` as COMPLETE with the objectives, ``stopped`` as PRUNED, ``failed`` as FAIL
(:func:`search.run.study.finished_state`).
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from search.spec.constraints import CONSTRAINTS, constraint_values
from trainables.pipeline.result import BOUNDARY, FAILED_STATUS, OK, STOPPED, classify

from .study import STATUS, STOPPED_AT, finished_state

# Optuna 5 deprecates the samplers' constraints_func for Trial.set_constraint, which they all read
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


@dataclass(frozen=True)
class Outcome:
    """What became of a trial: its ``trials.csv`` status (``ok``, ``stopped``, ``failed``), its
    objectives when ok, the boundary a stopped trial stopped at, its constraint values when ok."""

    status: str
    values: list[float] | None = None
    stopped_at: str | None = None
    constraints: dict[str, float] | None = None


def outcome(result: dict | None, error: bool, names: list[str], bounds: dict[str, float]) -> Outcome:
    """The :class:`Outcome` of a trial that ended with ``result`` (its last result) and ``error``:
    its status by :func:`trainables.pipeline.result.classify`, the objectives ``names`` of an ok
    trial, the constraint values of an ok trial under ``bounds``, the boundary a stopped trial
    stopped at."""
    result = result or {}
    status = classify(result, error)
    if status == OK:
        measured = constraint_values(bounds, result) if bounds else None
        return Outcome(OK, [float(result[n]) for n in names],
                       constraints=None if measured is None else dict(zip(bounds, measured)))
    if status == STOPPED:
        return Outcome(STOPPED, stopped_at=result.get(BOUNDARY))
    return Outcome(FAILED_STATUS)


def tell(study: optuna.Study, trial: optuna.trial.Trial, known: Outcome) -> None:
    """Record ``known`` on ``trial`` (user attributes) and tell it; a trial told already (before a
    resume) is left as it is."""
    try:
        trial.set_user_attr(STATUS, known.status)
        if known.stopped_at is not None:
            trial.set_user_attr(STOPPED_AT, known.stopped_at)
        if known.constraints is not None:
            trial.set_user_attr(CONSTRAINTS, known.constraints)
            if TRIAL_CONSTRAINTS:  # Optuna 5: the samplers read the trial's own constraints
                for name, value in known.constraints.items():
                    trial.set_constraint(name, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    study.tell(trial, known.values if known.status == OK else None, state=finished_state(known.status),
               skip_if_finished=True)
