"""Model registry: every architecture with a new head, local weights, and weight-file errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models as tvm

from trainables.errors import FrontierError, WeightsError
from trainables.models import ARCHITECTURES, MIN_INPUT_SIZE, build_model, head, head_size, replace_head


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_builds_with_a_new_head(name: str) -> None:
    model = build_model(name, 7).eval()
    size = max(32, MIN_INPUT_SIZE.get(name, 32))
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)
    replace_head(model, 3)
    assert head_size(model) == 3
    assert model(torch.randn(1, 3, size, size)).shape == (1, 3)


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


def test_missing_weights_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="nope.pt' does not exist"):
        build_model("resnet18", 5, weights=str(tmp_path / "nope.pt"))


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r34.pt"
    torch.save(tvm.resnet34(num_classes=10).state_dict(), path)
    with pytest.raises(WeightsError, match=r"do not fit resnet18: .*unexpected keys"):
        build_model("resnet18", 5, weights=str(path))


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
    with pytest.raises(FrontierError, match="unknown architecture 'resnet9'; known: resnet18"):
        build_model("resnet9", 5)
