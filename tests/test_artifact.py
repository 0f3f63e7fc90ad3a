"""The HDF5 artifact: exact round trips, real compression of pruned weights, atomic writes, clear errors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import trainables.artifact as artifact
from trainables.artifact import FORMAT, load_artifact, save_artifact
from trainables.errors import FrontierError
from trainables.masks import make_permanent


def resnet18(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval()


def pruned_resnet18(amount: float = 0.8) -> nn.Module:
    model = resnet18()
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            prune.l1_unstructured(module, "weight", amount)
    return make_permanent(model)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[nn.Module, Path, int]]:
    """A dense and an 80%-pruned ResNet-18, each saved once (gzip 9 of 47 MB takes seconds)."""
    folder = tmp_path_factory.mktemp("artifacts")
    out = {}
    for name, model in (("dense", resnet18()), ("pruned", pruned_resnet18())):
        path = folder / f"{name}.h5"
        out[name] = (model, path, save_artifact(model.state_dict(), path, attrs={"trial": name}))
    return out


def assert_same_state(loaded: dict[str, torch.Tensor], original: dict[str, torch.Tensor]) -> None:
    assert list(loaded) == list(original)
    for key, tensor in original.items():
        assert loaded[key].dtype == tensor.dtype, key
        assert loaded[key].shape == tensor.shape, key
        assert torch.equal(loaded[key], tensor), key


@pytest.mark.parametrize("name", ["dense", "pruned"])
def test_resnet18_round_trip_is_exact(saved: dict, name: str) -> None:
    model, path, size = saved[name]
    state, attrs = load_artifact(path)
    assert_same_state(state, model.state_dict())
    assert attrs == {"trial": name}
    assert size == os.path.getsize(path)

    fresh = torchvision.models.resnet18(num_classes=10).eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_pruned_weights_really_shrink_the_file(saved: dict) -> None:
    model, _, pruned_size = saved["pruned"]
    convs = [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]
    zeros = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
    assert zeros == pytest.approx(0.8, abs=0.01)
    dense_size = saved["dense"][2]
    assert pruned_size <= 0.35 * dense_size
    # gzip cannot make random float32 weights much smaller than their 4 bytes each
    n = sum(p.numel() for p in model.state_dict().values())
    assert 3.0 * n < dense_size < 4.0 * n


def test_pruned_layers_use_the_sparse_encoding(saved: dict) -> None:
    with h5py.File(saved["pruned"][1]) as f:
        index = {row["name"].decode(): row["encoding"].decode() for row in f["index"][()]}
    assert index["layer1.0.conv1.weight"] == "sparse"
    assert index["layer1.0.bn1.num_batches_tracked"] == "dense"
    with h5py.File(saved["dense"][1]) as f:
        index = {row["name"].decode(): row["encoding"].decode() for row in f["index"][()]}
    assert index["layer1.0.conv1.weight"] == "dense"


def test_small_model_overhead_is_small(tmp_path: Path) -> None:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, bias=False)]
    for _ in range(10):  # 63 tensors, ~24k parameters, most tensors tiny (BatchNorm)
        layers += [nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3, padding=1, bias=False)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)]
    state = nn.Sequential(*layers).state_dict()
    payload = sum(v.numel() * v.element_size() for v in state.values())
    size = save_artifact(state, tmp_path / "small.h5")
    assert size < payload + 4096  # random weights barely compress; headers must not add much


def test_same_state_gives_same_bytes(tmp_path: Path) -> None:
    state = {"w": torch.randn(64, 64), "b": torch.zeros(64)}
    digests = set()
    for name in ("a.h5", "b.h5"):
        save_artifact(state, tmp_path / name, attrs={"seed": 1})
        digests.add(hashlib.sha256((tmp_path / name).read_bytes()).hexdigest())
    assert len(digests) == 1


def test_dtypes_shapes_and_special_values_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    sparse = torch.randn(40, 50)
    sparse[sparse.abs() < 1.0] = 0
    sparse[0, :3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    state = {
        "sparse32": sparse,
        "sparse16": sparse.half(),
        "sparse64": sparse.double(),
        "bf16": sparse.bfloat16(),
        "dense_bf16": torch.randn(300).bfloat16(),
        "int8": torch.randint(-128, 127, (1000,), dtype=torch.int8),
        "bool": torch.rand(77) > 0.5,
        "scalar": torch.tensor(7, dtype=torch.int64),
        "float_scalar": torch.tensor(0.5),
        "empty": torch.zeros(0, 3),
        "all_zero": torch.zeros(500, 3),
        "five_d": torch.randn(2, 3, 4, 5, 6),
    }
    size = save_artifact(state, tmp_path / "m.h5")
    loaded, _ = load_artifact(tmp_path / "m.h5")
    assert list(loaded) == list(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape, key
        assert torch.equal(bits(loaded[key]), bits(tensor)), key  # NaN and inf included
    assert size == os.path.getsize(tmp_path / "m.h5")


def bits(t: torch.Tensor) -> torch.Tensor:
    """A float tensor's bit patterns, so that NaN == NaN; other tensors unchanged."""
    ints = {2: torch.int16, 4: torch.int32, 8: torch.int64}
    return t.view(ints[t.element_size()]) if t.is_floating_point() else t


def test_negative_zero_comes_back_positive_in_sparse_tensors(tmp_path: Path) -> None:
    t = torch.zeros(1000)
    t[:10] = 1.5
    t[500] = -0.0
    save_artifact({"t": t}, tmp_path / "z.h5")
    loaded, _ = load_artifact(tmp_path / "z.h5")
    assert torch.equal(loaded["t"], t)
    assert not torch.signbit(loaded["t"][500])


def test_attrs_round_trip_with_their_types(tmp_path: Path) -> None:
    attrs = {"pipeline": "D|50|T|B", "trial": "é-ü", "seed": 3, "accuracy": 0.91, "final": True}
    save_artifact({"w": torch.ones(3)}, tmp_path / "a.h5", attrs=attrs)
    _, loaded = load_artifact(tmp_path / "a.h5")
    assert loaded == attrs
    assert type(loaded["seed"]) is int and type(loaded["final"]) is bool


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"format": "x"}, "'format' is reserved"),
        ({"shape": [1, 2]}, "'shape' must be a str, int, float or bool but got list"),
    ],
)
def test_bad_attrs_are_refused(tmp_path: Path, attrs: dict, message: str) -> None:
    with pytest.raises(FrontierError, match=message):
        save_artifact({"w": torch.ones(3)}, tmp_path / "a.h5", attrs=attrs)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.h5"
    save_artifact({"w": torch.ones(3)}, path)
    save_artifact({"w": torch.zeros(3)}, path)  # overwriting goes through a temp file too
    assert [p.name for p in tmp_path.iterdir()] == ["model.h5"]

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifact, "_write_stream", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        save_artifact({"w": torch.full((3,), 2.0)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["model.h5"]
    monkeypatch.undo()
    assert torch.equal(load_artifact(path)[0]["w"], torch.zeros(3))  # the old file is intact


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.h5"
    with pytest.raises(FrontierError, match="nowhere.h5"):
        load_artifact(path)


def test_text_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "notes.h5"
    path.write_text("not an artifact\n")
    with pytest.raises(FrontierError, match="notes.h5.*not an HDF5 file"):
        load_artifact(path)


def test_foreign_hdf5_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["index"] = np.arange(3)
    with pytest.raises(FrontierError, match=f"other.h5.*not a {FORMAT} file"):
        load_artifact(path)


def test_newer_version_and_unknown_encoding_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.h5"
    save_artifact({"w": torch.ones(3)}, path)
    with h5py.File(path, "r+") as f:
        f.attrs["version"] = np.int64(99)
    with pytest.raises(FrontierError, match="m.h5.*version 99"):
        load_artifact(path)

    save_artifact({"w": torch.ones(3)}, path)
    with h5py.File(path, "r+") as f:
        index = f["index"][()]
        index["encoding"][0] = b"shared"
        del f["index"]
        f["index"] = index
    with pytest.raises(FrontierError, match="m.h5.*'w'.*unknown encoding 'shared'"):
        load_artifact(path)
