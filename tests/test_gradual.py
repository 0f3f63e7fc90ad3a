"""Gradual pruning: eq. 1 of the pruning-order paper, per-layer masks, and the stage end to end."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from trainables.compress.artifact import save_artifact
from trainables.compress.masks import is_masked, prunable_layers, zero_fraction
from trainables.models import build_model
from trainables.compress.masks import prune_to
from trainables.stages.gradual import GradualConfig, gradual_prune
from trainables.stages.schedule import Frequency, agp_schedule, agp_sparsity


def eq1(t: int, s_i: float, s_f: float, t0: int, n: int, dt: int) -> float:
    """Eq. 1 written out independently, for t in {t0, t0 + dt, ..., t0 + n dt}."""
    return s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3


@pytest.mark.parametrize("s_i,s_f,t0,n,dt", [(0.0, 0.8, 0, 10, 1), (0.5, 0.8, 7, 4, 3), (0.2, 0.95, 100, 75, 5)])
def test_agp_sparsity_is_eq1_on_every_update(s_i, s_f, t0, n, dt) -> None:
    for k in range(n + 1):
        t = t0 + k * dt
        assert agp_sparsity(t, s_i, s_f, t0, n, dt) == pytest.approx(eq1(t, s_i, s_f, t0, n, dt), abs=1e-12)
    assert agp_sparsity(t0, s_i, s_f, t0, n, dt) == pytest.approx(s_i)
    assert agp_sparsity(t0 + n * dt, s_i, s_f, t0, n, dt) == pytest.approx(s_f)


def test_agp_sparsity_is_constant_outside_its_window_and_holds_between_updates() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 10, 5, 4
    assert all(agp_sparsity(t, s_i, s_f, t0, n, dt) == s_i for t in range(0, t0))
    end = t0 + n * dt
    assert all(agp_sparsity(t, s_i, s_f, t0, n, dt) == s_f for t in range(end, end + 50))
    for t in range(t0, end):
        last_update = t0 + (t - t0) // dt * dt
        assert agp_sparsity(t, s_i, s_f, t0, n, dt) == agp_sparsity(last_update, s_i, s_f, t0, n, dt)
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


@pytest.mark.slow  # 16 s: ResNet-18's every layer; small_resnet's tests below keep the rule in the 5-minute loop
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


def test_epoch_unit_updates_at_epoch_starts_n_plus_one_updates_of_eq1() -> None:
    """The paper's PB (sec. 3.1 and 4.1): 10 epochs, dt = 1 epoch: 10 updates of eq. 1 (n = 9)."""
    cfg = GradualConfig(final=0.8, epochs=10, recover_epochs=5, frequency={"every": 1, "unit": "epoch"})
    updates = agp_schedule(cfg, batches_per_epoch=7)
    assert sorted(updates) == [7 * e for e in range(10)], "one update before the first batch of each epoch"
    for e in range(10):
        assert updates[7 * e] == pytest.approx(eq1(e, 0.0, 0.8, 0, 9, 1), abs=1e-12)
    assert updates[0] == 0.0 and updates[63] == 0.8
    every_2 = agp_schedule(cfg.model_copy(update={"frequency": Frequency(every=2, unit="epoch")}), 7)
    assert sorted(every_2) == [0, 14, 28, 42, 56] and every_2[56] == 0.8


def test_gradual_prune_with_epoch_unit_masks_once_per_epoch(tmp_path) -> None:
    model = build_model("small_resnet", 4)
    layers = [m for _, m in prunable_layers(model)]
    after_epoch: list[float] = []
    cfg = GradualConfig(final=0.8, epochs=3, recover_epochs=1, batch_size=32, frequency={"every": 1, "unit": "epoch"})
    model, metrics = gradual_prune(model, random_splits(n=128), cfg,
                                   on_epoch=lambda record: after_epoch.append(zero_fraction(layers)))
    assert metrics["pruning_updates"] == 3, "3 epoch starts, not 3 * 4 batches"
    # eq. 1 with n = 2: s_i at epoch 0, 0.8 - 0.8 * (1/2)^3 = 0.7 at epoch 1, s_f at epoch 2; recovery keeps it
    assert after_epoch == pytest.approx([0.0, 0.7, 0.8, 0.8], abs=0.005)
    assert metrics["sparsity"] == pytest.approx(0.8, abs=0.005)


def test_batch_unit_is_a_bare_int_and_updates_every_k_batches() -> None:
    bare = GradualConfig(final=0.5, epochs=2, frequency=4)
    assert bare.frequency == Frequency(every=4, unit="batch")
    assert GradualConfig(final=0.5, frequency={"every": 4}).frequency == bare.frequency, "batch is the default unit"
    updates = agp_schedule(bare, batches_per_epoch=10)  # n = 2 * 10 // 4 = 5
    assert sorted(updates) == [0, 4, 8, 12, 16, 20]
    for k, t in enumerate(sorted(updates)):
        assert updates[t] == pytest.approx(eq1(t, 0.0, 0.5, 0, 5, 4), abs=1e-12)
    with pytest.raises(ValueError, match="unit"):
        GradualConfig(final=0.5, frequency={"every": 1, "unit": "week"})


def test_gradual_prune_with_batch_unit_counts_its_updates() -> None:
    model = build_model("small_resnet", 4)
    cfg = GradualConfig(final=0.6, epochs=1, recover_epochs=0, batch_size=32, frequency=2)
    _, metrics = gradual_prune(model, random_splits(n=128), cfg)
    assert metrics["pruning_updates"] == 3, "n = 4 // 2 = 2: batches 0 and 2, and the last after the window"
    assert metrics["sparsity"] == pytest.approx(0.6, abs=0.005)


def test_config_rejects_initial_above_final() -> None:
    with pytest.raises(ValueError, match="initial sparsity 0.9 is above final sparsity 0.5"):
        GradualConfig(final=0.5, initial=0.9)


# --- granularity: channel (units that surgery removes) and 2:4 (TensorRT's sparse kernels) ---

from trainables.compress.surgery import alive_units, shrink  # noqa: E402
from trainables.compress.units import unit_groups  # noqa: E402
from trainables.stages import gradual as gradual_module  # noqa: E402
from trainables.compress.masks import semi_structured_mask  # noqa: E402
from trainables.stages.pruners import granularity_problem  # noqa: E402


def groups_of_four(weight: torch.Tensor) -> torch.Tensor:
    """Non-zeros per group of 4 consecutive input channels, one entry per group."""
    return (weight.movedim(1, -1).reshape(-1, 4) != 0).sum(dim=1)


def test_config_and_granularity_problem_reject_2_4_above_half() -> None:
    assert granularity_problem("2:4", 0.5) is None
    assert granularity_problem("channel", 0.9) is None and granularity_problem("unstructured", 0.9) is None
    assert "sparsity 0.6 is above 0.5" in granularity_problem("2:4", 0.6)
    assert "granularity must be one of unstructured, channel, 2:4 but got 'block'" == granularity_problem("block", 0.5)
    with pytest.raises(ValueError, match="final sparsity 0.8 is above 0.5, the most that granularity '2:4' reaches"):
        GradualConfig(final=0.8, granularity="2:4")
    assert GradualConfig(final=0.8).granularity == "unstructured"


def test_semi_structured_mask_keeps_the_two_largest_of_every_four_input_channels() -> None:
    g = torch.Generator().manual_seed(0)
    for weight in (torch.randn(6, 8, 3, 3, generator=g), torch.randn(5, 12, generator=g)):
        keep = semi_structured_mask(weight)
        assert keep.shape == weight.shape and keep.dtype == torch.bool
        assert torch.all(groups_of_four(weight * keep) == 2)
        magnitudes = weight.abs().movedim(1, -1).reshape(-1, 4)
        kept = keep.movedim(1, -1).reshape(-1, 4)
        smallest_kept = magnitudes.masked_fill(~kept, float("inf")).min(dim=1).values
        largest_dropped = magnitudes.masked_fill(kept, -1.0).max(dim=1).values
        assert torch.all(smallest_kept >= largest_dropped)
    one = semi_structured_mask(weight, zeros=1)
    assert torch.all(groups_of_four(weight * one) == 3)
    two = semi_structured_mask(weight, zeros=2, mask=one)
    assert torch.all(two <= one), "masks only grow"
    with pytest.raises(ValueError, match=r"multiples of 4 but got shape \(4, 3, 3, 3\)"):
        semi_structured_mask(torch.randn(4, 3, 3, 3))


def spy_on_updates(monkeypatch, record) -> None:
    """Call ``record(t, model)`` right after each batch hook (an update where the schedule has one) that
    gradual_prune's fit runs."""
    real_fit = gradual_module.fit

    def fit(model, *args, before_batch, **kwargs):
        def hook(t: int) -> None:
            before_batch(t)
            record(t, model)

        return real_fit(model, *args, before_batch=hook, **kwargs)

    monkeypatch.setattr(gradual_module, "fit", fit)


def test_channel_granularity_follows_the_schedule_in_units_and_shrinks_exactly(monkeypatch) -> None:
    model = build_model("small_resnet", 4)
    units = [g for g in unit_groups(model) if "conv1" not in {m.name for m in g.gates}]  # skip_first: not the stem's
    assert any(g.joined for g in units), "the residual streams of layer2 and layer3 are units"
    cfg = GradualConfig(final=0.7, epochs=2, recover_epochs=0, batch_size=32, granularity="channel", pace="agp")
    n = cfg.epochs * 4  # 128 images in batches of 32
    shares: list[tuple[int, dict[str, torch.Tensor]]] = []
    spy_on_updates(monkeypatch, lambda t, m: shares.append((t, {k: ~v for k, v in alive_units(m).items()})))
    model, metrics = gradual_prune(model, random_splits(n=128), cfg)
    assert [t for t, _ in shares] == list(range(n))
    for (t, pruned), (_, before) in zip(shares, [shares[0]] + shares[:-1]):
        s_t = agp_sparsity(t, 0.0, 0.7, 0, n, 1)
        for unit in units:
            assert int(pruned[unit.name].sum()) == round(s_t * unit.size), (t, unit.name)
            assert torch.all(pruned[unit.name] >= before[unit.name]), f"update {t}: a pruned unit came back"
    assert not is_masked(model)
    final = alive_units(model)
    for unit in units:
        assert int((~final[unit.name]).sum()) == round(0.7 * unit.size), unit.name
        for gate in unit.gates:  # dead at every gate: producers' rows, BatchNorms' gamma and beta
            module, dead = model.get_submodule(gate.name), gate.of((~final[unit.name]).nonzero().flatten())
            assert torch.all(module.weight[dead] == 0), gate.name
            assert module.bias is None or torch.all(module.bias[dead] == 0), gate.name
    share = sum(round(0.7 * u.size) for u in units) / sum(u.size for u in units)
    assert metrics["sparsity"] == pytest.approx(share) and metrics["unit_sparsity"] == pytest.approx(share)
    assert share < metrics["weight_sparsity"] < 1, "a conv loses input and output channels: more weights than units"
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert float((shrink(model, final)(x) - model(x)).abs().max()) < 1e-5


def test_channel_granularity_keeps_units_of_an_earlier_stage_dead_and_one_unit_per_layer() -> None:
    model = build_model("small_resnet", 4)
    splits = random_splits(n=64)
    cfg = dict(epochs=1, recover_epochs=1, batch_size=32, granularity="channel")
    model, _ = gradual_prune(model, splits, GradualConfig(final=0.4, **cfg))
    first = {k: ~v for k, v in alive_units(model).items()}
    model, metrics = gradual_prune(model, splits, GradualConfig(final=0.99, initial=0.4, **cfg))
    second = {k: ~v for k, v in alive_units(model).items()}
    assert bool(first["conv1"].any()) is False, "skip_first leaves the stem's group whole"
    for name, pruned in first.items():
        assert torch.all(second[name] >= pruned), f"{name}: a unit pruned in the first stage came back"
        if name != "conv1":
            assert int((~second[name]).sum()) == 1, "a unit group keeps one unit"


def test_2_4_granularity_follows_the_schedule_per_group_and_skips_three_channel_input(monkeypatch) -> None:
    model = build_model("small_resnet", 4)
    cfg = GradualConfig(final=0.5, epochs=2, recover_epochs=1, batch_size=32, granularity="2:4", skip_first=False)
    n = cfg.epochs * 4
    layers = [m for _, m in prunable_layers(model, skip_first=False)][1:]  # conv1 reads 3 channels
    zeros: list[tuple[int, set[int]]] = []
    spy_on_updates(
        monkeypatch, lambda t, m: zeros.append((t, {4 - int(groups_of_four(layer.weight).max()) for layer in layers}))
    )
    model, metrics = gradual_prune(model, random_splits(n=128), cfg)
    for t, per_group in zeros:
        s_t = agp_sparsity(min(t, n), 0.0, 0.5, 0, n, 1)
        assert per_group == {2 if t >= n else min(2, round(4 * s_t))}, t
    for layer in layers:
        assert int(groups_of_four(layer.weight).max()) <= 2
    assert zero_fraction([model.conv1]) == 0.0
    assert metrics["layers_skipped"] == 1
    assert not is_masked(model)
    assert metrics["sparsity"] == pytest.approx(0.5 * sum(m.weight.numel() for m in layers)
                                                / sum(m.weight.numel() for m in [model.conv1, *layers]))


def test_2_4_granularity_below_half_still_ends_in_the_2_4_pattern() -> None:
    model = build_model("small_resnet", 4)
    cfg = GradualConfig(final=0.3, epochs=1, recover_epochs=0, batch_size=32, granularity="2:4")
    model, metrics = gradual_prune(model, random_splits(n=64), cfg)
    for name, layer in prunable_layers(model):
        assert torch.all(groups_of_four(layer.weight) == 2), name
    assert metrics["sparsity"] == pytest.approx(0.5) and metrics["layers_skipped"] == 0


# --- the injected schedule and the pruner interface ---

from trainables.compress.importance import Importance  # noqa: E402
from trainables.compress.importance.l1 import L1Importance  # noqa: E402
from trainables.stages.pruners import Channel, Pruner, pruner_class  # noqa: E402


def test_an_injected_schedule_decides_the_updates(monkeypatch) -> None:
    model = build_model("small_resnet", 4)
    layers = [m for _, m in prunable_layers(model)]
    seen: list[tuple[int, float]] = []
    spy_on_updates(monkeypatch, lambda t, m: seen.append((t, zero_fraction(layers))))

    def two_updates(cfg, batches_per_epoch):
        return {1: 0.3, 2 * batches_per_epoch - 1: cfg.final}

    cfg = GradualConfig(final=0.6, epochs=1, recover_epochs=1, batch_size=32)
    model, metrics = gradual_prune(model, random_splits(n=128), cfg, schedule=two_updates)
    shares = dict(seen)
    assert shares[0] == 0.0 and shares[1] == pytest.approx(0.3, abs=0.005) and shares[6] == pytest.approx(0.3, abs=0.005)
    assert shares[7] == pytest.approx(0.6, abs=0.005)
    assert metrics["pruning_updates"] == 2 and metrics["sparsity"] == pytest.approx(0.6, abs=0.005)


def test_the_pruner_interface_is_abstract_and_found_by_granularity() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Pruner(build_model("small_resnet", 4), GradualConfig(final=0.5))  # type: ignore[abstract]
    assert pruner_class("channel") is Channel and pruner_class("2:4").granularity == "2:4"
    with pytest.raises(ValueError, match="granularity must be one of unstructured, channel, 2:4 but got 'block'"):
        pruner_class("block")


def test_the_channel_pruner_ranks_units_by_the_importance_it_is_given() -> None:
    class Reversed(Importance):
        name = "test_gradual_reversed"

        def __call__(self, model, group):
            return -L1Importance()(model, group)

    cfg = GradualConfig(final=0.5, granularity="channel")
    chosen = {}
    for importance in (None, Reversed()):
        torch.manual_seed(0)
        model = build_model("small_resnet", 4)
        pruner = Channel(model, cfg, importance)
        pruner.update(0.5, last=True)
        chosen[type(importance).__name__] = {k: v.clone() for k, v in pruner.pruned.items()}
    default, reversed_ = chosen["NoneType"], chosen["Reversed"]
    assert any(not torch.equal(default[k], reversed_[k]) for k in default), "the importance decides which units go"
    assert all(int(default[k].sum()) == int(reversed_[k].sum()) for k in default), "the schedule decides how many"
