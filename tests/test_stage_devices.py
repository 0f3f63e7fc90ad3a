"""Every stage runs on ``ctx.device`` and leaves its model there (issue 13, item 5).

Weight sharing once moved its model to the CPU (``model.cpu()``) and then evaluated it with
``ctx.device`` inputs, so every GPU trial failed; the benchmark moved the caller's model to the
CPU; the dense stage returned a model loaded from weights on the CPU. Each stage is run here on
tiny digits data with the device taken from the context, and checked three ways:

1. *moves*: every ``nn.Module.to/.cpu/.cuda`` call on the stage's input or output model is
   recorded (:class:`MoveAudit`); each must target ``ctx.device`` exactly, and the last must have
   put the returned model there (the stage's contract: it may be handed a model rebuilt on the CPU
   from the stage cache or a checkpoint, and returns it on ``ctx.device``);
2. every parameter and buffer of the returned model is on ``ctx.device``;
3. the metrics are finite.

Without a GPU, checks 2 and 3 cannot tell a CPU from ``ctx.device``; check 1 can, because the CPU
leg names the CPU ``cpu:0``: ``torch.device("cpu:0") != torch.device("cpu")``, so a hard-coded
``model.cpu()`` or ``model.to("cpu")`` differs from ``model.to(ctx.device)``, and a stage that
never moves its model at all is caught by the "last move" rule. What the CPU leg cannot see is a
*tensor* made on the CPU and combined with the model's (a mask, a teacher's output): tensors on
``cpu:0`` report ``cpu``, so no CPU-only run tells them apart. The ``cuda`` leg catches those, as
torch refuses to mix devices; it runs where a GPU is present and is skipped, saying why, elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from search.final.sensitivity import sensitivity
from trainables.data import DataSpec
from trainables.models import build_model, rebuild
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import DenseStep, Plan
from trainables.pipeline.run import run_plan
from trainables.stage import Context
from trainables.stages.benchmark import Benchmark, BenchmarkConfig
from trainables.stages.dense import Dense, DenseConfig
from trainables.stages.epruning import EPrune, EPruneSchedule, EPruningConfig
from trainables.stages.gradual import GradualConfig, GradualPrune
from trainables.stages.share import RetrainConfig, Share, ShareConfig
from trainables.stages.transfer import Transfer, TransferConfig
from trainables.train import EVAL_BATCH_SIZE, loader

SOURCE = DataSpec(name="digits", classes=[0, 1, 2, 3, 4], image_size=16, max_per_class=40)
TARGET = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=16, max_per_class=40)
ARCH = "small_resnet"
NO_GPU = "no CUDA GPU here: the cuda leg (mixing of CPU-made tensors with the model's) runs where one is lent"
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[pytest.mark.gpu,
                                           pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]),
]
# the CPU under a name no stage can hard-code (see the module doc); CUDA as a trial gets it
CONTEXT_DEVICE = {"cpu": "cpu:0", "cuda": "cuda"}


class MoveAudit:
    """Records ``(module, target device)`` for every ``nn.Module.to/.cpu/.cuda`` call inside the block."""

    def __init__(self) -> None:
        self.moves: list[tuple[nn.Module, torch.device]] = []

    @contextmanager
    def recording(self) -> Iterator[MoveAudit]:
        to, cpu, cuda = nn.Module.to, nn.Module.cpu, nn.Module.cuda
        moves = self.moves

        def audited_to(module, *args, **kwargs):
            device = torch._C._nn._parse_to(*args, **kwargs)[0]
            if device is not None:
                moves.append((module, torch.device(device)))
            return to(module, *args, **kwargs)

        def audited_cpu(module):
            moves.append((module, torch.device("cpu")))
            return cpu(module)

        def audited_cuda(module, device=None):
            moves.append((module, torch.device("cuda", device) if isinstance(device, int)
                          else torch.device(device or "cuda")))
            return cuda(module, device)

        nn.Module.to, nn.Module.cpu, nn.Module.cuda = audited_to, audited_cpu, audited_cuda
        try:
            yield self
        finally:
            nn.Module.to, nn.Module.cpu, nn.Module.cuda = to, cpu, cuda

    def of(self, *models: nn.Module | None) -> list[torch.device]:
        """The targets of the moves of ``models`` (by identity), in order."""
        return [device for module, device in self.moves if any(module is m for m in models)]


def run_audited(stage, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, dict]:
    """Run ``stage`` and assert the device contract of the module doc; returns its output."""
    audit = MoveAudit()
    with audit.recording():
        out, metrics = stage.run(model, ctx)
    wanted = torch.device(ctx.device)
    wrong = [d for d in audit.of(model, out) if d != wanted]
    assert not wrong, f"stage {stage.label} moved its model to {wrong}, not to ctx.device {wanted}"
    moves = audit.of(out)
    assert moves and moves[-1] == wanted, f"stage {stage.label} returned a model it did not put on ctx.device"
    assert_on(out, ctx.device)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    bad = {k: v for k, v in numbers.items() if not math.isfinite(v)}
    assert "accuracy" in numbers and not bad, f"stage {stage.label}: non-finite metrics {bad}"
    return out, metrics


def assert_on(model: nn.Module, device: str) -> None:
    wanted = torch.device(device).type
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        assert tensor.device.type == wanted, f"{name} is on {tensor.device}, not on {device}"


def from_cache(model: nn.Module) -> nn.Module:
    """``model`` as the stage cache and checkpoints give it back: rebuilt on the CPU."""
    return rebuild(ARCH, {k: v.detach().cpu() for k, v in model.state_dict().items()})


@pytest.fixture(scope="module", params=DEVICES)
def trial(request, tmp_path_factory) -> tuple[Context, nn.Module]:
    """A context on the leg's device and a model trained on digits 0-4 then 5-9 (1 epoch each)."""
    ctx = Context(SOURCE, TARGET, tmp_path_factory.mktemp(request.param), device=CONTEXT_DEVICE[request.param])
    model, _ = Dense(DenseConfig(model=ARCH, epochs=1, batch_size=64)).run(None, ctx)
    model, _ = Transfer(TransferConfig(epochs=1, batch_size=64)).run(model, ctx)
    return ctx, model


PRUNE = dict(epochs=1, recover_epochs=0, frequency=2, batch_size=64)
SHARE = ShareConfig(groups={"layer2": 4, "layer3": 4}, bias="one", batchnorm=16)
STAGES = {
    "T": lambda: Transfer(TransferConfig(epochs=2, batch_size=64, patience=1, curriculum=1,
                                         curriculum_train_accuracy=0.0)),
    "P": lambda: GradualPrune(GradualConfig(final=0.5, **PRUNE)),
    "P-channel": lambda: GradualPrune(GradualConfig(final=0.5, granularity="channel", **PRUNE)),
    "E-batched": lambda: EPrune(EPruningConfig(population=4, evaluator="batched"),
                                EPruneSchedule(epochs=1, recover_epochs=0, batch_size=64), sparsity=0.5),
    "Q": lambda: Share(SHARE),
    "QR-unlabeled": lambda: Share(SHARE, RetrainConfig(epochs=1, batch_size=64)),
    "QR-labeled": lambda: Share(SHARE, RetrainConfig(mode="labeled", epochs=1, batch_size=64)),
    "B": lambda: Benchmark(BenchmarkConfig(warmup=1, runs=3, end_to_end=False)),
}


@pytest.mark.parametrize("kind", list(STAGES))
def test_stage_keeps_its_model_on_the_context_device(trial, kind: str) -> None:
    ctx, model = trial
    run_audited(STAGES[kind](), from_cache(model), ctx)


def test_dense_stage_trains_and_loads_onto_the_context_device(trial, tmp_path: Path) -> None:
    ctx, _ = trial
    trained, _ = run_audited(Dense(DenseConfig(model=ARCH, epochs=1, batch_size=64)), None, ctx)
    weights = tmp_path / "dense.pt"
    torch.save({k: v.cpu() for k, v in trained.state_dict().items()}, weights)
    stage = Dense(DenseConfig(model=ARCH, weights=str(weights)))  # epochs 0: the weights as they are
    audit = MoveAudit()
    with audit.recording():
        loaded, _ = stage.run(None, ctx)
    assert audit.of(loaded)[-1:] == [torch.device(ctx.device)], "the loaded model was not put on ctx.device"
    assert_on(loaded, ctx.device)


def test_a_stage_output_from_the_cache_is_put_on_the_context_device(trial, tmp_path: Path) -> None:
    ctx, _ = trial
    plan = Plan(source=SOURCE, target=TARGET, steps=[DenseStep(config=DenseConfig(model=ARCH, epochs=1, batch_size=64))])
    cache = StageCache(tmp_path / "cache")
    run_plan(plan, ctx, cache=cache)
    audit = MoveAudit()
    with audit.recording():
        model, metrics = run_plan(plan, ctx, cache=cache)
    assert metrics["cached_stages"] == "D"
    assert audit.of(model)[-1:] == [torch.device(ctx.device)], "a cache hit's model was left where it was rebuilt"
    assert_on(model, ctx.device)


def test_the_sensitivity_sweep_scores_on_its_device_and_leaves_the_model_where_it_was(trial) -> None:
    ctx, model = trial
    splits = ctx.data("target")
    cpu_model = from_cache(model)
    audit = MoveAudit()
    with audit.recording():
        table = sensitivity(cpu_model, loader(splits.val, EVAL_BATCH_SIZE, shuffle=False),
                            loader(splits.test, EVAL_BATCH_SIZE, shuffle=False), ks=(4,), groups=["layer3"], device=ctx.device)
    assert audit.of(cpu_model) == [] and next(cpu_model.parameters()).device.type == "cpu"
    assert table[["val_accuracy", "test_accuracy"]].notna().all().all() and len(table) == 2


class _HardCodedCpu:
    """A stage with the bug weight sharing had: it moves its model to the CPU by name."""

    label = "X"

    def run(self, model: nn.Module, ctx: Context) -> tuple[nn.Module, dict]:
        model.to(ctx.device)
        return model.cpu(), {"accuracy": 1.0}


class _NeverMoves:
    """A stage that builds a model and returns it where it was built (the CPU)."""

    label = "Y"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, dict]:
        return build_model(ARCH, 5), {"accuracy": 1.0}


@pytest.mark.parametrize("stage", [_HardCodedCpu(), _NeverMoves()], ids=["cpu-by-name", "never-moved"])
def test_the_audit_catches_a_stage_that_ignores_the_context_device_without_a_gpu(stage, tmp_path: Path) -> None:
    ctx = Context(SOURCE, TARGET, tmp_path, device=CONTEXT_DEVICE["cpu"])
    with pytest.raises(AssertionError, match=f"stage {stage.label}"):
        run_audited(stage, build_model(ARCH, 5), ctx)
