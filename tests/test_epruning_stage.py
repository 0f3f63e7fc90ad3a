"""EPruning as a stage on real digits data, and its Ray actor pool on a real local Ray."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from trainables import Context, DataSpec, Dense, DenseConfig
from trainables.compress.surgery import alive_units, shrink
from trainables.compress.units import unit_count, unit_groups
from trainables.models import build_model
from trainables.stages.epruning import EPrune, EPruneSchedule, EPruningConfig
from trainables.stages.evolution import init_population
from trainables.stages.population import ActorPoolEvaluator, ReferenceEvaluator
from trainables.train import OptimConfig

DIGITS = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A small ResNet trained on digits 5-9, and its test accuracy."""
    ctx = Context(source=DIGITS, target=DIGITS, workdir=tmp_path_factory.mktemp("dense"))
    model, metrics = Dense(DenseConfig(model="small_resnet", epochs=5, batch_size=32,
                                       optim=OptimConfig(name="adam", lr=0.001))).run(None, ctx)
    return model, metrics["accuracy"], ctx


def _prune(model, ctx, sparsity, epochs=2, recover_epochs=2, **cfg):
    schedule = EPruneSchedule(epochs=epochs, recover_epochs=recover_epochs, batch_size=32,
                              optim=OptimConfig(name="adam", lr=0.0005))
    stage = EPrune(EPruningConfig(**cfg), schedule, sparsity=sparsity)
    return stage.run(copy.deepcopy(model), ctx)


@pytest.mark.slow  # an actor pool on 2 CPUs: a minute
def test_actor_pool_energies_equal_the_reference_loop(local_ray):
    torch.manual_seed(0)
    model = build_model("resnet18", 10).eval()
    layers = unit_groups(model)
    states = init_population(6, unit_count(layers), 0.5, torch.Generator().manual_seed(1))
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    pool = ActorPoolEvaluator(model, layers, actors=2)
    try:
        with torch.no_grad():  # the actors must see the weights of this call, not of the start
            model.fc.weight.mul_(2.0)
        energies = pool(model, x, y, states)
    finally:
        pool.close()
    assert torch.allclose(energies, ReferenceEvaluator(layers)(model, x, y, states), atol=1e-5)


@pytest.mark.slow  # end to end on digits: 20-26 s, off the 5-minute loop
def test_epruning_on_digits_removes_40_percent_within_5_points(dense):
    model, dense_accuracy, ctx = dense
    pruned, metrics = _prune(model, ctx, 0.6)
    print(f"dense {dense_accuracy:.4f} -> EPruning {metrics['accuracy']:.4f}, "
          f"{metrics['pruning_rate']:.1%} of trainable parameters removed")
    assert metrics["pruning_rate"] >= 0.40
    assert metrics["accuracy"] >= dense_accuracy - 0.05
    layers = unit_groups(pruned)
    keep = alive_units(pruned, layers)
    assert sum(int(k.sum()) for k in keep.values()) == round(0.4 * unit_count(layers))  # the constraint held
    assert metrics["unit_sparsity"] == pytest.approx(0.6, abs=0.01)
    small = shrink(pruned, keep).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(small(x), pruned.eval()(x), atol=1e-4)
    before = sum(p.numel() for p in model.parameters())
    assert 1 - sum(p.numel() for p in small.parameters()) / before == pytest.approx(metrics["pruning_rate"], abs=1e-6)
    best, mean = metrics["energy_best"], metrics["energy_mean"]
    assert len(best) == metrics["search_epochs"] == 2
    assert all(b <= m for b, m in zip(best, mean))
    assert len(metrics["acceptance"]) == len(metrics["delta_s"]) == 2
    assert all(0 <= a <= 1 for a in metrics["acceptance"]) and all(d <= 0 for d in metrics["delta_s"])


@pytest.mark.slow  # end to end on digits: 20-26 s, off the 5-minute loop
def test_a_second_epruning_stage_keeps_the_first_stages_units_pruned(dense):
    model, _, ctx = dense
    first, _ = _prune(model, ctx, 0.3, epochs=1, recover_epochs=0)
    second, metrics = _prune(first, ctx, 0.6, epochs=1, recover_epochs=0)
    before, after = alive_units(first), alive_units(second)
    for name in before:
        assert not (after[name] & ~before[name]).any()  # no unit pruned by the first stage came back
    assert metrics["unit_sparsity"] == pytest.approx(0.6, abs=0.01)


def test_unconstrained_epruning_finds_its_own_rate(dense):
    model, _, ctx = dense
    _, metrics = _prune(model, ctx, 0.0, epochs=1, recover_epochs=0, constrain=False, init_p=0.7)
    assert 0.05 < metrics["unit_sparsity"] < 0.6  # started near 30% pruned, never held to a count
    assert EPrune(EPruningConfig(constrain=False), sparsity=0.0).label == "E"


def test_the_papers_flip_and_cutout_augment_training_only(dense):
    model, _, base = dense
    seen = []
    ctx = dataclasses.replace(base, progress=lambda _label, _record: seen.append(base.data("target").train.augment))
    _prune(model, ctx, 0.5, epochs=1, recover_epochs=0, augment="flip_cutout")
    assert seen and all("RandomErasing" in repr(a) for a in seen)
    assert base.data("target").train.augment is None, "the split is left as it was found"
