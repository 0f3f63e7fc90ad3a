"""Curriculum augmentation, as in the transfer paper (sec. IV-C 2).

Training starts without augmentation; "whenever the model's training accuracy goes nearly 100%
and validation accuracy stops rising, we further augment the data": + random horizontal flip ->
+ random rotation and random affine -> + brightness, contrast, saturation, hue change by 20% ->
the same by 50%. :class:`Curriculum` decides when to step up from both conditions, validation
accuracy on a plateau and training accuracy near 100%; a plateau without the second (or at the
last level) says stop (early stopping on validation).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torchvision.transforms import v2

LEVELS = ("none", "flip", "flip+rotate+affine", "flip+rotate+affine+jitter20", "flip+rotate+affine+jitter50")


def augmentation(level: int) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The per-sample transform of curriculum ``level`` (0 = none), for a [0,1] image tensor."""
    if not 0 <= level < len(LEVELS):
        raise ValueError(f"level must be in [0, {len(LEVELS) - 1}] but got {level}")
    if level == 0:
        return None
    steps: list[torch.nn.Module] = [v2.RandomHorizontalFlip()]
    if level >= 2:
        # the paper's rotation is uniform in [-10, 10] degrees; the affine shift and scale are ours
        steps += [v2.RandomRotation(10), v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1))]
    if level >= 3:
        strength = 0.2 if level == 3 else 0.5
        steps.append(v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength, hue=strength))
    return v2.Compose(steps)


def flip_cutout() -> Callable[[torch.Tensor], torch.Tensor]:
    """The EPruning paper's training augmentation (sec. 4: "horizontal flip and Cutout"), for a
    [0,1] image tensor: a random horizontal flip, then one square of a quarter of the image's area
    set to 0 at a random place (Cutout's 16x16 on CIFAR's 32x32). torchvision has no Cutout;
    ``RandomErasing`` with a fixed square size and value 0 is one, except that its square always
    lies inside the image where Cutout's may cross the border."""
    return v2.Compose([v2.RandomHorizontalFlip(),
                       v2.RandomErasing(p=1.0, scale=(0.25, 0.25), ratio=(1.0, 1.0), value=0.0)])


class Curriculum:
    """Steps augmentation up when the model fits its training data and validation stops rising.

    The transfer paper (sec. IV-C 2): "whenever the model's training accuracy goes nearly 100%
    and validation accuracy stops rising, we further augment the data". The rule, per epoch:

    1. validation accuracy above the best since the last step-up by more than ``min_delta``: a
       new best, keep going;
    2. otherwise one more epoch on the *plateau*; below ``patience`` such epochs, keep going;
    3. on the plateau (``patience`` epochs without a new best): *step up* when a level is left
       and this epoch's training accuracy is at least ``train_accuracy``; else *stop*.

    So a plateau always ends something: a model that never reaches the training threshold stops
    after ``patience`` flat epochs (early stopping, as at the last level), and is never kept
    training on a plateau that would not step up. More augmentation helps a model that has fit
    its training data; one that has not is underfitting, and harder data would not help it.
    Stepping up resets the best and the plateau count (augmented data starts lower).

    Args:
        patience: epochs without a new best validation accuracy (at the current level) before
            stepping up or stopping.
        max_level: the highest level used (``len(LEVELS) - 1`` for the paper's full curriculum;
            0 turns augmentation off and leaves plain early stopping).
        min_delta: the rise in validation accuracy that counts as rising.
        train_accuracy: the training accuracy (share, in [0, 1]) that counts as "nearly 100%";
            0 steps up on the validation plateau alone.

    Example:
        >>> c = Curriculum(patience=1, max_level=2, train_accuracy=0.99)
        >>> c.update(0.5, 1.0), c.update(0.5, 1.0), c.level     # plateau, training fit: step up
        (False, False, 1)
        >>> c.update(0.6, 0.9), c.update(0.6, 0.9), c.level     # plateau, training at 90%: stop
        (False, True, 1)
    """

    def __init__(self, patience: int = 2, max_level: int = len(LEVELS) - 1, min_delta: float = 0.0,
                 train_accuracy: float = 0.99) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 but got {patience}")
        if not 0 <= max_level < len(LEVELS):
            raise ValueError(f"max_level must be in [0, {len(LEVELS) - 1}] but got {max_level}")
        if not 0 <= train_accuracy <= 1:
            raise ValueError(f"train_accuracy must be in [0, 1] but got {train_accuracy}")
        self.patience, self.max_level, self.min_delta = patience, max_level, min_delta
        self.train_accuracy = train_accuracy
        self.level = 0
        self.best = -math.inf  # best validation accuracy since the last step-up
        self.wait = 0
        self.steps: list[int] = []  # epoch (1-based) at which each step-up happened
        self._epoch = 0

    def update(self, val_accuracy: float, train_accuracy: float | None = None) -> bool:
        """Record one epoch's validation and training accuracy; True means training should stop.

        ``train_accuracy`` None (not measured) leaves the validation plateau alone to decide, as
        with a ``train_accuracy`` threshold of 0.
        """
        self._epoch += 1
        if val_accuracy > self.best + self.min_delta:
            self.best, self.wait = val_accuracy, 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        fits = train_accuracy is None or train_accuracy >= self.train_accuracy
        if self.level == self.max_level or not fits:
            return True
        self.level += 1
        self.steps.append(self._epoch)
        self.best, self.wait = -math.inf, 0
        return False

    @property
    def transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The augmentation of the current level."""
        return augmentation(self.level)
