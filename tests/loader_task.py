"""A task for a Ray worker, in a module the workers can import (tests/test_loader.py runs it)."""

from __future__ import annotations

from trainables.data import Splits
from trainables.models import build_model
from trainables.train import OptimConfig, fit, loader, set_loader_workers


def train_one_epoch_with_two_loader_workers(splits: Splits) -> float:
    """One epoch of a small ResNet with 2 loader workers, in this process; returns its loss."""
    set_loader_workers(2)
    model = build_model("small_resnet", num_classes=splits.num_classes)
    result = fit(model, loader(splits.train, 64, shuffle=True), None, OptimConfig(), 1)
    return result.history[0]["loss"]
