"""Model registry: every checked architecture with a new head found from the graph, a user's own
model by ``module:function`` (its head, weights and each of its errors as one line), local weights
and weight-file errors."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from tests.user_models import write_user_package
from trainables.errors import FrontierError, WeightsError
from trainables.models import (
    CHECKED_ARCHITECTURES,
    MIN_INPUT_SIZE,
    TORCHVISION_ARCHITECTURES,
    architecture,
    build_model,
    head,
    head_key,
    head_name,
    head_size,
    rebuild,
    replace_head,
    structure,
    user_model_path,
)
from trainables.stages.dense import Dense, DenseConfig

# the classifier head of each checked architecture, read from torchvision's source
EXPECTED_HEAD = {
    "small_resnet": "fc", **{f"resnet{d}": "fc" for d in (18, 34, 50, 101, 152)}, "vgg16": "classifier.6",
    "alexnet": "classifier.6", "squeezenet1_1": "classifier.1", "mobilenet_v2": "classifier.1",
    "mobilenet_v3_large": "classifier.3", "efficientnet_b0": "classifier.1", "regnet_y_400mf": "fc",
    "convnext_tiny": "classifier.2", "densenet121": "classifier",
}


def test_the_checked_architectures_are_the_issues_list_and_all_accepted() -> None:
    assert set(EXPECTED_HEAD) == set(CHECKED_ARCHITECTURES)
    assert set(CHECKED_ARCHITECTURES) - {"small_resnet"} <= set(TORCHVISION_ARCHITECTURES)
    assert len(TORCHVISION_ARCHITECTURES) >= 80 and "fasterrcnn_resnet50_fpn" not in TORCHVISION_ARCHITECTURES


@pytest.mark.parametrize("name", CHECKED_ARCHITECTURES)
def test_every_checked_architecture_builds_with_a_new_head_found_by_the_graph(name: str) -> None:
    model = build_model(name, 7).eval()
    assert head_name(model) == EXPECTED_HEAD[name] and head_key(name) == EXPECTED_HEAD[name] + ".weight"
    size = MIN_INPUT_SIZE.get(name, 32)
    with torch.no_grad():
        assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
        replace_head(model, 3)
        assert head_size(model) == 3 and head(model) is model.get_submodule(EXPECTED_HEAD[name])
        assert model(torch.randn(2, 3, size, size)).shape == (2, 3)


def test_head_search_leaves_the_model_as_it_was() -> None:
    from trainables.models import SmallResNet

    model = SmallResNet(5, blocks=(2, 1, 1)).train()  # a structure no other test built: its head is searched
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert head_name(model) == "fc"
    assert model.training and not model.layer1.training and model.layer2.training
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "batch-norm statistics moved"


def test_head_is_found_once_per_structure() -> None:
    runs = []
    first, second = build_model("resnet18", 4), build_model("resnet18", 9)
    head_name(first)
    second.register_forward_hook(lambda *_: runs.append(1))
    assert head_name(second) == "fc" and runs == [], "the same structure is not run again"


def test_regnet_structure_is_on_the_meta_device() -> None:
    model = structure("regnet_y_400mf")  # RegNet cannot be built under torch.device("meta") itself
    assert all(p.is_meta for p in model.parameters()) and head_size(model) == 2


def test_weights_load_and_head_is_replaced(tmp_path: Path) -> None:
    source = build_model("small_resnet", 5)
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    model = build_model("small_resnet", 3, weights=str(path))
    assert head_size(model) == 3
    body = {k: v for k, v in source.state_dict().items() if not k.startswith("fc.")}
    for k, v in body.items():
        assert torch.equal(model.state_dict()[k], v), k
    kept = build_model("small_resnet", None, weights=str(path))
    assert torch.equal(head(kept).weight, source.fc.weight)
    again = rebuild("squeezenet1_1", build_model("squeezenet1_1", 6).state_dict())
    assert head_size(again) == 6


def test_missing_weights_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nope.pt' does not exist"):
        build_model("resnet18", 5, weights=str(tmp_path / "nope.pt"))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pt"
    torch.save(tvm.resnet34(num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError, match=r"do not fit resnet18: .*unexpected keys"):
        build_model("resnet18", 5, weights=str(path))


def test_weights_without_the_head_key_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "vgg.pt"
    torch.save(tvm.resnet18(num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError, match=r"no 'classifier.6.weight' entry, so they are not a vgg16 state dict"):
        build_model("vgg16", 5, weights=str(path))


def test_weights_with_wrong_shapes_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "wide.pt"
    from trainables.models import SmallResNet

    torch.save(SmallResNet(10, widths=(16, 32, 128)).state_dict(), path)
    with pytest.raises(WeightsError, match=r"shape of 'fc.weight' is \(10, 128\), small_resnet needs \(10, 64\)"):
        build_model("small_resnet", 5, weights=str(path))


def test_non_state_dict_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "junk.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt' is not a readable torch state dict"):
        build_model("resnet18", 5, weights=str(path))


def test_torchvision_enum_reads_only_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="not in torch's cache"):
        build_model("squeezenet1_1", 4, weights="torchvision:IMAGENET1K_V1")
    with pytest.raises(WeightsError, match="'NOPE' is not a torchvision weight of squeezenet1_1"):
        build_model("squeezenet1_1", 4, weights="torchvision:NOPE")
    url = tvm.SqueezeNet1_1_Weights.IMAGENET1K_V1.url
    (tmp_path / "checkpoints").mkdir()
    reference = tvm.squeezenet1_1(num_classes=1000)
    torch.save(reference.state_dict(), tmp_path / "checkpoints" / Path(url).name)
    model = build_model("squeezenet1_1", 4, weights="torchvision:IMAGENET1K_V1")
    assert head_size(model) == 4
    assert torch.equal(model.features[0].weight, reference.features[0].weight)


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(FrontierError, match="unknown architecture 'resnet9'; known: small_resnet, alexnet, .*resnet18"):
        build_model("resnet9", 5)
    with pytest.raises(FrontierError, match=r"'a\.b:c:d' is not of the form 'package.module:function'"):
        architecture("a.b:c:d")


# --- the user's own model -------------------------------------------------------------------------

@pytest.fixture
def user_pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """A fresh package (its own name, so no test sees another's import) in a folder on sys.path."""
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(sys, "path", [*sys.path, write_user_package(tmp_path, package)])
    return package, tmp_path


def test_user_model_head_is_found_and_replaced(user_pkg: tuple[str, Path]) -> None:
    package, _ = user_pkg
    model = build_model(f"{package}.nets:build", 3).eval()
    assert head_name(model) == "classifier.1" and model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    shuffled = build_model(f"{package}.nets:build_out_of_order", 3).eval()
    assert head_name(shuffled) == "logits", "the Linear that runs last, not the one declared last"
    assert shuffled.spare.out_features == 99 and shuffled(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    conv = build_model(f"{package}.nets:build_conv_head", 5).eval()
    assert head_name(conv) == "head" and isinstance(conv.head, nn.Conv2d) and head_size(conv) == 5
    assert conv(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert head_key(f"{package}.nets:build") == "classifier.1.weight"


def test_user_model_weights_round_trip(user_pkg: tuple[str, Path], tmp_path: Path) -> None:
    name = f"{user_pkg[0]}.nets:build"
    trained = build_model(name, 4)
    path = tmp_path / "user.pt"
    torch.save(trained.state_dict(), path)
    kept = build_model(name, None, weights=str(path))
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in kept.state_dict().items())
    moved = build_model(name, 2, weights=str(path))
    assert head_size(moved) == 2 and torch.equal(moved.body[0].weight, trained.body[0].weight)
    again = rebuild(name, trained.state_dict())
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in again.state_dict().items())
    torch.save(build_model(f"{user_pkg[0]}.nets:build_conv_head", 4).state_dict(), path)
    with pytest.raises(WeightsError, match=rf"weights '{path}': no 'classifier.1.weight' entry"):
        build_model(name, 4, weights=str(path))
    bad = trained.state_dict()
    bad["body.0.weight"] = torch.zeros(16, 3, 5, 5)
    torch.save(bad, path)
    with pytest.raises(WeightsError, match=rf"do not fit {name}: shape of 'body.0.weight' is \(16, 3, 5, 5\)"):
        build_model(name, 4, weights=str(path))


USER_ERRORS = [
    ("nets:build", r"module 'nets' is not importable \(not found on sys.path or in the current folder"),
    ("{pkg}.absent:build", "module '{pkg}.absent' is not importable"),
    ("{pkg}.broken:build", "importing '{pkg}.broken' raised SyntaxError: "),
    ("{pkg}.needs:build", "importing '{pkg}.needs' failed: No module named 'frontier_missing_dependency'"),
    ("{pkg}.nets:nope", r"module '{pkg}.nets' \(.*nets.py\) has no attribute 'nope'"),
    ("{pkg}.nets:NOT_CALLABLE", "'{pkg}.nets:NOT_CALLABLE' is a int, not a callable returning an nn.Module"),
    ("{pkg}.nets:build_dict", r"{pkg}.nets:build_dict\(\) returned a dict, not a torch nn.Module"),
    ("{pkg}.nets:build_failing", r"calling {pkg}.nets:build_failing\(\) raised RuntimeError: width must be even"),
    ("{pkg}.nets:build_pair", "Pair returns a tuple, not \\(batch, classes\\) logits, so its head cannot be found"),
    ("{pkg}.nets:build_norm_after_head",
     "NormAfterHead's last Linear/Conv2d 'classifier.1' is followed by 'norm' \\(BatchNorm1d\\), which has parameters"),
    ("{pkg}.nets:build_summed", "Summed's last Linear/Conv2d 'classifier.1' has 6 outputs but the model returns 1 logits"),
]


@pytest.mark.parametrize("name,message", USER_ERRORS, ids=[n.split(".")[-1] for n, _ in USER_ERRORS])
def test_user_model_errors_are_one_line(user_pkg: tuple[str, Path], name: str, message: str) -> None:
    package, _ = user_pkg
    with pytest.raises(FrontierError) as caught:
        build_model(name.format(pkg=package), 3)
    assert "\n" not in str(caught.value)
    assert caught.match("^model: " + message.format(pkg=package)), str(caught.value)


def test_user_model_is_imported_from_its_folder_where_sys_path_lacks_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a Ray worker does: the plan's ``model_path`` is the only way it finds the module."""
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    folder = write_user_package(tmp_path, package)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(tmp_path.parent)
    name = f"{package}.nets:build"
    with pytest.raises(FrontierError, match=f"module '{package}.nets' is not importable"):
        architecture(name)
    assert folder not in sys.path, "a failed lookup leaves sys.path as it was"
    assert head_size(architecture(name, folder)(None)) == 6 and folder in sys.path
    assert user_model_path(name) == str(Path(folder).resolve())


def test_user_model_is_found_in_the_current_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    write_user_package(tmp_path, package)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    monkeypatch.chdir(tmp_path)
    config = DenseConfig(model=f"{package}.nets:build", epochs=1)
    assert config.model_path == str(tmp_path.resolve())
    Dense(config)  # the stage resolves its name through the same function
    assert "model_path" not in DenseConfig(model="resnet18").model_dump(), "built-in plans keep their cache keys"
