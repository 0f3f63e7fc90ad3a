"""The pruning-order paper's shifting and mirroring: what it does to an image, and that a stage's
training data carries it only while that stage trains (gradual pruning; transfer, under the curriculum)."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from trainables.augment import augmented, named, shift_mirror, then
from trainables.curriculum import augmentation
from trainables.data import DataSpec, load_data
from trainables.models import build_model
from trainables.stages.gradual import GradualConfig, gradual_prune
from trainables.stages.transfer import TransferConfig, transfer

SMALL = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=16, max_per_class=24)


def lit_pixel(image: torch.Tensor) -> tuple[int, int]:
    rows, cols = torch.nonzero(image[0] > 0.5, as_tuple=True)
    assert len(rows) == 1, "a whole-pixel shift moves the one lit pixel, it does not blur it"
    return int(rows[0]), int(cols[0])


def test_shift_mirror_shifts_by_at_most_an_eighth_of_the_side_and_mirrors_half_the_time() -> None:
    image = torch.zeros(3, 32, 32)
    image[:, 10, 5] = 1.0
    torch.manual_seed(0)
    transform = shift_mirror()
    shifts, mirrored = set(), 0
    for _ in range(200):
        row, col = lit_pixel(transform(image))
        flipped = col >= 16  # the pixel sits in the left half; only a mirror puts it in the right
        dx = (31 - col) - 5 if flipped else col - 5
        dy = row - 10
        assert abs(dx) <= 4 and abs(dy) <= 4, (dx, dy)  # 32 / 8 = 4 pixels
        shifts.add((dx, dy))
        mirrored += flipped
    assert 70 <= mirrored <= 130, "mirrored about half of the time"
    assert {dx for dx, _ in shifts} >= {-4, 0, 4} and {dy for _, dy in shifts} >= {-4, 0, 4}


def test_named_and_then_build_the_stage_transform() -> None:
    assert named("none") is None
    with pytest.raises(ValueError, match="augment must be one of none, shift_mirror but got 'cutout'"):
        named("cutout")
    own, level = named("shift_mirror"), augmentation(1)
    assert then(own, None) is own and then(None, level) is level and then(None, None) is None
    both = then(own, level)
    assert isinstance(both, v2.Compose) and both.transforms == [own, level], "shift and mirror, then the curriculum"


def test_augmented_puts_back_what_was_there_even_on_an_error() -> None:
    class Data:
        augment = "before"

    data, own = Data(), shift_mirror()
    with pytest.raises(RuntimeError), augmented(data, own):
        assert data.augment is own
        raise RuntimeError("training failed")
    assert data.augment == "before"
    with augmented(object(), None):  # nothing to install: any dataset will do
        pass


def kinds(transform) -> list[str]:
    """The transform classes inside ``transform``, flattened."""
    if transform is None:
        return []
    if isinstance(transform, v2.Compose):
        return [k for t in transform.transforms for k in kinds(t)]
    return [type(transform).__name__]


def test_a_pruning_stage_shifts_and_mirrors_its_training_images_only_while_it_trains() -> None:
    splits = load_data(SMALL)
    seen: list[tuple[list[str], bool]] = []

    def during(record: dict) -> None:
        moved = any(not torch.equal(splits.train[i][0], splits.train.image(i, augment=False)) for i in range(8))
        seen.append((kinds(splits.train.augment), moved))

    cfg = GradualConfig(final=0.5, epochs=1, recover_epochs=1, batch_size=32, augment="shift_mirror")
    gradual_prune(build_model("small_resnet", splits.num_classes), splits, cfg, on_epoch=during)
    assert seen == [(["RandomAffine", "RandomHorizontalFlip"], True)] * 2
    assert splits.train.augment is None and splits.val.augment is None, "the next stage sees plain images"

    seen.clear()
    gradual_prune(build_model("small_resnet", splits.num_classes), splits,
                  cfg.model_copy(update={"augment": "none"}), on_epoch=during)
    assert seen == [([], False)] * 2, "off by default"


def test_transfer_shifts_and_mirrors_under_the_curriculum_level_while_it_trains() -> None:
    splits = load_data(SMALL)
    seen: list[list[str]] = []
    cfg = TransferConfig(epochs=2, batch_size=32, patience=1, curriculum=1, augment="shift_mirror")
    transfer(build_model("small_resnet", 3), splits, cfg,
             on_epoch=lambda record: seen.append(kinds(splits.train.augment)))
    assert seen and seen[0] == ["RandomAffine", "RandomHorizontalFlip"], "level 0 of the curriculum: ours alone"
    assert all(k[:2] == ["RandomAffine", "RandomHorizontalFlip"] for k in seen), "ours first at every level"
    assert splits.train.augment is None


def test_epruning_takes_the_schedules_shift_mirror_before_its_own_flip_and_cutout() -> None:
    from trainables.stage import Context
    from trainables.stages.epruning import EPrune, EPruneSchedule, EPruningConfig

    splits = load_data(SMALL)
    seen: list[list[str]] = []
    ctx = Context(source=None, target=SMALL, workdir=None, progress=lambda label, record: seen.append(
        kinds(ctx.data("target").train.augment)))
    ctx._loaded["target"] = splits
    stage = EPrune(EPruningConfig(population=4, augment="flip_cutout"),
                   EPruneSchedule(epochs=1, recover_epochs=0, batch_size=32, augment="shift_mirror"), sparsity=0.5)
    stage.run(build_model("small_resnet", splits.num_classes), ctx)
    assert seen == [["RandomAffine", "RandomHorizontalFlip", "RandomHorizontalFlip", "RandomErasing"]]
    assert splits.train.augment is None, "the next stage sees plain images"
