"""Gradual pruning: eq. 1 of the pruning-order paper, per-layer masks, and the stage end to end."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from trainables.artifact import save_artifact
from trainables.gradual import GradualConfig, agp_sparsity, gradual_prune, prune_to
from trainables.masks import is_masked, prunable_layers, zero_fraction
from trainables.models import build_model


def eq1(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Eq. 1 written out independently, for t in {t0, t0 + dt, ..., t0 + n dt}."""
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


@pytest.mark.parametrize("s_i,s_f,t0,n,dt", [(0.0, 0.8, 0, 10, 1), (0.5, 0.8, 7, 4, 3), (0.2, 0.95, 100, 75, 5)])
def test_agp_sparsity_is_eq1_on_every_pruning_step(s_i, s_f, t0, n, dt) -> None:
    for k in range(n + 1):
        t = t0 + k * dt
        assert agp_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(eq1(t, s_i, s_f, t0, n, dt), abs=1e-12)
    assert agp_sparsity(t0, s_i, s_f, t0, n, dt) == pytest.approx(s_i)
    assert agp_sparsity(t0 + n * dt, s_i, s_f, t0, n, dt) == pytest.approx(s_f)


def test_agp_sparsity_is_constant_outside_its_window_and_holds_between_steps() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 5, 4
    assert all(agp_sparsity(t, s_i, s_f, t0, n, dt) == s_i for t in range(0, t0))
    end = t0 + n * dt
    assert all(agp_sparsity(t, s_i, s_f, t0, n, dt) == s_f for t in range(end, end + 50))
    for t in range(t0, end):
        last_step = t0 + (t - t0) // dt * dt
        assert agp_sparsity(t, s_i, s_f, t0, n, dt) == agp_sparsity(last_step, s_i, s_f, t0, n, dt)
    values = [agp_sparsity(t, s_i, s_f, t0, n, dt) for t in range(0, end + 5)]
    assert values == sorted(values), "the schedule never decreases"


def test_agp_sparsity_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="frequency must be >= 1 but got 0"):
        agp_sparsity(0, 0.0, 0.5, 0, 3, 0)


def test_prune_to_masks_smallest_magnitudes_and_never_unmasks() -> None:
    layer = torch.nn.Linear(10, 10)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(100, dtype=torch.float32).reshape(10, 10) - 49.5)
    prune_to(layer, 0.3)
    kept = layer.weight != 0
    assert int((~kept).sum()) == 30
    assert layer.weight_orig.abs()[~kept].max() < layer.weight_orig.abs()[kept].min()
    first_mask = layer.weight_mask.clone()
    prune_to(layer, 0.6)
    assert int((layer.weight_mask == 0).sum()) == 60
    assert torch.all(layer.weight_mask <= first_mask), "a masked weight came back"
    prune_to(layer, 0.5)  # lower target: nothing changes
    assert int((layer.weight_mask == 0).sum()) == 60


def random_splits(n: int = 192, classes: int = 4, size: int = 32):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 3, size, size, generator=g), torch.randint(0, classes, (n,), generator=g)

    class Splits:
        train, val, test = TensorDataset(x, y), TensorDataset(x[:64], y[:64]), TensorDataset(x[:64], y[:64])

    return Splits


def test_gradual_prune_reaches_final_per_layer_and_leaves_first_and_last_dense(tmp_path) -> None:
    model = build_model("resnet18", 4)
    dense_bytes = save_artifact(model.state_dict(), tmp_path / "dense.h5")
    first, last = model.conv1.weight.clone(), model.fc.weight.clone()
    cfg = GradualConfig(final=0.8, epochs=1, recover_epochs=0, batch_size=64)
    model, metrics = gradual_prune(model, random_splits(), cfg)
    assert not is_masked(model), "masks must be permanent at the end"
    for name, layer in prunable_layers(model):
        assert abs(zero_fraction([layer]) - 0.8) <= 0.005, name
    assert zero_fraction([model.conv1]) == 0.0 and zero_fraction([model.fc]) == 0.0
    assert not torch.equal(model.conv1.weight, first) or not torch.equal(model.fc.weight, last)  # they trained
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)
    assert 0.7 < metrics["sparsity_all"] < 0.8
    assert set(metrics) >= {"accuracy", "top5", "loss", "sparsity", "seconds"}
    pruned_bytes = save_artifact(model.state_dict(), tmp_path / "pruned.h5")
    assert pruned_bytes <= 0.35 * dense_bytes, (pruned_bytes, dense_bytes)


def test_second_pruning_keeps_the_first_zeros_and_can_prune_first_layer_when_asked() -> None:
    model = build_model("small_resnet", 4)
    splits = random_splits(n=128)
    model, _ = gradual_prune(model, splits, GradualConfig(final=0.5, epochs=1, recover_epochs=1, batch_size=32))
    zeros_before = {n: (m.weight == 0).clone() for n, m in prunable_layers(model)}
    cfg = GradualConfig(final=0.8, initial=0.5, epochs=1, recover_epochs=1, batch_size=32, skip_first=False)
    model, metrics = gradual_prune(model, splits, cfg)
    for name, layer in prunable_layers(model):
        assert torch.all(layer.weight[zeros_before[name]] == 0), f"{name}: a weight pruned at 50% came back"
    assert zero_fraction([model.conv1]) == pytest.approx(0.8, abs=0.005)
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)


def test_config_rejects_initial_above_final() -> None:
    with pytest.raises(ValueError, match="initial sparsity 0.9 is above final sparsity 0.5"):
        GradualConfig(final=0.5, initial=0.9)
