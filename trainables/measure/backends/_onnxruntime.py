"""The ONNX Runtime backend: an ONNX file timed in a CPU session with stated thread settings."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import FrontierError
from ._images import EncodedImages
from ._timing import Latency, check_counts, summarize, torch_threads, wall_times

if TYPE_CHECKING:
    from onnxruntime import InferenceSession, NodeArg

ORT_BACKEND = "onnxruntime-cpu"
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def onnx_latency(
    onnx_path: str | Path,
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
    throughput_batch: int | None = None,
    end_to_end: bool = False,
) -> Latency:
    """Median and 90th-percentile latency of ``onnx_path`` in an ONNX Runtime CPU session.

    The session uses ``CPUExecutionProvider``, ``intra_op_num_threads=threads``,
    ``inter_op_num_threads=1``, sequential execution and ``ORT_ENABLE_ALL``. Its input is one
    seeded standard-normal batch of the model's input shape; ``warmup`` untimed runs precede
    ``runs`` runs timed one by one with ``time.perf_counter_ns``.

    Example:
        >>> onnx_latency("out/model.onnx", runs=20).median_ms  # doctest: +SKIP
        0.41

    Args:
        onnx_path: a model written by :func:`trainables.measure.metrics.export_onnx`.
        batch_size: images per inference (the model's batch must be dynamic or equal to it).
        threads: ONNX Runtime intra-op threads (and torch's, for end-to-end preprocessing).
        warmup: untimed runs first (allocations, caches).
        runs: timed runs.
        seed: seed of the random input.
        throughput_batch: batch of separate throughput runs; None: throughput from the latency runs.
        end_to_end: also time PNG decode + resize + normalise + inference at ``batch_size``.

    Raises:
        FrontierError: a missing file, a bad argument, or a batch the model's fixed batch refuses.
    """
    check_counts(batch_size=batch_size, threads=threads, warmup=warmup, runs=runs)
    if throughput_batch is not None:
        check_counts(throughput_batch=throughput_batch)
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FrontierError(f"latency: ONNX file '{onnx_path}' does not exist")
    session = cpu_session(str(onnx_path), threads)
    times = _times(session, batch_size, seed, onnx_path, warmup, runs)
    throughput = (_throughput(session, throughput_batch, seed, onnx_path, warmup, runs)
                  if throughput_batch not in (None, batch_size) else float("nan"))
    e2e = _end_to_end(session, batch_size, threads, seed, warmup, runs) if end_to_end else (None, None)
    return Latency.from_times(times, batch_size=batch_size, threads=threads, warmup=warmup, backend=ORT_BACKEND,
                              throughput_ips=throughput, throughput_batch=throughput_batch, e2e=e2e,
                              providers=tuple(session.get_providers()))


def cpu_session(model: str | bytes, threads: int) -> InferenceSession:
    """An ONNX Runtime CPU session of ``model`` (a path or the model's bytes) with the options every
    timing of frontier uses: ``intra_op_num_threads=threads``, one inter-op thread, sequential
    execution, ``ORT_ENABLE_ALL``, errors-only logging (:func:`onnx_latency`, the latency model's probes)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def _times(session: InferenceSession, batch: int, seed: int, path: Path, warmup: int, runs: int) -> np.ndarray:
    (spec,) = session.get_inputs()
    feed = {spec.name: _random_input(spec, batch, seed, path)}
    return wall_times(lambda: session.run(None, feed), warmup, runs)


def _throughput(session: InferenceSession, batch: int, seed: int, path: Path, warmup: int, runs: int) -> float:
    median_ms, _ = summarize(_times(session, batch, seed, path, warmup, runs))
    return batch * 1000.0 / median_ms


def _end_to_end(session: InferenceSession, batch: int, threads: int, seed: int, warmup: int,
                runs: int) -> tuple[float, float]:
    (spec,) = session.get_inputs()
    images = EncodedImages(tuple(spec.shape[1:]), seed=seed)
    dtype = _ORT_TYPES[spec.type]

    def call() -> None:
        session.run(None, {spec.name: images(batch).numpy().astype(dtype, copy=False)})

    with torch_threads(threads):
        return summarize(wall_times(call, warmup, runs))


def _random_input(spec: NodeArg, batch_size: int, seed: int, path: Path) -> np.ndarray:
    dims = list(spec.shape)
    if not isinstance(dims[0], int):
        dims[0] = batch_size  # the symbolic batch dimension
    elif dims[0] != batch_size:
        raise FrontierError(f"latency: '{path}' has a fixed batch of {dims[0]}, so batch_size={batch_size} cannot run")
    if not all(isinstance(d, int) for d in dims[1:]):
        raise FrontierError(f"latency: '{path}' has a symbolic non-batch input dimension: {spec.shape}")
    dtype = _ORT_TYPES.get(spec.type)
    if dtype is None:
        raise FrontierError(f"latency: '{path}' takes {spec.type}; only float inputs are timed")
    return np.random.default_rng(seed).standard_normal(dims, dtype=np.float32).astype(dtype)
