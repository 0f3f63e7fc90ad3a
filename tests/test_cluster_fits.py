"""Every spec in spaces/ that needs GPUs can run on cluster.yaml: each trial's placement group fits one node type.

A trial's bundles (its own, plus one per EPruning actor) are placed together on one node
(``STRICT_PACK``, :class:`search.run.resources.TrialResources`), so their sum must fit a single node type's
``resources``; otherwise the autoscaler has no node to start and the trial waits forever. The
trials are drawn from each spec's space (Optuna's random sampler, seeded) and turned into configs
by the searcher's own space function, so the bundles are the ones Tune would ask for.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from search.run.resources import TrialResources
from search.run.space_function import SpaceFunction
from search.spec.load import load_spec

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "spaces").glob("*.yaml"))
NODES = yaml.safe_load((ROOT / "cluster.yaml").read_text())["available_node_types"]
DRAWS = 30


def trial_needs(spec_path: Path) -> list[tuple[str, str, dict[str, float]]]:
    """``(pipeline, strategy, total resources)`` of ``DRAWS`` trials drawn from the spec's space."""
    spec = load_spec(spec_path)
    space, resources = SpaceFunction(spec), TrialResources(spec.resources.cpu, spec.resources.gpu)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))  # directions play no part
    needs = []
    for _ in range(DRAWS):
        config = space(study.ask())
        group = resources(config)
        total = {key: sum(b.get(key, 0.0) for b in group.bundles) for key in ("CPU", "GPU")}
        needs.append((config["pipeline"], group.strategy, total))
    return needs


def fitting_nodes(total: dict[str, float]) -> list[str]:
    """The node types of cluster.yaml whose resources hold ``total`` on one node."""
    return [name for name, node in NODES.items()
            if all(node["resources"].get(key, 0) >= amount for key, amount in total.items())]


@pytest.mark.parametrize("spec_path", SPECS, ids=[p.stem for p in SPECS])
def test_each_trial_of_a_gpu_spec_fits_one_node_type(spec_path: Path) -> None:
    needs = trial_needs(spec_path)
    if not any(total["GPU"] > 0 for _, _, total in needs):
        pytest.skip(f"{spec_path.name} needs no GPU (it runs anywhere, the head included)")
    for pipeline, strategy, total in needs:
        assert strategy == "STRICT_PACK" or total == needs[0][2] or len(NODES) == 1, (pipeline, strategy)
        assert fitting_nodes(total), (f"{spec_path.name}: a {pipeline} trial needs {total} on one node; "
                                      f"cluster.yaml's nodes: { {n: v['resources'] for n, v in NODES.items()} }")


def test_the_epruning_spec_draws_trials_with_gpu_actors_that_only_the_four_gpu_node_holds() -> None:
    needs = trial_needs(ROOT / "spaces" / "cifar10_resnet18_epruning.yaml")
    actors = [total for _, strategy, total in needs if strategy == "STRICT_PACK"]
    assert actors and all(total == {"CPU": 8.0, "GPU": 3.0} for total in actors), "trial 4 CPUs 1 GPU, 2 actors 2 and 1"
    assert fitting_nodes(actors[0]) == ["gpu4_worker"]
    gradual = [total for _, strategy, total in needs if strategy == "PACK"]
    assert gradual and "gpu_worker" in fitting_nodes(gradual[0])
