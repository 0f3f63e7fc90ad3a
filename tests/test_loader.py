"""Data-loading workers: the same batches as the training loop's own loading, and a curriculum's
change of augmentation between epochs reaches them."""

from __future__ import annotations

import pytest
import torch

from trainables.train import loader, loader_workers_for, set_loader_workers


@pytest.fixture()
def two_workers():
    set_loader_workers(2)
    yield
    set_loader_workers(0)


def test_workers_yield_the_same_shuffled_batches(target_splits, two_workers) -> None:
    inline = list(loader(target_splits.train, 64, shuffle=True, seed=3, num_workers=0))
    workers = loader(target_splits.train, 64, shuffle=True, seed=3)
    assert workers.num_workers == 2
    batches = list(workers)
    assert len(batches) == len(inline)
    for (x, y), (x0, y0) in zip(batches, inline):
        assert torch.equal(y, y0) and torch.equal(x, x0)


def test_a_new_augmentation_reaches_the_workers_at_the_next_epoch(target_splits, two_workers) -> None:
    data = loader(target_splits.train, 64, shuffle=False)
    first = next(iter(data))[0]
    target_splits.train.augment = lambda image: torch.zeros_like(image)
    try:
        second = next(iter(data))[0]
    finally:
        target_splits.train.augment = None
    assert not torch.equal(first, second)
    assert torch.allclose(second, second[:, :, :1, :1].expand_as(second)), "every pixel is the normalised 0"


def test_gpu_trials_load_in_all_their_cpus_but_one_and_cpu_trials_in_none() -> None:
    assert loader_workers_for("cuda", 4) == 3 and loader_workers_for("cuda:1", 1) == 0
    assert loader_workers_for("cuda", 64) == 8
    assert loader_workers_for("cpu", 16) == 0
    with pytest.raises(ValueError, match="workers must be an int >= 0 but got -1"):
        set_loader_workers(-1)
