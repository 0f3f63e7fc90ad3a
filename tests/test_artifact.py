"""The HDF5 artifact: exact round trips, real compression of pruned and shared weights, atomic writes, clear errors."""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import trainables.compress.artifact as artifact
from trainables.compress.artifact import FORMAT, load_artifact, save_artifact
from trainables.compress.masks import make_permanent
from trainables.errors import FrontierError


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
        index["encoding"][0] = b"huffman"  # "shared" was the example until the shared encoding came
        del f["index"]
        f["index"] = index
    with pytest.raises(FrontierError, match="m.h5.*'w'.*unknown encoding 'huffman'"):
        load_artifact(path)


# -- the shared encoding: codebook + packed indices (weight sharing, quantization-retraining paper) --


def share(values: torch.Tensor, k: int) -> torch.Tensor:
    """Each value replaced by the nearest of k centroids, the k quantiles at (i + 0.5) / k of its values."""
    flat = values.detach().reshape(-1).float()
    centroids = torch.quantile(flat, (torch.arange(k) + 0.5) / k)
    nearest = torch.bucketize(flat, (centroids[1:] + centroids[:-1]) / 2)
    return centroids[nearest].reshape(values.shape).to(values.dtype)


def shared_weights(shape: tuple[int, ...], k: int, *, zeros: float = 0.0, seed: int = 0) -> torch.Tensor:
    """A random weight tensor shared at k centroids, then with a fraction ``zeros`` of it pruned."""
    g = torch.Generator().manual_seed(seed)
    weights = share(torch.randn(shape, generator=g), k)
    weights[torch.rand(shape, generator=g) < zeros] = 0
    return weights


def index_rows(path: Path) -> dict[str, np.void]:
    with h5py.File(path) as f:
        return {row["name"].decode(): row for row in f["index"][()]}


@pytest.mark.parametrize("pruned", [False, True], ids=["unpruned", "pruned80"])
@pytest.mark.parametrize("k", [1, 2, 4, 32, 256])
def test_shared_tensor_round_trip_is_exact(tmp_path: Path, k: int, pruned: bool) -> None:
    w = shared_weights((64, 32, 3, 3), k, zeros=0.8 if pruned else 0.0)
    assert len(w[w != 0].unique()) == k
    save_artifact({"w": w}, tmp_path / "w.h5")
    state, _ = load_artifact(tmp_path / "w.h5")
    assert_same_state(state, {"w": w})
    row = index_rows(tmp_path / "w.h5")["w"]
    assert row["encoding"] == b"shared" and row["count"] == k  # the codebook
    assert row["aux_count"] == math.ceil(int((w != 0).sum()) * math.ceil(math.log2(k)) / 8)
    assert (row["mask_count"] > 0) == pruned  # a mask only where there are zeros


def test_mixed_state_dict_round_trips_with_each_encoding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pruned = torch.randn(50, 40)
    pruned[pruned.abs() < 1.0] = 0
    state = {
        "dense": torch.randn(30, 30),
        "sparse": pruned,
        "shared": shared_weights((100, 50), 32),
        "shared_pruned": shared_weights((100, 50), 8, zeros=0.8, seed=1),
        "shared_f16": shared_weights((20, 30), 16, seed=2).half(),
        "shared_bf16": shared_weights((20, 30), 16, seed=3).bfloat16(),
        "shared_f64": shared_weights((20, 30), 4, seed=4).double(),
        "ones": torch.ones(128),  # BatchNorm's initial weight: one value, no index bits at all
        "zeros": torch.zeros(128),
        "tiny": torch.full((64,), 0.5),  # too small to share
        "int": torch.randint(0, 4, (1000,)),  # only floating tensors are shared
        "num_batches_tracked": torch.tensor(3),
    }
    size = save_artifact(state, tmp_path / "m.h5")
    loaded, _ = load_artifact(tmp_path / "m.h5")
    assert list(loaded) == list(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype and loaded[key].shape == tensor.shape, key
        assert torch.equal(bits(loaded[key]), bits(tensor)), key
    encodings = {key: row["encoding"].decode() for key, row in index_rows(tmp_path / "m.h5").items()}
    assert encodings == {
        "dense": "dense", "sparse": "sparse", "shared": "shared", "shared_pruned": "shared", "shared_f16": "shared",
        "shared_bf16": "shared", "shared_f64": "shared", "ones": "shared", "zeros": "shared", "tiny": "dense",
        "int": "dense", "num_batches_tracked": "dense",
    }  # fmt: skip
    assert size == os.path.getsize(tmp_path / "m.h5")


def test_special_values_and_negative_zero_in_a_shared_tensor(tmp_path: Path) -> None:
    quiet_nan = torch.tensor(0x7FC00000, dtype=torch.int32).view(torch.float32)
    other_nan = torch.tensor(0x7FC00001, dtype=torch.int32).view(torch.float32)
    values = torch.tensor([1.5, -2.0, float("inf"), -float("inf"), quiet_nan, other_nan])
    t = values[torch.arange(1000) % 6].clone()
    t[7] = -0.0  # one zero: no mask, so -0.0 is a codebook entry like the others and keeps its sign
    save_artifact({"t": t}, tmp_path / "s.h5")
    loaded, _ = load_artifact(tmp_path / "s.h5")
    assert torch.equal(bits(loaded["t"]), bits(t))
    row = index_rows(tmp_path / "s.h5")["t"]
    assert row["encoding"] == b"shared" and row["count"] == 7 and row["mask_count"] == 0


def test_what_is_not_shared(tmp_path: Path) -> None:
    torch.manual_seed(0)
    many = torch.arange(1, 258, dtype=torch.float32).repeat(4)  # 257 distinct nonzero values
    many_pruned = torch.cat([many, torch.zeros(4000)])
    late = torch.cat([torch.ones(5000), torch.randn(5000)])  # few values at first, many later
    state = {"random": torch.randn(1000), "many": many, "many_pruned": many_pruned, "late": late}
    save_artifact(state, tmp_path / "n.h5")
    encodings = {key: row["encoding"].decode() for key, row in index_rows(tmp_path / "n.h5").items()}
    assert encodings == {"random": "dense", "many": "dense", "many_pruned": "sparse", "late": "dense"}
    assert_same_state(load_artifact(tmp_path / "n.h5")[0], state)


@pytest.mark.parametrize("bits_per_index", range(1, 9))
def test_index_packing_round_trips(bits_per_index: int) -> None:
    rng = np.random.default_rng(bits_per_index)
    for n in (1, 7, 8, 1001, (1 << 22) + 3):  # the last one spans two packing chunks
        indices = rng.integers(0, 1 << bits_per_index, n).astype(np.uint8)
        packed = artifact._pack_indices(indices, bits_per_index)
        assert packed.size == math.ceil(n * bits_per_index / 8)
        assert np.array_equal(artifact._unpack_indices(packed, bits_per_index, n), indices)
    # most significant bit first, no gaps: 001 010 011 100 101 110 111 000
    packed = artifact._pack_indices(np.array([1, 2, 3, 4, 5, 6, 7, 0], dtype=np.uint8), 3)
    assert packed.tolist() == [0b00101001, 0b11001011, 0b10111000]


def test_shared_rows_decode_with_h5py_as_the_docstring_says(tmp_path: Path) -> None:
    state = {"w": shared_weights((300, 7), 8), "p": shared_weights((300, 7), 32, zeros=0.8, seed=1)}
    save_artifact(state, tmp_path / "d.h5")
    with h5py.File(tmp_path / "d.h5") as f:
        for row in f["index"][()]:
            numel = int(np.prod(row["shape"][: row["ndim"]]))
            codebook = f["shared.float32"][row["offset"] : row["offset"] + row["count"]]
            b = math.ceil(math.log2(row["count"]))
            keep = None
            if row["mask_count"]:
                mask = f["shared.mask"][row["mask_offset"] : row["mask_offset"] + row["mask_count"]]
                keep = np.unpackbits(mask, count=numel).astype(bool)
            n = numel if keep is None else int(keep.sum())
            aux = f["shared.aux"][row["aux_offset"] : row["aux_offset"] + row["aux_count"]]
            i = np.packbits(np.unpackbits(aux, count=n * b).reshape(n, b), axis=1)[:, 0] >> (8 - b)
            if keep is None:
                v = codebook[i]
            else:
                v = np.zeros(numel, codebook.dtype)
                v[keep] = codebook[i]
            assert np.all(np.diff(codebook) > 0)  # sorted by value
            shape = tuple(row["shape"][: row["ndim"]])
            assert torch.equal(torch.from_numpy(v.reshape(shape)), state[row["name"].decode()])


def test_files_written_before_the_shared_encoding_still_load(tmp_path: Path) -> None:
    """Version 1 files from before the mask columns existed: same version, same reader."""
    state = {"dense": torch.randn(10, 10), "sparse": torch.zeros(1000)}
    state["sparse"][::7] = 1.25 + torch.arange(143, dtype=torch.float32)  # 143 > 1/32 of values: sparse
    path = tmp_path / "old.h5"
    save_artifact(state, path)
    with h5py.File(path, "r+") as f:
        index = f["index"][()]
        old = [name for name in index.dtype.names if not name.startswith("mask_")]
        del f["index"]
        f["index"] = index[old]
    assert_same_state(load_artifact(path)[0], state)


@pytest.mark.parametrize("k", [1, 2, 4, 32, 256])
def test_a_shared_tensor_costs_its_index_bits_in_the_file(tmp_path: Path, k: int) -> None:
    """n values at k centroids add at most n * log2(k) / 8 * 1.02 + 4k + a row of the index.

    The state dict without them already has shared streams large enough to be gzip datasets, so the
    difference is the tensor's own bytes, not the few KB of headers a new HDF5 dataset costs.
    """
    n = 256 * 1024
    base = {"bias": torch.randn(1000), "small": shared_weights((8000,), 256, seed=9)}
    w = shared_weights((n,), k)
    without = save_artifact(base, tmp_path / "without.h5")
    with_shared = save_artifact({**base, "w": w}, tmp_path / "with.h5")
    with_dense = save_artifact({**base, "w": torch.randn(n)}, tmp_path / "dense.h5")
    cost = with_shared - without
    assert cost <= n * math.log2(k) / 8 * 1.02 + 4 * k + 64
    # random float32 weights stored dense keep about 27 of their 32 bits after shuffle + gzip
    assert cost <= (with_dense - without) * (math.log2(k) + 0.1) / 24


def test_pruned_shared_tensor_costs_mask_and_survivor_bits(tmp_path: Path) -> None:
    n, k = 256 * 1024, 16
    base = {"small": shared_weights((8000,), 256, zeros=0.5, seed=9)}  # codebook, index and mask streams exist
    w = shared_weights((n,), k, zeros=0.8)
    nnz = int((w != 0).sum())
    cost = save_artifact({**base, "w": w}, tmp_path / "with.h5") - save_artifact(base, tmp_path / "without.h5")
    assert cost <= (n / 8 + nnz * math.log2(k) / 8) * 1.02 + 4 * k + 64


def test_resnet18_shared_at_16_centroids_gives_the_same_outputs(tmp_path: Path, saved: dict) -> None:
    model = resnet18()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.copy_(share(module.weight, 16))
    size = save_artifact(model.state_dict(), tmp_path / "shared.h5")
    state, _ = load_artifact(tmp_path / "shared.h5")
    assert_same_state(state, model.state_dict())
    fresh = torchvision.models.resnet18(num_classes=10).eval()
    fresh.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    assert index_rows(tmp_path / "shared.h5")["layer1.0.conv1.weight"]["encoding"] == b"shared"
    # the convs are 99.5% of the weights: 4 bits each instead of the ~27 that gzip leaves of float32
    assert size < 0.16 * saved["dense"][2]
