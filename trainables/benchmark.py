"""The benchmark stage ``B``: accuracy on the target's test split, then measured size and latency.

Size and latency come from :func:`trainables.measure.measure` (the HDF5 artifact's byte count;
ONNX Runtime on the CPU). The metrics use the keys every stage shares (``accuracy``, ``top5``,
``size_bytes``, ``latency_ms``, ``sparsity``, ``seconds``); ``real_sparsity`` is the share of
zero weights over all conv/linear layers, next to the pipeline's nominal ``sparsity``.
"""

from __future__ import annotations

import time

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .masks import prunable_layers, zero_fraction
from .measure import measure
from .stage import Context, Metrics
from .train import evaluate, loader


class BenchmarkConfig(BaseModel):
    """How latency is measured: batch size, CPU threads, warm-up and timed runs."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(1, ge=1)
    threads: int = Field(1, ge=1)
    warmup: int = Field(10, ge=0)
    runs: int = Field(50, ge=1)


class Benchmark:
    """Stage ``B``.

    Args:
        cfg: measurement settings.
        nominal_sparsity: the sparsity the pipeline aimed at, reported as ``sparsity``.
        export_dir: where ``model.h5`` and ``model.onnx`` go (default: the context's workdir).
    """

    label = "B"

    def __init__(self, cfg: BenchmarkConfig | None = None, nominal_sparsity: float = 0.0, export_dir=None) -> None:
        self.cfg, self.nominal_sparsity, self.export_dir = cfg or BenchmarkConfig(), nominal_sparsity, export_dir

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        if model is None:
            raise ValueError("the B stage needs a model from an earlier stage")
        start = time.perf_counter()
        metrics: dict = evaluate(model, loader(ctx.data("target").test, 256, shuffle=False), ctx.device)
        layers = [m for _, m in prunable_layers(model, skip_first=False, skip_last=False)]
        metrics.update(sparsity=self.nominal_sparsity, real_sparsity=zero_fraction(layers))
        metrics.update(
            measure(
                model.cpu(),
                ctx.input_shape,
                self.export_dir or ctx.workdir,
                batch_size=self.cfg.batch_size,
                threads=self.cfg.threads,
                warmup=self.cfg.warmup,
                runs=self.cfg.runs,
            )
        )
        metrics["seconds"] = time.perf_counter() - start
        return model, metrics
