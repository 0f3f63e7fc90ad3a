"""Named training augmentations a stage can ask for, and the way a stage puts one on its data.

``shift_mirror`` is the "standard data augmentation scheme (shifting/mirroring)" the pruning-order
paper uses for its pruning and transfer stages (sec. 4.1, after He et al. 2016): each training
image is shifted by a random whole number of pixels, up to 1/8 of its side in each direction
(CIFAR's "pad 4, random 32x32 crop" at 32x32; the uncovered border is 0, black in [0, 1]), then
mirrored left-right with probability 1/2. It is off by default: a mirrored digit is another
digit, or none.

A transform here works on one [0, 1] image tensor, as :class:`~trainables.data.ImageDataset`'s
``augment`` attribute expects (it runs before normalisation). A stage installs its transform only
while it trains (:func:`augmented`), so the next stage, and evaluation, see plain images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torchvision.transforms import v2

Augment = Literal["none", "shift_mirror"]
AUGMENTS: tuple[str, ...] = ("none", "shift_mirror")
SHIFT = 1 / 8  # the largest shift, as a share of the image side

Transform = Callable[[torch.Tensor], torch.Tensor]


def shift_mirror(shift: float = SHIFT) -> Transform:
    """Random shift by up to ``shift`` of the side (whole pixels, zero fill), then a random mirror.

    Example:
        >>> torch.manual_seed(0) and None
        >>> out = shift_mirror()(torch.rand(3, 32, 32))
        >>> tuple(out.shape)
        (3, 32, 32)

    Args:
        shift: the largest translation in each direction, as a share of the image's width/height.
    """
    if not 0 <= shift < 0.5:
        raise ValueError(f"shift must be in [0, 0.5) but got {shift}")
    return v2.Compose([v2.RandomAffine(degrees=0, translate=(shift, shift), fill=0), v2.RandomHorizontalFlip()])


def named(name: str) -> Transform | None:
    """The transform an ``augment`` field names; None for ``none``."""
    if name not in AUGMENTS:
        raise ValueError(f"augment must be one of {', '.join(AUGMENTS)} but got {name!r}")
    return shift_mirror() if name == "shift_mirror" else None


def then(first: Transform | None, second: Transform | None) -> Transform | None:
    """``first`` followed by ``second`` (either may be None): a stage's own augmentation, then the
    curriculum level's (:mod:`trainables.curriculum`)."""
    if first is None or second is None:
        return first if second is None else second
    return v2.Compose([first, second])


@contextmanager
def augmented(dataset: Any, transform: Transform | None) -> Iterator[None]:
    """Set ``dataset.augment`` to ``transform`` for the block, then put back what was there.

    A None ``transform`` leaves the dataset alone (a plain ``TensorDataset`` then works too).
    """
    if transform is None:
        yield
        return
    if not hasattr(dataset, "augment"):
        raise TypeError(f"{type(dataset).__name__} has no 'augment' attribute to augment its images with")
    before = dataset.augment
    dataset.augment = transform
    try:
        yield
    finally:
        dataset.augment = before
