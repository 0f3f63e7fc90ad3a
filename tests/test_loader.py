"""Data loading: uint8 batches decoded once and normalised on the device, workers that live from
pass to pass and still see a curriculum's change of augmentation, a context safe inside Ray."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from PIL import Image

from trainables.data import DataSpec, ImageDataset, load_data, model_input
from tests.loader_task import train_one_epoch_with_two_loader_workers
from trainables.train import WORKER_CONTEXT, loader, loader_workers_for, set_loader_workers


@pytest.fixture()
def two_workers():
    set_loader_workers(2)
    yield
    set_loader_workers(0)


def blank(image: torch.Tensor) -> torch.Tensor:
    """An augmentation that turns every image black (module level: workers unpickle it)."""
    return torch.zeros_like(image)


def stamp_worker(image: torch.Tensor) -> torch.Tensor:
    """Every pixel set to this process's id modulo 251, in 8-bit levels: which worker made the image."""
    return torch.full_like(image, (os.getpid() % 251) / 255)


def test_workers_yield_the_same_shuffled_batches(target_splits, two_workers) -> None:
    inline = list(loader(target_splits.train, 64, shuffle=True, seed=3, num_workers=0))
    workers = loader(target_splits.train, 64, shuffle=True, seed=3)
    assert workers.num_workers == 2
    batches = list(workers)
    assert len(batches) == len(inline) == len(workers)
    for (x, y), (x0, y0) in zip(batches, inline):
        assert torch.equal(y, y0) and torch.equal(x, x0)


def test_batches_are_uint8_and_normalised_on_the_device_exactly_as_items_are(target_splits) -> None:
    x, y = next(iter(loader(target_splits.train, 16, shuffle=False)))
    assert x.dtype == torch.uint8 and x.shape == (16, 3, 32, 32)
    items = torch.stack([target_splits.train[i][0] for i in range(16)])
    assert torch.equal(model_input(x), items), "the device path and the item path give the same input"
    assert torch.equal(y, target_splits.train.labels[:16])
    unlabeled = next(iter(loader(target_splits.unlabeled("train"), 16, shuffle=False)))
    assert torch.equal(unlabeled, x), "the unlabeled view yields the images only"


def test_each_epoch_has_its_own_order_from_one_seed(target_splits) -> None:
    data = loader(target_splits.train, 512, shuffle=True, seed=1)
    first, second = (next(iter(data))[1] for _ in range(2))
    again = next(iter(loader(target_splits.train, 512, shuffle=True, seed=1)))[1]
    assert not torch.equal(first, second) and torch.equal(first, again)


def test_a_new_augmentation_reaches_the_workers_at_the_next_epoch(target_splits, two_workers) -> None:
    data = loader(target_splits.train, 64, shuffle=False)
    first = next(iter(data))[0]
    target_splits.train.augment = blank
    try:
        second = next(iter(data))[0]
    finally:
        target_splits.train.augment = None
    assert first.any() and not second.any(), "the second pass ran the new augmentation"


def test_workers_live_from_one_pass_to_the_next(target_splits, two_workers) -> None:
    target_splits.train.augment = stamp_worker
    try:
        data = loader(target_splits.train, 32, shuffle=True, seed=0)
        passes = [{int(x[i, 0, 0, 0]) for x, _ in data for i in range(len(x))} for _ in range(2)]
    finally:
        target_splits.train.augment = None
    assert len(passes[0]) == 2, "two workers made the batches"
    assert passes[0] == passes[1], "the same two processes made the second pass"
    assert os.getpid() % 251 not in passes[0]


def test_files_are_decoded_once_so_a_second_epoch_needs_none_of_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(12):
        (tmp_path / "tree" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "tree" / f"c{i % 2}" / f"{i}.png")
    splits = load_data(DataSpec(name="imagefolder", root=str(tmp_path / "tree"), image_size=16, test_fraction=0.2))
    data = loader(splits.train, 4, shuffle=True, seed=0)
    first = sorted(tuple(x.flatten().tolist()) for batch, _ in data for x in batch)
    shutil.rmtree(tmp_path / "tree")  # the files are gone: a second decode would fail
    second = sorted(tuple(x.flatten().tolist()) for batch, _ in data for x in batch)
    assert first == second and len(first) == len(splits.train)


def test_a_source_over_the_memory_budget_decodes_per_access(monkeypatch, target_splits) -> None:
    import trainables.data as data

    monkeypatch.setattr(data, "DECODED_BUDGET_BYTES", 1000)
    small = load_data(DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32))
    small.train.decode()
    assert getattr(small.train.images, "_store", None) is None
    assert torch.equal(small.train[3][0], target_splits.train[3][0]), "same images, decoded each time"


def test_augmented_images_are_rounded_back_to_eight_bits(target_splits) -> None:
    ds = ImageDataset(target_splits.train.images, target_splits.train.labels[:4], target_splits.train.indices[:4],
                      augment=lambda x: x * 0.5)
    x = ds.uint8(0)
    assert x.dtype == torch.uint8
    assert torch.equal(x, (target_splits.train.uint8(0).float() / 255 * 0.5).mul(255).round().to(torch.uint8))


def test_loader_workers_start_safely_inside_a_ray_worker(target_splits, local_ray) -> None:
    assert WORKER_CONTEXT in ("forkserver", "spawn"), "never fork a process that holds Ray's threads"
    task = ray.remote(train_one_epoch_with_two_loader_workers).options(num_cpus=1)
    assert np.isfinite(ray.get(task.remote(target_splits), timeout=300))


def test_gpu_trials_load_in_all_their_cpus_but_one_and_cpu_trials_in_none() -> None:
    assert loader_workers_for("cuda", 4) == 3 and loader_workers_for("cuda:1", 1) == 0
    assert loader_workers_for("cuda", 64) == 8
    assert loader_workers_for("cpu", 16) == 0
    with pytest.raises(ValueError, match="workers must be an int >= 0 but got -1"):
        set_loader_workers(-1)
