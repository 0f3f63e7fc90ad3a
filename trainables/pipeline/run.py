"""Run a trial's stages in order, with the stage cache, checkpoints and the Ray Tune trainable.

:func:`run_stages` threads a model through stage objects (plain Python, no Ray). :func:`run_plan`
does the same for a :class:`~trainables.pipeline.plan.Plan`, looking each stage up in the
:class:`~trainables.pipeline.cache.StageCache` first and resuming after the last finished stage.
:func:`tune_trial` is the Ray Tune function trainable: it reports after every stage with a
checkpoint (so a retried trial resumes at the last finished stage) and ends with one result
holding every objective as a finite float. A failure that would repeat (training diverged, an
objective not finite) ends the trial with a result naming it under ``failed``
(:data:`trainables.pipeline.result.FAILED`; :mod:`trainables.pipeline.result` is the whole
contract of what a trial reports) instead of raising: Tune retries raised errors, which is
right for a lost node and a waste for these. Anything else raises, and Tune retries it.

Example (the CPU pipeline on digits, about a minute on 2 CPUs)::

    from pathlib import Path
    from trainables import *
    ctx = Context(source=DataSpec(name="digits", classes=[0, 1, 2, 3, 4]),
                  target=DataSpec(name="digits", classes=[5, 6, 7, 8, 9]), workdir=Path("out"))
    model, metrics = run_stages([
        Dense(DenseConfig(model="small_resnet", epochs=8)),
        Transfer(TransferConfig(epochs=8)),
        GradualPrune(GradualConfig(final=0.8), domain="target"),
        Benchmark(),
    ], ctx)
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..layout import RunFolder
from ..models import rebuild
from ..stage import Context, Metrics, Stage
from ..train import Diverged, loader_workers_for, set_loader_workers
from .boundary import measure_boundary, measured_at
from .cache import StageCache, stage_key
from .plan import Plan, numbered
from .result import failed_result, final_result, progress_report

# stage metrics kept in the trial's final result (as ``stage.<slot>.<name>``; lists joined by ';')
CARRIED = ("pruning_rate", "unit_sparsity", "search_epochs", "energy_best", "energy_mean", "delta_s",
           "acceptance")


def pipeline_string(stages: Sequence[Stage]) -> str:
    """The pipeline in the pruning-order paper's notation, e.g. ``D|50|T|80|B``."""
    return "|".join(stage.label for stage in stages)


def run_stages(stages: Sequence[Stage], ctx: Context, model: nn.Module | None = None) -> tuple[nn.Module, Metrics]:
    """Run ``stages`` in order on ``model`` (None: the first stage builds it).

    Returns the final model and the metrics of the last stage, plus ``seconds.<slot>`` for
    every stage and ``pipeline``. Slots are numbered as a plan's are (``P2.2``:
    :func:`~trainables.pipeline.plan.numbered`), so a plan's stages run here name the same columns
    as :func:`run_plan`.
    """
    if not stages:
        raise ValueError("run_stages: no stages given")
    progress = Progress()
    for stage, name in zip(stages, numbered([stage.slot for stage in stages])):
        model, metrics = stage.run(model, ctx)
        progress.add(name, metrics)
    return model, progress.final(pipeline_string(stages))


@dataclass
class Progress:
    """How far a plan got: the next stage index, the last output's hash, and times so far."""

    index: int = 0
    input_hash: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    last: dict[str, Any] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)  # stage index of each resume from a checkpoint
    cache_key: str | None = None  # the stage cache entry holding the last output (None: not cached)
    stage: dict[str, Any] = field(default_factory=dict)  # CARRIED metrics of earlier stages, as stage.<slot>.<key>

    def add(self, label: str, metrics: Metrics, seconds: float | None = None, cached: bool = False) -> None:
        """Record stage ``label`` (a plan's slot, or a numbered stage label: unique within a run)."""
        self.seconds[f"seconds.{label}"] = float(metrics.get("seconds", 0.0) if seconds is None else seconds)
        if cached:
            self.cached.append(label)
        for name in CARRIED:
            if name in metrics:
                value = metrics[name]
                self.stage[f"stage.{label}.{name}"] = (";".join(f"{v:.5g}" for v in value)
                                                       if isinstance(value, (list, tuple)) else value)
        self.last = dict(metrics)
        self.index += 1

    def final(self, pipeline: str) -> dict[str, Any]:
        return {**self.last, **self.stage, **self.seconds, "pipeline": pipeline, "cached_stages": ",".join(self.cached),
                "resumed_at": ",".join(map(str, self.resumed_at))}


StageHook = Callable[[nn.Module, Progress], None]


def run_plan(
    plan: Plan,
    ctx: Context,
    *,
    cache: StageCache | None = None,
    model: nn.Module | None = None,
    progress: Progress | None = None,
    after_stage: StageHook | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Run ``plan`` from ``progress.index`` (0: the start), reusing cached stage outputs.

    ``after_stage(model, progress)`` is called after every stage but the last (a checkpoint).
    A step that is not ``cached`` (the benchmark: its latency is measured anew) always runs.
    """
    progress = progress or Progress()
    stages, slots, dense = plan.stages(), plan.slots(), plan.architecture
    for i in range(progress.index, len(stages)):
        step, stage, start = plan.steps[i], stages[i], time.perf_counter()
        if cache is None or not step.cached:
            model, metrics = stage.run(model, ctx)
            digest, hit, key = None, None, None
        else:
            key = stage_key(step.model_dump(mode="json"), progress.input_hash, plan.data_key(), plan.seed)
            with cache.claim(key) as hit:
                if hit is not None:
                    state, metrics, digest = hit
                    model = rebuild(dense.model, state, path=dense.model_path)
                    model = model.to(ctx.device)  # the cache holds CPU tensors
                else:
                    model, metrics = stage.run(model, ctx)
                    digest = cache.put(key, model.state_dict(), metrics)
        progress.input_hash, progress.cache_key = digest, key
        progress.add(slots[i], metrics, time.perf_counter() - start, cached=hit is not None)
        if after_stage is not None and i < len(stages) - 1:
            after_stage(model, progress)
    return model, progress.final(plan.pipeline)


def tune_trial(config: dict[str, Any], run_dir: str, cache: bool = True, boundary_runs: int = 0,
               cache_dir: str | None = None, max_bytes: int | None = None) -> None:
    """Ray Tune function trainable running ``config["plan"]`` (see the module doc).

    With ``boundary_runs > 0`` (early stopping on) the report after a stage also holds the cheap
    objectives of :func:`~trainables.pipeline.boundary.measure_boundary` (latency from that many
    timed runs), for the driver's scheduler to stop the trial on.

    The stage cache is ``cache_dir`` (a cache shared across runs) or the run's ``cache/``, evicted
    to ``max_bytes`` after each write. The trial holds every entry it uses under its trial id
    (:meth:`~trainables.pipeline.cache.StageCache.hold`); the driver releases them when its final
    result is recorded. A stage checkpoint whose output is a cache entry holds ``progress.json``
    only, naming the entry (``cache_key``) and its content hash; one whose output is not cached
    (the cache off) holds ``model.pt`` as well.
    """
    from ray import tune

    plan = Plan.model_validate(config["plan"])
    trial_id = tune.get_context().get_trial_id()
    device = _device()
    _use_assigned_cpus(device)
    run = RunFolder(Path(run_dir))
    ctx = Context(plan.source, plan.target, run.trial(trial_id), seed=plan.seed, device=device)
    stage_cache = (StageCache(Path(cache_dir) if cache_dir else run.cache, holder=trial_id, max_bytes=max_bytes)
                   if cache else None)
    model, progress = _restore(tune.get_checkpoint(), plan, stage_cache)

    def checkpoint(model: nn.Module, progress: Progress) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            if progress.cache_key is None or stage_cache is None:  # no entry to refer to
                torch.save(model.state_dict(), Path(tmp) / "model.pt")
            (Path(tmp) / "progress.json").write_text(json.dumps(progress.__dict__))
            report = {**progress_report(progress.index, len(plan.steps)), **progress.seconds}
            if boundary_runs > 0 and measured_at(plan, progress.index):
                report.update(measure_boundary(model, plan, progress.index, ctx, runs=boundary_runs))
            tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
        _injected_fault(progress.index)

    try:
        _, metrics = run_plan(plan, ctx, cache=stage_cache, model=model, progress=progress, after_stage=checkpoint)
    except Diverged as exc:  # deterministic: reported, not raised, so Tune does not retry it
        tune.report(failed_result(f"Diverged: {exc}", progress.index, len(plan.steps)))
        return
    tune.report(final_result(metrics, len(plan.steps)))


def _restore(checkpoint, plan: Plan, cache: StageCache | None = None) -> tuple[nn.Module | None, Progress]:
    """The model and progress saved by the last finished stage, or a fresh start.

    A checkpoint without ``model.pt`` refers to the cache entry ``progress.cache_key``; when that
    entry is gone or does not hold the output the checkpoint names (its content hash differs), the
    trial starts afresh and the stage cache recomputes (or finds) each stage, as for a corrupt entry.
    """
    if checkpoint is None:
        return None, Progress()
    with checkpoint.as_directory() as folder:
        progress = Progress(**json.loads((Path(folder) / "progress.json").read_text()))
        stored = Path(folder) / "model.pt"
        state = torch.load(stored, map_location="cpu", weights_only=True) if stored.is_file() else None
    if state is None:
        found = cache.get(progress.cache_key) if cache is not None and progress.cache_key else None
        if found is None or found[2] != progress.input_hash:
            return None, Progress()
        state = found[0]
    progress.resumed_at.append(progress.index)
    dense = plan.architecture
    return rebuild(dense.model, state, path=dense.model_path), progress


FAULT_FILE_ENV = "FRONTIER_FAULT_FILE"


def _injected_fault(finished: int) -> None:
    """Fault injection for reliability tests: crash once after stage ``after_stage``.

    If ``$FRONTIER_FAULT_FILE`` names a JSON file ``{"after_stage": N}``, the first trial to finish
    its N-th stage renames the file away (atomically, so exactly one trial fires) and raises.
    Without the variable this does nothing.
    """
    path = os.environ.get(FAULT_FILE_ENV)
    if not path or not Path(path).is_file():
        return
    if json.loads(Path(path).read_text()).get("after_stage") != finished:
        return
    try:
        os.rename(path, f"{path}.fired")
    except FileNotFoundError:
        return  # another trial fired it first
    raise RuntimeError(f"injected fault after stage {finished} ({FAULT_FILE_ENV})")


def _device() -> str:
    import ray

    return "cuda" if torch.cuda.is_available() and ray.get_gpu_ids() else "cpu"


def _use_assigned_cpus(device: str) -> None:
    """Torch threads and data-loading workers from the CPUs Ray gave this trial."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    set_loader_workers(loader_workers_for(device, cpus), pin_memory=device.startswith("cuda"))
