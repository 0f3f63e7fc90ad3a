"""Curriculum augmentation: when it steps up, what each level does, and when it stops."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from trainables.curriculum import LEVELS, Curriculum, augmentation, flip_cutout
from trainables.data import DataSpec, load_data
from trainables.models import build_model
from trainables.stages.transfer import TransferConfig, transfer
from trainables.train import OptimConfig


def feed(c: Curriculum, accuracies: list[float]) -> list[bool]:
    return [c.update(a) for a in accuracies]


def test_steps_up_only_when_validation_accuracy_stops_rising() -> None:
    c = Curriculum(patience=2)
    assert feed(c, [0.5, 0.6, 0.7, 0.8]) == [False] * 4 and c.level == 0
    feed(c, [0.8])  # one flat epoch: patience not reached
    assert c.level == 0
    feed(c, [0.79])
    assert c.level == 1 and c.steps == [6]


def test_walks_the_papers_levels_then_stops() -> None:
    c = Curriculum(patience=1)
    stops = feed(c, [0.9, 0.9] * len(LEVELS))
    assert c.level == len(LEVELS) - 1
    assert stops[-1] is True and not any(stops[:-1])
    assert len(c.steps) == len(LEVELS) - 1


def test_level_zero_is_plain_early_stopping() -> None:
    c = Curriculum(patience=3, max_level=0)
    assert feed(c, [0.5, 0.5, 0.5, 0.5]) == [False, False, False, True]
    assert c.transform is None


def test_a_drop_after_step_up_does_not_count_against_the_new_level() -> None:
    c = Curriculum(patience=1, max_level=2)
    feed(c, [0.9, 0.9])  # step up to level 1
    assert c.level == 1
    assert feed(c, [0.6]) == [False] and c.level == 1  # augmented data starts lower: a new best for this level


def kinds(level: int) -> list[type]:
    return [type(t) for t in augmentation(level).transforms]


def test_levels_add_the_papers_transforms_in_order() -> None:
    assert augmentation(0) is None
    assert kinds(1) == [v2.RandomHorizontalFlip]
    assert kinds(2) == [v2.RandomHorizontalFlip, v2.RandomRotation, v2.RandomAffine]
    assert kinds(3)[-1] is v2.ColorJitter and kinds(4)[-1] is v2.ColorJitter
    assert augmentation(3).transforms[-1].brightness == pytest.approx((0.8, 1.2))
    assert augmentation(4).transforms[-1].brightness == pytest.approx((0.5, 1.5))


def test_augmentations_keep_shape_and_range() -> None:
    torch.manual_seed(0)
    image = torch.rand(3, 32, 32)
    for level in range(1, len(LEVELS)):
        out = augmentation(level)(image)
        assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="patience must be >= 1 but got 0"):
        Curriculum(patience=0)
    with pytest.raises(ValueError, match="max_level must be in"):
        Curriculum(max_level=9)
    with pytest.raises(ValueError, match=r"train_accuracy must be in \[0, 1\] but got 1.5"):
        Curriculum(train_accuracy=1.5)
    with pytest.raises(ValueError, match="curriculum_train_accuracy"):
        TransferConfig(curriculum_train_accuracy=-0.1)


def feed_both(c: Curriculum, epochs: list[tuple[float, float]]) -> list[bool]:
    return [c.update(val, train) for val, train in epochs]


def test_a_plateau_with_training_accuracy_near_100_percent_steps_up() -> None:
    """The paper's two conditions together: validation flat and training accuracy nearly 100%."""
    c = Curriculum(patience=2, max_level=2, train_accuracy=0.99)
    assert feed_both(c, [(0.5, 0.95), (0.5, 0.99), (0.5, 0.995)]) == [False] * 3
    assert c.level == 1 and c.steps == [3]


def test_a_plateau_with_low_training_accuracy_stops_instead_of_stepping_up() -> None:
    """Training accuracy below the threshold on a plateau ends training after ``patience`` flat
    epochs (early stopping), even with levels left: it never waits forever for a threshold that
    an underfitting model does not reach."""
    c = Curriculum(patience=2, max_level=4, train_accuracy=0.99)
    assert feed_both(c, [(0.5, 0.6), (0.5, 0.7), (0.5, 0.98)]) == [False, False, True]
    assert c.level == 0 and c.steps == []
    # rising validation never stops, whatever the training accuracy
    c = Curriculum(patience=1, train_accuracy=0.99)
    assert feed_both(c, [(0.1 * i, 0.2) for i in range(1, 8)]) == [False] * 7


def test_a_plateau_at_the_last_level_stops_even_with_training_accuracy_at_100_percent() -> None:
    c = Curriculum(patience=1, max_level=1, train_accuracy=0.99)
    assert feed_both(c, [(0.5, 1.0), (0.5, 1.0), (0.4, 1.0), (0.4, 1.0)]) == [False, False, False, True]
    assert c.level == 1


@pytest.fixture(scope="module")
def tiny_target():
    return load_data(DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=16, max_per_class=40))


@pytest.mark.parametrize("threshold, stepped", [(0.99, False), (0.0, True)])
def test_transfer_steps_the_curriculum_up_only_when_training_accuracy_reaches_the_threshold(
        tiny_target, threshold: float, stepped: bool) -> None:
    """A head that cannot learn (lr 1e-12) sits on a validation plateau at chance training
    accuracy: with the paper's threshold transfer stops at the first plateau, level 0; with
    threshold 0 (the plateau alone) it steps up. ``fit`` hands the curriculum the epoch's
    ``train_accuracy`` through ``stop_epoch``."""
    torch.manual_seed(0)
    cfg = TransferConfig(mode="freeze", epochs=6, batch_size=64, patience=1, curriculum=4,
                         curriculum_train_accuracy=threshold, optim=OptimConfig(name="sgd", lr=1e-12))
    _, metrics = transfer(build_model("small_resnet", 5), tiny_target, cfg)
    if stepped:
        assert metrics["curriculum_level"] >= 1
    else:
        assert metrics["curriculum_level"] == 0 and metrics["epochs"] == 2


def test_flip_cutout_zeroes_one_quarter_square_and_flips_half_the_time() -> None:
    """The EPruning paper's augmentation: Cutout's 16x16 square on 32x32, and horizontal flips."""
    torch.manual_seed(0)
    ramp = torch.linspace(0.1, 1.0, 32).expand(3, 32, 32).contiguous()  # brighter to the right
    flipped = 0
    for _ in range(200):
        out = flip_cutout()(ramp)
        zero = (out == 0).all(dim=0)
        rows, cols = zero.any(dim=1).nonzero().flatten(), zero.any(dim=0).nonzero().flatten()
        assert int(zero.sum()) == 16 * 16 and len(rows) == len(cols) == 16
        assert bool(zero[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()), "one square"
        kept = ~zero
        flipped += bool(out[0][kept].reshape(-1)[0] > out[0][kept].reshape(-1)[-1])
    assert 70 < flipped < 130
