"""A trial's Ray resources: its own bundle and those of the actors its plan starts."""

from __future__ import annotations

from typing import Any

from ray import tune

from trainables.pipeline.plan import Plan


class TrialResources:
    """A trial's placement group: one bundle for the trial, plus one per EPruning actor its plan starts.

    Tune calls it with each trial's config (``tune.with_resources`` accepts a callable), so only
    trials whose plan evaluates the population on Ray actors reserve their bundles (ARCHITECTURE.md:
    actors started inside a trial need their own bundles). A group with actor bundles is
    ``STRICT_PACK``: the trial and its actors on one node, so the weights the trial ships at every
    training step stay in that node's object store (Ray's default, ``PACK``, spreads the bundles
    over nodes when one node cannot hold them all); such a trial then needs a node that holds its
    bundles together (``tests/test_cluster_fits.py`` checks ``spaces/`` against ``cluster.yaml``).

    Args:
        cpu / gpu: the trial's own bundle (the spec's ``resources``).
    """

    #: the placement strategy of a trial with actor bundles (one node)
    ACTORS_STRATEGY = "STRICT_PACK"

    def __init__(self, cpu: float, gpu: float) -> None:
        self.cpu, self.gpu = cpu, gpu

    def __call__(self, config: dict[str, Any]) -> tune.PlacementGroupFactory:
        actors = actor_bundles((config or {}).get("plan") or {})
        return tune.PlacementGroupFactory([{"CPU": self.cpu, "GPU": self.gpu}, *actors],
                                          strategy=self.ACTORS_STRATEGY if actors else "PACK")


def actor_bundles(plan: dict[str, Any]) -> list[dict[str, float]]:
    """The bundles ``plan`` (a plan's JSON) needs beyond the trial's own: each step says its own
    (:meth:`trainables.pipeline.plan.Plan.bundles`; EPruning's actor pools)."""
    return Plan.model_validate(plan).bundles() if plan else []
