"""EPruning's pieces against their equations (eq. 2-7 of the EPruning paper), and its evaluators."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from trainables.compress.gating import expanded, gated_states
from trainables.compress.units import unit_count, unit_groups
from trainables.stages.epruning import EPruningConfig, _Search, energy_loss
from trainables.stages.evolution import converged, convergence, crossover, donors, init_population, mutate, repair, select
from trainables.stages.population import BatchedEvaluator, ReferenceEvaluator, sample_energies


def test_energy_loss_is_eq3_on_random_logits():
    torch.manual_seed(0)
    logits, target = torch.randn(64, 7) * 3, torch.randint(0, 7, (64,))
    expected = []
    for row, c in zip(logits, target.tolist()):
        energy = -row  # eq. 2
        expected.append(float(energy[c] - min(float(energy[k]) for k in range(7) if k != c)))
    assert energy_loss(logits, target).item() == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_energy_loss_is_negative_exactly_when_the_target_wins():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    per_sample = sample_energies(logits, torch.tensor([0, 0]))
    assert per_sample.tolist() == [-4.0, 2.0]  # margin of the target over the best other class


def test_energy_loss_rejects_a_single_class():
    with pytest.raises(ValueError, match="classes >= 2"):
        energy_loss(torch.zeros(4, 1), torch.zeros(4, dtype=torch.long))


def test_donors_are_three_mutually_different_states_other_than_the_parent():
    gen = torch.Generator().manual_seed(1)
    for size in (4, 5, 8, 16):
        picks = donors(size, gen)
        assert picks.shape == (size, 3)
        for i, (a, b, c) in enumerate(picks.tolist()):
            assert len({a, b, c, i}) == 4
            assert all(0 <= k < size for k in (a, b, c))


def test_donors_need_a_population_of_four():
    with pytest.raises(ValueError, match="at least 4"):
        donors(3, torch.Generator())


def test_mutation_flips_only_where_the_donors_differ_and_r_below_factor():
    gen = torch.Generator().manual_seed(2)
    states = init_population(8, 500, 0.5, gen)
    picks = donors(8, gen)
    replay = torch.Generator().set_state(gen.get_state())
    mutants = mutate(states, 0.3, gen, picks)
    r = torch.rand(states.shape, generator=replay)  # the r_d of eq. 4, drawn in the same order
    base, a, b = states[picks[:, 0]], states[picks[:, 1]], states[picks[:, 2]]
    flipped = mutants != base
    assert torch.equal(flipped, (a != b) & (r < 0.3))
    assert flipped.any() and not flipped[a == b].any()


def test_mutation_factor_bounds():
    gen = torch.Generator().manual_seed(3)
    states = init_population(6, 300, 0.5, gen)
    picks = donors(6, gen)
    base, differ = states[picks[:, 0]], states[picks[:, 1]] != states[picks[:, 2]]
    assert torch.equal(mutate(states, 0.0, gen, picks), base)
    assert torch.equal(mutate(states, 1.0, gen, picks), base ^ differ)


def test_crossover_takes_mutant_units_at_rate_cr():
    gen = torch.Generator().manual_seed(4)
    parents, mutants = init_population(8, 2000, 0.5, gen), init_population(8, 2000, 0.5, gen)
    assert torch.equal(crossover(parents, mutants, 1.0, gen), mutants)
    child = crossover(parents, mutants, 0.25, gen)
    assert torch.all((child == parents) | (child == mutants))
    differ = parents != mutants
    share = (child[differ] == mutants[differ]).float().mean().item()
    assert share == pytest.approx(0.25, abs=0.03)


def test_selection_keeps_the_parent_when_the_child_is_worse():
    parents = torch.tensor([[True, False], [True, True], [False, False]])
    children = ~parents
    states, energies = select(parents, torch.tensor([1.0, 1.0, 1.0]), children, torch.tensor([2.0, 1.0, 0.5]))
    assert torch.equal(states, torch.stack([parents[0], children[1], children[2]]))  # ties go to the child
    assert energies.tolist() == [1.0, 1.0, 0.5]


def test_convergence_is_zero_only_for_an_equal_population():
    assert convergence(torch.tensor([0.3, 0.3, 0.3])) == 0
    assert convergence(torch.tensor([0.1, 0.3, 0.5])) == pytest.approx(-0.2)


def test_a_population_of_equal_states_has_converged_whatever_its_energies():
    same = torch.tensor([[True, False, True]] * 4)
    assert converged(same, torch.tensor([0.1, 0.2, 0.3, 0.4]))  # energies from different batches
    one_differs = torch.tensor([[True, False, True]] * 3 + [[True, True, False]])
    assert not converged(one_differs, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert converged(torch.tensor([[True], [False]]), torch.tensor([0.5, 0.5]))  # Δs = 0 (eq. 7)


class _Counting:
    """A real evaluator that records how many states each call scores."""

    def __init__(self, evaluate):
        self.evaluate, self.calls = evaluate, []

    def __call__(self, model, x, y, states):
        self.calls.append(len(states))
        return self.evaluate(model, x, y, states)


def _search(selection, evaluator="batched", population=6):
    from trainables.models import build_model

    torch.manual_seed(3)
    model = build_model("small_resnet", 5)
    _settle_batchnorm(model, 32)
    layers = unit_groups(model)
    cfg = EPruningConfig(population=population, selection=selection, evaluator=evaluator)
    search = _Search(model, layers, cfg, 0.5, seed=4, device="cpu")
    search.evaluate = _Counting(search.evaluate)
    return search, model, layers


@pytest.mark.parametrize("evaluator", ["batched", "reference"])
def test_rescored_selection_scores_parents_and_children_on_the_same_batch(evaluator):
    search, model, layers = _search("rescored", evaluator)
    batches = [(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))) for _ in range(3)]
    for x, y in batches:
        search.generation(x, y)
        with torch.no_grad():
            model.fc.weight.mul_(1.5)  # the weights move between generations, as in training
    assert search.evaluate.calls == [12, 12, 12]  # one call of 2S states per generation
    x, y = batches[-1]
    with torch.no_grad():
        model.fc.weight.div_(1.5)  # back to the weights of the last generation
    now = ReferenceEvaluator(layers)(model, x, y, search.states)
    assert torch.allclose(search.energies, now, atol=1e-5)  # eq. 6 compared energies of one batch
    assert torch.equal(search.best, search.states[int(now.argmin())])


def test_selection_rescores_parents_by_default():
    assert EPruningConfig().selection == "rescored"  # bench/epruning_selection.py: it prunes better


def test_stored_selection_scores_the_children_only_after_the_first_batch():
    search, _, _ = _search("stored")
    for _ in range(3):
        search.generation(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)))
    assert search.evaluate.calls == [6, 6, 6, 6]  # S^(0) once, then the S children per generation


def test_the_epoch_record_holds_the_share_of_children_accepted():
    search, _, _ = _search("rescored")
    for _ in range(5):
        search.generation(torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,)))
    accepted = search.accepted
    record = search.epoch_end(1, limit=3)
    assert record["acceptance"] == accepted / 30 and 0 < accepted < 30
    assert record["delta_s"] == convergence(search.energies) and not record["converged"]
    assert search.epoch_end(2, limit=3)["acceptance"] == 0.0  # counted per epoch


def test_a_search_whose_states_are_all_equal_stops_before_the_stagnation_threshold():
    search, _, _ = _search("stored")
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 5, (4,))
    search.generation(x, y)
    search.states = search.states[:1].repeat(6, 1)  # collapsed: S copies of one state, s_b
    search.best = search.states[0]
    search.energies = torch.linspace(0.1, 0.6, 6)  # stored energies from different batches: Δs != 0
    record = search.epoch_end(1, limit=10)
    assert record["delta_s"] != 0 and record["converged"] == 1.0
    assert not search.searching and search.search_epochs == 1 < 10
    calls = len(search.evaluate.calls)
    assert torch.equal(search.generation(x, y), search.states[0]) and len(search.evaluate.calls) == calls  # fine-tuning


def test_init_population_is_bernoulli_p():
    states = init_population(64, 1000, 0.3, torch.Generator().manual_seed(5))
    assert states.dtype == torch.bool and states.shape == (64, 1000)
    assert states.float().mean().item() == pytest.approx(0.3, abs=0.01)


def test_repair_holds_the_active_count_keeps_each_layer_alive_and_respects_removed_units():
    gen = torch.Generator().manual_seed(6)
    sizes = [4, 10, 30]
    states = init_population(16, 44, 0.5, gen)
    states[:, :4] = False  # a layer with every unit off
    allowed = torch.ones(44, dtype=torch.bool)
    allowed[10:20] = False  # units an earlier stage removed
    fixed = repair(states, sizes, 12, gen, allowed)
    assert (fixed.sum(dim=1) == 12).all()
    assert not fixed[:, 10:20].any()
    for lo, hi in ((0, 4), (4, 14), (14, 44)):
        assert fixed[:, lo:hi].any(dim=1).all()
    free = repair(states, sizes, None, gen)
    assert torch.equal(free[:, 4:], states[:, 4:])  # only the empty layer changed


SIZES = {"small_resnet": 32, "resnet18": 32, "resnet50": 32, "vgg16": 32, "alexnet": 63, "squeezenet1_1": 48,
         "mobilenet_v2": 32, "efficientnet_b0": 32, "regnet_y_400mf": 32, "densenet121": 32, "user_cnn": 32}


@pytest.mark.parametrize("name", list(SIZES))
def test_batched_energies_equal_the_reference_loop(name):
    from torchvision import models as tvm

    from tests.user_cnn import UserNet
    from trainables.models import SmallResNet

    torch.manual_seed(1)
    builders = {"small_resnet": SmallResNet, "user_cnn": UserNet}
    model = (builders[name](10) if name in builders else tvm.get_model(name, num_classes=10)).eval()
    size = SIZES[name]
    _settle_batchnorm(model, size)
    layers = unit_groups(model)
    states = init_population(4, unit_count(layers), 0.5, torch.Generator().manual_seed(7))
    x, y = torch.randn(3, 3, size, size), torch.randint(0, 5, (3,))
    reference = ReferenceEvaluator(layers)(model, x, y, states)
    batched = BatchedEvaluator(layers)(model, x, y, states)
    assert torch.allclose(batched, reference, atol=1e-5), (batched - reference).abs().max()
    assert reference.unique().numel() > 1  # the states really differ


def test_the_reference_loop_restores_the_weights():
    from trainables.models import build_model

    model = build_model("small_resnet", 5).eval()
    layers = unit_groups(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    states = init_population(4, unit_count(layers), 0.5, torch.Generator().manual_seed(8))
    ReferenceEvaluator(layers)(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), states)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_expanded_runs_the_stem_once_and_the_unit_blocks_on_the_repeated_batch():
    from trainables.models import build_model

    model = build_model("resnet18", 10).eval()
    inside = unit_groups(model, residual=False)  # the first gate is layer1.0.conv1, inside the first block
    batches = []
    for module in (model.conv1, model.layer1[0].conv1):
        module.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        with expanded(model, inside, 3):
            out = model(x)
        assert batches == [2, 6]
        assert torch.allclose(out, model(x).repeat(3, 1), atol=1e-6)
        batches.clear()
        with expanded(model, unit_groups(model), 3):  # the stem's stream is gated at conv1: all repeats
            model(x)
        assert batches == [6, 6]
    assert model(x).shape[0] == 2  # the hook is gone


def _settle_batchnorm(model, size):
    """Non-trivial running statistics, so eval-mode BatchNorm is not the identity."""
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(4, 3, size, size))
    model.eval()


def test_gating_a_unit_zeroes_its_channel_downstream():
    from trainables.models import build_model

    model = build_model("small_resnet", 5).eval()
    layers = unit_groups(model)
    state = torch.ones(unit_count(layers), dtype=torch.bool)
    offset = sum(g.size for g in layers[:[g.name for g in layers].index("layer1.0.conv1")])
    state[offset + 3] = False  # unit 3 of the first block's inner channels
    seen = {}
    model.layer1[0].relu.register_forward_hook(lambda m, a, out: seen.setdefault("relu", out.clone()))
    with gated_states(model, layers, state):
        model(torch.randn(2, 3, 32, 32))
    assert seen["relu"][:, 3].abs().max() == 0
    assert seen["relu"][:, 2].abs().max() > 0


class _Mixed(torch.nn.Module):
    """Parameters and buffers of four element sizes, a buffer shared by two modules, a tied weight."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)  # float32 statistics and an int64 counter
        self.low = torch.nn.Linear(4, 2).to(torch.bfloat16)
        self.wide = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
        self.flags = torch.nn.Module()
        self.flags.register_buffer("on", torch.tensor([True, False, True]))
        self.other = torch.nn.Module()
        self.other.register_buffer("on", self.flags.on)  # one tensor, two holders
        self.tied = torch.nn.Linear(4, 2, bias=False).to(torch.bfloat16)
        self.tied.weight = self.low.weight


def test_a_weight_layout_views_every_tensor_in_one_buffer_at_aligned_offsets():
    from trainables.stages.population import WeightLayout

    torch.manual_seed(0)
    model = _Mixed()
    model.conv.weight.data = model.conv.weight.data.to(memory_format=torch.channels_last)  # strided, not dense
    layout = WeightLayout.of(model)
    assert layout.names == [*dict(model.named_parameters()), *dict(model.named_buffers())]
    assert all(o % 64 == 0 for o in layout.offsets) and layout.total % 64 == 0  # every dtype can view its slice
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flat = layout.gather(model)
    assert flat.dtype == torch.uint8 and flat.numel() == layout.total
    layout.bind(model, flat)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    for name in layout.names:
        tensor = model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        assert tensor.untyped_storage().data_ptr() == flat.untyped_storage().data_ptr(), name
    assert model.other.on is model.flags.on and model.tied.weight is model.low.weight
    flat.zero_()
    assert not model.conv.weight.any() and not model.other.on.any() and not model.tied.weight.any()


def test_a_weight_layout_refuses_a_model_that_changed_shape():
    from trainables.stages.population import WeightLayout

    model = _Mixed()
    layout = WeightLayout.of(model)
    model.wide = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"model: wide must be torch.float64 \(3,\) .* but got torch.float64 \(4,\)"):
        layout.gather(model)


def test_the_shipper_sends_only_the_tensors_that_changed_and_nothing_twice():
    from trainables.stages.population import WeightShipper, apply_changes

    torch.manual_seed(1)
    model = _Mixed()
    shipper = WeightShipper(model)
    mirror = copy.deepcopy(model)  # what an actor holds: its copy of the model at start, bound to its buffer
    flat = shipper.layout.gather(mirror)
    shipper.layout.bind(mirror, flat)

    def deliver():
        changes = shipper.changes(model)
        if changes is not None:
            arrays, tensors = changes
            apply_changes(shipper.layout, flat, arrays, tensors)
            changes = sum(a.nbytes for a in arrays), tensors
        shipper.commit()
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), mirror.state_dict().values()))
        return changes

    assert deliver() is None  # nothing changed since the start
    with torch.no_grad():
        model.conv.bias.add_(1.0)
        model.bn.running_mean.add_(0.5)
    nbytes, tensors = deliver()
    assert [shipper.layout.names[i] for i in tensors] == ["conv.bias", "bn.running_mean"]
    assert nbytes == 2 * 4 * 4
    assert deliver() is None  # the same weights again (stored selection's first generation)
    model.train()
    model.bn(torch.randn(2, 4, 3, 3))  # a training forward: running statistics and the counter move
    nbytes, tensors = deliver()
    assert {shipper.layout.names[i] for i in tensors} == {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1)
        model.flags.on.logical_not_()
        model.bn.running_var.add_(1)
        model.bn.running_mean.add_(1)
        model.bn.num_batches_tracked.add_(1)
    nbytes, tensors = deliver()
    assert tensors is None and nbytes == sum(shipper.layout.sizes)  # everything, no index
    with torch.no_grad():
        model.conv.weight.mul_(2)
    shipper.changes(model)
    shipper.forget()  # that delivery failed: the actor's copy is unknown
    nbytes, tensors = deliver()
    assert tensors is None and nbytes == sum(shipper.layout.sizes)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")
def test_the_shipper_on_cuda_sends_pinned_host_bytes_that_an_actors_cuda_buffer_takes():
    """The GPU path of the actor pool without Ray: driver and actor on the GPU, the bytes in between
    on the host as one array from one pinned copy; energies as the reference loop's."""
    from trainables.models import build_model
    from trainables.stages.population import WeightShipper, apply_changes

    torch.manual_seed(4)
    model = build_model("small_resnet", 5).cuda().eval()
    layers = unit_groups(model)
    shipper = WeightShipper(model)
    assert shipper.host is not None and shipper.host.is_pinned()
    actor = copy.deepcopy(model)  # an actor's copy, on its own device buffer
    flat = shipper.layout.gather(actor)
    shipper.layout.bind(actor, flat)
    assert flat.is_cuda and shipper.changes(model) is None
    with torch.no_grad():
        model.fc.weight.mul_(3.0)
        for p in model.layer1.parameters():
            p.add_(0.01)
    arrays, tensors = shipper.changes(model)
    assert len(arrays) == 1 and isinstance(arrays[0], np.ndarray)
    assert {shipper.layout.names[i].split(".")[0] for i in tensors} == {"fc", "layer1"}
    apply_changes(shipper.layout, flat, arrays, tensors)
    shipper.commit()
    states = init_population(4, unit_count(layers), 0.5, torch.Generator().manual_seed(5))
    x, y = torch.randn(2, 3, 32, 32, device="cuda"), torch.tensor([0, 3], device="cuda")
    expected = ReferenceEvaluator(layers)(model, x, y, states)
    assert torch.allclose(BatchedEvaluator(layers)(actor, x, y, states), expected, atol=1e-5)
    assert shipper.changes(model) is None


class _DeviceLimit(torch.nn.Module):
    """Raises the out-of-memory error a device gives when more than ``limit`` images come at once."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.seen = limit, []

    def forward(self, x):
        self.seen.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("out of memory (test device limit)")
        return x


@pytest.mark.parametrize("chunk", [None, 3])
def test_batched_halves_its_chunk_when_the_device_runs_out_of_memory(chunk):
    from trainables.models import build_model

    torch.manual_seed(2)
    model = build_model("small_resnet", 5).eval()
    layers = unit_groups(model)
    states = init_population(8, unit_count(layers), 0.5, torch.Generator().manual_seed(3))
    x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 5, (2,))
    expected = ReferenceEvaluator(layers)(model, x, y, states)
    limit = _DeviceLimit(4)  # 2 candidates of 2 images fit, 3 or more do not
    model.layer2.register_forward_pre_hook(lambda m, args: (limit(args[0]),))
    evaluator = BatchedEvaluator(layers, chunk=chunk)
    assert torch.allclose(evaluator(model, x, y, states), expected, atol=1e-5)
    assert evaluator.chunk == 2
    del limit.seen[:]
    evaluator(model, x, y, states)
    assert limit.seen == [4] * 4  # the smaller chunk is kept: no failed try on the next call


def test_batched_lets_an_out_of_memory_error_through_at_one_candidate():
    from trainables.models import build_model

    model = build_model("small_resnet", 5).eval()
    layers = unit_groups(model)
    model.layer2.register_forward_pre_hook(lambda m, args: (_DeviceLimit(1)(args[0]),))
    states = init_population(4, unit_count(layers), 0.5, torch.Generator().manual_seed(3))
    with pytest.raises(torch.OutOfMemoryError):
        BatchedEvaluator(layers)(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 1]), states)
