"""Unit surgery: the shrunk, zeroed and gated views of a unit-pruned network compute the same thing,
on every architecture frontier names and on a user's own CNN, residual streams included."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torchvision import models as tvm

from tests.user_cnn import UserNet
from trainables.compress.masks import is_masked, make_permanent, sparsity_kept
from trainables.compress.surgery import alive_units, gated, scoring_copy, shrink, zero_units
from trainables.compress.units import unit_groups
from trainables.errors import FrontierError
from trainables.measure.metrics import export_onnx
from trainables.models import SmallResNet

# (architecture, input size): the list, frontier's small ResNet and a user's CNN
ARCHITECTURES = [
    ("small_resnet", 32),
    ("user_cnn", 32),
    ("resnet18", 32),
    ("resnet34", 32),
    ("resnet50", 32),
    pytest.param("resnet101", 32, marks=pytest.mark.slow),
    pytest.param("resnet152", 32, marks=pytest.mark.slow),
    pytest.param("vgg16", 32, marks=pytest.mark.slow),
    ("alexnet", 64),
    ("squeezenet1_1", 32),
    ("mobilenet_v2", 32),
    ("mobilenet_v3_large", 32),
    ("efficientnet_b0", 32),
    ("regnet_y_400mf", 32),
    ("convnext_tiny", 32),
    pytest.param("densenet121", 32, marks=pytest.mark.slow),  # 22 s (now checked by measure too)
]


def test_every_checked_architecture_is_covered_here() -> None:
    from trainables.models import CHECKED_ARCHITECTURES

    names = {p.values[0] if hasattr(p, "values") else p[0] for p in ARCHITECTURES}
    assert names - {"user_cnn"} == set(CHECKED_ARCHITECTURES)


def build(name: str) -> nn.Module:
    if name == "small_resnet":
        return SmallResNet(10)
    if name == "user_cnn":
        return UserNet(10)
    return tvm.get_model(name, num_classes=10)


def randomized(name: str, seed: int = 0, size: int = 32) -> nn.Module:
    """``name`` with 10 classes, in eval mode, its normalisation statistics and affine terms and
    every bias random: torchvision initialises them to constants (mean 0, var 1, beta 0, biases 0,
    some gammas 0), under which slicing the wrong entries would go unnoticed. A BatchNorm in a
    residual stream gets a small gamma, as in trained networks, so the outputs of the deep ones
    stay near 1, and the head is scaled so that they are about 1: an absolute tolerance means something."""
    torch.manual_seed(seed)
    model = build(name)
    stream = {m.name for g in unit_groups(model) if g.joined for m in g.gates}
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.2, 0.5) if module_name in stream else module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.normal_(0, 0.01)
        for param_name, param in model.named_parameters():
            if param_name.endswith("layer_scale"):  # ConvNeXt starts them at 1e-6: its blocks would do nothing
                param.uniform_(0.1, 0.3)
        model.eval()
        head = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        scale = float(model(image(size)).abs().max())  # a head initialised at std 0.01 (SqueezeNet): outputs ~1
        head.weight /= scale
        head.bias /= scale
    return model


def random_keep(model: nn.Module, seed: int = 1, p: float = 0.5) -> dict[str, torch.Tensor]:
    """Each unit kept with probability ``p``; every group keeps at least one unit."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for group in unit_groups(model):
        vector = torch.rand(group.size, generator=g) < p
        vector[torch.randint(group.size, (1,), generator=g)] = True
        keep[group.name] = vector
    return keep


def image(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(2))


def assert_consistent(model: nn.Module) -> None:
    """Every conv/linear/BN attribute agrees with its tensors' shapes."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            assert tuple(m.weight.shape[:2]) == (m.out_channels, m.in_channels // m.groups), name
        elif isinstance(m, nn.Linear):
            assert tuple(m.weight.shape) == (m.out_features, m.in_features), name
        elif isinstance(m, nn.BatchNorm2d):
            shapes = {m.weight.shape, m.bias.shape, m.running_mean.shape, m.running_var.shape}
            assert shapes == {(m.num_features,)}, name
        if getattr(m, "bias", None) is not None and isinstance(m, (nn.Conv2d, nn.Linear)):
            assert m.bias.shape[0] == m.weight.shape[0], name


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,size", ARCHITECTURES)
def test_shrunk_zeroed_and_gated_models_agree_and_the_shrunk_one_runs_in_onnx_runtime(
        name: str, size: int, tmp_path) -> None:
    import onnxruntime as ort

    model = randomized(name, size=size)
    keep = random_keep(model)
    x = image(size)
    with torch.no_grad():
        dense = model(x)
        with gated(model, keep):
            reference = model(x)
    scale = float(reference.abs().max())
    assert scale > 1e-3, f"outputs near 0 ({scale}) would make the tolerance meaningless"
    assert float((reference - dense).abs().max()) > 1e-3 * scale, "gating half the units must change the outputs"

    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = shrink(model, keep)
    with torch.no_grad():
        diff = float((small(x) - reference).abs().max())
    assert diff < 1e-4 and diff < 1e-3 * scale, (diff, scale)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "shrink changed its input"
    assert_consistent(small)
    assert not small.training
    assert n_params(small) < 0.8 * n_params(model)

    path = export_onnx(small, tmp_path / f"{name}.onnx", tuple(x.shape[1:]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(got - reference.numpy()).max() < min(1e-4, 1e-3 * scale)

    zero_units(model, keep)  # in place, on the original
    with torch.no_grad():
        diff = float((model(x) - reference).abs().max())
    assert diff < 1e-4 and diff < 1e-3 * scale, (diff, scale)
    found = alive_units(model)
    assert set(found) == set(keep)
    for group, vector in keep.items():
        assert torch.equal(found[group], vector), group


def test_the_residual_stream_is_a_unit_group_pruned_in_every_layer_it_runs_through() -> None:
    model = randomized("resnet18")
    stream = next(g for g in unit_groups(model) if g.name == "conv1")
    assert stream.joined and stream.size == 64
    gates = {m.name for m in stream.gates}
    assert {"conv1", "bn1", "layer1.0.bn2", "layer1.1.bn2"} <= gates
    readers = {m.name for m in stream.readers}
    assert {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"} <= readers
    small = shrink(model, {"conv1": torch.arange(64) < 16})
    assert (small.conv1.out_channels, small.layer1[0].conv2.out_channels, small.layer1[1].bn2.num_features) == (16,) * 3
    assert small.layer2[0].conv1.in_channels == small.layer2[0].downsample[0].in_channels == 16


def test_residual_false_leaves_only_channels_inside_blocks() -> None:
    model = build("resnet50")
    inside = unit_groups(model, residual=False)
    assert inside and not any(g.joined for g in inside)
    blocks = {f"{b}.{c}" for b, _ in _bottlenecks(model) for c in ("conv1", "conv2")}
    assert {g.name for g in inside} == blocks | {"conv1"}  # the stem feeds layer1's downsample: no add
    every = unit_groups(model)
    assert len(every) == len(inside) + 4  # the four stages' streams


def _bottlenecks(model: nn.Module):
    from torchvision.models.resnet import Bottleneck

    return [(n, m) for n, m in model.named_modules() if isinstance(m, Bottleneck)]


def test_groups_join_concatenations_depthwise_convs_and_products_on_a_users_model() -> None:
    model = build("user_cnn")
    groups = {g.name: g for g in unit_groups(model)}
    stem = groups["stem.0"]
    assert stem.joined and {"stem.1", "res_b.1"} <= {m.name for m in stem.gates}
    # the concatenation: right's channels are read by expand at an offset of 16
    right = groups["right.0"]
    expand_in = next(m for m in right.readers if m.name == "expand.0")
    assert expand_in.channels == tuple(range(16, 24))
    # the depthwise conv and the squeeze-excitation's product share expand's units
    expand = groups["expand.0"]
    assert {"expand.1", "depthwise.0", "depthwise.1", "squeeze.3"} <= {m.name for m in expand.gates}
    assert not expand.joined, "a product is not a residual stream"
    assert "classifier" not in {m.name for g in groups.values() for m in g.gates}, "the head's outputs are never units"


def test_groups_that_cannot_be_removed_exactly_are_left_out_with_the_reason() -> None:
    from trainables.compress.units import excluded

    convnext = build("convnext_tiny")
    reasons = excluded(convnext)
    assert reasons and all("LayerNorm" in why for why in reasons.values())
    regnet = build("regnet_y_400mf")
    assert not excluded(regnet), "grouped convolutions are units now (one position of every group)"
    grouped = [m for g in unit_groups(regnet) for m in g.members if m.name == "trunk_output.block1.block1-0.f.b.0"]
    assert {(m.role, m.spread) for m in grouped} == {("in", 6), ("out", 6)}  # 48 channels in 6 groups of 8


def test_a_model_that_cannot_be_traced_gets_one_line() -> None:
    class NoConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    with pytest.raises(FrontierError, match="has no Conv2d; frontier prunes CNNs"):
        unit_groups(NoConv())

    class Picky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 5 * 5, 2)

        def forward(self, x):
            return self.fc(self.conv(x).flatten(1))

    with pytest.raises(FrontierError, match=r"runs on no 1x3xSxS image \(S = 64, 224, 32\)"):
        unit_groups(Picky())


def test_layer_patterns_choose_groups_by_any_of_their_gates() -> None:
    model = build("resnet18")
    chosen = unit_groups(model, ["layer3.1.*"])
    assert {g.name for g in chosen} == {"layer3.0.conv2", "layer3.1.conv1"}  # layer3's stream, a block
    with pytest.raises(FrontierError, match=r"layers: \['nothing.\*'\] match no unit group"):
        unit_groups(model, ["nothing.*"])


def test_shrink_refuses_to_empty_a_group_and_checks_the_masks() -> None:
    model = randomized("small_resnet")
    with pytest.raises(FrontierError, match=r"keep\['layer2.0.conv1'\] removes all 32 units of group 'layer2.0.conv1'"):
        shrink(model, {"layer2.0.conv1": torch.zeros(32, dtype=torch.bool)})
    with pytest.raises(FrontierError, match="'layer2.0.bn2' is not a unit group of this model"):
        shrink(model, {"layer2.0.bn2": torch.ones(32, dtype=torch.bool)})
    with pytest.raises(FrontierError, match=r"keep\['layer1.0.conv1'\] must be a bool tensor of shape \(16,\) "
                                            r"but got torch.float32 \(16,\)"):
        shrink(model, {"layer1.0.conv1": torch.ones(16)})
    with pytest.raises(FrontierError, match=r"shape \(16,\) but got torch.bool \(15,\)"):
        shrink(model, {"layer1.0.conv1": torch.ones(15, dtype=torch.bool)})


@torch.no_grad()
def test_alive_units_keep_one_unit_of_an_all_dead_group_so_shrink_accepts_them() -> None:
    model = randomized("small_resnet")
    keep = {"layer1.0.conv1": torch.zeros(16, dtype=torch.bool), "layer3.0.conv1": torch.arange(64) < 5}
    x = image(32)
    with gated(model, keep):  # gating may silence a whole group
        reference = model(x)
    zero_units(model, keep)
    found = alive_units(model)
    assert int(found["layer1.0.conv1"].sum()) == 1 and bool(found["layer1.0.conv1"][0])
    assert torch.equal(found["layer3.0.conv1"], keep["layer3.0.conv1"])
    small = shrink(model, found)
    assert small.layer1[0].conv1.out_channels == 1 and small.layer3[0].conv2.in_channels == 5
    assert float((small(x) - reference).abs().max()) < 1e-5


def test_a_unit_is_dead_only_when_every_gate_of_its_group_outputs_zero() -> None:
    model = randomized("squeezenet1_1")  # every gate is a conv (no BatchNorm)
    squeeze = model.features[3].squeeze
    with torch.no_grad():
        squeeze.weight[2].zero_()
        squeeze.weight[5].zero_()
        squeeze.bias[5] = 0.0
    found = alive_units(model)["features.3.squeeze"]
    assert bool(found[2]), "a zero row with a nonzero bias still outputs its bias"
    assert not bool(found[5])
    assert int((~found).sum()) == 1
    resnet = randomized("resnet18")
    with torch.no_grad():  # a stream channel dead in the stem but fed by layer1's blocks is alive
        resnet.bn1.weight[3] = resnet.bn1.bias[3] = 0.0
        resnet.conv1.weight[3].zero_()
    assert bool(alive_units(resnet)["conv1"][3])


@torch.no_grad()
def test_shrink_copies_a_masked_model_and_keeps_modes_and_the_input_masks() -> None:
    model = randomized("small_resnet").train()
    model.layer2.eval()  # a mixed-mode model keeps each module's mode
    prune.l1_unstructured(model.layer1[0].conv2, "weight", amount=0.5)
    keep = random_keep(model)
    small = shrink(model, keep)
    assert is_masked(model) and not is_masked(small)
    assert small.training and not small.layer2.training
    model.eval(), small.eval()
    x = image(32)
    with gated(model, keep):
        assert float((small(x) - model(x)).abs().max()) < 1e-5


def test_zero_units_reaches_through_pruning_masks_and_training_keeps_dead_units_dead() -> None:
    model = randomized("resnet18").train()
    keep = random_keep(model)
    prune.l1_unstructured(model.layer1[0].conv1, "weight", amount=0.3)  # a masked gate
    zero_units(model, keep)
    assert torch.equal(alive_units(model)["layer1.0.conv1"], keep["layer1.0.conv1"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    with sparsity_kept(model):  # a later stage (transfer, a second pruning) trains the model
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(image(32, 4)), torch.tensor([0, 1, 2, 3])).backward()
            optimizer.step()
    assert not is_masked(make_permanent(model)), "BatchNorm masks must become permanent too"
    found = alive_units(model)
    for group, vector in keep.items():
        assert torch.equal(found[group], vector), f"{group}: a dead unit came back to life"


def test_a_pruned_model_is_scored_on_its_smaller_copy_and_a_dense_one_as_it_is() -> None:
    """What the stages evaluate a pruned model on: its dead units removed, the same outputs, and the
    caller's model untouched; a model with no dead unit is scored as it is (nothing to gain)."""
    model = randomized("resnet18")
    assert scoring_copy(model, (3, 32, 32), "cpu") is model
    zero_units(model, random_keep(model, p=0.3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    scored = scoring_copy(model, (3, 32, 32), "cpu")
    assert scored is not model and n_params(scored) < 0.3 * n_params(model)
    with torch.no_grad():
        assert torch.allclose(scored(image(32)), model(image(32)), atol=1e-4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
