"""Named datasets from local roots, class subsets, seeded splits and unlabeled views.

Contract:

* :func:`load_data` turns a :class:`DataSpec` into :class:`Splits` (train, val, test). Nothing is
  downloaded: every dataset but ``digits`` (sklearn's bundled copy) is read from ``spec.root``.
* Every item is ``(image, label)``: ``image`` is float32 ``[3, S, S]`` with ``S =
  spec.image_size``, built as the [0, 1] image, then the dataset's ``augment`` callable if set,
  then ImageNet normalisation (last, so that colour jitter sees [0, 1] pixels). ``label`` is an
  ``int`` in ``0..num_classes-1``. Images are decoded and resized once per source and kept as
  uint8 (an augmented image is rounded back to 8 bits), so the item path and the batch path agree.
* Training reads batches, not items: :class:`Batched` gives uint8 batches ``[B, 3, S, S]`` (a
  quarter of float32's bytes through loader workers, pinned memory and the copy to the GPU) and
  :func:`model_input` normalises them on the device.
* ``spec.classes`` keeps those original class indices only and relabels them ``0..k-1`` in the
  order given, so one dataset yields a source and a target domain (``[0..4]`` and ``[5..9]``).
* Splits are drawn per class from a generator keyed by ``(seed, original class)``: the same spec
  always gives the same indices; val (and test, where the dataset has no official test split)
  is exactly stratified; train, val and test are disjoint; and a class keeps its split whatever
  other classes a subset holds, so a model trained on a superset never saw a subset's test images.
  Per class, a permutation is cut as ``[test | val | train]``: test takes ``test_fraction`` of the
  class (only without an official test split), ``max_per_class`` then caps the rest (the train
  pool), and val takes ``val_fraction`` of that pool.
* The MNIST family (``mnist``, ``fashion_mnist``, ``kmnist``), ``svhn`` and ``stl10`` are read by
  torchvision's own classes (``download=False``); MNIST-style IDX files may be gzip'd, as Debian's
  ``dataset-fashion-mnist`` ships them (``root: /usr/share/datasets/fashion-mnist``). Grayscale
  images become 3 channels (the one channel repeated).
* Images that are not square are zero-padded to a centred square, then resized (bilinear);
  Stanford Cars images are first cropped to their bounding box (the transfer paper's recipe).
* Every user mistake raises :class:`~trainables.errors.DataError` with one line naming the field
  or path, the value received and what was expected.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import json
import os
import pickle
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets import KMNIST, MNIST, STL10, SVHN, FashionMNIST, ImageFolder
from torchvision.transforms.v2.functional import normalize, pil_to_tensor

from trainables.errors import DataError

DATASETS: tuple[str, ...] = ("digits", "cifar10", "cifar100", "food101", "stanford_cars", "imagefolder",
                             "mnist", "fashion_mnist", "kmnist", "svhn", "stl10")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


class DataSpec(BaseModel):
    """Which dataset, which classes, at what size, split how.

    Example::

        DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32, seed=0)

    Args:
        name: one of :data:`DATASETS`.
        root: local folder holding the dataset (required for all but ``digits``; checked when
            loaded, see :func:`check_root`).
        classes: original class indices to keep, relabelled ``0..k-1`` in the order given.
        image_size: side in pixels of the square model input.
        val_fraction: share of the train pool held out for validation.
        test_fraction: share of each class held out for test, only where the dataset has no
            official test split.
        max_per_class: cap on images per class in the train pool (train + val), for quick runs.
        seed: seed of the splits and of the ``max_per_class`` draw.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["digits", "cifar10", "cifar100", "food101", "stanford_cars", "imagefolder",
                  "mnist", "fashion_mnist", "kmnist", "svhn", "stl10"]
    root: str | None = None
    classes: list[int] | None = None
    image_size: int = Field(32, ge=8)
    val_fraction: float = Field(0.15, gt=0.0, le=0.5)
    test_fraction: float = Field(0.15, gt=0.0, le=0.5)
    max_per_class: int | None = Field(None, ge=1)
    seed: int = 0

    @field_validator("classes")
    @classmethod
    def _check_classes(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("must list at least one class index, got []")
        if min(value) < 0:
            raise ValueError(f"class indices must be >= 0, got {min(value)}")
        if len(set(value)) != len(value):
            dupes = sorted({c for c in value if value.count(c) > 1})
            raise ValueError(f"class indices must be unique, got {dupes} more than once")
        return value


# ----------------------------------------------------------------------------- image sources


DECODED_BUDGET_BYTES = 8 << 30  # the most bytes of decoded images one source keeps in memory


class _Images:
    """Images at the model's input size, decoded and resized at most once, kept as uint8 in memory.

    A subclass reads item ``i`` (:meth:`_read`: a ``[C, S, S]`` tensor, uint8 0..255 or float 0..1,
    1 or 3 channels). :meth:`uint8` returns it as uint8 ``[3, S, S]``, from the decoded store when it
    is there; :meth:`decode` fills the store for many items at once (threads for files); indexing
    gives the [0, 1] float image. Every image is thus decoded and resized once per source, not once
    per epoch, and stored at 8 bits, which is what the files hold. A source whose
    decoded images would take more than :data:`DECODED_BUDGET_BYTES` keeps none and decodes per
    access, as a dataset too large for memory must.

    The store travels to loader workers with the dataset (torch shares its memory with them), so
    workers started after :meth:`decode` never decode again.
    """

    size: int | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def _read(self, i: int) -> Tensor:
        raise NotImplementedError

    def _shape(self) -> tuple[int, int, int]:
        side = self.size
        if side is None:
            return tuple(_as_uint8(self._read(0)).shape)
        return (3, side, side)

    def _store_ready(self) -> bool:
        """Allocate the store on first use (its pages are committed as items are written)."""
        if getattr(self, "_store", None) is not None:
            return True
        if getattr(self, "_no_store", False) or len(self) == 0:
            return False
        shape = self._shape()
        if len(self) * int(np.prod(shape)) > DECODED_BUDGET_BYTES:
            self._no_store = True
            return False
        self._store = torch.empty((len(self), *shape), dtype=torch.uint8)
        self._done = torch.zeros(len(self), dtype=torch.bool)
        return True

    def uint8(self, i: int) -> Tensor:
        """Item ``i`` as uint8 ``[3, S, S]``, decoded at most once."""
        if not self._store_ready():
            return _as_uint8(self._read(i))
        if not self._done[i]:
            self._store[i] = _as_uint8(self._read(i))
            self._done[i] = True
        return self._store[i]

    def decode(self, indices: Sequence[int] | Tensor) -> None:
        """Decode every item of ``indices`` into the store now (no-op for those already there)."""
        if not self._store_ready():
            return
        todo = [int(i) for i in torch.as_tensor(indices, dtype=torch.int64) if not self._done[int(i)]]
        self._decode_many(todo)

    def _decode_many(self, todo: list[int]) -> None:
        for i in todo:
            self.uint8(i)

    def gather(self, indices: Tensor) -> Tensor:
        """uint8 ``[B, 3, S, S]`` of ``indices``: one indexing of the store when all are decoded."""
        if self._store_ready() and bool(self._done[indices].all()):
            return self._store[indices]
        return torch.stack([self.uint8(int(i)) for i in indices])

    def __getitem__(self, i: int) -> Tensor:
        return self.uint8(i).float().div(255)


def _as_uint8(x: Tensor) -> Tensor:
    """``[C, S, S]`` (uint8, or float in [0, 1]) as uint8 ``[3, S, S]``, rounded to the nearest level."""
    if x.dtype != torch.uint8:
        x = x.clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.expand(3, -1, -1).contiguous() if x.shape[0] == 1 else x


class _TensorImages(_Images):
    """Images held in memory as ``[N, C, H, W]`` (uint8 0..255 or float 0..1), resized once each."""

    def __init__(self, data: Tensor, size: int | None = None) -> None:
        self.data = data
        self.size = size

    def __len__(self) -> int:
        return len(self.data)

    def _resized(self, x: Tensor) -> Tensor:
        """``x`` ``[B, C, H, W]`` at the model's size, as float in [0, 1]."""
        x = x.float().div(255) if x.dtype == torch.uint8 else x.float()
        if self.size is not None and tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def _final(self) -> bool:
        """The source already holds uint8 RGB images at the model's size (CIFAR at 32 px): it is its
        own store, nothing is decoded or copied."""
        d = self.data
        return (d.dtype == torch.uint8 and d.dim() == 4 and d.shape[1] == 3
                and (self.size is None or tuple(d.shape[-2:]) == (self.size, self.size)))

    def _read(self, i: int) -> Tensor:
        return self._resized(self.data[i][None])[0]

    def uint8(self, i: int) -> Tensor:
        return self.data[i] if self._final() else super().uint8(i)

    def gather(self, indices: Tensor) -> Tensor:
        return self.data[indices] if self._final() else super().gather(indices)

    def decode(self, indices: Sequence[int] | Tensor) -> None:
        if not self._final():
            super().decode(indices)

    def _decode_many(self, todo: list[int]) -> None:
        """Resize in batches: one interpolation per 1024 images instead of one per image."""
        for start in range(0, len(todo), 1024):
            part = torch.as_tensor(todo[start:start + 1024], dtype=torch.int64)
            images = self._resized(self.data[part])
            for i, x in zip(part.tolist(), images):
                self._store[i] = _as_uint8(x)
                self._done[i] = True


class _FileImages(_Images):
    """Image files decoded once each: optional box crop, centred zero-pad to square, resize."""

    def __init__(self, paths: Sequence[str], size: int, boxes: np.ndarray | None = None) -> None:
        self.paths = list(paths)
        self.size = size
        self.boxes = boxes  # [N, 4] as PIL crop boxes (left, top, right, bottom), 0-based

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, i: int) -> Tensor:
        with Image.open(self.paths[i]) as im:
            image = im.convert("RGB")
        if self.boxes is not None:
            image = _crop(image, self.boxes[i])
        return _pad_resize(image, self.size)

    def _decode_many(self, todo: list[int]) -> None:
        """Decode in threads: PIL releases the GIL while it decodes and resizes."""
        if len(todo) < 64:
            return super()._decode_many(todo)
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for i, x in zip(todo, pool.map(self._read, todo, chunksize=32)):
                self._store[i] = x
                self._done[i] = True


def _crop(image: Image.Image, box: np.ndarray) -> Image.Image:
    """Crop to ``box`` clamped to the image; the whole image if the clamped box is empty."""
    left, top = max(int(box[0]), 0), max(int(box[1]), 0)
    right, bottom = min(int(box[2]), image.width), min(int(box[3]), image.height)
    return image.crop((left, top, right, bottom)) if right > left and bottom > top else image


def _pad_resize(image: Image.Image, size: int) -> Tensor:
    """Zero-pad ``image`` to a centred square, resize it to ``size`` and return uint8 ``[3, S, S]``."""
    side = max(image.size)
    square = Image.new("RGB", (side, side))
    square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
    if side != size:
        square = square.resize((size, size), Image.Resampling.BILINEAR)
    return pil_to_tensor(square)


# ----------------------------------------------------------------------------- datasets


class ImageDataset(Dataset):
    """``(image, label)`` pairs: the [0, 1] image, then ``augment`` if set, then ImageNet normalisation.

    Example::

        ds = load_data(DataSpec(name="digits")).train
        ds.augment = torchvision.transforms.v2.ColorJitter(brightness=0.4)
        image, label = ds[0]          # float32 [3, 32, 32], int

    Args:
        images: indexable source whose items are float32 ``[3, S, S]`` in [0, 1] (a tensor
            ``[N, 3, S, S]`` works, uint8 0..255 too).
        labels: int64 ``[M]``, already relabelled; one per selected item.
        indices: which items of ``images`` this dataset holds (positions in the split's source
            pool); all of them when ``None``.
        augment: callable applied per sample to the [0, 1] image before normalisation. A public,
            settable attribute: a curriculum may swap it between epochs.
    """

    def __init__(self, images: Sequence[Tensor] | Tensor, labels: Tensor,
                 indices: Tensor | None = None,
                 augment: Callable[[Tensor], Tensor] | None = None) -> None:
        self.images = _TensorImages(images) if isinstance(images, Tensor) else images
        if indices is None:
            indices = torch.arange(len(self.images))
        self.indices = torch.as_tensor(indices, dtype=torch.int64)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        if len(self.labels) != len(self.indices):
            raise ValueError(f"labels: {len(self.labels)} labels for {len(self.indices)} images")
        self.augment = augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.image(i), int(self.labels[i])

    def image(self, i: int, augment: bool = True) -> Tensor:
        """The normalised image of item ``i``; ``augment=False`` skips :attr:`augment`."""
        return normalize(self.uint8(i, augment).float().div(255), IMAGENET_MEAN, IMAGENET_STD)

    def uint8(self, i: int, augment: bool = True) -> Tensor:
        """Item ``i`` as uint8 ``[3, S, S]`` (what loaders carry), after :attr:`augment` when set:
        the transform sees the [0, 1] image and its result is rounded back to 8 bits."""
        x = self._source_uint8(self.indices[i:i + 1])[0]
        if augment and self.augment is not None:
            x = _as_uint8(self.augment(x.float().div(255)))
        return x

    def batch(self, positions: Sequence[int] | Tensor, augment: bool = True) -> tuple[Tensor, Tensor]:
        """Items ``positions`` as a uint8 batch ``[B, 3, S, S]`` and their int64 labels ``[B]``."""
        positions = torch.as_tensor(positions, dtype=torch.int64)
        if augment and self.augment is not None:
            images = torch.stack([self.uint8(int(i)) for i in positions])
        else:
            images = self._source_uint8(self.indices[positions])
        return images, self.labels[positions]

    def decode(self) -> None:
        """Decode and resize every image of this dataset into its source's store now (once per
        source: a split that shares the source finds its images there)."""
        if isinstance(self.images, _Images):
            self.images.decode(self.indices)

    def _source_uint8(self, rows: Tensor) -> Tensor:
        if isinstance(self.images, _Images):
            return self.images.gather(rows)
        return torch.stack([_as_uint8(self.images[int(r)]) for r in rows])


def model_input(x: Tensor, device: torch.device | str = "cpu", *, channels_last: bool = False) -> Tensor:
    """A batch as a model takes it, on ``device``.

    A uint8 batch (what :func:`trainables.train.loader` yields for an :class:`ImageDataset`) travels
    as bytes (a quarter of float32's) and is scaled to [0, 1] and ImageNet-normalised on the device,
    with the same arithmetic as the item path (``normalize``); a float batch is taken as already
    normalised and only moved. ``non_blocking``: from pinned memory the copy overlaps computation.
    ``channels_last`` lays a 4-d batch out NHWC (what cuDNN's fast convolutions read).
    """
    x = x.to(device, non_blocking=True)
    if x.dtype == torch.uint8:
        mean, std = _normalisation(x.device)
        x = x.float().div_(255).sub_(mean).div_(std)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


_NORMALISATION: dict[torch.device, tuple[Tensor, Tensor]] = {}


def _normalisation(device: torch.device) -> tuple[Tensor, Tensor]:
    if device not in _NORMALISATION:
        _NORMALISATION[device] = (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
                                  torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))
    return _NORMALISATION[device]


class Batched(Dataset):
    """A dataset's items fetched a batch at a time as uint8 (``DataLoader`` calls ``__getitems__``).

    ``labeled`` False yields the images only, never augmented (the unlabeled view). Its collate
    function is :func:`as_batch`: the batch is already made.
    """

    def __init__(self, base: ImageDataset, labeled: bool = True) -> None:
        self.base, self.labeled = base, labeled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.__getitems__([i])

    def __getitems__(self, positions: list[int]):
        images, labels = self.base.batch(positions, augment=self.labeled)
        return (images, labels) if self.labeled else images


def as_batch(batch):
    """The collate function of :class:`Batched`: its ``__getitems__`` made the batch already."""
    return batch


def batched(dataset: Dataset) -> Batched | None:
    """The batch-at-a-time uint8 view of an :class:`ImageDataset` or of its unlabeled view; None for
    any other dataset (loaded item by item, as it is)."""
    if isinstance(dataset, ImageDataset):
        return Batched(dataset)
    if isinstance(dataset, _Unlabeled):
        return Batched(dataset.base, labeled=False)
    return None


class _Unlabeled(Dataset):
    """The images of an :class:`ImageDataset` without labels or augmentation."""

    def __init__(self, base: ImageDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Tensor:
        return self.base.image(i, augment=False)


@dataclass
class Splits:
    """The three splits of one :class:`DataSpec`, with the class names after relabelling."""

    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    num_classes: int
    class_names: list[str]
    spec: DataSpec

    def unlabeled(self, split: str = "train") -> Dataset:
        """``split`` ('train', 'val' or 'test') yielding the image tensor only, never augmented."""
        if split not in SPLITS:
            raise DataError(f"unlabeled split: {split!r} is not one of {', '.join(SPLITS)}")
        return _Unlabeled(getattr(self, split))


# ----------------------------------------------------------------------------- layouts


class _Raw(NamedTuple):
    """A dataset as read from disk: class names, train pool, official test pool (or None)."""

    class_names: list[str]
    train: Sequence[Tensor]
    train_labels: np.ndarray
    test: Sequence[Tensor] | None = None
    test_labels: np.ndarray | None = None


@dataclass(frozen=True)
class _Layout:
    """Where one dataset lives under its root and how to read it."""

    expects: str                                  # what the root must hold, for error messages
    folder: str | None                            # subfolder that may sit under root (else root is it)
    files: tuple[str | tuple[str, ...], ...]      # paths that must exist under the dataset folder
                                                  # (a tuple: any one of these alternatives)
    names: Callable[[Path], list[str]]            # class names, cheap
    read: Callable[[Path, int], _Raw]             # (folder, image_size) -> _Raw


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global that a CIFAR batch never holds."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualname = f"{module}.{name}"


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as a Python 3 protocol-2 pickle calls it for ``bytes``, latin-1 only."""
    if encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs", f"encode(..., {encoding!r})")
    return text.encode("latin-1")


@functools.cache
def _numpy_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR batch needs: numpy's array, dtype and scalar rebuilders.

    Python 2 wrote them as ``numpy.core.*`` (the official files), numpy 2 as ``numpy._core.*``;
    both names map to the objects of the numpy installed, without importing either module.
    """
    try:
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy < 2
        from numpy.core import multiarray, numeric
    allowed: dict[tuple[str, str], object] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
                                              ("_codecs", "encode"): _latin1_bytes}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer
    return allowed


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles CIFAR's python batches (dicts of str, bytes, int lists and numpy arrays) and nothing else.

    :meth:`find_class` is the only way a pickle reaches a callable; it returns the numpy rebuilders
    of :func:`_numpy_globals` and raises :class:`_Refused` for every other global, before anything
    is called, so a tampered file cannot run code.
    """

    def find_class(self, module: str, name: str) -> object:
        allowed = _numpy_globals()
        if (module, name) not in allowed:
            raise _Refused(module, name)
        return allowed[(module, name)]


def _unpickle(path: Path) -> dict:
    """The dict pickled in the CIFAR batch ``path``, read with :class:`_CifarUnpickler`.

    Raises :class:`DataError` naming the file when it holds any other object (say, one that would
    run code when unpickled) or cannot be read as a pickle at all. Python 2 strings come back as str
    (latin-1), as the official batches need.
    """
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(f, encoding="latin1").load()
    except _Refused as exc:
        raise DataError(f"data.root: {str(path)!r} holds a pickled {exc.qualname}, which a CIFAR batch never "
                        "does (only dicts, lists, strings, numbers and numpy arrays); refusing to load it") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataError(f"data.root: {str(path)!r} is not a readable CIFAR batch: {type(exc).__name__}: {exc}") from exc
    if not isinstance(batch, dict):
        raise DataError(f"data.root: {str(path)!r} holds a {type(batch).__name__}, not the dict of a CIFAR batch")
    return batch


def _cifar_batches(base: Path, files: Sequence[str], label_key: str) -> tuple[Tensor, np.ndarray]:
    """uint8 ``[N, 3, 32, 32]`` images and labels from CIFAR's python-pickle batches."""
    batches = [_unpickle(base / f) for f in files]
    data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
    labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), labels


def _cifar_reader(train: Sequence[str], test: str, meta: str, names_key: str, label_key: str):
    """Readers of CIFAR-10/100: pickles read directly (torchvision's class insists on the md5
    of the official files, so it cannot read anything else and hashes 160 MB per load)."""

    def names(base: Path) -> list[str]:
        return [str(n) for n in _unpickle(base / meta)[names_key]]

    def read(base: Path, size: int) -> _Raw:
        x, y = _cifar_batches(base, train, label_key)
        xt, yt = _cifar_batches(base, [test], label_key)
        return _Raw(names(base), _TensorImages(x, size), y, _TensorImages(xt, size), yt)

    return names, read


def _food_names(base: Path) -> list[str]:
    return [line.strip() for line in (base / "meta" / "classes.txt").read_text().splitlines() if line.strip()]


def _food_split(base: Path, split: str, index: dict[str, int], size: int) -> tuple[_FileImages, np.ndarray]:
    meta = json.loads((base / "meta" / f"{split}.json").read_text())
    paths, labels = [], []
    for name, items in meta.items():
        if name not in index:
            where = str(base / "meta" / f"{split}.json")
            raise DataError(f"data.root: {where!r} lists class {name!r}, missing from meta/classes.txt")
        paths += [str(base / "images" / f"{item}.jpg") for item in items]
        labels += [index[name]] * len(items)
    return _FileImages(paths, size), np.asarray(labels, dtype=np.int64)


def _food_read(base: Path, size: int) -> _Raw:
    names = _food_names(base)
    index = {n: i for i, n in enumerate(names)}
    train, y = _food_split(base, "train", index, size)
    test, yt = _food_split(base, "test", index, size)
    return _Raw(names, train, y, test, yt)


def _cars_names(base: Path) -> list[str]:
    names = scipy.io.loadmat(base / "devkit" / "cars_meta.mat", squeeze_me=True)["class_names"]
    return [str(n) for n in np.atleast_1d(names)]


def _cars_test_annos(base: Path) -> Path:
    top = base / "cars_test_annos_withlabels.mat"
    return top if top.exists() else base / "devkit" / top.name


def _cars_split(annos: Path, images: Path, size: int) -> tuple[_FileImages, np.ndarray]:
    """Images and 0-based labels of one split; boxes go from 1-based inclusive to PIL crop boxes."""
    a = np.atleast_1d(scipy.io.loadmat(annos, squeeze_me=True)["annotations"])
    boxes = np.stack([a[k].astype(np.int64) for k in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")], axis=1)
    boxes[:, :2] -= 1
    paths = [str(images / str(f)) for f in a["fname"]]
    return _FileImages(paths, size, boxes), a["class"].astype(np.int64) - 1


def _cars_read(base: Path, size: int) -> _Raw:
    train, y = _cars_split(base / "devkit" / "cars_train_annos.mat", base / "cars_train", size)
    test, yt = _cars_split(_cars_test_annos(base), base / "cars_test", size)
    return _Raw(_cars_names(base), train, y, test, yt)


def _folder_parts(root: Path) -> tuple[Path, Path | None]:
    """(train tree, test tree or None): ``training/validation``, ``train/test``, ``train/val``."""
    for train, tests in (("training", ("validation",)), ("train", ("test", "val"))):
        if (root / train).is_dir():
            for test in tests:
                if (root / test).is_dir():
                    return root / train, root / test
    return root, None


def _image_folder(path: Path) -> ImageFolder:
    try:
        return ImageFolder(str(path))
    except (FileNotFoundError, OSError) as e:  # no class folders, or a class folder without images
        reason = str(e).splitlines()[0]
        raise DataError(f"data.root: {str(path)!r} is not a class-per-folder image tree ({reason})") from None


def _folder_names(root: Path) -> list[str]:
    return _image_folder(_folder_parts(root)[0]).classes


def _folder_read(root: Path, size: int) -> _Raw:
    train_dir, test_dir = _folder_parts(root)
    train = _image_folder(train_dir)
    paths, labels = zip(*train.samples)
    if test_dir is None:
        return _Raw(train.classes, _FileImages(paths, size), np.asarray(labels, dtype=np.int64))
    test = _image_folder(test_dir)
    if test.classes != train.classes:
        raise DataError(f"data.root: {str(test_dir)!r} has classes {test.classes} "
                        f"but {str(train_dir)!r} has {train.classes}")
    test_paths, test_labels = zip(*test.samples)
    return _Raw(train.classes, _FileImages(paths, size), np.asarray(labels, dtype=np.int64),
                _FileImages(test_paths, size), np.asarray(test_labels, dtype=np.int64))


@contextlib.contextmanager
def _torchvision_root(base: Path, folder: str, gzipped: Sequence[str] = ()) -> Iterator[Path]:
    """A root on which a torchvision class finds ``base``'s files in ``<root>/<folder>/``.

    ``base`` itself when it already sits there; otherwise a temporary root whose ``<folder>/`` links
    to each file of ``base``, and holds a decompressed copy of each name in ``gzipped`` (read from
    ``<name>.gz``). The user's root is never written to (Debian's is read-only).
    """
    if not gzipped and base.parts[-len(Path(folder).parts):] == Path(folder).parts:
        yield Path(*base.parts[:-len(Path(folder).parts)])
        return
    with tempfile.TemporaryDirectory(prefix="frontier-data-") as tmp:
        inside = Path(tmp, folder)
        inside.mkdir(parents=True)
        for entry in base.iterdir():
            if entry.name not in gzipped and not (inside / entry.name).exists():
                (inside / entry.name).symlink_to(entry.resolve())
        for name in gzipped:
            source = base / f"{name}.gz"
            try:
                with gzip.open(source, "rb") as packed, open(inside / name, "wb") as out:
                    shutil.copyfileobj(packed, out, 1 << 20)
            except (OSError, EOFError) as exc:
                raise DataError(f"data.root: {str(source)!r} is not a readable gzip file: {exc}") from None
        yield Path(tmp)


def _unreadable(base: Path, exc: Exception) -> DataError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return DataError(f"data.root: {str(base)!r} holds files torchvision cannot read ({reason})")


_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_reader(cls: type[MNIST]):
    """Readers of an MNIST-style dataset by torchvision's class ``cls``.

    The four IDX files may sit in ``<root>/<Class>/raw/`` (what ``cls(download=True)`` leaves) or in
    the root itself, each plain or gzip'd. torchvision reads only plain files at
    ``<root>/<Class>/raw/`` (its IDX reader, ``read_sn3_pascalvincent_tensor``, opens a path: no
    stream, no .gz since torchvision 0.x dropped it), so a gzip'd file is decompressed into a
    temporary root, never beside the user's files, and the parsing (magic number, dtype, byte order,
    shapes) stays torchvision's. Decompressing Fashion-MNIST takes about half a second.
    """

    def names(_: Path) -> list[str]:
        return list(cls.classes)

    def read(base: Path, size: int) -> _Raw:
        gzipped = [name for name in _IDX if not (base / name).is_file()]
        try:
            with _torchvision_root(base, f"{cls.__name__}/raw", gzipped) as root:
                train, test = cls(str(root), train=True), cls(str(root), train=False)
        except (AssertionError, TypeError, ValueError, RuntimeError, OSError) as exc:
            raise _unreadable(base, exc) from None
        for part in (train, test):
            if len(part.data) != len(part.targets):
                raise DataError(f"data.root: {str(base)!r} has {len(part.data)} images but "
                                f"{len(part.targets)} labels in its {'train' if part.train else 't10k'} files")
        return _Raw(list(cls.classes), _TensorImages(train.data.unsqueeze(1), size), train.targets.numpy(),
                    _TensorImages(test.data.unsqueeze(1), size), test.targets.numpy())

    return names, read


class _LocalSVHN(SVHN):
    """torchvision's SVHN without its md5 check: the official hashes refuse every other file (a
    subset, a test's made file) and would hash 245 MB per load; the root is the user's own."""

    split_list = {split: [url, name, None] for split, (url, name, _) in SVHN.split_list.items()}


def _svhn_read(base: Path, size: int) -> _Raw:
    try:
        train, test = _LocalSVHN(str(base), split="train"), _LocalSVHN(str(base), split="test")
    except (ValueError, TypeError, KeyError, NotImplementedError, RuntimeError, OSError) as exc:
        raise _unreadable(base, exc) from None
    return _Raw([str(d) for d in range(10)],
                _TensorImages(torch.from_numpy(np.ascontiguousarray(train.data)), size), train.labels,
                _TensorImages(torch.from_numpy(np.ascontiguousarray(test.data)), size), test.labels)


class _LocalSTL10(STL10):
    """torchvision's STL-10 without its md5 check (as :class:`_LocalSVHN`) and without the 2.6 GB
    ``unlabeled_X.bin`` it insists on even for the labelled splits: ``train_list`` keeps its first
    two entries, the only ones the train split reads (by position)."""

    train_list = [[name, None] for name, _ in STL10.train_list[:2]]
    test_list = [[name, None] for name, _ in STL10.test_list]


_STL10_NAMES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _stl10_names(base: Path) -> list[str]:
    names = base / STL10.class_names_file
    return [n for n in names.read_text().splitlines() if n.strip()] if names.is_file() else list(_STL10_NAMES)


def _stl10_read(base: Path, size: int) -> _Raw:
    try:
        with _torchvision_root(base, STL10.base_folder) as root:
            train, test = _LocalSTL10(str(root), split="train"), _LocalSTL10(str(root), split="test")
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        raise _unreadable(base, exc) from None
    for part, name in ((train, "train"), (test, "test")):
        if len(part.data) != len(part.labels):
            raise DataError(f"data.root: {str(base)!r} has {len(part.data)} images but {len(part.labels)} "
                            f"labels in {name}_X.bin / {name}_y.bin")
    return _Raw(_stl10_names(base),
                _TensorImages(torch.from_numpy(np.ascontiguousarray(train.data)), size), train.labels.astype(np.int64),
                _TensorImages(torch.from_numpy(np.ascontiguousarray(test.data)), size), test.labels.astype(np.int64))


def _digits_read(_: Path | None, size: int) -> _Raw:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)  # [1797, 1, 8, 8] in [0, 1]
    return _Raw([str(c) for c in range(10)], _TensorImages(images, size), digits.target.astype(np.int64))


_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10 = _cifar_reader(_CIFAR10_TRAIN, "test_batch", "batches.meta", "label_names", "labels")
_CIFAR100 = _cifar_reader(["train"], "test", "meta", "fine_label_names", "fine_labels")

_LAYOUTS: dict[str, _Layout] = {
    "cifar10": _Layout("the folder holding 'cifar-10-batches-py'", "cifar-10-batches-py",
                       _CIFAR10_TRAIN + ("test_batch", "batches.meta"), *_CIFAR10),
    "cifar100": _Layout("the folder holding 'cifar-100-python'", "cifar-100-python",
                        ("train", "test", "meta"), *_CIFAR100),
    "food101": _Layout("the folder holding 'food-101/' with images/ and meta/", "food-101",
                       ("images", "meta/classes.txt", "meta/train.json", "meta/test.json"), _food_names, _food_read),
    "stanford_cars": _Layout("the folder holding 'stanford_cars/' in torchvision's layout", "stanford_cars",
                             ("devkit/cars_meta.mat", "devkit/cars_train_annos.mat", "cars_train", "cars_test"),
                             _cars_names, _cars_read),
    "imagefolder": _Layout("a class-per-folder image tree", None, (), _folder_names, _folder_read),
    "svhn": _Layout("the folder holding train_32x32.mat and test_32x32.mat", "svhn",
                    ("train_32x32.mat", "test_32x32.mat"), lambda _: [str(d) for d in range(10)], _svhn_read),
    "stl10": _Layout("the folder holding 'stl10_binary/' (train_X.bin, train_y.bin, test_X.bin, test_y.bin)",
                     STL10.base_folder, ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"),
                     _stl10_names, _stl10_read),
}
for _name, _cls in (("mnist", MNIST), ("fashion_mnist", FashionMNIST), ("kmnist", KMNIST)):
    _LAYOUTS[_name] = _Layout(f"the four IDX files (train-images-idx3-ubyte, ...; gzip'd or not) in the folder "
                              f"or in its '{_cls.__name__}/raw'", f"{_cls.__name__}/raw",
                              tuple((f, f"{f}.gz") for f in _IDX), *_mnist_reader(_cls))


# ----------------------------------------------------------------------------- checks


def _locate(spec: DataSpec) -> Path | None:
    """The dataset folder under ``spec.root`` (None for digits), or DataError naming what is missing."""
    if spec.name == "digits":
        return None
    layout = _LAYOUTS[spec.name]
    hint = f"({spec.name} expects {layout.expects})"
    if spec.root is None:
        raise DataError(f"data.root: None; {spec.name} is read from a local folder, no downloads {hint}")
    root = Path(os.path.expanduser(spec.root))
    if not root.is_dir():
        raise DataError(f"data.root: {spec.root!r} does not exist or is not a folder {hint}")
    base = root / layout.folder if layout.folder and (root / layout.folder).is_dir() else root
    for rel in layout.files:
        options = (rel,) if isinstance(rel, str) else rel
        if not any((base / option).exists() for option in options):
            named = " or ".join(repr(str(base.relative_to(root) / option)) for option in options)
            raise DataError(f"data.root: {spec.root!r} has no {named} {hint}")
    if spec.name == "stanford_cars" and not _cars_test_annos(base).exists():
        raise DataError(f"data.root: {spec.root!r} has no 'cars_test_annos_withlabels.mat' {hint}")
    return base


def _check_classes(spec: DataSpec, names: list[str]) -> None:
    for c in spec.classes or ():
        if c >= len(names):
            raise DataError(f"data.classes: {c} is out of range for {spec.name} (valid 0..{len(names) - 1})")


def check_root(spec: DataSpec) -> None:
    """Raise :class:`DataError` unless ``spec``'s dataset files are where they must be.

    Also checks ``spec.classes`` against the dataset's class count (read from its metadata,
    cheap: no images are decoded). ``digits`` needs no root and always passes the root check.
    """
    base = _locate(spec)
    names = [str(c) for c in range(10)] if base is None else _LAYOUTS[spec.name].names(base)
    _check_classes(spec, names)


# ----------------------------------------------------------------------------- splits


def _take(n: int, fraction: float) -> int:
    """How many of ``n`` items a ``fraction`` holds out: at least one, never all (0 if n < 2)."""
    return 0 if n < 2 else min(n - 1, max(1, round(n * fraction)))


def _split_class(idx: np.ndarray, spec: DataSpec, cls: int, carve_test: bool) -> tuple[np.ndarray, ...]:
    """(train, val, test) positions of one class: a seeded permutation cut ``[test | val | train]``."""
    rng = np.random.default_rng([spec.seed % 2**63, cls])
    idx = idx[rng.permutation(len(idx))]
    n_test = _take(len(idx), spec.test_fraction) if carve_test else 0
    test, pool = idx[:n_test], idx[n_test:]
    if spec.max_per_class is not None:
        pool = pool[: spec.max_per_class]
    n_val = _take(len(pool), spec.val_fraction)
    return pool[n_val:], pool[:n_val], test


def _split(labels: np.ndarray, classes: list[int], spec: DataSpec, carve_test: bool) -> list[np.ndarray]:
    """Sorted (train, val, test) positions in a pool over the kept ``classes``."""
    parts = [_split_class(np.flatnonzero(labels == c), spec, c, carve_test) for c in classes]
    return [np.sort(np.concatenate([p[k] for p in parts])) for k in range(3)]


def _dataset(images: Sequence[Tensor], labels: np.ndarray, idx: np.ndarray, relabel: np.ndarray) -> ImageDataset:
    return ImageDataset(images, torch.from_numpy(relabel[labels[idx]]), torch.from_numpy(idx))


def load_data(spec: DataSpec) -> Splits:
    """Load ``spec``'s dataset from its local root and split it (see the module docstring).

    Example::

        splits = load_data(DataSpec(name="digits", classes=[5, 6, 7, 8, 9]))
        image, label = splits.train[0]    # float32 [3, 32, 32], label in 0..4

    Raises:
        DataError: missing or incomplete root, or a class index out of range.
    """
    base = _locate(spec)
    raw = _digits_read(None, spec.image_size) if base is None else _LAYOUTS[spec.name].read(base, spec.image_size)
    _check_classes(spec, raw.class_names)
    classes = list(range(len(raw.class_names))) if spec.classes is None else list(spec.classes)
    relabel = np.full(len(raw.class_names), -1, dtype=np.int64)
    relabel[classes] = np.arange(len(classes))
    train, val, test = _split(raw.train_labels, classes, spec, carve_test=raw.test is None)
    if raw.test is not None:
        test = np.sort(np.flatnonzero(np.isin(raw.test_labels, classes)))
    test_images, test_labels = (raw.train, raw.train_labels) if raw.test is None else (raw.test, raw.test_labels)
    return Splits(
        train=_dataset(raw.train, raw.train_labels, train, relabel),
        val=_dataset(raw.train, raw.train_labels, val, relabel),
        test=_dataset(test_images, test_labels, test, relabel),
        num_classes=len(classes),
        class_names=[raw.class_names[c] for c in classes],
        spec=spec,
    )
