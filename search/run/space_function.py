"""The define-by-run space of a spec, as the searcher calls it: an Optuna trial in, a trial config out.

The config is what a Ray trial receives (``plan``, ``pipeline``, ``order``, the Optuna trial's number,
``reference`` and the sampled ``params``; the full-budget plan too when the search runs at a lower
``fidelity``). An Optuna trial enqueued with the user attribute ``reference`` samples nothing and
runs the spec's reference plan, the dense model as it is (:data:`REFERENCE_ASSIGNMENT`).
"""

from __future__ import annotations

from typing import Any

from search.results.rows import FULL_PLAN_KEY, OPTUNA_TRIAL_KEY, PARAMS_KEY, REFERENCE_KEY
from search.spec.schema import Spec
from search.spec.space import suggest
from search.spec.to_plan import pba_lower_bound, plan_for

from .study import REFERENCE

REFERENCE_ASSIGNMENT = {"order": "none", "quantize": "none"}  # the dense model as it is: D|T|B, or D|B


class SpaceFunction:
    """The define-by-run space of a spec: samples an assignment and returns its plan as constants.

    A class rather than a closure so the searcher (which holds it) can be pickled for a restore.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        reference = bool(trial.user_attrs.get(REFERENCE))
        # the reference trial samples nothing: its plan need not be in the space (quickstart's orders are PB/PA/PBA)
        assignment = dict(REFERENCE_ASSIGNMENT) if reference else suggest(trial, self.spec.nodes, lower=pba_lower_bound)
        plan = plan_for(self.spec, assignment)
        order = str(assignment.get("order", "none"))
        config = {"plan": plan.model_dump(mode="json"), "pipeline": plan.pipeline, "order": order,
                  OPTUNA_TRIAL_KEY: trial.number, REFERENCE_KEY: reference,
                  PARAMS_KEY: {**trial.params, "order": order}}  # Optuna's record of what it sampled
        if self.spec.fidelity < 1:  # what `frontier rerun` runs: the same plan at the full budget
            config[FULL_PLAN_KEY] = plan_for(self.spec, assignment, fidelity=1.0).model_dump(mode="json")
        return config
