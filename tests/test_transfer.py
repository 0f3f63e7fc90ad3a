"""Transfer on digits: fine-tune reaches the issue's accuracy; freeze-and-train moves only the head."""

from __future__ import annotations

import time

import pytest
import torch

from trainables.models import build_model
from trainables.stages.transfer import TransferConfig, transfer
from trainables.train import EVAL_BATCH_SIZE, OptimConfig, fit, loader, seed_everything


def pretrained_on_source(source_splits, epochs: int = 6):
    seed_everything(0)
    model = build_model("small_resnet", source_splits.num_classes)
    fit(model, loader(source_splits.train, 32, shuffle=True), loader(source_splits.val, EVAL_BATCH_SIZE, shuffle=False),
        OptimConfig(name="adam", lr=1e-3), epochs, restore_best=True)
    return model


@pytest.mark.slow  # end to end on digits: 20-26 s, off the 5-minute loop
def test_finetune_from_digits_0_4_to_5_9_reaches_95_percent(source_splits, target_splits) -> None:
    start = time.perf_counter()
    model = pretrained_on_source(source_splits)
    model, metrics = transfer(model, target_splits, TransferConfig(epochs=8, batch_size=32, patience=3))
    seconds = time.perf_counter() - start
    print(f"pretrain + fine-tune: {seconds:.1f}s, top-1 {metrics['accuracy']:.4f}")
    assert metrics["accuracy"] >= 0.95
    assert metrics["top3"] >= metrics["accuracy"] and metrics["top5"] >= metrics["top3"]
    assert metrics["epochs"] <= 8 and model.fc.out_features == 5


def test_freeze_and_train_changes_only_the_head(source_splits, target_splits) -> None:
    model = pretrained_on_source(source_splits, epochs=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TransferConfig(mode="freeze", epochs=4, batch_size=32, optim=OptimConfig(name="adam", lr=0.01))
    model, metrics = transfer(model, target_splits, cfg)
    after = model.state_dict()
    for key, value in after.items():
        if key.startswith("fc."):
            continue
        assert torch.equal(value, before[key]), f"{key} changed under freeze-and-train"
    assert after["fc.weight"].shape == (5, 64)
    assert all(p.requires_grad for p in model.parameters()), "gradients are turned back on afterwards"
    assert metrics["accuracy"] > 0.4, "the head learns on frozen features (chance is 0.2)"


def test_curriculum_steps_up_augmentation_during_transfer(source_splits, target_splits) -> None:
    model = pretrained_on_source(source_splits, epochs=1)
    seen = []
    # a frozen body and a negligible learning rate: validation accuracy is flat, so every
    # `patience` epochs the curriculum steps up, and at its last level training stops; training
    # accuracy stays low, so the threshold is 0 here (the plateau alone decides; the default
    # 0.99 would stop at the first plateau, see test_curriculum)
    cfg = TransferConfig(mode="freeze", epochs=10, batch_size=128, patience=1, curriculum=2,
                         curriculum_train_accuracy=0.0, optim=OptimConfig(name="sgd", lr=1e-12))
    _, metrics = transfer(model, target_splits, cfg, on_epoch=lambda r: seen.append(target_splits.train.augment))
    assert metrics["curriculum_level"] == 2 and metrics["epochs"] == 6
    assert seen[0] is None and seen[1] is None, "level 0 until the first plateau"
    assert [len(a.transforms) for a in seen[2:]] == [1, 1, 3, 3], "flip, then flip + rotation + affine"
    assert target_splits.train.augment is None, "augmentation is switched off after the stage"


def test_pruned_model_stays_sparse_through_transfer(source_splits, target_splits) -> None:
    from trainables.compress.masks import prunable_layers
    from trainables.stages.gradual import GradualConfig, gradual_prune

    model = pretrained_on_source(source_splits, epochs=1)
    model, _ = gradual_prune(model, source_splits, GradualConfig(final=0.5, epochs=1, recover_epochs=0, batch_size=64))
    zeros = {n: m.weight == 0 for n, m in prunable_layers(model)}
    model, _ = transfer(model, target_splits, TransferConfig(epochs=2, batch_size=64))
    for name, layer in prunable_layers(model):
        assert torch.all(layer.weight[zeros[name]] == 0), f"{name} regrew pruned weights during transfer"
