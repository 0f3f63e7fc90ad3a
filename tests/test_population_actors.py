"""EPruning's Ray actor pool on a real local Ray: the actors score with the driver's weights of each
call, whichever of them changed, and get only the weights that changed (none when none did)."""

from __future__ import annotations

import torch

from trainables.compress.units import unit_count, unit_groups
from trainables.models import build_model
from trainables.stages.epruning import EPruningConfig, _Search
from trainables.stages.evolution import init_population
from trainables.stages.population import ActorPoolEvaluator, ReferenceEvaluator


def _model():
    torch.manual_seed(0)
    model = build_model("small_resnet", 5)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 32, 32))  # running statistics that are not the identity
    return model.eval()


def _nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_the_pool_scores_each_call_with_its_weights_and_ships_only_what_changed(local_ray):
    model = _model()
    layers = unit_groups(model)
    states = init_population(6, unit_count(layers), 0.5, torch.Generator().manual_seed(1))
    x, y = torch.randn(3, 3, 32, 32), torch.randint(0, 5, (3,))
    reference = ReferenceEvaluator(layers)
    pool = ActorPoolEvaluator(model, layers, actors=2, cpus=0.5)
    total = sum(_nbytes(t) for t in [*model.parameters(), *model.buffers()])
    shipped = []

    def check():
        energies = pool(model, x, y, states)
        shipped.append(pool.shipped)
        assert torch.allclose(energies, reference(model, x, y, states), atol=1e-5), len(shipped)

    try:
        check()  # the weights the actors started with
        with torch.no_grad():
            model.fc.weight.mul_(2.0)  # one layer changed
        check()
        model.train()
        with torch.no_grad():
            for p in model.parameters():  # a training step: every weight moves, and the running statistics
                p.add_(0.01 * torch.randn_like(p))
            model(torch.randn(4, 3, 32, 32))
        model.eval()
        check()
        check()  # the same weights again
    finally:
        pool.close()
    assert shipped == [0, _nbytes(model.fc.weight), total, 0]


def test_an_actor_without_a_share_of_the_population_still_keeps_up_with_the_weights(local_ray):
    model = _model()
    layers = unit_groups(model)
    one = init_population(1, unit_count(layers), 0.5, torch.Generator().manual_seed(2))
    many = init_population(6, unit_count(layers), 0.5, torch.Generator().manual_seed(3))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2,))
    pool = ActorPoolEvaluator(model, layers, actors=2, cpus=0.5)
    try:
        with torch.no_grad():
            model.layer1[0].conv1.weight.mul_(-1.0)
        assert len(pool(model, x, y, one)) == 1  # the second actor scores nothing but takes the change
        energies = pool(model, x, y, many)  # nothing changed since: nothing is shipped, the second actor scores
        assert pool.shipped == 0
    finally:
        pool.close()
    assert torch.allclose(energies, ReferenceEvaluator(layers)(model, x, y, many), atol=1e-5)


def test_stored_selection_ships_the_weights_once_for_its_two_calls_on_the_same_weights(local_ray):
    """Algorithm 1's first generation scores S^(0) and then its children on the same batch and weights."""
    model = _model()
    layers = unit_groups(model)
    cfg = EPruningConfig(population=4, selection="stored", evaluator="actors", actors=2, actor_cpus=0.5)
    search = _Search(model, layers, cfg, 0.5, seed=0, device="cpu")
    pool, shipped = search.evaluate, []

    def recording(*args):
        energies = pool(*args)
        shipped.append(pool.shipped)
        return energies

    search.evaluate = recording
    try:
        with torch.no_grad():
            model.fc.bias.add_(1.0)  # the weights moved since the pool started (a training step)
        search.generation(torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2,)))
    finally:
        pool.close()
    assert shipped == [_nbytes(model.fc.bias), 0]
