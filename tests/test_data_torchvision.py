"""The datasets torchvision's own classes read (MNIST family, SVHN, STL-10), on tiny files written
in the official formats to tmp_path, and on Debian's Fashion-MNIST where it is installed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import yaml

from search.cli import main
from tests.tiny_spec import tiny_spec
from trainables.data import DataSpec, check_root, load_data
from trainables.errors import DataError

IDX = {"train": "train", "test": "t10k"}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray) -> bytes:
    """``array`` (uint8) in the IDX format: magic (0, 0, type 8, ndim), big-endian sizes, the data."""
    return struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(folder: Path, per_class: dict[str, int], gz: bool, side: int = 28) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The four IDX files of a 10-class MNIST-style dataset in ``folder``; returns each split's (images, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    written = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(10, dtype=np.uint8), n)
        images = rng.integers(0, 256, size=(len(labels), side, side), dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(array)
            name = f"{IDX[split]}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
            else:
                (folder / name).write_bytes(data)
        written[split] = (images, labels.astype(np.int64))
    return written


def pixels(dataset, i: int) -> torch.Tensor:
    return dataset.uint8(i, augment=False)


@pytest.mark.parametrize("name, cls", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_gzipped_idx_in_the_root_load_as_debian_ships_them(tmp_path, name, cls):
    written = write_idx(tmp_path, {"train": 6, "test": 2}, gz=True)
    check_root(DataSpec(name=name, root=str(tmp_path)))
    splits = load_data(DataSpec(name=name, root=str(tmp_path), classes=[7, 2], image_size=28))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{IDX[s]}-{k}-ubyte.gz" for s in IDX
                                                                for k in ("images-idx3", "labels-idx1")), \
        "nothing is written beside the user's files"
    assert splits.num_classes == 2 and len(splits.test) == 4 and len(splits.train) + len(splits.val) == 12
    images, labels = written["test"]
    for i in range(len(splits.test)):
        row = int(splits.test.indices[i])
        assert int(splits.test.labels[i]) == [7, 2].index(labels[row])
        x = pixels(splits.test, i)
        assert x.shape == (3, 28, 28) and x.dtype == torch.uint8
        assert torch.equal(x[0], torch.from_numpy(images[row])) and torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])


def test_torchvision_layout_of_plain_idx_files_loads_and_resizes(tmp_path):
    written = write_idx(tmp_path / "FashionMNIST" / "raw", {"train": 5, "test": 3}, gz=False)
    splits = load_data(DataSpec(name="fashion_mnist", root=str(tmp_path), image_size=16))
    assert splits.class_names[0] == "T-shirt/top" and splits.num_classes == 10
    assert len(splits.test) == 30 and splits.test[0][0].shape == (3, 16, 16)
    assert torch.equal(torch.sort(splits.test.labels).values, torch.from_numpy(np.sort(written["test"][1])))


def test_a_broken_gzip_is_one_line_naming_it(tmp_path):
    write_idx(tmp_path, {"train": 2, "test": 1}, gz=True)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match=r"^data\.root: .*t10k-labels-idx1-ubyte\.gz.* not a readable gzip") as exc:
        load_data(DataSpec(name="mnist", root=str(tmp_path)))
    assert "\n" not in str(exc.value)


def test_svhn_mat_files_load_with_ten_as_zero(tmp_path):
    rng = np.random.default_rng(1)
    written = {}
    for split, n in (("train", 20), ("test", 10)):
        x = rng.integers(0, 256, size=(32, 32, 3, n), dtype=np.uint8)   # SVHN's [H, W, C, N]
        y = (np.arange(n) % 10 + 1).reshape(n, 1).astype(np.uint8)      # 1..10, 10 is the digit 0
        scipy.io.savemat(tmp_path / f"{split}_32x32.mat", {"X": x, "y": y})
        written[split] = (x, y[:, 0] % 10)
    splits = load_data(DataSpec(name="svhn", root=str(tmp_path), classes=[0, 3], image_size=32))
    assert splits.class_names == ["0", "3"] and len(splits.test) == 2
    x, digits = written["test"]
    for i in range(len(splits.test)):
        row = int(splits.test.indices[i])
        assert int(splits.test.labels[i]) == [0, 3].index(digits[row])
        assert torch.equal(pixels(splits.test, i), torch.from_numpy(x[..., row]).permute(2, 0, 1))


def test_stl10_binaries_load_in_their_folder(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "stl10_binary"
    base.mkdir()
    written = {}
    for split, n in (("train", 20), ("test", 10)):
        images = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)                # 1-based on disk
        (base / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())  # column-major, as STL-10
        (base / f"{split}_y.bin").write_bytes(labels.tobytes())
        written[split] = (images, labels - 1)
    for root in (tmp_path, base):
        splits = load_data(DataSpec(name="stl10", root=str(root), classes=[9, 1], image_size=96))
        assert splits.class_names == ["truck", "bird"] and len(splits.test) == 2
        images, labels = written["test"]
        for i in range(len(splits.test)):
            row = int(splits.test.indices[i])
            assert int(splits.test.labels[i]) == [9, 1].index(labels[row])
            assert torch.equal(pixels(splits.test, i), torch.from_numpy(images[row]))
    (base / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    assert load_data(DataSpec(name="stl10", root=str(tmp_path), classes=[4], image_size=24)).class_names == ["c4"]


@pytest.mark.parametrize("name, missing", [("mnist", "train-images-idx3-ubyte"), ("fashion_mnist", "train-images-idx3-ubyte"),
                                           ("kmnist", "train-images-idx3-ubyte"), ("svhn", "train_32x32.mat"),
                                           ("stl10", "train_X.bin")])
def test_missing_root_is_one_line_naming_key_and_value(tmp_path, name, missing, capsys):
    """`frontier check` on a spec whose target root lacks the dataset: one line, its key path, exit 2."""
    raw = tiny_spec("bad_root", trials=1, space={"order": "none"})
    raw["data"]["target"] = {"name": name, "root": str(tmp_path)}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"frontier: data.target.root: {str(tmp_path)!r} has no "), err
    assert missing in err[0] and name in err[0]
    with pytest.raises(DataError, match=f"data.root: .*{name}"):
        check_root(DataSpec(name=name, root=str(tmp_path / "nowhere")))


@pytest.mark.skipif(not (DEBIAN_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
def test_debian_fashion_mnist_loads_a_class_subset_with_seeded_splits():
    spec = DataSpec(name="fashion_mnist", root=str(DEBIAN_FASHION), classes=[9, 0, 5], image_size=32, seed=3)
    splits = load_data(spec)
    assert splits.class_names == ["Ankle boot", "T-shirt/top", "Sandal"]
    # Fashion-MNIST has 6000 train and 1000 test images per class; val is 15% of the train pool
    assert (len(splits.train), len(splits.val), len(splits.test)) == (3 * 5100, 3 * 900, 3 * 1000)
    for part in (splits.train, splits.val, splits.test):
        assert set(part.labels.tolist()) == {0, 1, 2}
    image, label = splits.train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 3
    assert torch.equal(splits.train.uint8(0, augment=False)[0], splits.train.uint8(0, augment=False)[2])
    again = load_data(spec)
    assert torch.equal(again.train.indices, splits.train.indices) and torch.equal(again.val.indices, splits.val.indices)
    other = load_data(spec.model_copy(update={"seed": 4}))
    assert not torch.equal(other.val.indices, splits.val.indices)
