"""The training batches a unit importance observes (:meth:`~trainables.compress.importance.Importance.observe`).

An importance that needs data (``taylor``: gradients of the loss) gets a few batches of the
stage's training data at each mask update, through a :data:`TrainingBatches` callable that the
stage hands its pruner (:class:`~trainables.stages.pruners.Pruner`, ``batches=``).
:func:`training_batches` is the stage's: the training images in an order of their own, model
inputs already, never augmented, drawing no random number from the stage's streams.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.utils.data import Dataset, default_collate

from ..data import ImageDataset, model_input

TrainingBatches = Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]]
"""``n -> n batches (x, y)``: ``x`` a model input (normalised, on the stage's device), ``y`` int64 labels there."""


def training_batches(dataset: Dataset, batch_size: int, device: torch.device | str, *,
                     seed: int = 0) -> TrainingBatches:
    """Batches of ``dataset`` for an importance to observe, ``batch_size`` items each.

    The items come in one permutation of their own (a ``torch.Generator`` seeded with ``seed``,
    so the global random streams the stage trains with are not touched), each call continuing
    where the last stopped and starting over at the end: successive mask updates see different
    images. An :class:`~trainables.data.ImageDataset` gives its plain images (``augment`` is
    skipped: the stage's augmentation draws from the global streams); any other dataset is read
    item by item (a ``TensorDataset`` in tests). ``x`` goes through
    :func:`~trainables.data.model_input` (uint8 scaled and normalised on ``device``).

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> take = training_batches(TensorDataset(torch.zeros(5, 3, 2, 2), torch.arange(5)), 2, "cpu")
        >>> [tuple(x.shape) for x, _ in take(3)]
        [(2, 3, 2, 2), (2, 3, 2, 2), (1, 3, 2, 2)]

    Raises:
        ValueError: ``batch_size`` below 1 or an empty ``dataset``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1 but got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("dataset: an importance needs training batches but the dataset is empty")
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    position = 0

    def take(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        nonlocal position
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0 but got {n!r}")
        out = []
        for _ in range(n):
            if position >= len(order):
                position = 0
            items = order[position:position + batch_size]
            position += len(items)
            if isinstance(dataset, ImageDataset):
                x, y = dataset.batch(items, augment=False)
            else:
                x, y = default_collate([dataset[int(i)] for i in items])
            out.append((model_input(x, device), torch.as_tensor(y, dtype=torch.int64).to(device)))
        return out

    return take
