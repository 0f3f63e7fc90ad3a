"""Size and latency of a model, measured, never estimated (DESIGN.md).

- **size**: ``size_bytes`` is the byte count of the model's artifact file, the compressed HDF5
  written by :func:`trainables.artifact.save_artifact` (pruned weights stored sparse).
- **latency**: ``latency_ms`` is the median wall time of ``runs`` timed runs, after ``warmup``
  untimed ones, of a real ONNX Runtime session on the CPU (``CPUExecutionProvider``, all graph
  optimisations), at a stated batch size and intra-op thread count; the 90th percentile is
  reported beside it. Absolute times depend on the machine: compare them within one run.

The ONNX file comes from torch's ``torch.export``-based exporter (``dynamo=True``), the one
torch maintains; the TorchScript exporter is deprecated. Its lowest implemented opset is 18:
asked for 17 it exports 18 and tries a down-conversion that fails for ResNets, so opsets below
18 are refused here. Later issues add a TensorRT engine for GPUs behind :func:`measure`.

Example:
    >>> from torchvision.models import resnet18
    >>> metrics = measure(resnet18(num_classes=10), (3, 32, 32), "/tmp/trial-1", runs=20)
    >>> sorted(metrics)[:3]
    ['artifact', 'latency_backend', 'latency_batch']
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .artifact import save_artifact
from .errors import FrontierError
from .masks import make_permanent

if TYPE_CHECKING:
    from onnxruntime import NodeArg

BACKEND = "onnxruntime-cpu"
MIN_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript")
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


@dataclass(frozen=True)
class Latency:
    """Wall time of one inference, measured on a real ONNX Runtime CPU session.

    Args:
        median_ms: median over the timed runs, in milliseconds (the ``latency_ms`` objective).
        p90_ms: 90th percentile over the timed runs, in milliseconds.
        batch_size: images per inference.
        threads: ONNX Runtime intra-op threads (inter-op: 1).
        runs: timed runs.
        warmup: untimed runs before them.
        backend: the engine, ``"onnxruntime-cpu"``.
        providers: the session's execution providers, in priority order.
    """

    median_ms: float
    p90_ms: float
    batch_size: int
    threads: int
    runs: int
    warmup: int
    backend: str = BACKEND
    providers: tuple[str, ...] = ("CPUExecutionProvider",)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int],
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
) -> Path:
    """Export ``model`` to a self-contained ONNX file; returns ``path``.

    A deep copy is exported, in eval mode on the CPU with its pruning masks made permanent, so
    the caller's model keeps its device, mode and hooks. The graph has one input ``"input"``
    (batch, *input_shape) and one output ``"logits"``; the weights are inside the file. The file
    is written under a temporary name in the same folder, then moved into place.

    Args:
        model: the classifier to export.
        path: the ``.onnx`` file to write (its folder is created).
        input_shape: (channels, height, width) of one image.
        opset: ONNX opset, at least 18 (the ``torch.export``-based exporter's lowest).
        dynamic_batch: a symbolic batch dimension (any batch size runs); else batch 1 is fixed.

    Raises:
        FrontierError: a bad ``input_shape`` or ``opset``.
    """
    input_shape = _check_input_shape(input_shape)
    if opset < MIN_OPSET:
        raise FrontierError(f"opset must be >= {MIN_OPSET} (torch's ONNX exporter) but got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    exported = plain_copy(model)
    # Trace at batch 2: torch.export specialises dimensions of size 0 and 1.
    example = torch.randn(2 if dynamic_batch else 1, *input_shape)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.onnx", dir=path.parent)
    os.close(fd)
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(
                exported,
                (example,),
                tmp,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                opset_version=opset,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                external_data=False,
                verbose=False,
                report=False,
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def onnx_latency(
    onnx_path: str | Path,
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    seed: int = 0,
) -> Latency:
    """Median and 90th-percentile latency of ``onnx_path`` in an ONNX Runtime CPU session.

    The session uses ``CPUExecutionProvider``, ``intra_op_num_threads=threads``,
    ``inter_op_num_threads=1`` and ``ORT_ENABLE_ALL``. Its input is one seeded standard-normal
    batch of the model's input shape; ``warmup`` untimed runs precede ``runs`` runs timed one by
    one with ``time.perf_counter_ns``.

    Args:
        onnx_path: a model written by :func:`export_onnx`.
        batch_size: images per inference (the model's batch must be dynamic or equal to it).
        threads: ONNX Runtime intra-op threads.
        warmup: untimed runs first (allocations, caches).
        runs: timed runs.
        seed: seed of the random input.

    Raises:
        FrontierError: a missing file, a bad argument, or a batch the model's fixed batch refuses.
    """
    import onnxruntime as ort

    checks = (("batch_size", batch_size, 1), ("threads", threads, 1), ("warmup", warmup, 0), ("runs", runs, 1))
    for name, value, least in checks:
        if not isinstance(value, int) or value < least:
            raise FrontierError(f"{name} must be an integer >= {least} but got {value!r}")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FrontierError(f"latency: ONNX file '{onnx_path}' does not exist")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(str(onnx_path), sess_options=options, providers=["CPUExecutionProvider"])
    (spec,) = session.get_inputs()
    feed = {spec.name: _random_input(spec, batch_size, seed, onnx_path)}
    for _ in range(warmup):
        session.run(None, feed)
    times_ns = np.empty(runs, dtype=np.int64)
    for i in range(runs):
        start = time.perf_counter_ns()
        session.run(None, feed)
        times_ns[i] = time.perf_counter_ns() - start
    median_ms, p90_ms = (float(v) / 1e6 for v in np.percentile(times_ns, [50, 90]))
    return Latency(
        median_ms=median_ms,
        p90_ms=p90_ms,
        batch_size=batch_size,
        threads=threads,
        runs=runs,
        warmup=warmup,
        providers=tuple(session.get_providers()),
    )


def measure(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    out_dir: str | Path,
    *,
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    attrs: Mapping[str, str | int | float] | None = None,
) -> dict[str, float | int | str]:
    """Write ``out_dir/model.h5`` and ``out_dir/model.onnx`` for ``model`` and measure both.

    Masks are made permanent on a copy (the caller's model is untouched). The state dict goes to
    the artifact (``attrs`` stored with it), the copy to ONNX, and the ONNX file is timed with
    :func:`onnx_latency`.

    Args:
        model: the classifier, masked or not, on any device.
        input_shape: (channels, height, width) of one image.
        out_dir: folder for the two files (created).
        batch_size, threads, warmup, runs: as in :func:`onnx_latency`.
        attrs: metadata for the artifact (see :func:`trainables.artifact.save_artifact`).

    Returns:
        ``size_bytes`` (length of model.h5), ``latency_ms`` (median), ``latency_p90_ms``,
        ``latency_batch``, ``latency_threads``, ``latency_backend``, and the paths ``artifact``
        and ``onnx`` as strings.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = plain_copy(model)
    artifact = out_dir / "model.h5"
    size = save_artifact(plain.state_dict(), artifact, attrs=attrs)
    onnx_path = export_onnx(plain, out_dir / "model.onnx", input_shape)
    latency = onnx_latency(onnx_path, batch_size=batch_size, threads=threads, warmup=warmup, runs=runs)
    return {
        "size_bytes": size,
        "latency_ms": latency.median_ms,
        "latency_p90_ms": latency.p90_ms,
        "latency_batch": latency.batch_size,
        "latency_threads": latency.threads,
        "latency_backend": latency.backend,
        "artifact": str(artifact),
        "onnx": str(onnx_path),
    }


def plain_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the CPU, in eval mode, with its pruning masks made permanent.

    ``copy.deepcopy`` alone fails on a masked model: the hook's computed ``weight`` is a non-leaf
    tensor (``weight_orig * weight_mask``), which torch refuses to deep-copy. Such tensors are
    copied detached; the hook recomputes them anyway and ``make_permanent`` folds them in.
    """
    memo: dict[int, object] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return make_permanent(copy.deepcopy(model, memo)).cpu().eval()


def _check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise FrontierError(f"input_shape must be (channels, height, width), positive ints, but got {input_shape!r}")
    return shape  # type: ignore[return-value]


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute the exporter's warnings, log lines and prints, so CLI output stays clean."""
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
