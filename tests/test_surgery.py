"""Unit surgery: the shrunk, zeroed and gated views of a unit-pruned network compute the same thing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from trainables.compress.masks import is_masked, make_permanent, sparsity_kept
from trainables.compress.surgery import alive_units, gated, shrink, zero_units
from trainables.compress.units import gate_batchnorm, unit_layers
from trainables.errors import FrontierError
from trainables.measure.metrics import export_onnx
from trainables.models import MIN_INPUT_SIZE, build_model

# (architecture, batch); inputs are 32 px, or the architecture's minimum
ARCHITECTURES = [
    ("small_resnet", 2),
    ("resnet18", 2),
    ("resnet34", 1),
    ("resnet50", 1),
    pytest.param("resnet101", 1, marks=pytest.mark.slow),
    pytest.param("resnet152", 1, marks=pytest.mark.slow),
    pytest.param("vgg16", 1, marks=pytest.mark.slow),
    ("alexnet", 1),
    ("squeezenet1_1", 2),
]


def randomized(name: str, seed: int = 0) -> nn.Module:
    """``name`` with 10 classes, in eval mode, its BatchNorm statistics and affine terms and every
    bias random: torchvision initialises them to constants (mean 0, var 1, beta 0, biases 0),
    under which slicing the wrong entries would go unnoticed. A BatchNorm that ends a residual
    branch gets a small gamma, as in trained ResNets, so the outputs of the deep ones stay near 1
    and an absolute tolerance means something."""
    torch.manual_seed(seed)
    model = build_model(name, 10)
    gates = {unit.gate for unit in unit_layers(model)}
    with torch.no_grad():
        for module_name, module in model.named_modules():
            if isinstance(module, nn.BatchNorm2d):
                residual = module_name.startswith("layer") and module_name not in gates
                module.weight.uniform_(0.2, 0.5) if residual else module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                module.bias.normal_(0, 0.01)
    return model.eval()


def random_keep(model: nn.Module, seed: int = 1, p: float = 0.5) -> dict[str, torch.Tensor]:
    """Each unit kept with probability ``p``; every layer keeps at least one unit."""
    g = torch.Generator().manual_seed(seed)
    keep = {}
    for unit in unit_layers(model):
        vector = torch.rand(unit.size, generator=g) < p
        vector[torch.randint(unit.size, (1,), generator=g)] = True
        keep[unit.name] = vector
    return keep


def image(name: str, batch: int) -> torch.Tensor:
    size = MIN_INPUT_SIZE.get(name, 32)
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


@pytest.mark.parametrize("name,batch", ARCHITECTURES)
@torch.no_grad()
def test_shrink_and_zero_units_match_the_gated_model(name: str, batch: int) -> None:
    model = randomized(name)
    keep = random_keep(model)
    x = image(name, batch)
    dense = model(x)
    with gated(model, keep):
        reference = model(x)
    scale = float(reference.abs().max())
    assert float((reference - dense).abs().max()) > 1e-3 * scale, "gating half the units must change the outputs"

    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = shrink(model, keep)
    diff = float((small(x) - reference).abs().max())
    assert diff < 1e-4 and diff <= 1e-4 * scale, (diff, scale)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "shrink changed its input"
    assert_consistent(small)
    assert not small.training
    removed = sum(int((~k).sum()) for k in keep.values())
    kept_units = sum(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
                     for m in (small.get_submodule(u.name) for u in unit_layers(small)))
    assert kept_units == sum(u.size for u in unit_layers(model)) - removed
    assert n_params(small) < n_params(model)

    zero_units(model, keep)  # in place, on the original
    diff = float((model(x) - reference).abs().max())
    assert diff < 1e-4 and diff <= 1e-4 * scale, (diff, scale)
    found = alive_units(model)
    assert set(found) == set(keep)
    for layer, vector in keep.items():
        assert torch.equal(found[layer], vector), layer


@pytest.mark.parametrize("name,batch", [("resnet18", 1), ("resnet50", 1), ("alexnet", 1), ("squeezenet1_1", 2)])
def test_shrunk_models_export_and_run_in_onnx_runtime(name: str, batch: int, tmp_path) -> None:
    import onnxruntime as ort

    model = randomized(name)
    small = shrink(model, random_keep(model))
    x = image(name, batch)
    path = export_onnx(small, tmp_path / f"{name}.onnx", tuple(x.shape[1:]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = small(x).numpy()
    assert np.abs(got - expected).max() < 1e-4


def test_shrink_refuses_to_empty_a_layer_and_checks_the_masks() -> None:
    model = randomized("small_resnet")
    with pytest.raises(FrontierError, match=r"keep\['layer2.0.conv1'\] removes all 32 units of layer 'layer2.0.conv1'"):
        shrink(model, {"layer2.0.conv1": torch.zeros(32, dtype=torch.bool)})
    with pytest.raises(FrontierError, match="'layer2.0.conv2' is not a unit layer of this model"):
        shrink(model, {"layer2.0.conv2": torch.ones(32, dtype=torch.bool)})
    with pytest.raises(FrontierError, match=r"keep\['layer1.0.conv1'\] must be a bool tensor of shape \(16,\) "
                                            r"but got torch.float32 \(16,\)"):
        shrink(model, {"layer1.0.conv1": torch.ones(16)})
    with pytest.raises(FrontierError, match=r"shape \(16,\) but got torch.bool \(15,\)"):
        shrink(model, {"layer1.0.conv1": torch.ones(15, dtype=torch.bool)})


@torch.no_grad()
def test_alive_units_keep_one_unit_of_an_all_dead_layer_so_shrink_accepts_them() -> None:
    model = randomized("small_resnet")
    keep = {"layer1.0.conv1": torch.zeros(16, dtype=torch.bool), "layer3.0.conv1": torch.arange(64) < 5}
    x = image("small_resnet", 2)
    with gated(model, keep):  # gating may silence a whole layer
        reference = model(x)
    zero_units(model, keep)
    found = alive_units(model)
    assert int(found["layer1.0.conv1"].sum()) == 1 and bool(found["layer1.0.conv1"][0])
    assert torch.equal(found["layer3.0.conv1"], keep["layer3.0.conv1"])
    small = shrink(model, found)
    assert small.layer1[0].conv1.out_channels == 1 and small.layer3[0].conv2.in_channels == 5
    assert float((small(x) - reference).abs().max()) < 1e-5


def test_alive_units_sees_a_self_gated_layer_only_when_weights_and_bias_are_zero() -> None:
    model = randomized("squeezenet1_1")  # every unit layer gates itself (no BatchNorm)
    squeeze = model.features[3].squeeze
    with torch.no_grad():
        squeeze.weight[2].zero_()
        squeeze.weight[5].zero_()
        squeeze.bias[5] = 0.0
    found = alive_units(model)["features.3.squeeze"]
    assert bool(found[2]), "a zero row with a nonzero bias still outputs its bias"
    assert not bool(found[5])
    assert int((~found).sum()) == 1


@torch.no_grad()
def test_shrink_copies_a_masked_model_and_keeps_modes_and_the_input_masks() -> None:
    model = randomized("small_resnet").train()
    model.layer2.eval()  # a mixed-mode model keeps each module's mode
    prune.l1_unstructured(model.layer1[0].conv2, "weight", amount=0.5)
    keep = random_keep(model)
    small = shrink(model, keep)
    assert is_masked(model) and not is_masked(small)
    assert small.training and not small.layer2.training
    assert float((small.layer1[0].conv2.weight == 0).float().mean()) > 0.4  # the mask was folded in
    model.eval(), small.eval()
    x = image("small_resnet", 2)
    with gated(model, keep):
        assert float((small(x) - model(x)).abs().max()) < 1e-5


def test_zero_units_reaches_through_pruning_masks_and_training_keeps_dead_units_dead() -> None:
    model = randomized("resnet18").train()
    keep = random_keep(model)
    prune.l1_unstructured(model.layer1[0].conv1, "weight", amount=0.3)  # a masked unit layer
    zero_units(model, keep)
    assert torch.equal(alive_units(model)["layer1.0.conv1"], keep["layer1.0.conv1"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    with sparsity_kept(model):  # a later stage (transfer, a second pruning) trains the model
        for _ in range(2):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(image("resnet18", 4)), torch.tensor([0, 1, 2, 3])).backward()
            optimizer.step()
    assert not is_masked(make_permanent(model)), "BatchNorm masks must become permanent too"
    found = alive_units(model)
    for layer, vector in keep.items():
        assert torch.equal(found[layer], vector), f"{layer}: a dead unit came back to life"
        assert gate_batchnorm(model, next(u for u in unit_layers(model) if u.name == layer)) is not None
