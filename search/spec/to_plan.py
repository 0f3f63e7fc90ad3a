"""From a validated spec to trial plans: dotted-path budget overrides, and the plan of one sampled
assignment of the search space.

The space's keys are of two kinds: the special keys (:data:`SPECIAL_KEYS`: ``order``, ``s1``,
``s2``, ``quantize``, and the latency targets ``s1.latency``, ``s2.latency``, ``s1.latency_ms``,
``s2.latency_ms``, :data:`~search.spec.space.LATENCY_KEYS`) choose the pipeline's shape; every other
key is a budget field by its dotted path (``transfer.optim.lr``), set on the spec's budgets by
:func:`apply_overrides`. A side's latency target goes to the plan as ``s2={"latency": 0.4}``
(:func:`side_target`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from trainables.pipeline.plan import Plan, make_plan
from trainables.stages.dense import DenseConfig

from .schema import Budgets, Spec, SpecError, validation_lines
from .space import LATENCY_KEYS, LATENCY_KINDS, latency_key

SHAPE_KEYS = ("order", "s1", "s2", "quantize")  # the pipeline's shape; s1/s2 a sparsity or milestones
SPECIAL_KEYS = (*SHAPE_KEYS, *LATENCY_KEYS)  # not budget fields
PBA_MIN_GAP = 0.01  # s2 is sampled in [s1 + gap, high] for PBA


def field_problem(data: dict[str, Any], dotted: str) -> str | None:
    """Why ``dotted`` names no field of the budgets dumped as ``data``, in one line; None when it does."""
    node: Any = data
    walked: list[str] = []
    *parents, leaf = dotted.split(".")
    for part in parents:
        if isinstance(node, dict) and part in node and node[part] is None:
            unset = "budgets." + ".".join([*walked, part])
            return f"'{dotted}' is not a budget field while {unset} is unset; set {unset} to search its fields"
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return f"'{dotted}' is not a budget field"
        node, walked = node[part], [*walked, part]
    if leaf in node:
        return None
    if walked == ["share", "groups"]:
        return f"'{dotted}' is not a budget field; list {leaf} under budgets.share.groups to search it"
    return f"'{dotted}' is not a budget field"


def apply_overrides(budgets: Budgets, overrides: dict[str, Any]) -> Budgets:
    """``budgets`` with dotted-path fields replaced (``{"transfer.optim.lr": 0.01}``), revalidated.

    A side of the pruning budget is set the same way: ``{"prune.after.epochs": 25}``.
    """
    data = budgets.model_dump()
    for dotted, value in overrides.items():
        problem = field_problem(data, dotted)
        if problem is not None:
            raise SpecError([problem])
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Budgets.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"budgets.{line}" for line in validation_lines(exc)]) from None


def plan_for(spec: Spec, assignment: dict[str, Any], *, fidelity: float | None = None) -> Plan:
    """The trial plan of one sampled ``assignment`` (``{"order": "PBA", "s1": 0.5, ...}``), its
    epoch budgets scaled by ``fidelity`` (default: the spec's; 1.0 is the full budget)."""
    overrides = {k: v for k, v in assignment.items() if k not in SPECIAL_KEYS}
    budgets = scale_epochs(apply_overrides(spec.budgets, overrides), spec.fidelity if fidelity is None else fidelity)
    return make_plan(
        order=str(assignment.get("order", "none")),
        dense=DenseConfig(model=spec.model.name, weights=spec.model.weights, domain=spec.model.trained_on,
                          **budgets.dense.model_dump()),
        transfer=budgets.transfer if spec.model.trained_on == "source" else None,
        prune=budgets.prune,
        benchmark=budgets.benchmark,
        source=spec.data.source,
        target=spec.data.target,
        s1=side_target(assignment, "s1"),
        s2=side_target(assignment, "s2"),
        seed=spec.seed,
        quantize=str(assignment.get("quantize", "none")),
        share=budgets.share,
        retrain=budgets.retrain,
        int8=budgets.int8,
        repeats=spec.repeats,
    )


def side_target(assignment: dict[str, Any], side: str) -> Any:
    """What ``side`` (``s1`` or ``s2``) prunes to in ``assignment``: its latency target as the plan takes
    it (``{"latency": 0.4}`` from ``s2.latency``, ``{"latency_ms": 2.0}`` from ``s2.latency_ms``), else
    its sparsity or milestones (None when the assignment has neither).

    Example:
        >>> side_target({"order": "PA", "s2.latency": 0.4}, "s2"), side_target({"s1": 0.5}, "s1")
        ({'latency': 0.4}, 0.5)
    """
    given = [kind for kind in LATENCY_KINDS if latency_key(side, kind) in assignment]
    if len(given) + (side in assignment) > 1:
        keys = [latency_key(side, kind) for kind in given] + ([side] if side in assignment else [])
        raise SpecError([f"space: {side} has more than one target in one trial ({', '.join(sorted(keys))}); "
                         f"give it a sparsity or a latency target"])
    if given:
        value = assignment[latency_key(side, given[0])]
        return {given[0]: float(value)}  # 2 and 2.0 ms are one plan (and one cache key)
    return assignment.get(side)


EPOCH_FIELDS = ("epochs", "recover_epochs", "stagnation")  # every budget field counted in epochs


def scale_epochs(budgets: Budgets, fidelity: float) -> Budgets:
    """``budgets`` with every epoch count (:data:`EPOCH_FIELDS`, at any depth) times ``fidelity``,
    rounded, at least 1 where it was at least 1 (0 stays 0: dense ``epochs: 0`` means the weights
    as they are; unset stays unset).

    Example:
        >>> from search.spec.schema import Budgets
        >>> scaled = scale_epochs(Budgets.model_validate({"transfer": {"epochs": 8}, "prune": {"epochs": 2}}), 0.25)
        >>> scaled.transfer.epochs, scaled.prune.epochs
        (2, 1)
    """
    if fidelity >= 1:
        return budgets

    def scaled(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (max(1, round(v * fidelity)) if k in EPOCH_FIELDS and isinstance(v, int) and v >= 1
                        else scaled(v)) for k, v in node.items()}
        return node

    return Budgets.model_validate(scaled(budgets.model_dump()))


def pba_lower_bound(name: str, sampled: dict[str, Any]) -> float | None:
    """For PBA, s2's range starts above the s1 already sampled (its last milestone, for a list).

    Sparsities only: a latency target (``s2.latency``) is not bounded here; :mod:`search.spec.problems`
    requires PBA's two latency targets to be apart for every value they can take."""
    if name == "s2" and sampled.get("order") == "PBA" and "s1" in sampled:
        s1 = sampled["s1"]
        return float(max(s1) if isinstance(s1, list) else s1) + PBA_MIN_GAP
    return None
