"""Cheap objectives of a trial at a stage boundary, for multi-objective early stopping.

After a stage (not the last two: stopping before the benchmark saves next to nothing) a trial can
measure the model as it stands: top-1/top-5 accuracy on the *validation* split of the domain it was
last trained on (the source before transfer, the target after; never the test split, which the
final objectives keep), the bytes of its compressed artifact (``model.h5``, written to
``<workdir>/boundary/``), its latency on the trial's benchmark engine with a few timed runs (after
surgery, as ``B`` times it), and the share of zeros in its prunable layers. The driver's scheduler
(:mod:`search.run.early_stop`) compares trials that reached the same boundary.

A boundary is named by the slots done so far, ``D|P1|T``: trials at the same boundary ran the
same kinds of stages in the same order, with other parameters.

Example::

    from trainables.pipeline.boundary import boundary_name
    boundary_name(["D", "P1", "T", "P2", "B"], 3)   # 'D|P1|T'
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.masks import prunable_layers, zero_fraction
from ..layout import BOUNDARY_FILES
from ..measure.metrics import measure
from ..stage import Context
from ..train import EVAL_BATCH_SIZE, evaluate, loader
from .plan import Plan

from .result import BOUNDARY  # the result key naming the boundary; its measurements are ``boundary.<objective>``
PREFIX = f"{BOUNDARY}."
PREFIX_PLAN = "boundary_plan"  # the result key: a hash of the plan up to the boundary (same hash, same model)


def boundary_name(slots: Sequence[str], done: int) -> str:
    """The boundary after the first ``done`` stages of a plan whose slots are ``slots``."""
    return "|".join(slots[:done])


def measured_at(plan: Plan, done: int) -> bool:
    """Whether a trial measures itself after its first ``done`` stages: at least two stages remain
    (the last is the benchmark; stopping just before it would save only the benchmark)."""
    return 0 < done <= len(plan.steps) - 2


def measure_boundary(model: nn.Module, plan: Plan, done: int, ctx: Context, *, runs: int = 5) -> dict[str, Any]:
    """The boundary measurements of ``model`` after the first ``done`` stages of ``plan``.

    Returns ``{"boundary": "D|P1", "boundary_plan": <hash>, "boundary.accuracy": ...,
    "boundary.top5": ..., "boundary.size_bytes": ..., "boundary.latency_ms": ...,
    "boundary.sparsity": ..., "boundary.seconds": ...}``; latency from ``runs`` timed runs after one
    warm-up on the engine of the plan's benchmark step, measured as it measures
    (:meth:`~trainables.stages.benchmark.BenchmarkConfig.measurement`), TensorRT with the run's timing
    cache (``RUN/tensorrt``, as ``B``).
    ``boundary_plan`` hashes the data, the seed and the steps done: two trials with the same hash
    hold the same model there (they differ only later), so the scheduler never lets one stop the other.
    """
    start = time.perf_counter()
    slots = plan.slots()
    domain = plan.domain_after(done)
    model = model.to(ctx.device)
    splits = ctx.data(domain)
    scores = evaluate(model, loader(splits.val, EVAL_BATCH_SIZE, shuffle=False), ctx.device)
    with torch.random.fork_rng():  # the measurement must not move the trial's random streams
        measured = measure(model, ctx.input_shape, Path(ctx.workdir) / BOUNDARY_FILES, device=ctx.device,
                           **plan.benchmark.config.measurement(Path(ctx.workdir), runs=runs))
    layers = [m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]
    values = {"accuracy": scores["accuracy"], "top5": scores["top5"], "size_bytes": float(measured["size_bytes"]),
              "latency_ms": float(measured["latency_ms"]), "sparsity": float(zero_fraction(layers)),
              "seconds": time.perf_counter() - start}
    return {BOUNDARY: boundary_name(slots, done), PREFIX_PLAN: prefix_hash(plan, done),
            **{PREFIX + k: v for k, v in values.items()}}


def prefix_hash(plan: Plan, done: int) -> str:
    """A hash of what a trial computed in its first ``done`` stages: data, seed and those steps."""
    steps = [step.model_dump(mode="json") for step in plan.steps[:done]]
    text = json.dumps({"data": plan.data_key(), "seed": plan.seed, "steps": steps}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
