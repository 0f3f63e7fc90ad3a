"""The benchmark stage ``B``: accuracy on the target's test split, then measured size and latency.

Size and latency come from :func:`trainables.measure.metrics.measure` (the HDF5 artifact's byte count;
latency on the backend the config asks for, see :mod:`trainables.measure.backends`). The metrics use the
keys every stage shares (``accuracy``, ``top5``, ``size_bytes``, ``latency_ms``, ``sparsity``,
``seconds``); ``real_sparsity`` is the share of zero weights over all conv/linear layers, next to
the pipeline's nominal ``sparsity``; the backend's record is flattened beside them
(``latency_backend``, ``latency_p90_ms``, ``latency_precision``, ``latency_device``,
``throughput_ips``, ``latency_e2e_ms``, ...).

With an :class:`~trainables.stages.int8.Int8Config` the stage deploys the model in INT8 (label
``I8|B``): ``accuracy``, ``top5``, ``size_bytes`` and ``latency_ms`` are the INT8 model's (in ONNX
Runtime, its artifact, on the trial's engine); the float model's are ``float_accuracy``,
``float_top5`` and ``float_size_bytes``; ``precision`` says ``int8`` (else the float precision).

``accuracy_se`` is the reported accuracy's binomial standard error on the test split and
``accuracy_n`` its number of images (:func:`trainables.objectives.accuracy_error`): the float model's
and the INT8 model's accuracy are both measured on every image of the target's test split.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ..compress.masks import prunable_layers, zero_fraction
from ..compress.surgery import scoring_copy
from ..errors import FrontierError
from ..layout import RunFolder
from ..measure.metrics import measure
from ..objectives import accuracy_error
from ..stage import Context, Metrics
from ..train import EVAL_BATCH_SIZE, evaluate, loader
from .int8 import LABEL as INT8_LABEL
from .int8 import Int8Config, int8_request


class BenchmarkConfig(BaseModel):
    """How latency is measured: the backend, its precision, batches, threads, warm-up and runs.

    The defaults time ONNX Runtime on the CPU at batch 1 with one thread on a CPU trial, and the
    fastest engine a GPU trial has (``auto``).

    Example:
        >>> BenchmarkConfig(backend="tensorrt", precision="fp16", throughput_batch=64).runs
        50

    Args:
        batch_size: images per timed inference (``latency_ms`` is at this batch).
        threads: CPU threads (ONNX Runtime intra-op, torch on the CPU, image preprocessing).
        warmup: untimed runs before each measurement.
        runs: timed runs per measurement.
        backend: ``auto`` (TensorRT if the trial has a GPU and TensorRT imports, else torch on the
            GPU, else ONNX Runtime on the CPU), ``tensorrt``, ``torch`` or ``onnxruntime``.
        precision: ``fp32``, or ``fp16`` (timed on a GPU only).
        throughput_batch: batch of separate throughput runs; None: the latency batch's throughput.
        cuda_graphs: torch on a GPU replays a captured CUDA graph instead of running eagerly.
        end_to_end: also time PNG decode + preprocessing + inference (``latency_e2e_ms``).
        workspace_mb: TensorRT's builder workspace limit, in MiB.
        surgery: remove dead units physically (:mod:`trainables.compress.surgery`) before exporting and
            timing, so unit pruning (EPruning, channel granularity) buys real latency.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=1)
    backend: Literal["auto", "tensorrt", "torch", "onnxruntime"] = "auto"
    precision: Literal["fp32", "fp16"] = "fp32"
    throughput_batch: int | None = Field(None, ge=1)
    cuda_graphs: bool = False
    end_to_end: bool = True
    workspace_mb: int = Field(1024, ge=16)
    surgery: bool = True

    @model_validator(mode="after")
    def _fp16_needs_a_gpu_backend(self) -> BenchmarkConfig:
        if self.precision == "fp16" and self.backend == "onnxruntime":
            raise ValueError("precision fp16 is timed on a GPU only; backend onnxruntime runs on the CPU "
                             "(use tensorrt, torch or auto)")
        return self

    def measurement(self, workdir: Path, *, runs: int | None = None) -> dict[str, Any]:
        """The keyword arguments :func:`~trainables.measure.metrics.measure` takes for these settings,
        for a trial (or rerun) working in ``workdir``: every field as it is, and the run's TensorRT
        timing cache (``cache_dir``, :func:`timing_cache_dir`). The one mapping from a benchmark
        config to a measurement: ``B`` and the boundary measurements both call it.

        ``runs`` asks for the boundary's shorter measurement: one warm-up run, ``runs`` timed runs
        and no end-to-end timing; every other field (backend, precision, batches, threads, CUDA
        graphs, workspace, surgery) as ``B`` measures.

        Example:
            >>> BenchmarkConfig(cuda_graphs=True).measurement(Path("runs/r/trials/t1"), runs=5)["warmup"]
            1

        Raises:
            FrontierError: ``runs`` that is not an integer >= 1.
        """
        settings: dict[str, Any] = {**self.model_dump(), "cache_dir": timing_cache_dir(Path(workdir))}
        if runs is not None:
            if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
                raise FrontierError(f"runs must be an integer >= 1 but got {runs!r}")
            settings.update(warmup=1, runs=runs, end_to_end=False)
        return settings


class Benchmark:
    """Stage ``B``.

    Args:
        cfg: measurement settings.
        nominal_sparsity: the sparsity the pipeline aimed at, reported as ``sparsity``.
        export_dir: where ``model.h5`` and ``model.onnx`` go (default: the context's workdir).
        cache_dir: where TensorRT keeps its timing cache (default: :func:`timing_cache_dir`).
        int8: deploy in INT8 with these settings (label ``I8|B``); None: the float model.
    """

    label = "B"
    slot = "B"

    def __init__(self, cfg: BenchmarkConfig | None = None, nominal_sparsity: float = 0.0, export_dir=None,
                 cache_dir: Path | None = None, int8: Int8Config | None = None) -> None:
        self.cfg, self.nominal_sparsity, self.export_dir = cfg or BenchmarkConfig(), nominal_sparsity, export_dir
        self.cache_dir, self.int8 = cache_dir, int8
        self.label = self.label_for(int8 is not None)

    @staticmethod
    def label_for(int8: bool) -> str:
        """The pipeline label: ``B``, or ``I8|B`` when the model is deployed in INT8 (one stage, two parts)."""
        return f"{INT8_LABEL}|B" if int8 else "B"

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("the B stage needs a model from an earlier stage")
        start = time.perf_counter()
        model = model.to(ctx.device)  # it may come from the stage cache or a checkpoint, on the CPU
        test = ctx.data("target").test
        scored = scoring_copy(model, ctx.input_shape, ctx.device)  # the same outputs, the pruned network's cost
        metrics: dict = evaluate(scored, loader(test, EVAL_BATCH_SIZE, shuffle=False), ctx.device)
        layers = [m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]
        metrics.update(sparsity=self.nominal_sparsity, real_sparsity=zero_fraction(layers))
        if self.int8 is not None:
            metrics = {**{f"float_{k}": v for k, v in metrics.items() if k in ("accuracy", "top5", "loss")},
                       **{k: v for k, v in metrics.items() if k not in ("accuracy", "top3", "top5", "loss")}}
        settings = self.cfg.measurement(Path(ctx.workdir))
        if self.cache_dir is not None:
            settings["cache_dir"] = self.cache_dir
        metrics.update(
            measure(
                model,  # measure copies it to the CPU for export; the stage's model stays on ctx.device
                ctx.input_shape,
                self.export_dir or ctx.workdir,
                device=ctx.device,
                int8=None if self.int8 is None else int8_request(self.int8, ctx, self.cfg.threads),
                **settings,
            )
        )
        metrics.update(accuracy_error(metrics["accuracy"], len(test)))  # the float model's, or the INT8 model's
        metrics["seconds"] = time.perf_counter() - start
        return model, metrics


def timing_cache_dir(workdir: Path) -> Path:
    """Where TensorRT's timing cache lives: ``RUN/tensorrt`` for a trial's (``RUN/trials/<id>``) or a
    rerun's (``RUN/final/<id>``) workdir, so every trial of a run shares it; else ``workdir/tensorrt``."""
    run = RunFolder.holding(workdir)
    return run.tensorrt if run is not None else workdir / "tensorrt"
