"""The spec's ``select`` (minimum accuracy, maximum size, maximum latency) as constraints.

The search tells them to Optuna's sampler (``constraints_func`` of TPE, NSGA-II and GP; the random
sampler has none), so it learns where the feasible region is, and ``trials.csv`` marks each ok
trial ``feasible`` or not; an infeasible trial stays off the front (``frontier front --all`` shows
the front of every ok trial). No Optuna or torch here: ``frontier front`` reads these.

Example:
    >>> constraint_values({"min_accuracy": 0.9, "max_size_bytes": 1000.0}, {"accuracy": 0.95, "size_bytes": 1200})
    [-0.04999999999999993, 200.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

CONSTRAINTS = "constraints"  # the Optuna trial user attribute holding its constraint values


class SelectConstraints:
    """``constraints_func`` for Optuna 4's samplers: a spec's ``select`` as constraint values
    (Optuna 5 reads ``Trial.set_constraint`` instead, see :class:`search.run.searcher.FailAwareOptunaSearch`).

    Optuna calls it in ``tell`` before the trial's values are stored, so the values are computed by
    :func:`constraint_values` from the trial's result and kept in its ``constraints`` user attribute
    first; here they are read back. A value ``<= 0`` is satisfied (Optuna's convention): a trial is
    feasible when every one is. A trial told without them (a stopped trial, told PRUNED) counts
    as feasible, as nothing says otherwise. A class, not a closure, so the sampler pickles with the
    searcher.

    Args:
        count: how many constraints the spec's ``select`` sets.
    """

    def __init__(self, count: int) -> None:
        self.count = count

    def __call__(self, trial: Any) -> Sequence[float]:
        values = trial.user_attrs.get(CONSTRAINTS)  # {select field: value}
        return [float(v) for v in values.values()] if values is not None else [0.0] * self.count


# select field -> (objective, direction it bounds): min_accuracy bounds accuracy from below, ...
SELECT_FIELDS = {"min_accuracy": ("accuracy", "min"), "max_size_bytes": ("size_bytes", "max"),
                 "max_latency_ms": ("latency_ms", "max")}


def active_constraints(select: Any) -> dict[str, float]:
    """The constraints a spec's ``select`` sets, ``{field: bound}``, in :data:`SELECT_FIELDS` order."""
    return {f: float(getattr(select, f)) for f in SELECT_FIELDS if getattr(select, f, None) is not None}


def search_constraints(select: Any, fidelity: float) -> dict[str, float]:
    """The bounds a search judges its own trials by: :func:`active_constraints`, less ``min_accuracy``
    when the search runs at a ``fidelity`` below 1.

    A low-fidelity score is not the accuracy of the model a user gets: after a quarter of the epochs
    a heavily pruned or weight-shared plan scores far below what it reaches at the full budget
    (Fashion-MNIST's search task: 0.2-0.6 against 0.90-0.94), so the floor would mark infeasible, and
    teach the sampler to avoid, exactly the plans worth rerunning. Size and latency do not depend on
    the epochs, so their bounds stay; the floor is checked where the accuracy is real, on
    ``frontier rerun --front``'s full-budget models.

    Example:
        >>> from types import SimpleNamespace as S
        >>> search_constraints(S(min_accuracy=0.8, max_size_bytes=1e6, max_latency_ms=None), 0.25)
        {'max_size_bytes': 1000000.0}
    """
    bounds = active_constraints(select)
    if fidelity < 1:
        bounds.pop("min_accuracy", None)
    return bounds


def constraint_values(bounds: Mapping[str, float], metrics: Mapping[str, Any]) -> list[float] | None:
    """Optuna constraint values of a result under ``bounds`` (:func:`active_constraints`): for
    ``min_accuracy`` ``bound - accuracy``, for ``max_*`` ``value - bound``; each ``<= 0`` when met.
    None when a bounded metric is missing or not finite."""
    values = []
    for field, bound in bounds.items():
        name, kind = SELECT_FIELDS[field]
        value = metrics.get(name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        values.append(bound - float(value) if kind == "min" else float(value) - bound)
    return values


def feasible(bounds: Mapping[str, float], metrics: Mapping[str, Any]) -> bool | None:
    """Whether ``metrics`` meet every bound; None when they cannot say (an objective is missing)."""
    values = constraint_values(bounds, metrics)
    return None if values is None else all(v <= 0 for v in values)
