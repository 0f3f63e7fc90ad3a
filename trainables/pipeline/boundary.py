"""Cheap objectives of a trial at a stage boundary, for multi-objective early stopping.

After a stage (not the last two: stopping before the benchmark saves next to nothing) a trial can
measure the model as it stands: top-1/top-5 accuracy on the *validation* split of the domain it was
last trained on (the source before transfer, the target after; never the test split, which the
final objectives keep), the bytes of its compressed artifact (``model.h5``, written to
``<workdir>/boundary/``), its latency on the trial's benchmark engine with a few timed runs (after
surgery, as ``B`` times it), and the share of zeros in its prunable layers. The driver's scheduler
(:mod:`search.run.early_stop`) compares trials that reached the same boundary.

A boundary is named by the slots done so far, ``D|P1|T`` (``trials.csv``'s ``stopped_at``). Trials
are compared at its *rung* (:func:`rung_name`), a resource level shared by plans whose slots differ,
as multi-objective ASHA's rungs are (Schmucker et al., 2021): the domain the model is on now and the
kinds of compressing stages done so far, in order (``target:P+Q``). PA's ``D|T|P2`` and PB's
``D|P1|T`` are both ``target:P``: pruned once, now on the target.

With each measurement comes its noise, from the measurement itself: the accuracy's binomial standard
error on the validation images (``boundary.accuracy_se``, ``boundary.accuracy_n``) and the latency's
interquartile range over the timed runs (``boundary.latency_iqr_ms``), the columns
:attr:`~trainables.objectives.ObjectiveInfo.spread` names for the final objectives.

Example::

    from trainables.pipeline.boundary import boundary_name
    boundary_name(["D", "P1", "T", "P2", "B"], 3)   # 'D|P1|T'
    rung_name(plan, 3)                               # 'target:P' for that PBA plan
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.masks import prunable_layers, zero_fraction
from ..layout import BOUNDARY_FILES
from ..measure.metrics import measure
from ..objectives import accuracy_error
from ..stage import Context, is_compressing
from ..train import EVAL_BATCH_SIZE, evaluate, loader
from .plan import Plan

from .result import BOUNDARY  # the result key naming the boundary; its measurements are ``boundary.<objective>``
PREFIX = f"{BOUNDARY}."
PREFIX_PLAN = "boundary_plan"  # the result key: a hash of the plan up to the boundary (same hash, same model)
RUNG = "boundary_rung"  # the result key: the boundary's rung (:func:`rung_name`), where the scheduler compares it
UNCOMPRESSED = "none"  # a rung's kinds before any compressing stage: ``source:none``


def boundary_name(slots: Sequence[str], done: int) -> str:
    """The boundary after the first ``done`` stages of a plan whose slots are ``slots``."""
    return "|".join(slots[:done])


def rung_name(plan: Plan, done: int) -> str:
    """The rung of the boundary after the first ``done`` steps of ``plan``: ``<domain>:<kinds>``, the
    domain the model is on (:meth:`~trainables.pipeline.plan.Plan.domain_after`) and the kind of each
    compressing stage done (:func:`~trainables.stage.is_compressing`; its slot without the domain
    number: ``P`` for P1/P2 by any pruning method, ``Q`` for sharing), in order, joined by ``+``
    (:data:`UNCOMPRESSED` before any). Dense and transfer stages compress nothing.

    Example (slots -> rung, ``done`` = all of them)::

        D|T|P2 -> target:P     D|P1|T -> target:P     D|P1|T|P2 -> target:P+P
        D|P1 -> source:P       D|T|P2|Q -> target:P+Q     D|T -> target:none
    """
    if not 0 <= done <= len(plan.steps):
        raise ValueError(f"done must be between 0 and {len(plan.steps)} (the plan's steps) but got {done}")
    kinds = [_kind(stage.slot) for stage in (step.build() for step in plan.steps[:done]) if is_compressing(stage)]
    return f"{plan.domain_after(done)}:{'+'.join(kinds) or UNCOMPRESSED}"


def _kind(slot: str) -> str:
    """A compressing stage's kind: its slot's letters, before the domain number (``P2.2`` -> ``P``)."""
    return re.match(r"[A-Za-z]*", slot).group(0)


FINAL_RUNG = "final_rung"  # the final result's key: the rung whose model the benchmark measured (:func:`final_peer`)
FINAL_PLAN = "final_rung_plan"  # beside it: the hash of the plan up to that rung


def final_peer(plan: Plan) -> dict[str, str]:
    """Where a finished trial's own objectives count as a measurement at a rung: ``{FINAL_RUNG: rung,
    FINAL_PLAN: hash}`` when the benchmark measures the model of the stages before it as it is (a
    float benchmark after a compressing stage), else ``{}`` (an INT8 benchmark measures another
    model; an uncompressed model is the one every trial holds).

    Such a trial is not measured at that boundary (:func:`measured_at`: stopping before the benchmark
    saves nothing), yet it passed the rung: its final accuracy (test split), size and latency, each
    with its noise, are that model's, so the scheduler counts them among the rung's measurements
    without judging them. In PA searches, half of the pruned models end in a float benchmark.

    Example (slots -> peer): ``D|T|P2|B`` -> ``target:P``; ``D|T|P2|I8|B``, ``D|T|B`` -> none.
    """
    done = len(plan.steps) - 1
    rung = rung_name(plan, done)
    if plan.benchmark.int8 is not None or rung.endswith(f":{UNCOMPRESSED}"):
        return {}
    return {FINAL_RUNG: rung, FINAL_PLAN: prefix_hash(plan, done)}


def measured_at(plan: Plan, done: int) -> bool:
    """Whether a trial measures itself after its first ``done`` stages: at least two stages remain
    (the last is the benchmark; stopping just before it would save only the benchmark)."""
    return 0 < done <= len(plan.steps) - 2


def measure_boundary(model: nn.Module, plan: Plan, done: int, ctx: Context, *, runs: int = 5) -> dict[str, Any]:
    """The boundary measurements of ``model`` after the first ``done`` stages of ``plan``.

    Returns ``{"boundary": "D|P1", "boundary_rung": "source:P", "boundary_plan": <hash>,
    "boundary.accuracy": ..., "boundary.accuracy_se": ..., "boundary.accuracy_n": ...,
    "boundary.top5": ..., "boundary.size_bytes": ..., "boundary.latency_ms": ...,
    "boundary.latency_iqr_ms": ..., "boundary.sparsity": ..., "boundary.seconds": ...}``
    (``accuracy_se``: the binomial standard error on the ``accuracy_n`` validation images;
    ``latency_iqr_ms``: the interquartile range of the timed runs, NaN where the backend gave none;
    ``seconds``: what measuring took, the cost of early stopping itself); latency from ``runs`` timed runs after one
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
    values = {"accuracy": scores["accuracy"], **accuracy_error(scores["accuracy"], len(splits.val)),
              "top5": scores["top5"], "size_bytes": float(measured["size_bytes"]),
              "latency_ms": float(measured["latency_ms"]),
              "latency_iqr_ms": float(measured.get("latency_iqr_ms", float("nan"))),
              "sparsity": float(zero_fraction(layers)), "seconds": time.perf_counter() - start}
    return {BOUNDARY: boundary_name(slots, done), RUNG: rung_name(plan, done), PREFIX_PLAN: prefix_hash(plan, done),
            **{PREFIX + k: v for k, v in values.items()}}


def prefix_hash(plan: Plan, done: int) -> str:
    """A hash of what a trial computed in its first ``done`` stages: data, seed and those steps."""
    steps = [step.model_dump(mode="json") for step in plan.steps[:done]]
    text = json.dumps({"data": plan.data_key(), "seed": plan.seed, "steps": steps}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
