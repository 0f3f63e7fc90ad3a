"""Run a trial's stages in order, with the stage cache, checkpoints and the Ray Tune trainable.

:func:`run_stages` threads a model through stage objects (plain Python, no Ray). :func:`run_plan`
does the same for a :class:`~trainables.pipeline.plan.Plan`, looking each stage up in the
:class:`~trainables.pipeline.cache.StageCache` first and resuming after the last finished stage.
:func:`tune_trial` is the Ray Tune function trainable: it reports after every stage with a
checkpoint (so a retried trial resumes at the last finished stage) and ends with one result
holding every objective as a finite float (a plan of ``repeats: k`` runs k times in turn, one seed
each, and that result is their mean: :mod:`trainables.pipeline.repeats`). A failure that would
repeat (training diverged, an objective not finite) ends the trial with a result naming it under
``failed`` (:data:`trainables.pipeline.result.FAILED`; :mod:`trainables.pipeline.result` is the
whole contract of what a trial reports) instead of raising: Tune retries raised errors, which is
right for a lost node and a waste for these. Anything else raises, and Tune retries it.

**Teachers.** A stage that distills (:func:`~trainables.stage.distills`: a distill weight above 0)
learns from its domain's teacher, ``ctx.teacher(domain)``: a frozen copy of the model as it entered
the first compressing stage on that domain (:func:`teacher_points`). The runner takes the copy there
and records, in :attr:`Progress.teachers`, the cache entry and content hash of that model (the
output of the stage before), so a resumed trial gets the same teacher back (:func:`_restore`: from
that entry, or from ``teacher.<domain>.pt`` in a checkpoint of a trial without the cache). A
distilling stage's cache key holds its teacher's content hash; the key of any other stage is as
before.

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

import copy
import dataclasses
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

from ..files import atomic_write
from ..layout import RunFolder
from ..models import rebuild
from ..stage import Context, Domain, Metrics, Stage, distills, is_compressing
from ..train import Diverged, loader_workers_for, set_loader_workers
from .boundary import PREFIX, final_peer, measure_boundary, measured_at
from .cache import StageCache, stage_key, state_hash
from .plan import UNSEEDED, Plan, numbered
from .repeats import aggregate
from .result import BOUNDARY_SECONDS, FAILED, failed_result, final_result, progress_report

# stage metrics kept in the trial's final result (as ``stage.<slot>.<name>``; lists joined by ';')
CARRIED = ("pruning_rate", "unit_sparsity", "search_epochs", "energy_best", "energy_mean", "delta_s",
           "acceptance", "latency_target_ms", "latency_predicted_ms", "latency_checked_ms", "latency_dense_ms",
           "latency_checks", "latency_model_seconds", "latency_model_cached")
# the stage metric (kept in its cache entry) holding the seconds the stage took when it was computed;
# a trial reports it as ``compute.<slot>`` beside ``seconds.<slot>`` (what it took this time: near 0
# for a cache hit), so a bench can charge a search the compute it would have spent on its own
COMPUTE = "compute_seconds"


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
    points = teacher_points(stages)
    for i, (stage, name) in enumerate(zip(stages, numbered([stage.slot for stage in stages]))):
        _take_teachers(points, i, model, ctx, progress)
        model, metrics = stage.run(model, ctx)
        progress.add(name, metrics)
    return model, progress.final(pipeline_string(stages))


def teacher_points(stages: Sequence[Stage]) -> dict[Domain, int]:
    """``{domain: index}`` of the stage whose input is that domain's teacher: the first compressing
    stage on the domain (:func:`~trainables.stage.is_compressing`), for each domain some stage
    distills on. A teacher never crosses the transfer: ``D|50|T|70`` has the dense model as the
    source's teacher and the transferred model (pruned to 50%) as the target's; ``D|50|T|B`` has none
    (the transfer is not distilled).

    Example:
        >>> from trainables.stages.gradual import GradualConfig, GradualPrune
        >>> on = GradualConfig(final=0.7, distill={"weight": 0.5})
        >>> teacher_points([GradualPrune(GradualConfig(final=0.5)), GradualPrune(on)])
        {'target': 0}
    """
    firsts: dict[Domain, int] = {}
    for i, stage in enumerate(stages):
        if is_compressing(stage):
            firsts.setdefault(stage.domain, i)
    needed = {stage.domain for stage in stages if distills(stage)}
    return {domain: i for domain, i in firsts.items() if domain in needed}


def frozen_copy(model: nn.Module) -> nn.Module:
    """A teacher: a deep copy of ``model`` in eval mode whose parameters need no gradient."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def _take_teachers(points: dict[Domain, int], index: int, model: nn.Module | None, ctx: Context,
                   progress: Progress) -> None:
    """Before stage ``index``: a frozen copy of its input becomes the teacher of each domain whose
    point it is (``ctx.teachers``), with the input's cache entry and content hash in ``progress``."""
    for domain, at in points.items():
        if at == index:
            if model is None:
                raise ValueError(f"stage {index} compresses the {domain}'s model but no model reaches it")
            ctx.teachers[domain] = frozen_copy(model)
            progress.teachers[domain] = {"cache_key": progress.cache_key, "hash": progress.input_hash}


def _teacher_hash(stage: Stage, ctx: Context, progress: Progress) -> str | None:
    """The content hash of ``stage``'s teacher when it distills (part of its cache key), else None."""
    if not distills(stage):
        return None
    ref = progress.teachers.setdefault(stage.domain, {"cache_key": None, "hash": None})
    if ref["hash"] is None:  # taken from a model that came from no cache entry
        ref["hash"] = state_hash(ctx.teacher(stage.domain).state_dict())
    return ref["hash"]


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
    # per domain, where its teacher came from: {"cache_key": the entry of the model it copies (None: not
    # cached), "hash": that model's content hash}
    teachers: dict[str, dict[str, str | None]] = field(default_factory=dict)

    def add(self, label: str, metrics: Metrics, seconds: float | None = None, cached: bool = False) -> None:
        """Record stage ``label`` (a plan's slot, or a numbered stage label: unique within a run):
        ``seconds.<label>`` what it took now, ``compute.<label>`` what it took when it was computed
        (the metric :data:`COMPUTE`; for a cache entry from before it existed, what it took now)."""
        metrics = dict(metrics)
        took = float(metrics.get("seconds", 0.0) if seconds is None else seconds)
        self.seconds[f"seconds.{label}"] = took
        self.seconds[f"compute.{label}"] = float(metrics.pop(COMPUTE, took))
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
    A step that is not ``cached`` (the benchmark: its latency is measured anew) always runs. A step
    that is not ``seeded`` (``_Step.seeded``: a dense model loaded as it is, sharing without
    retraining) runs with the seed :data:`~trainables.pipeline.plan.UNSEEDED` and its cache key
    leaves the seed out, so the runs of a repeated plan (:meth:`~trainables.pipeline.plan.Plan.repeat`:
    one seed each) share it. ``plan`` is one run: a plan of ``repeats`` > 1 is refused.

    Teachers (see the module doc) are taken as the plan reaches them; a run resumed after a
    domain's teacher point needs that teacher in ``ctx.teachers`` already (:func:`_restore` puts it
    there), else its distilling stage raises :class:`~trainables.errors.FrontierError`.
    """
    if plan.repeats != 1:
        raise ValueError(f"run_plan runs one run of a plan, this one has repeats={plan.repeats}: give plan.repeat(r)")
    progress = progress or Progress()
    stages, slots, dense = plan.stages(), plan.slots(), plan.architecture
    points = teacher_points(stages)
    for i in range(progress.index, len(stages)):
        step, stage, start = plan.steps[i], stages[i], time.perf_counter()
        _take_teachers(points, i, model, ctx, progress)
        run_ctx = ctx if step.seeded else dataclasses.replace(ctx, seed=UNSEEDED)  # same data, teachers
        if cache is None or not step.cached:
            model, metrics = _computed(stage, model, run_ctx)
            digest, hit, key = None, None, None
        else:
            key = step_key(plan, i, progress, _teacher_hash(stage, ctx, progress))
            with cache.claim(key) as hit:
                if hit is not None:
                    state, metrics, digest = hit
                    model = rebuild(dense.model, state, path=dense.model_path)
                    model = model.to(ctx.device)  # the cache holds CPU tensors
                else:
                    model, metrics = _computed(stage, model, run_ctx)
                    digest = cache.put(key, model.state_dict(), metrics)
        progress.input_hash, progress.cache_key = digest, key
        progress.add(slots[i], metrics, time.perf_counter() - start, cached=hit is not None)
        if after_stage is not None and i < len(stages) - 1:
            after_stage(model, progress)
    return model, progress.final(plan.pipeline)


def step_key(plan: Plan, index: int, progress: Progress, teacher: str | None) -> str:
    """The stage cache key of ``plan.steps[index]`` on the input ``progress`` names (its
    ``input_hash``): the step's config, that input, the plan's data, the plan's seed for a ``seeded``
    step (else None) and ``teacher``, the content hash of the teacher of a step that distills (else
    None). :func:`run_plan` stores and finds entries by it; :func:`next_stage_cached` looks ahead."""
    step = plan.steps[index]
    return stage_key(step.model_dump(mode="json"), progress.input_hash, plan.data_key(),
                     plan.seed if step.seeded else None, teacher=teacher)


def next_stage_cached(plan: Plan, progress: Progress, cache: StageCache | None) -> bool:
    """Whether the next stage of ``plan`` after ``progress`` (``plan.steps[progress.index]``) is
    already in ``cache``, so running it costs next to nothing. Checked by
    :meth:`~trainables.pipeline.cache.StageCache.has` (nothing read, no hit counted) under the key
    :func:`run_plan` will compute (:func:`step_key`). False without a cache, after the last step, for
    a step the cache does not keep (the benchmark), or when the key cannot be known without a model
    hash: a distilling step whose teacher came from no cache entry."""
    i = progress.index
    if cache is None or i >= len(plan.steps) or not plan.steps[i].cached:
        return False
    stages = plan.stages()
    teacher = None
    if distills(stages[i]):
        domain = stages[i].domain
        taken = progress.teachers.get(domain)  # else taken just before stage i, from its input
        teacher = taken["hash"] if taken else (progress.input_hash if teacher_points(stages).get(domain) == i else None)
        if teacher is None:
            return False
    return cache.has(step_key(plan, i, progress, teacher))


def _computed(stage: Stage, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
    """``stage.run(model, ctx)`` with its own seconds added to the metrics as :data:`COMPUTE`."""
    start = time.perf_counter()
    model, metrics = stage.run(model, ctx)
    return model, {**metrics, COMPUTE: time.perf_counter() - start}


def tune_trial(config: dict[str, Any], run_dir: str, cache: bool = True, boundary_runs: int = 0,
               cache_dir: str | None = None, max_bytes: int | None = None) -> None:
    """Ray Tune function trainable running ``config["plan"]`` (see the module doc).

    With ``boundary_runs > 0`` (early stopping on) the report after a stage also holds the cheap
    objectives of :func:`~trainables.pipeline.boundary.measure_boundary` (latency from that many
    timed runs), for the driver's scheduler to stop the trial on; except where the next stage is
    already in the stage cache (:func:`next_stage_cached`): stopping there would save nothing, so the
    trial neither measures nor offers itself to be judged. With early stopping on, the final result
    also names the rung whose model a float benchmark measured
    (:func:`~trainables.pipeline.boundary.final_peer`), for the scheduler to count it there. Every report after a stage, and the final
    result (a failed trial's too), holds ``boundary_seconds``: the seconds spent measuring boundaries so far (0 with early
    stopping off), kept across a restore in the checkpoint (``boundary.json``).

    The stage cache is ``cache_dir`` (a cache shared across runs) or the run's ``cache/``, evicted
    to ``max_bytes`` after each write. The trial holds every entry it uses under its trial id
    (:meth:`~trainables.pipeline.cache.StageCache.hold`); the driver releases them when its final
    result is recorded. A stage checkpoint whose output is a cache entry holds ``progress.json``
    only, naming the entry (``cache_key``) and its content hash; one whose output is not cached
    (the cache off) holds ``model.pt`` as well, and ``teacher.<domain>.pt`` for a teacher not cached.

    A plan of ``repeats: k`` > 1 runs k times in turn, seeds ``seed`` to ``seed + k - 1``
    (:meth:`~trainables.pipeline.plan.Plan.repeat`; run r works in ``trials/<id>/repeat<r>/``), and
    its final result is :func:`~trainables.pipeline.repeats.aggregate` of the k (why one trial runs
    them: :mod:`trainables.pipeline.repeats`). Its reports count stages over all runs (``stages`` =
    k x the plan's steps), only run 0 measures boundaries, and every checkpoint also holds the final
    results of the runs finished so far (``repeats.json``; one is taken between two runs), so a
    resumed trial goes on with the run it was in. A run that diverges or ends with an objective that
    is not finite fails the trial, naming the run and its seed.
    """
    from ray import tune

    plan = Plan.model_validate(config["plan"])
    trial_id = tune.get_context().get_trial_id()
    device = _device()
    _use_assigned_cpus(device)
    run = RunFolder(Path(run_dir))
    stage_cache = (StageCache(Path(cache_dir) if cache_dir else run.cache, holder=trial_id, max_bytes=max_bytes)
                   if cache else None)
    saved = tune.get_checkpoint()
    done = _finished_runs(saved)  # a repeated trial's runs finished before it was restored
    measuring = {BOUNDARY_SECONDS: _boundary_seconds(saved)}  # what measuring boundaries cost so far
    steps = len(plan.steps)
    total = plan.repeats * steps

    def checkpoint(model: nn.Module | None, progress: Progress, repeat: int, ctx: Context) -> None:
        """Report ``progress`` of run ``repeat`` with a checkpoint; ``model`` None: the run has not begun."""
        index = repeat * steps + progress.index
        with tempfile.TemporaryDirectory() as tmp:
            if model is None:
                (Path(tmp) / "progress.json").write_text(json.dumps(progress.__dict__))
            else:
                _write_checkpoint(Path(tmp), model, progress, ctx, cached=stage_cache is not None)
            if done:
                (Path(tmp) / REPEATS_FILE).write_text(json.dumps(done))
            report = {**progress_report(index, total), **progress.seconds}
            first = plan.repeat(0)
            if (boundary_runs > 0 and repeat == 0 and measured_at(plan, progress.index)
                    and not next_stage_cached(first, progress, stage_cache)):
                measured, spent = measure_or_reuse(model, first, progress, ctx, boundary_runs, stage_cache)
                report.update(measured)
                measuring[BOUNDARY_SECONDS] += spent
            (Path(tmp) / BOUNDARY_FILE).write_text(json.dumps(measuring))
            tune.report({**report, **measuring}, checkpoint=tune.Checkpoint.from_directory(tmp))
        _injected_fault(index)

    for repeat in range(len(done), plan.repeats):
        single = plan.repeat(repeat)
        ctx = Context(plan.source, plan.target, run.trial(trial_id, repeat), seed=single.seed, device=device)
        model, progress = (_restore(saved, single, stage_cache, ctx) if repeat == len(done) else (None, Progress()))
        which = f" (run {repeat + 1} of {plan.repeats}, seed {single.seed})" if plan.repeats > 1 else ""
        try:
            _, metrics = run_plan(single, ctx, cache=stage_cache, model=model, progress=progress,
                                  after_stage=lambda m, p, r=repeat, c=ctx: checkpoint(m, p, r, c))
        except Diverged as exc:  # deterministic: reported, not raised, so Tune does not retry it
            tune.report({**failed_result(f"Diverged{which}: {exc}", repeat * steps + progress.index, total), **measuring})
            return
        if plan.repeats > 1 and (failed := final_result(metrics, steps).get(FAILED)):
            tune.report({**failed_result(f"{failed}{which}", (repeat + 1) * steps, total), **measuring})  # so would their mean be
            return
        done.append({k: v for k, v in metrics.items() if isinstance(v, (int, float, str))})
        if repeat + 1 < plan.repeats:
            checkpoint(None, Progress(), repeat + 1, ctx)  # between two runs: a resume begins the next
    peer = final_peer(plan) if boundary_runs > 0 else {}  # early stopping on: the rung it passed unmeasured
    tune.report({**final_result(aggregate(done), total), **measuring, **peer})


REPEATS_FILE = "repeats.json"  # in a repeated trial's checkpoint: the final results of its finished runs
BOUNDARY_FILE = "boundary.json"  # in a trial's checkpoint: ``{"boundary_seconds": spent so far}``


def measure_or_reuse(model: nn.Module, plan: Plan, progress: Progress, ctx: Context, runs: int,
              cache: StageCache | None) -> tuple[dict[str, Any], float]:
    """The boundary measurements of ``model`` after ``progress.index`` stages of ``plan`` and the
    seconds they cost this trial: measured once per model and kept beside its stage cache entry
    (``boundary-<runs>.json``), so a trial that took the model from the cache reuses them at no
    cost; every trial of a search shares ``D|T``, and measuring it in each cost 3-5 s a trial."""
    kept = None if cache is None or progress.cache_key is None else cache.root / progress.cache_key / f"boundary-{runs}.json"
    if kept is not None and kept.is_file():
        try:
            return json.loads(kept.read_text()), 0.0
        except ValueError:  # a torn file: measure again
            pass
    measured = measure_boundary(model, plan, progress.index, ctx, runs=runs)
    if kept is not None and kept.parent.is_dir():
        atomic_write(kept, json.dumps(measured))
    return measured, float(measured[PREFIX + "seconds"])


def _boundary_seconds(checkpoint) -> float:
    """The seconds a trial had spent measuring boundaries at ``checkpoint`` (``boundary.json``; 0
    without a checkpoint or for one from before the file existed)."""
    if checkpoint is None:
        return 0.0
    with checkpoint.as_directory() as folder:
        spent = Path(folder) / BOUNDARY_FILE
        return float(json.loads(spent.read_text())[BOUNDARY_SECONDS]) if spent.is_file() else 0.0


def _finished_runs(checkpoint) -> list[dict[str, Any]]:
    """The final results of the runs a repeated trial had finished at ``checkpoint`` (``repeats.json``;
    the run it is in is the next one); none without a checkpoint or for a plan of one run."""
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        finished = Path(folder) / REPEATS_FILE
        return json.loads(finished.read_text()) if finished.is_file() else []


def _write_checkpoint(folder: Path, model: nn.Module, progress: Progress, ctx: Context, *, cached: bool) -> None:
    """A stage checkpoint in ``folder``: ``progress.json``; ``model.pt`` when the output is in no cache
    entry (``cached`` False, or not cached), and ``teacher.<domain>.pt`` for each teacher taken from
    a model in no cache entry (:func:`_restore` reads them back)."""
    if progress.cache_key is None or not cached:  # no entry to refer to
        torch.save(model.state_dict(), folder / "model.pt")
    for domain, ref in progress.teachers.items():
        if ref["cache_key"] is None or not cached:
            torch.save(ctx.teacher(domain).state_dict(), folder / f"teacher.{domain}.pt")
    (folder / "progress.json").write_text(json.dumps(progress.__dict__))


def _restore(checkpoint, plan: Plan, cache: StageCache | None = None,
             ctx: Context | None = None) -> tuple[nn.Module | None, Progress]:
    """The model and progress saved by the last finished stage, or a fresh start; the teachers taken
    before that stage go to ``ctx.teachers`` (frozen, on ``ctx.device``).

    A checkpoint without ``model.pt`` refers to the cache entry ``progress.cache_key``, and a teacher
    without ``teacher.<domain>.pt`` to the entry in ``progress.teachers``; when such an entry is gone
    or does not hold the output the checkpoint names (its content hash differs), the trial starts
    afresh and the stage cache recomputes (or finds) each stage, as for a corrupt entry.
    """
    if checkpoint is None:
        return None, Progress()
    with checkpoint.as_directory() as folder:
        progress = Progress(**json.loads((Path(folder) / "progress.json").read_text()))
        stored = Path(folder) / "model.pt"
        state = torch.load(stored, map_location="cpu", weights_only=True) if stored.is_file() else None
        teachers = {domain: torch.load(Path(folder) / f"teacher.{domain}.pt", map_location="cpu", weights_only=True)
                    for domain in progress.teachers if (Path(folder) / f"teacher.{domain}.pt").is_file()}
    if state is None:
        state = _cached_state(cache, progress.cache_key, progress.input_hash)
        if state is None:
            return None, Progress()
    for domain, ref in progress.teachers.items():
        if domain not in teachers:
            teachers[domain] = _cached_state(cache, ref["cache_key"], ref["hash"])
            if teachers[domain] is None:
                return None, Progress()
    progress.resumed_at.append(progress.index)
    dense = plan.architecture
    if ctx is not None:
        ctx.teachers.update({domain: rebuild(dense.model, taught, path=dense.model_path).eval().requires_grad_(False)
                             .to(ctx.device) for domain, taught in teachers.items()})
    return rebuild(dense.model, state, path=dense.model_path), progress


def _cached_state(cache: StageCache | None, key: str | None, digest: str | None) -> dict[str, torch.Tensor] | None:
    """The state of cache entry ``key`` when it holds the output of content hash ``digest``, else None."""
    found = cache.get(key) if cache is not None and key else None
    return None if found is None or found[2] != digest else found[0]


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
