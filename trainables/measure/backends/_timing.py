"""What a latency backend measured, and the two clocks it measures with.

- **wall**: ``time.perf_counter_ns`` around one synchronous call (CPU backends, and every
  end-to-end run, whose last step copies the logits back to the host).
- **cuda-events**: a pair of CUDA events recorded on the backend's stream around one inference,
  read after the end event completes: the GPU-side time of that inference alone.

Every backend runs ``warmup`` untimed calls first, then ``runs`` timed ones, one at a time (each
finishes before the next starts), and reports the median, the 90th percentile and the spread:
the interquartile range (75th minus 25th percentile) over the timed runs, each run one round.
Two latencies within their combined spread are one latency to the front (``search/front.py``).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ...errors import FrontierError

WALL, CUDA_EVENTS = "wall", "cuda-events"


@dataclass(frozen=True)
class Latency:
    """Latency of one model on one backend, and what exactly was measured.

    Example:
        >>> Latency(median_ms=2.0, p90_ms=2.5, batch_size=1, threads=1, runs=50, warmup=10).throughput_ips
        500.0

    Args:
        median_ms: median over the timed runs at ``batch_size``, in milliseconds (``latency_ms``).
        p90_ms: 90th percentile over the same runs, in milliseconds.
        batch_size: images per timed inference.
        threads: CPU threads (ONNX Runtime intra-op threads; torch's CPU threads).
        runs: timed runs.
        warmup: untimed runs before them.
        backend: the engine as run: ``onnxruntime-cpu``, ``torch-cpu``, ``torch-cuda``,
            ``torch-cuda-graph`` (CUDA-graph replay) or ``tensorrt``.
        providers: ONNX Runtime's execution providers, in priority order (empty for others).
        precision: ``fp32`` or ``fp16``, the weights' and activations' type.
        device: ``cpu`` or the GPU's name.
        clock: ``wall`` or ``cuda-events`` (GPU time only), see the module doc.
        throughput_ips: images per second at ``throughput_batch``; NaN: derived from the latency
            runs as ``batch_size * 1000 / median_ms``.
        throughput_batch: the batch of the throughput runs; 0: ``batch_size``.
        e2e_median_ms: median end-to-end time at ``batch_size`` (PNG decode, resize, normalise,
            copy to the device, inference, logits back on the host); None if not measured.
        e2e_p90_ms: its 90th percentile.
        sparse_weights: TensorRT was allowed its 2:4 structured-sparsity kernels.
        iqr_ms: the spread: interquartile range over the timed runs, in milliseconds
            (``latency_iqr_ms``); NaN: not measured.
    """

    median_ms: float
    p90_ms: float
    batch_size: int
    threads: int
    runs: int
    warmup: int
    backend: str = "onnxruntime-cpu"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    precision: str = "fp32"
    device: str = "cpu"
    clock: str = WALL
    throughput_ips: float = math.nan
    throughput_batch: int = 0
    e2e_median_ms: float | None = None
    e2e_p90_ms: float | None = None
    sparse_weights: bool = False
    iqr_ms: float = math.nan

    def __post_init__(self) -> None:
        if not self.throughput_batch:
            object.__setattr__(self, "throughput_batch", self.batch_size)
        if math.isnan(self.throughput_ips):
            object.__setattr__(self, "throughput_ips", self.batch_size * 1000.0 / self.median_ms)

    @classmethod
    def from_times(cls, times_ms: Sequence[float] | np.ndarray, *, batch_size: int, threads: int, warmup: int,
                   backend: str, throughput_ips: float = math.nan, throughput_batch: int | None = None,
                   e2e: tuple[float | None, float | None] = (None, None), **record: object) -> Latency:
        """The record of ``times_ms`` (one entry per timed run, at ``batch_size``): its median, 90th
        percentile and spread (:func:`summarize`, :func:`spread`), ``runs`` their count; the one
        constructor every backend builds its result with.

        ``e2e`` is the end-to-end (median, p90), ``(None, None)`` when not measured; ``record`` holds
        the remaining fields as the backend ran (``providers``, ``precision``, ``device``, ``clock``,
        ``sparse_weights``).

        Example:
            >>> Latency.from_times([1.0, 2.0, 3.0], batch_size=1, threads=1, warmup=0, backend="torch-cpu").iqr_ms
            1.0
        """
        median_ms, p90_ms = summarize(times_ms)
        return cls(median_ms=median_ms, p90_ms=p90_ms, batch_size=batch_size, threads=threads,
                   runs=len(times_ms), warmup=warmup, backend=backend, throughput_ips=throughput_ips,
                   throughput_batch=throughput_batch or batch_size, e2e_median_ms=e2e[0], e2e_p90_ms=e2e[1],
                   iqr_ms=spread(times_ms), **record)

    def metrics(self) -> dict[str, float | int | str]:
        """The flat metric keys a benchmark stage reports: ``latency_ms`` (the objective) and the fields
        :data:`trainables.objectives.LATENCY_FIELDS` names (``trials.csv`` keeps those)."""
        metrics: dict[str, float | int | str] = {
            "latency_ms": self.median_ms,
            "latency_p90_ms": self.p90_ms,
            "latency_batch": self.batch_size,
            "latency_threads": self.threads,
            "latency_backend": self.backend,
            "latency_precision": self.precision,
            "latency_device": self.device,
            "latency_clock": self.clock,
            "latency_sparse_weights": int(self.sparse_weights),
            "throughput_ips": self.throughput_ips,
            "throughput_batch": self.throughput_batch,
            "latency_iqr_ms": self.iqr_ms,  # NaN where not measured: the front then takes no noise
        }
        if self.e2e_median_ms is not None:
            metrics.update(latency_e2e_ms=self.e2e_median_ms, latency_e2e_p90_ms=self.e2e_p90_ms)
        return metrics


def check_counts(**values: int) -> None:
    """Raise :class:`FrontierError` naming the first argument that is not an int at or above its
    least value (``warmup`` may be 0; every other count at least 1)."""
    for name, value in values.items():
        least = 0 if name == "warmup" else 1
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise FrontierError(f"{name} must be an integer >= {least} but got {value!r}")


def summarize(times_ms: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """``(median, 90th percentile)`` of ``times_ms``, as floats."""
    median, p90 = np.percentile(np.asarray(times_ms, dtype=np.float64), [50, 90])
    return float(median), float(p90)


def spread(times_ms: Sequence[float] | np.ndarray) -> float:
    """Interquartile range of ``times_ms`` (75th minus 25th percentile), the latency's noise; 0.0 for one run.

    Example:
        >>> spread([1.0, 2.0, 3.0, 4.0, 5.0])
        2.0
    """
    q1, q3 = np.percentile(np.asarray(times_ms, dtype=np.float64), [25, 75])
    return float(q3 - q1)


def wall_times(call: Callable[[], object], warmup: int, runs: int) -> np.ndarray:
    """Milliseconds of ``runs`` calls of ``call`` (each synchronous), after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times_ns = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        start = time.perf_counter_ns()
        call()
        times_ns[i] = time.perf_counter_ns() - start
    return times_ns / 1e6


def cuda_times(call: Callable[[], object], stream: torch.cuda.Stream, warmup: int, runs: int) -> np.ndarray:
    """GPU milliseconds of ``runs`` calls of ``call`` that enqueue work on ``stream``, between CUDA
    events recorded on ``stream``; each run completes before the next is enqueued."""
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            call()
        stream.synchronize()
        times = np.empty(runs, dtype=np.float64)
        for i in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            call()
            end.record(stream)
            end.synchronize()
            times[i] = start.elapsed_time(end)
    return times


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
