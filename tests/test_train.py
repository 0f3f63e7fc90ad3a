"""The training loop: the precision it resolves and runs in, and divergence caught without a wait
for the device at every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.errors import FrontierError
from trainables.models import build_model
from trainables.train import FINITE_CHECK_EVERY, Diverged, OptimConfig, fit, loader, train_precision


def test_auto_precision_is_fp32_on_a_cpu_and_fp16_needs_a_gpu() -> None:
    assert train_precision("auto", "cpu") == "fp32"
    assert train_precision("bf16", "cpu") == "bf16" and train_precision("fp32", "cpu") == "fp32"
    with pytest.raises(FrontierError, match=r"optim.precision: fp16 trains on a CUDA GPU only, but this stage runs on 'cpu'"):
        train_precision("fp16", "cpu")
    with pytest.raises(FrontierError, match=r"optim.precision must be one of auto, bf16, fp16, fp32 but got 'fp8'"):
        train_precision("fp8", "cpu")


def test_a_spec_rejects_an_unknown_precision() -> None:
    with pytest.raises(ValueError, match="precision"):
        OptimConfig(precision="fp8")


def test_bf16_autocast_trains_float32_parameters(target_splits) -> None:
    from trainables.data import ImageDataset

    torch.manual_seed(0)
    train = target_splits.train
    few = ImageDataset(train.images, train.labels[:256], train.indices[:256])  # bf16 is slow on a CPU: a few images
    model = build_model("small_resnet", num_classes=target_splits.num_classes)
    result = fit(model, loader(few, 32, shuffle=True), None, OptimConfig(precision="bf16", lr=3e-3), 2)
    assert result.precision == "bf16"
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert result.history[-1]["loss"] < result.history[0]["loss"], "bf16 training learns"


class _Explodes(nn.Module):
    """A linear model whose output is NaN from the first step on (its weight is NaN)."""

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, classes)
        with torch.no_grad():
            self.fc.weight.fill_(float("nan"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_a_nan_loss_is_caught_within_the_check_interval_not_at_the_epoch_end(target_splits) -> None:
    batches = loader(target_splits.train, 4, shuffle=True)
    assert len(batches) > 2 * FINITE_CHECK_EVERY, "the epoch is longer than the interval"
    with pytest.raises(Diverged, match=f"training loss became nan by step {FINITE_CHECK_EVERY}$"):
        fit(_Explodes(target_splits.num_classes), batches, None, OptimConfig(), 1)


def test_a_nan_in_the_last_steps_of_an_epoch_is_caught_at_its_end(target_splits) -> None:
    model = build_model("small_resnet", num_classes=target_splits.num_classes)
    batches = loader(target_splits.train, 64, shuffle=True)
    steps = len(batches)
    assert steps % FINITE_CHECK_EVERY, "the last step is not a check step"

    def poison(step: int) -> None:
        if step == steps - 1:
            with torch.no_grad():
                head = model.fc if hasattr(model, "fc") else list(model.modules())[-1]
                head.weight.fill_(float("nan"))

    with pytest.raises(Diverged, match=f"by step {steps}$"):
        fit(model, batches, None, OptimConfig(), 1, before_batch=poison)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")
def test_on_a_gpu_the_host_waits_for_the_device_only_at_the_checks(target_splits) -> None:
    import warnings

    from trainables.train import set_loader_workers

    set_loader_workers(0, pin_memory=True)
    model = build_model("small_resnet", num_classes=target_splits.num_classes).cuda()
    batches = loader(target_splits.train, 8, shuffle=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                result = fit(model, batches, None, OptimConfig(), 1, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        set_loader_workers(0)
    syncs = [w for w in caught if "synchroniz" in str(w.message)]
    assert result.precision == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert len(syncs) <= len(batches) // FINITE_CHECK_EVERY + 4, [str(w.message) for w in syncs[:5]]
