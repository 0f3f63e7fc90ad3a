"""Unit importance: the ABC's contract is enforced, implementations are found by name, L1 is bit-identical;
bn_scale, taylor (against Torch-Pruning's GroupTaylorImportance) and lamp (LAMP's eq. 2); the observe hook
in the gradual channel pruner."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from trainables.compress.importance import Importance, importance, importance_names
from trainables.compress.importance.l1 import L1Importance
from trainables.compress.importance.lamp import lamp
from trainables.compress.importance.taylor import TaylorImportance
from trainables.compress.masks import mask_entries, plain_copy
from trainables.compress.surgery import alive_units
from trainables.compress.units import unit_groups
from trainables.models import build_model
from trainables.stages.batches import training_batches
from trainables.stages.gradual import GradualConfig, gradual_prune
from trainables.stages.pruners import Channel
from trainables.stages.schedule import Frequency


def tiny(depthwise: bool) -> nn.Sequential:
    """conv(1->3) [depthwise 3x3] conv(3->2) pool linear, the first two convs' weights set by hand."""
    middle = [nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.ReLU()] if depthwise else []
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), *middle, nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1))
        last = model[4] if depthwise else model[2]
        last.weight.copy_(torch.tensor([[0.5, -0.5, 1.0], [2.0, 0.0, -1.0]]).view(2, 3, 1, 1))
        if depthwise:
            model[2].weight.fill_(10.0)
    return model


def test_l1_scores_each_unit_by_the_absolute_sum_of_its_producing_weights() -> None:
    l1 = importance("l1")
    assert isinstance(l1, L1Importance) and l1.name == "l1"
    scores = {group.name: l1(tiny(False), group) for group in unit_groups(tiny(False))}
    assert torch.equal(scores["0"], torch.tensor([1.0, 2.0, 3.0]))  # |1|, |-2|, |3|
    assert torch.equal(scores["2"], torch.tensor([2.0, 3.0]))  # |.5|+|-.5|+|1|, |2|+|0|+|-1|


def test_a_depthwise_conv_in_the_group_adds_nothing_to_l1() -> None:
    model = tiny(True)
    (group,) = [g for g in unit_groups(model) if g.name == "0"]
    assert {gate.name for gate in group.gates} == {"0", "2"}  # the depthwise conv is coupled to the first
    assert torch.equal(importance("l1")(model, group), torch.tensor([1.0, 2.0, 3.0]))  # its 10s are not counted


@pytest.mark.parametrize("name", ["small_resnet", "mobilenet_v2"])
def test_l1_scores_are_cpu_floats_one_per_unit_of_every_group(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 4)
    for group in unit_groups(model):
        scores = importance("l1")(model, group)
        assert scores.dtype == torch.float32 and scores.shape == (group.size,) and scores.device.type == "cpu"
        assert bool((scores >= 0).all()), group.name


def test_the_contract_is_enforced() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Importance()  # type: ignore[abstract]

    class NoCall(Importance):  # abstract: no __call__, so it may go without a name, and cannot be built
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoCall()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="needs a class attribute `name`"):
        class Nameless(Importance):
            def __call__(self, model, group):
                return torch.zeros(group.size)
    with pytest.raises(TypeError, match="name 'l1' is taken by L1Importance"):
        class Another(Importance):
            name = "l1"

            def __call__(self, model, group):
                return torch.zeros(group.size)


def test_an_importance_is_found_by_name_without_being_listed_anywhere() -> None:
    assert "l1" in importance_names()
    assert {"l1", "bn_scale", "taylor", "lamp"} <= set(importance_names())
    with pytest.raises(ValueError, match="importance must be one of .*l1.* but got 'no_such_importance'"):
        importance("no_such_importance")

    class Reversed(Importance):  # defined anywhere, it registers itself by its name
        name = "test_reversed"

        def __call__(self, model, group):
            return -L1Importance()(model, group)

    assert isinstance(importance("test_reversed"), Reversed)


# ----------------------------------------------------------------------------- every importance


def _masked_resnet() -> nn.Module:
    """small_resnet in train mode with its BN statistics moved off their defaults, units 0 and 5 of
    ``layer1.0.conv1`` masked at every gate (as the channel pruner masks them), and ``layer2`` in eval mode."""
    torch.manual_seed(0)
    model = build_model("small_resnet", 4)
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # running statistics away from 0 and 1
    keep = torch.ones(16, dtype=torch.bool)
    keep[[0, 5]] = False
    mask_entries(model.layer1[0].conv1, "weight", keep.view(-1, 1, 1, 1).expand_as(model.layer1[0].conv1.weight))
    for name in ("weight", "bias"):
        mask_entries(model.layer1[0].bn1, name, keep)
    model.train()
    model.layer2.eval()
    return model


def _batches(n: int = 2, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(6, 3, 32, 32, generator=g), torch.randint(0, 4, (6,), generator=g)) for _ in range(n)]


def _snapshot(model: nn.Module) -> dict:
    return {"state": {k: v.clone() for k, v in model.state_dict().items()},
            "grads": [p.grad for p in model.parameters()],
            "requires_grad": [p.requires_grad for p in model.parameters()],
            "training": [m.training for m in model.modules()],
            "rng": torch.get_rng_state()}


def _assert_unchanged(before: dict, model: nn.Module) -> None:
    after = _snapshot(model)
    assert before["state"].keys() == after["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(value, after["state"][key]), key  # parameters, masks, BN statistics, batch counts
    assert all(g is None for g in after["grads"]), "a .grad was left behind"
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"], "a module's train/eval flag changed"
    assert torch.equal(after["rng"], before["rng"]), "random numbers were drawn"


@pytest.mark.parametrize("name", importance_names())
def test_every_importance_keeps_the_contract(name: str) -> None:
    """Scores: one non-negative finite CPU float per unit, masked units lowest; the model, its
    gradients, flags and the random stream exactly as they were, observe included."""
    model = _masked_resnet()
    scorer = importance(name)
    groups = unit_groups(model)  # tracing draws random numbers (once per structure); scoring may not
    before = _snapshot(model)
    if scorer.batches:
        scorer.observe(model, _batches(scorer.batches))
    for group in groups:
        scores = scorer(model, group)
        assert scores.dtype == torch.float32 and scores.shape == (group.size,) and scores.device.type == "cpu"
        assert bool(torch.isfinite(scores).all()) and bool((scores >= 0).all()), (name, group.name)
        if group.name == "layer1.0.conv1":
            assert scores[0] == 0 and scores[5] == 0 and bool((scores[[1, 2, 3, 4, 6]] > 0).all()), scores
    _assert_unchanged(before, model)


# ----------------------------------------------------------------------------- bn_scale


def test_bn_scale_is_the_mean_abs_gamma_over_the_groups_batchnorms() -> None:
    model = build_model("small_resnet", 4)
    with torch.no_grad():
        for bn in (model.bn1, model.layer1[0].bn2, model.layer1[0].bn1):
            bn.weight.copy_(torch.linspace(-2.0, 1.0, 16))
        model.bn1.weight[3] = 0.0  # in the residual stream: one of its two BatchNorms says 0
        model.layer1[0].bn1.weight[7] = 0.0
    groups = {g.name: g for g in unit_groups(model)}
    stream = importance("bn_scale")(model, groups["conv1"])
    expected = (model.bn1.weight.detach().abs() + model.layer1[0].bn2.weight.detach().abs()) / 2
    assert torch.allclose(stream, expected)  # Torch-Pruning's group_reduction="mean" over bn1 and layer1.0.bn2
    inner = importance("bn_scale")(model, groups["layer1.0.conv1"])
    assert int(inner.argmin()) == 7 and inner[7] == 0  # the zeroed gamma ranks lowest, though |conv row| is not 0
    assert int(importance("l1")(model, groups["layer1.0.conv1"]).argmin()) != 7


def test_bn_scale_agrees_with_torch_pruning_on_a_plain_conv_bn_group() -> None:
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 5, 1), nn.BatchNorm2d(5),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 2))
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.weight.normal_()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 8, 8))
    for group in unit_groups(model):
        layer = model.get_submodule(group.name)
        reference = tp.importance.BNScaleImportance(normalizer=None)(
            graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=list(range(layer.out_channels))))
        assert torch.allclose(importance("bn_scale")(model, group), reference)


def test_bn_scale_falls_back_to_l1_without_a_batchnorm() -> None:
    model = tiny(False)
    for group in unit_groups(model):
        assert torch.equal(importance("bn_scale")(model, group), importance("l1")(model, group))


# ----------------------------------------------------------------------------- taylor


def _torch_pruning_taylor(model: nn.Module, batches, root: str, tp) -> torch.Tensor:
    """Torch-Pruning's GroupTaylorImportance on a copy of ``model`` (eval mode, gradients accumulated by
    ``backward`` over ``batches``), over the items of ``root``'s group that prune output rows, indexed by unit."""
    import copy

    twin = copy.deepcopy(model).eval()
    graph = tp.DependencyGraph().build_dependency(twin, example_inputs=torch.randn(1, 3, 32, 32))
    for x, y in batches:
        nn.functional.cross_entropy(twin(x), y).backward()
    layer = twin.get_submodule(root)
    group = graph.get_pruning_group(layer, tp.prune_conv_out_channels, idxs=list(range(layer.out_channels)))
    out = (tp.prune_conv_out_channels, tp.prune_linear_out_channels)
    rows = [item for item in group.items if item.dep.handler in out]
    assert len(rows) >= 1
    return tp.importance.GroupTaylorImportance(normalizer=None)(rows)


def test_taylor_matches_torch_pruning_group_taylor_over_the_producers() -> None:
    tp = pytest.importorskip("torch_pruning")
    torch.manual_seed(0)
    model = build_model("small_resnet", 4)
    batches = _batches(3)
    taylor = importance("taylor")
    taylor.observe(model, batches)
    for group in unit_groups(model):  # the residual streams have two producers: the mean of both
        reference = _torch_pruning_taylor(model, batches, group.name, tp)
        (root,) = [m for m in group.gates if m.name == group.name]
        ours = taylor(model, group)
        assert torch.allclose(ours, reference[list(root.channels)], rtol=1e-4, atol=1e-9), group.name
        assert bool((ours > 0).all())


def test_taylor_is_zero_for_a_unit_whose_producer_rows_are_zero_and_scores_masks_as_zeros() -> None:
    model = _masked_resnet()
    with torch.no_grad():
        model.layer2[0].conv1.weight[4].zero_()  # a row set to 0, no mask
    taylor = importance("taylor")
    taylor.observe(model, _batches())
    groups = {g.name: g for g in unit_groups(model)}
    plain = plain_copy(model)  # the masks made permanent: the same function, the same zeros
    plain_taylor = importance("taylor")
    plain_taylor.observe(plain, _batches())
    for group in groups.values():
        assert torch.allclose(taylor(model, group), plain_taylor(plain, group), rtol=1e-5, atol=1e-10), group.name
    scores = taylor(model, groups["layer2.0.conv1"])
    assert scores[4] == 0 and bool((scores[torch.arange(32) != 4] > 0).all())


def test_taylor_needs_observe_on_the_model_it_scores() -> None:
    model, other = build_model("small_resnet", 4), build_model("small_resnet", 4)
    group = unit_groups(model)[1]
    with pytest.raises(RuntimeError, match="observe\\(model, batches\\) must run on this model"):
        importance("taylor")(model, group)
    taylor = importance("taylor")
    taylor.observe(other, _batches(1))
    with pytest.raises(RuntimeError, match="must run on this model"):
        taylor(model, group)
    with pytest.raises(ValueError, match="batches yielded no"):
        taylor.observe(model, [])
    with pytest.raises(ValueError, match="batches must be an int >= 1 but got 0"):
        TaylorImportance(batches=0)
    assert TaylorImportance(batches=2).batches == 2 and importance("taylor").batches == 4
    assert importance("l1").batches == importance("bn_scale").batches == importance("lamp").batches == 0


def test_taylor_reaches_frozen_weights_and_leaves_them_frozen() -> None:
    model = build_model("small_resnet", 4)
    model.layer1.requires_grad_(False)
    group = {g.name: g for g in unit_groups(model)}["layer1.0.conv1"]
    before = _snapshot(model)
    taylor = importance("taylor")
    taylor.observe(model, _batches(1))
    assert bool((taylor(model, group) > 0).all())  # not the zeros of a missing gradient
    _assert_unchanged(before, model)


# ----------------------------------------------------------------------------- lamp


def test_lamp_normalisation_is_eq2_and_agrees_with_torch_pruning_without_ties() -> None:
    tp = pytest.importorskip("torch_pruning")
    m = torch.tensor([4.0, 1.0, 9.0, 2.0])
    assert torch.allclose(lamp(m), torch.tensor([4 / 13, 1 / 16, 9 / 9, 2 / 15]))  # each over the sum of those >= it
    torch.manual_seed(0)
    m = torch.rand(50)
    assert torch.allclose(lamp(m), tp.importance.LAMPImportance()._normalize(m.clone(), "lamp"))
    assert torch.equal(lamp(torch.tensor([2.0, 1.0, 2.0])), torch.tensor([0.5, 0.2, 0.5]))  # ties alike
    assert torch.equal(lamp(torch.zeros(3)), torch.zeros(3))
    with pytest.raises(ValueError, match="non-negative"):
        lamp(torch.tensor([1.0, -1.0]))


def test_lamp_orders_a_group_by_magnitude_and_ignores_its_scale() -> None:
    torch.manual_seed(0)
    model = build_model("small_resnet", 4)
    for group in unit_groups(model):
        scores = importance("lamp")(model, group)
        squares = torch.stack([(model.get_submodule(g.name).weight.detach() ** 2).flatten(1).sum(1)[list(g.channels)]
                               for g in group.gates if isinstance(model.get_submodule(g.name), nn.Conv2d)]).mean(0)
        assert torch.equal(scores.argsort(), squares.argsort()), group.name  # LAMP keeps the magnitude order
        assert scores.max() == 1.0
        magnitude = importance("l1")(model, group)
        with torch.no_grad():
            for gate in group.gates:
                module = model.get_submodule(gate.name)
                if isinstance(module, nn.Conv2d):
                    module.weight[list(gate.channels)] *= 7.0
        assert torch.allclose(importance("lamp")(model, group), scores, rtol=1e-5), group.name
        assert torch.allclose(importance("l1")(model, group), 7.0 * magnitude, rtol=1e-5)  # the weights did scale


# ----------------------------------------------------------------------------- the hook in the channel pruner


def _settings() -> GradualConfig:
    return GradualConfig(final=0.5, granularity="channel", skip_first=False)


def test_the_channel_pruner_refuses_a_data_importance_without_batches() -> None:
    pruner = Channel(build_model("small_resnet", 4), _settings(), importance("taylor"))
    with pytest.raises(ValueError, match="importance 'taylor' observes 4 batches .* got batches=None"):
        pruner.update(0.5, last=True)


def test_the_channel_pruner_scores_with_taylor_after_observing_batches() -> None:
    model = build_model("small_resnet", 4)
    reference = copy.deepcopy(model)
    calls = []

    def batches(n: int):
        calls.append(n)
        return _batches(n, seed=len(calls))

    pruner = Channel(model, _settings(), importance("taylor"), batches=batches)
    pruner.update(0.5, last=True)
    assert calls == [4]
    taylor = importance("taylor")
    taylor.observe(reference, _batches(4, seed=1))
    for group in pruner.groups:  # the units Taylor ranks lowest (on the same batches) are the ones masked
        lowest = taylor(reference, group).argsort()[:group.size // 2]
        assert set(torch.nonzero(pruner.pruned[group.name]).flatten().tolist()) == set(lowest.tolist()), group.name


def test_training_batches_are_plain_model_inputs_and_draw_no_random_numbers() -> None:
    from trainables.data import ImageDataset, model_input
    from trainables.augment import shift_mirror

    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    dataset = ImageDataset(images, torch.arange(10), augment=shift_mirror())
    take = training_batches(dataset, 4, "cpu", seed=3)
    state = torch.get_rng_state()
    first, second, third = take(1), take(1), take(2)
    assert torch.equal(torch.get_rng_state(), state)
    seen = torch.cat([y for x, y in first + second + third])
    assert sorted(seen[:10].tolist()) == list(range(10)) and len(seen) == 14  # one permutation, then again
    for x, y in first + second:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert torch.equal(x, model_input(images[y], "cpu"))  # not augmented
    assert [len(y) for _, y in training_batches(dataset, 4, "cpu", seed=3)(3)] == [4, 4, 2]


class _ObservingL1(L1Importance):
    """l1's scores after Taylor's observe on every update: observing must change nothing of the stage."""

    name = "test_observing_l1"
    batches = 2
    seen: list = []

    def observe(self, model, batches) -> None:
        batches = list(batches)
        type(self).seen.append(batches)
        TaylorImportance(batches=2).observe(model, batches)


def _prune(model: nn.Module, scorer: Importance | None, *, augment: str = "shift_mirror"):
    from trainables.data import ImageDataset

    g = torch.Generator().manual_seed(0)
    train = ImageDataset(torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g),
                         torch.randint(0, 4, (48,), generator=g))
    test = ImageDataset(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g),
                        torch.randint(0, 4, (16,), generator=g))

    class Splits:
        pass

    Splits.train, Splits.val, Splits.test = train, test, test
    cfg = GradualConfig(final=0.5, epochs=1, recover_epochs=1, batch_size=8, granularity="channel",
                        frequency=Frequency(every=2, unit="batch"), augment=augment, pace="agp",
                        distill={"weight": 0.0})  # several updates, plain cross-entropy
    return (*gradual_prune(model, Splits, cfg, importance=scorer), train)


def test_gradual_channel_pruning_observes_training_batches_once_per_update_and_changes_nothing_else() -> None:
    _ObservingL1.seen = []
    torch.manual_seed(0)
    plain, plain_metrics, _ = _prune(build_model("small_resnet", 4), importance("l1"))
    torch.manual_seed(0)
    observed, metrics, train = _prune(build_model("small_resnet", 4), _ObservingL1())
    assert len(_ObservingL1.seen) == metrics["pruning_updates"] >= 3
    pool = {bytes(x.numpy()) for x in (model_input_of(train, i) for i in range(len(train)))}
    for batches in _ObservingL1.seen:
        assert len(batches) == 2
        for x, y in batches:
            assert len(x) == 8 and all(bytes(row.numpy()) in pool for row in x)  # plain training images
    for key, value in plain.state_dict().items():  # the same masks, training and random streams as l1 alone
        assert torch.equal(value, observed.state_dict()[key]), key
    assert metrics["accuracy"] == plain_metrics["accuracy"]
    assert metrics["unit_sparsity"] == plain_metrics["unit_sparsity"]


def test_gradual_channel_pruning_with_taylor_prunes_other_units_than_l1() -> None:
    torch.manual_seed(0)
    by_l1, _, _ = _prune(build_model("small_resnet", 4), importance("l1"), augment="none")
    torch.manual_seed(0)
    by_taylor, metrics, _ = _prune(build_model("small_resnet", 4), TaylorImportance(batches=2), augment="none")
    assert metrics["unit_sparsity"] == pytest.approx(0.5, abs=0.05)
    alive_l1, alive_taylor = alive_units(by_l1, unit_groups(by_l1)), alive_units(by_taylor, unit_groups(by_taylor))
    assert any(not torch.equal(alive_l1[name], alive_taylor[name]) for name in alive_l1)


def model_input_of(dataset, i: int) -> torch.Tensor:
    from trainables.data import model_input

    x, _ = dataset.batch([i], augment=False)
    return model_input(x, "cpu")[0]
