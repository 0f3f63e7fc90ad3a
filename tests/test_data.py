"""trainables.data: sklearn digits and tiny fake dataset trees written to tmp_path."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pydantic
import pytest
import scipy.io
import torch
from PIL import Image
from sklearn.datasets import load_digits

from trainables.data import (
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataSpec,
    ImageDataset,
    Splits,
    check_root,
    load_data,
)
from trainables.errors import DataError

MEAN = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(3, 1, 1)
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


EIGHT_BIT = 0.5 / 255 + 1e-5  # images are kept at 8 bits: a float source is within half a level


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * STD + MEAN


def indices(ds: ImageDataset) -> set[int]:
    return set(ds.indices.tolist())


@pytest.fixture(scope="module")
def sk_digits():
    return load_digits()


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_data(DataSpec(name="digits"))


# ----------------------------------------------------------------------------- digits


def test_public_names():
    assert DATASETS == ("digits", "cifar10", "cifar100", "food101", "stanford_cars", "imagefolder",
                        "mnist", "fashion_mnist", "kmnist", "svhn", "stl10")


def test_digits_shapes_dtypes_and_range(digits):
    assert digits.num_classes == 10 and digits.class_names == [str(c) for c in range(10)]
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    for ds in (digits.train, digits.val, digits.test):
        assert ds.labels.dtype == torch.int64 and ds.labels.shape == (len(ds),)
        assert set(ds.labels.tolist()) == set(range(10))
    x, y = digits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    assert torch.isfinite(x).all()
    raw = unnormalise(torch.stack([digits.train[i][0] for i in range(50)]))
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5 and raw.max() > 0.9  # [0,1] before normalisation
    assert torch.allclose(raw[:, 0], raw[:, 1], atol=1e-5) and torch.allclose(raw[:, 0], raw[:, 2], atol=1e-5)
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all() and x.min() < -1.5  # normalised, not [0,1]


def test_digits_subset_relabels_and_images_are_those_digits(sk_digits):
    splits = load_data(DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=8))
    assert splits.num_classes == 5 and splits.class_names == ["5", "6", "7", "8", "9"]
    for ds in (splits.train, splits.val, splits.test):
        idx = ds.indices.numpy()
        assert set(ds.labels.tolist()) == set(range(5))
        assert np.array_equal(ds.labels.numpy(), sk_digits.target[idx] - 5)
        images = unnormalise(torch.stack([ds[i][0] for i in range(len(ds))]))
        expected = torch.from_numpy(sk_digits.images[idx] / 16).float()
        assert torch.allclose(images[:, 0], expected, atol=EIGHT_BIT)
    total = sum(len(ds) for ds in (splits.train, splits.val, splits.test))
    assert total == int(np.isin(sk_digits.target, [5, 6, 7, 8, 9]).sum())


def test_subset_order_sets_labels(sk_digits):
    splits = load_data(DataSpec(name="digits", classes=[9, 2]))
    assert splits.class_names == ["9", "2"]
    ds = splits.train
    assert np.array_equal(ds.labels.numpy(), (sk_digits.target[ds.indices.numpy()] == 2).astype(np.int64))


def test_subset_keeps_each_class_split(digits):
    sub = load_data(DataSpec(name="digits", classes=[3, 4]))
    for name in ("train", "val", "test"):
        full = getattr(digits, name)
        keep = set(full.indices[(full.labels == 3) | (full.labels == 4)].tolist())
        assert indices(getattr(sub, name)) == keep


def test_digits_upscale_is_bilinear_from_the_8x8(sk_digits, digits):
    x, _ = digits.train[0]
    small = torch.from_numpy(sk_digits.images[int(digits.train.indices[0])] / 16).float()
    expected = torch.nn.functional.interpolate(small[None, None], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(unnormalise(x), expected[0].expand(3, 32, 32), atol=EIGHT_BIT)


def test_splits_are_deterministic(digits):
    again = load_data(DataSpec(name="digits"))
    for name in ("train", "val", "test"):
        a, b = getattr(digits, name), getattr(again, name)
        assert torch.equal(a.indices, b.indices) and torch.equal(a.labels, b.labels)
    assert torch.equal(digits.val[3][0], again.val[3][0])


def test_other_seed_gives_other_split(digits):
    other = load_data(DataSpec(name="digits", seed=1))
    assert indices(other.val) != indices(digits.val)
    assert indices(other.train) != indices(digits.train)
    assert len(other.val) == len(digits.val)


def test_splits_disjoint_and_cover_the_pool(digits):
    tr, va, te = indices(digits.train), indices(digits.val), indices(digits.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(1797))
    assert len(va) == pytest.approx(0.15 * (1797 - len(te)), abs=10)
    assert len(te) == pytest.approx(0.15 * 1797, abs=10)


def test_val_and_test_are_stratified(digits, sk_digits):
    for ds, share in ((digits.val, 0.15 * 0.85), (digits.test, 0.15)):
        counts = np.bincount(ds.labels.numpy(), minlength=10)
        expected = np.bincount(sk_digits.target, minlength=10) * share
        assert np.all(np.abs(counts - expected) <= 1.5), (counts, expected)


def test_max_per_class(digits):
    capped = load_data(DataSpec(name="digits", max_per_class=20))
    pool = np.concatenate([capped.train.labels.numpy(), capped.val.labels.numpy()])
    assert np.array_equal(np.bincount(pool, minlength=10), np.full(10, 20))
    assert np.array_equal(np.bincount(capped.val.labels.numpy(), minlength=10), np.full(10, 3))
    assert indices(capped.test) == indices(digits.test)
    assert indices(capped.train) == indices(load_data(DataSpec(name="digits", max_per_class=20)).train)


def test_augment_is_applied_to_the_01_image_before_normalisation(digits):
    seen = []

    def zero(x: torch.Tensor) -> torch.Tensor:
        seen.append((x.min().item(), x.max().item()))
        return torch.zeros_like(x)

    ds = load_data(DataSpec(name="digits")).train
    before = ds[0][0]
    ds.augment = zero
    x, _ = ds[0]
    assert torch.allclose(x, (-MEAN / STD).expand(3, 32, 32))
    assert seen and 0 <= seen[0][0] and seen[0][1] <= 1
    ds.augment = None
    assert torch.equal(ds[0][0], before)


@pytest.mark.parametrize("images", [torch.rand(4, 3, 8, 8), torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)])
def test_inplace_augment_does_not_corrupt_the_data(images):
    ds = ImageDataset(images.clone(), torch.zeros(4))
    before = ds[0][0]
    ds.augment = lambda x: x.mul_(0)
    ds[0]
    ds.augment = None
    assert torch.equal(ds[0][0], before)


def test_unlabeled_yields_images_only_and_skips_augment(digits):
    splits = load_data(DataSpec(name="digits"))
    splits.train.augment = lambda x: torch.zeros_like(x)
    for name in ("train", "val", "test"):
        view = splits.unlabeled(name)
        assert len(view) == len(getattr(splits, name))
        item = view[5]
        assert isinstance(item, torch.Tensor) and item.shape == (3, 32, 32)
        assert torch.equal(item, getattr(digits, name)[5][0])
    batch = next(iter(torch.utils.data.DataLoader(splits.unlabeled(), batch_size=16)))
    assert isinstance(batch, torch.Tensor) and batch.shape == (16, 3, 32, 32)
    with pytest.raises(DataError, match="'holdout'"):
        splits.unlabeled("holdout")


def test_dataloader_collates_labels(digits):
    x, y = next(iter(torch.utils.data.DataLoader(digits.train, batch_size=8)))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert torch.equal(y, digits.train.labels[:8])


def test_image_dataset_from_tensor():
    images = torch.rand(4, 3, 8, 8)
    ds = ImageDataset(images, torch.tensor([0, 1, 0, 1]))
    assert len(ds) == 4 and torch.allclose(unnormalise(ds[2][0]), images[2], atol=EIGHT_BIT)


def test_digits_load_is_fast():
    import time

    load_data(DataSpec(name="digits"))
    start = time.perf_counter()
    load_data(DataSpec(name="digits", classes=[0, 1]))
    assert time.perf_counter() - start < 1.0


# ----------------------------------------------------------------------------- CIFAR


def dump(path: Path, obj: dict) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # CIFAR's batches are protocol-2 pickles of dicts


def write_cifar10(root: Path, per_batch: int = 6, n_test: int = 10) -> dict[str, np.ndarray]:
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    data, labels = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [((b - 1) * per_batch + j) % 10 for j in range(per_batch)]
        data.append(x), labels.append(y)
        batch = {"batch_label": f"training batch {b} of 5", "labels": y, "data": x,
                 "filenames": [f"{j}.png" for j in y]}
        dump(base / f"data_batch_{b}", batch)
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [j % 10 for j in range(n_test)]
    dump(base / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": yt, "data": xt})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    dump(base / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    return {"x": np.concatenate(data), "y": np.concatenate(labels), "xt": xt, "yt": np.asarray(yt)}


def test_fake_cifar10_loads_with_correct_labels_and_pixels(tmp_path):
    arrays = write_cifar10(tmp_path)
    splits = load_data(DataSpec(name="cifar10", root=str(tmp_path)))
    assert splits.num_classes == 10 and splits.class_names[3] == "cat"
    assert indices(splits.train) | indices(splits.val) == set(range(30))
    assert not indices(splits.train) & indices(splits.val)
    assert np.bincount(splits.val.labels.numpy(), minlength=10).tolist() == [1] * 10
    assert indices(splits.test) == set(range(10))
    for ds, x, y in ((splits.train, arrays["x"], arrays["y"]), (splits.test, arrays["xt"], arrays["yt"])):
        idx = ds.indices.numpy()
        assert np.array_equal(ds.labels.numpy(), y[idx])
        img = unnormalise(ds[1][0]) * 255
        assert torch.allclose(img, torch.from_numpy(x[idx[1]].reshape(3, 32, 32)).float(), atol=1e-3)


def test_fake_cifar10_subset_resize_and_root_is_the_batches_folder(tmp_path):
    arrays = write_cifar10(tmp_path)
    root = str(tmp_path / "cifar-10-batches-py")
    splits = load_data(DataSpec(name="cifar10", root=root, classes=[7, 3], image_size=16))
    assert splits.class_names == ["horse", "cat"]
    assert np.array_equal(splits.test.labels.numpy(), (arrays["yt"][splits.test.indices.numpy()] == 3).astype(int))
    assert len(splits.test) == 2 and len(splits.train) + len(splits.val) == 6
    assert splits.train[0][0].shape == (3, 16, 16)


def test_fake_cifar100_loads(tmp_path):
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(1)
    y = [i % 100 for i in range(300)]
    dump(base / "train", {"fine_labels": y, "data": rng.integers(0, 256, (300, 3072), dtype=np.uint8)})
    dump(base / "test", {"fine_labels": y[:100], "data": rng.integers(0, 256, (100, 3072), dtype=np.uint8)})
    dump(base / "meta", {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": []})
    splits = load_data(DataSpec(name="cifar100", root=str(tmp_path), classes=[99, 0]))
    assert splits.class_names == ["c99", "c0"] and len(splits.test) == 2
    assert sorted(splits.train.labels.tolist() + splits.val.labels.tolist()) == [0, 0, 0, 1, 1, 1]


class Py2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's cPickle wrote the official CIFAR batches (BINSTRING)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_binstring(self, obj: str | bytes) -> None:
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_binstring
    dispatch[bytes] = save_binstring


def test_a_batch_as_python2_and_numpy1_wrote_it_loads(tmp_path):
    arrays = write_cifar10(tmp_path)
    base = tmp_path / "cifar-10-batches-py"
    for name in ("data_batch_1", "test_batch"):  # rewrite two batches the way the official files are
        batch = pickle.loads((base / name).read_bytes())
        out = io.BytesIO()
        Py2Pickler(out, protocol=2).dump(batch)
        legacy = out.getvalue().replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy.core.multiarray\n_reconstruct" in legacy and b"_codecs" not in legacy
        (base / name).write_bytes(legacy)
    splits = load_data(DataSpec(name="cifar10", root=str(tmp_path)))
    ds = splits.test
    assert np.array_equal(ds.labels.numpy(), arrays["yt"][ds.indices.numpy()])
    img = unnormalise(ds[0][0]) * 255
    assert torch.allclose(img, torch.from_numpy(arrays["xt"][int(ds.indices[0])].reshape(3, 32, 32)).float(), atol=1e-3)


class RunsAShell:
    """What a tampered batch could hold: unpickling it calls os.system."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 5])
def test_a_batch_holding_anything_else_is_refused_and_nothing_runs(tmp_path, protocol):
    write_cifar10(tmp_path)
    base, marker = tmp_path / "cifar-10-batches-py", tmp_path / "pwned"
    batch = {"labels": [0], "data": np.zeros((1, 3072), np.uint8), "x": RunsAShell(f"touch {marker}")}
    (base / "data_batch_3").write_bytes(pickle.dumps(batch, protocol=protocol))
    with pytest.raises(DataError) as exc:
        load_data(DataSpec(name="cifar10", root=str(tmp_path)))
    message = one_line(exc)
    assert str(base / "data_batch_3") in message and f"{os.system.__module__}.system" in message
    assert "refusing" in message and not marker.exists()


@pytest.mark.parametrize("payload, names", [
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),        # a global outside the allowed set
    (b"c_codecs\nencode\n(X\x01\x00\x00\x00aX\x05\x00\x00\x00rot13tR.", "rot13"),  # latin-1 only
    (b"\x80\x02}q\x00", "not a readable CIFAR batch"),                 # cut short
    (b"\x80\x02]q\x00.", "holds a list"),                                # not a dict
])
def test_other_bad_batches_name_the_file(tmp_path, payload, names):
    write_cifar10(tmp_path)
    meta = tmp_path / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(payload)
    with pytest.raises(DataError) as exc:
        check_root(DataSpec(name="cifar10", root=str(tmp_path)))
    message = one_line(exc)
    assert str(meta) in message and names in message


# ----------------------------------------------------------------------------- Stanford Cars


def box_image(path: Path, box0: tuple[int, int, int, int], size=(40, 30)) -> None:
    """A blue image whose 0-based half-open ``box0`` region is red inside a 1-pixel green frame."""
    img = Image.new("RGB", size, BLUE)
    img.paste(Image.new("RGB", (box0[2] - box0[0], box0[3] - box0[1]), GREEN), box0[:2])
    img.paste(Image.new("RGB", (box0[2] - box0[0] - 2, box0[3] - box0[1] - 2), RED), (box0[0] + 1, box0[1] + 1))
    img.save(path, format="PNG")  # PNG bytes under a .jpg name: PIL reads by content


def cars_annos(rows: list[tuple[int, int, int, int, int, str]]) -> dict:
    fields = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")
    a = np.zeros((len(rows),), dtype=[(f, "O") for f in fields])
    for i, (x1, y1, x2, y2, c, fname) in enumerate(rows):
        a[i] = (np.uint16(x1), np.uint16(y1), np.uint16(x2), np.uint16(y2), np.uint8(c), fname)
    return {"annotations": a}


WIDE = (5, 10, 25, 20)   # 0-based half-open: 20 wide, 10 tall
TALL = (10, 5, 20, 25)   # 10 wide, 20 tall


def write_cars(root: Path) -> Path:
    base = root / "stanford_cars"
    for d in ("devkit", "cars_train", "cars_test"):
        (base / d).mkdir(parents=True)
    names = np.array(["AM General Hummer", "Audi R8", "BMW M3"], dtype=object)  # a cell array in the .mat
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": names})
    train, test = [], []
    for i in range(9):
        box = WIDE if i % 2 == 0 else TALL
        fname = f"{i + 1:05d}.jpg"
        box_image(base / "cars_train" / fname, box)
        train.append((box[0] + 1, box[1] + 1, box[2], box[3], i % 3 + 1, fname))  # 1-based inclusive
    for i in range(3):
        fname = f"{i + 1:05d}.jpg"
        box_image(base / "cars_test" / fname, WIDE)
        test.append((WIDE[0] + 1, WIDE[1] + 1, WIDE[2], WIDE[3], i + 1, fname))
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", cars_annos(train))
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", cars_annos(test))
    return base


def test_fake_stanford_cars_crops_to_the_box_and_zero_pads(tmp_path):
    write_cars(tmp_path)
    splits = load_data(DataSpec(name="stanford_cars", root=str(tmp_path), image_size=20))
    assert splits.class_names == ["AM General Hummer", "Audi R8", "BMW M3"]
    assert indices(splits.test) == {0, 1, 2} and splits.test.labels.tolist() == [0, 1, 2]
    pool = splits.train.indices.tolist() + splits.val.indices.tolist()
    labels = splits.train.labels.tolist() + splits.val.labels.tolist()
    assert sorted(zip(pool, labels)) == [(i, i % 3) for i in range(9)]
    red, green = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1), torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1)
    box = green.expand(3, 10, 20).clone()
    box[:, 1:-1, 1:-1] = red  # the whole box, its green frame included, and no blue from outside it
    for ds in (splits.train, splits.val, splits.test):
        for i in range(len(ds)):
            x = unnormalise(ds[i][0])
            wide = int(ds.indices[i]) % 2 == 0 or ds is splits.test
            band = x if wide else x.transpose(1, 2)  # wide: zero rows; tall: zero columns
            assert band[:, :5].abs().max() < 1e-5 and band[:, 15:].abs().max() < 1e-5
            assert torch.allclose(band[:, 5:15], box, atol=1e-5)


def test_fake_stanford_cars_resized(tmp_path):
    write_cars(tmp_path)
    ds = load_data(DataSpec(name="stanford_cars", root=str(tmp_path / "stanford_cars"), image_size=10)).test
    x = unnormalise(ds[0][0])
    assert x.shape == (3, 10, 10)
    assert x[:, :2].abs().max() < 0.05 and x[:, 8:].abs().max() < 0.05
    assert x[0, 4:6, 2:8].min() > 0.9 and x[2, 3:7].max() < 0.05


# ----------------------------------------------------------------------------- imagefolder and food101


def write_tree(root: Path, counts: dict[str, int], size=(16, 8), colour=(255, 255, 255)) -> None:
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", size, colour).save(root / cls / f"{i}.png")


def test_imagefolder_training_validation_layout(tmp_path):
    write_tree(tmp_path / "training", {"n0": 4, "n1": 4, "n2": 4})
    write_tree(tmp_path / "validation", {"n0": 1, "n1": 2, "n2": 1})
    splits = load_data(DataSpec(name="imagefolder", root=str(tmp_path), image_size=16))
    assert splits.class_names == ["n0", "n1", "n2"]
    assert len(splits.train) + len(splits.val) == 12 and len(splits.test) == 4
    assert sorted(splits.test.labels.tolist()) == [0, 1, 1, 2]
    assert all(Path(splits.test.images.paths[i]).parts[-3] == "validation" for i in splits.test.indices.tolist())
    x = unnormalise(splits.train[0][0])  # 16x8 white: padded to 16x16, zero rows at top and bottom
    assert x[:, :4].abs().max() < 1e-5 and x[:, 12:].abs().max() < 1e-5 and x[:, 4:12].min() > 1 - 1e-5


def test_imagefolder_train_val_layout_uses_val_as_test(tmp_path):
    write_tree(tmp_path / "train", {"a": 3, "b": 3})
    write_tree(tmp_path / "val", {"a": 1, "b": 1})
    splits = load_data(DataSpec(name="imagefolder", root=str(tmp_path)))
    assert len(splits.test) == 2 and len(splits.train) + len(splits.val) == 6


def test_imagefolder_single_tree_is_split_three_ways(tmp_path):
    write_tree(tmp_path, {"a": 10, "b": 10, "c": 10})
    splits = load_data(DataSpec(name="imagefolder", root=str(tmp_path), classes=[2, 0], image_size=8))
    tr, va, te = indices(splits.train), indices(splits.val), indices(splits.test)
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert tr | va | te == set(range(0, 10)) | set(range(20, 30))
    assert np.bincount(splits.test.labels.numpy()).tolist() == [2, 2]
    assert splits.class_names == ["c", "a"] and splits.test[0][0].shape == (3, 8, 8)


def test_imagefolder_mismatched_classes(tmp_path):
    write_tree(tmp_path / "training", {"n0": 2, "n1": 2})
    write_tree(tmp_path / "validation", {"n0": 1, "n9": 1})
    with pytest.raises(DataError, match="validation"):
        load_data(DataSpec(name="imagefolder", root=str(tmp_path)))


def test_fake_food101(tmp_path):
    base = tmp_path / "food-101"
    names = ["apple_pie", "baby_back_ribs"]
    write_tree(base / "images", {n: 4 for n in names}, size=(12, 12))
    for i, n in enumerate(names):
        for j in range(4):
            (base / "images" / n / f"{j}.png").rename(base / "images" / n / f"{j}.jpg")
    (base / "meta").mkdir()
    (base / "meta" / "classes.txt").write_text("\n".join(names) + "\n")
    (base / "meta" / "train.json").write_text(json.dumps({n: [f"{n}/{j}" for j in range(3)] for n in names}))
    (base / "meta" / "test.json").write_text(json.dumps({n: [f"{n}/3"] for n in names}))
    splits = load_data(DataSpec(name="food101", root=str(tmp_path), classes=[1], image_size=12))
    assert splits.class_names == ["baby_back_ribs"] and len(splits.test) == 1
    assert len(splits.train) + len(splits.val) == 3 and set(splits.train.labels.tolist()) == {0}
    assert torch.allclose(unnormalise(splits.test[0][0]), torch.ones(3, 12, 12), atol=1e-5)


# ----------------------------------------------------------------------------- errors


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_missing_root_is_none(tmp_path):
    with pytest.raises(DataError) as exc:
        load_data(DataSpec(name="cifar10"))
    assert "data.root" in one_line(exc) and "cifar10" in str(exc.value)


def test_root_does_not_exist(tmp_path):
    spec = DataSpec(name="stanford_cars", root=str(tmp_path / "nope"))
    with pytest.raises(DataError) as exc:
        check_root(spec)
    assert str(tmp_path / "nope") in one_line(exc) and "stanford_cars" in str(exc.value)


@pytest.mark.parametrize("name, missing", [("cifar10", "data_batch_1"), ("cifar100", "cifar-100-python"),
                                           ("food101", "images"), ("stanford_cars", "cars_meta.mat")])
def test_root_lacking_files(tmp_path, name, missing):
    with pytest.raises(DataError) as exc:
        load_data(DataSpec(name=name, root=str(tmp_path)))
    message = one_line(exc)
    assert "data.root" in message and str(tmp_path) in message and missing in message


def test_root_with_a_partial_tree_names_the_missing_file(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError, match="data_batch_4"):
        check_root(DataSpec(name="cifar10", root=str(tmp_path)))


def test_imagefolder_without_class_folders(tmp_path):
    with pytest.raises(DataError) as exc:
        load_data(DataSpec(name="imagefolder", root=str(tmp_path)))
    assert str(tmp_path) in one_line(exc)


def test_class_index_out_of_range(tmp_path):
    with pytest.raises(DataError) as exc:
        load_data(DataSpec(name="digits", classes=[3, 12]))
    message = one_line(exc)
    assert "data.classes" in message and "12" in message and "0..9" in message
    write_cars(tmp_path)
    with pytest.raises(DataError, match=r"data\.classes: 3 .*0\.\.2"):
        check_root(DataSpec(name="stanford_cars", root=str(tmp_path), classes=[3]))


def test_check_root_passes_on_good_trees(tmp_path):
    check_root(DataSpec(name="digits"))
    write_cifar10(tmp_path)
    check_root(DataSpec(name="cifar10", root=str(tmp_path), classes=[9]))


@pytest.mark.parametrize("bad", [{"classes": []}, {"classes": [1, 1]}, {"classes": [-1]}, {"image_size": 4},
                                 {"val_fraction": 0.0}, {"test_fraction": 0.6}, {"max_per_class": 0},
                                 {"name": "emnist"}, {"colour": True}])
def test_spec_rejects_bad_fields(bad):
    with pytest.raises(pydantic.ValidationError):
        DataSpec(**{"name": "digits", **bad})
