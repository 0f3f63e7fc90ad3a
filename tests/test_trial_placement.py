"""A trial that starts EPruning actors gets them on its own node: its placement group is STRICT_PACK.

Ray's default, PACK, places bundles on as few nodes as it can but splits them over nodes when one
cannot hold them all, so a trial's actors could land on another node and every training step's
weights would cross the network. On a real local Ray, a Tune trial reads its own placement group
back from Ray.
"""

from __future__ import annotations

import pytest
from ray import tune

from search.run.resources import TrialResources
from tests.conftest import SOURCE, TARGET
from tests.placement_task import report_placement
from trainables import BenchmarkConfig, DenseConfig, TransferConfig, make_plan
from trainables.pipeline.plan import PruneBudget

POOL = {"evaluator": "actors", "actors": 1, "actor_cpus": 1.0}


def plan_json(prune: dict) -> dict:
    """A PA plan with one EPruning stage, as JSON (what a trial's config carries)."""
    plan = make_plan(order="PA", dense=DenseConfig(model="small_resnet", epochs=1), transfer=TransferConfig(epochs=1),
                     prune=PruneBudget.model_validate(prune), benchmark=BenchmarkConfig(), source=SOURCE, target=TARGET, s2=0.5)
    return plan.model_dump(mode="json")


def test_only_a_trial_with_actor_bundles_asks_for_one_node() -> None:
    resources = TrialResources(2, 0)
    with_actors = resources({"plan": plan_json({"method": "epruning", "epruning": POOL})})
    assert with_actors.bundles == [{"CPU": 2.0}, {"CPU": 1.0}] and with_actors.strategy == "STRICT_PACK"
    batched = resources({"plan": plan_json({"method": "epruning"})})
    assert batched.bundles == [{"CPU": 2.0}] and batched.strategy == "PACK"


@pytest.mark.slow
def test_ray_places_a_trial_and_its_actors_in_a_strict_pack_group(local_ray, tmp_path) -> None:
    config = {"actors": True, "plan": plan_json({"method": "epruning", "epruning": POOL})}
    tuner = tune.Tuner(tune.with_resources(report_placement, TrialResources(1, 0)), param_space=config,
                       run_config=tune.RunConfig(storage_path=str(tmp_path), verbose=0))
    [result] = tuner.fit()
    assert result.error is None, result.error
    assert result.metrics["strategy"] == "STRICT_PACK" and result.metrics["bundles"] == 2
