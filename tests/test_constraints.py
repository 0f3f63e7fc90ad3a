"""The spec's ``select`` as Optuna constraints: with them TPE spends a larger share of its trials in
the feasible region than the same search without them (same seeds).

The searcher is frontier's own (``make_searcher``: the quickstart's space, TPE, the duplicate
skipping, constraints told with ``Trial.set_constraint``), driven through its Tune interface
(``suggest`` / ``on_trial_complete``) on a response surface of the plan instead of training, so 40
trials per search take a second: accuracy falls with the cube of the final sparsity
(``0.98 - 0.6 s^3``, EPruning 0.03 lower), bytes fall with it, EPruning buys latency. With
``min_accuracy: 0.9`` only the plans at 50% or less are feasible.
"""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from search.run.sampler import make_searcher
from search.spec.load import load_spec
from trainables.pipeline.result import STAGE_INDEX, STAGES

SPACES = Path(__file__).resolve().parent.parent / "spaces"
TRIALS, SEEDS = 40, (0, 1, 2)


def surface(config: dict) -> dict[str, float]:
    """accuracy, size_bytes and latency_ms of a trial config's plan (see the module doc)."""
    steps = config["plan"]["steps"]
    prune = [s for s in steps if s["kind"] in ("P", "E")]
    final = max([s.get("sparsity", s["config"].get("final", 0.0)) for s in prune] or [0.0])
    units = any(s["kind"] == "E" for s in prune)
    return {"accuracy": 0.98 - 0.6 * final**3 - (0.03 if units else 0.0), "size_bytes": 1e5 * (1.05 - final),
            "latency_ms": 1.0 - (0.5 * final if units else 0.0), "top5": 1.0, "sparsity": final,
            STAGE_INDEX: len(steps), STAGES: len(steps)}


def feasible_share(seed: int, constrained: bool) -> float:
    spec = load_spec(SPACES / "quickstart.yaml")  # select: {min_accuracy: 0.9}
    spec = spec.model_copy(update={"seed": seed, "select": spec.select if constrained else type(spec.select)()})
    spec._nodes = load_spec(SPACES / "quickstart.yaml").nodes
    searcher = make_searcher(spec, "s", None)
    feasible = 0
    for i in range(TRIALS):
        config = searcher.suggest(f"t{i}")
        result = surface(config)
        feasible += result["accuracy"] >= 0.9
        searcher.on_trial_complete(f"t{i}", result)
    return feasible / TRIALS


def test_a_constrained_search_spends_more_of_its_trials_where_select_is_met() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shares = {(seed, c): feasible_share(seed, c) for seed in SEEDS for c in (False, True)}
    print({f"seed {s} {'constrained' if c else 'unconstrained'}": v for (s, c), v in shares.items()})
    free = [shares[(s, False)] for s in SEEDS]
    bound = [shares[(s, True)] for s in SEEDS]
    assert sum(bound) > sum(free), (free, bound)
    assert sum(b > f for b, f in zip(bound, free)) >= 2, (free, bound)


def test_the_surface_puts_the_boundary_between_50_and_70_percent() -> None:
    plan = {"steps": [{"kind": "P", "config": {"final": 0.5}}]}
    assert surface({"plan": plan})["accuracy"] >= 0.9
    plan = {"steps": [{"kind": "P", "config": {"final": 0.7}}]}
    assert surface({"plan": plan})["accuracy"] < 0.9 and not math.isnan(surface({"plan": plan})["size_bytes"])


@pytest.fixture(autouse=True)
def _quiet_optuna():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
