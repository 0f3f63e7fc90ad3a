"""Size and latency of a model, measured, never estimated (ARCHITECTURE.md).

- **size**: ``size_bytes`` is the byte count of the model's artifact file, the compressed HDF5
  written by :func:`trainables.compress.artifact.save_artifact` (pruned weights stored sparse).
- **latency**: ``latency_ms`` is the median time of ``runs`` timed runs, after ``warmup`` untimed
  ones, on a real engine chosen by :mod:`trainables.measure.backends`: TensorRT or torch on a GPU, ONNX
  Runtime (the default on a CPU, at batch 1) or torch on the CPU. The 90th percentile, throughput
  at a stated batch, end-to-end time (image decode and preprocessing included) and what was
  measured (backend, precision, batch, threads, device) are reported beside it. Absolute times
  depend on the machine: compare them within one run.

The ONNX file comes from torch's ``torch.export``-based exporter (``dynamo=True``), the one
torch maintains; the TorchScript exporter is deprecated. Its graph is traced once per
architecture in a process and refilled with each model's weights (:mod:`trainables.measure.export`).
Its lowest implemented opset is 18: asked for 17 it exports 18 and tries a down-conversion that
fails for ResNets, so opsets below 18 are refused here.

Example:
    >>> from torchvision.models import resnet18
    >>> metrics = measure(resnet18(num_classes=10), (3, 32, 32), "/tmp/trial-1", runs=20)
    >>> metrics["latency_backend"], metrics["latency_batch"]
    ('onnxruntime-cpu', 1)
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import nn

from ..compress.artifact import save_artifact
from ..compress.masks import plain_copy
from ..compress.surgery import without_dead_units
from ..errors import FrontierError
from ..files import atomic_path
from ..layout import ModelFiles
from .backends import (
    INSTALL_HINT,
    ORT_BACKEND,
    Latency,
    has_2to4_sparsity,
    onnx_latency,
    resolve_backend,
    tensorrt_latency,
    torch_latency,
)
from .export import export_program
from .int8_model import Int8Request, build_int8

BACKEND = ORT_BACKEND  # the CPU default's name, as ``latency_backend`` reports it
MIN_OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
_EXPORTER_LOGGERS = ("torch.onnx", "torch.export", "torch._export", "torch._dynamo", "torch.fx", "onnxscript")
__all__ = ["BACKEND", "MIN_OPSET", "Latency", "export_onnx", "measure", "onnx_latency", "plain_copy"]


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_shape: tuple[int, int, int],
    *,
    opset: int = MIN_OPSET,
    dynamic_batch: bool = True,
    half: bool = False,
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
        half: export in half precision (float16 input, weights and output), the FP16 model
            TensorRT builds (TensorRT 11 has no FP16 builder flag).

    Raises:
        FrontierError: a bad ``input_shape`` or ``opset``.
    """
    input_shape = _check_input_shape(input_shape)
    if opset < MIN_OPSET:
        raise FrontierError(f"opset must be >= {MIN_OPSET} (torch's ONNX exporter) but got {opset}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    dtype = torch.float16 if half else torch.float32
    exported = plain_copy(model).to(dtype)
    # Trace at batch 2: torch.export specialises dimensions of size 0 and 1.
    example = torch.randn(2 if dynamic_batch else 1, *input_shape).to(dtype)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    with atomic_path(path, suffix=".tmp.onnx") as tmp, _quiet(), torch.no_grad():
        program = export_program(exported, example, opset=opset, dynamic_shapes=dynamic_shapes,
                                 input_name=INPUT_NAME, output_name=OUTPUT_NAME)
        program.save(str(tmp), external_data=False)
    return path


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
    backend: str = "auto",
    precision: str = "fp32",
    throughput_batch: int | None = None,
    cuda_graphs: bool = False,
    end_to_end: bool = True,
    workspace_mb: int = 1024,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    surgery: bool = True,
    int8: Int8Request | None = None,
) -> dict[str, float | int | str]:
    """Write ``out_dir/model.h5`` and ``out_dir/model.onnx`` for ``model``, and measure its size
    and its latency on the backend :func:`~trainables.measure.backends.resolve_backend` chooses.

    Masks are made permanent on a copy (the caller's model is untouched). The state dict goes to
    the artifact (``attrs`` stored with it), the copy to ONNX. ONNX Runtime times the ONNX file,
    torch times the copy, TensorRT builds an engine from the ONNX file (for FP16 from a
    half-precision export, ``model.fp16.onnx``), allowed sparse kernels when some layer has 2:4
    sparsity. The backend is resolved before anything is written, so a missing TensorRT fails fast.

    Args:
        model: the classifier, masked or not, on any device.
        input_shape: (channels, height, width) of one image.
        out_dir: folder for the files (created).
        batch_size: images per timed inference (the latency batch).
        threads: CPU threads (ONNX Runtime intra-op; torch on the CPU; preprocessing).
        warmup, runs: untimed and timed runs, per measurement.
        attrs: metadata for the artifact (see :func:`trainables.compress.artifact.save_artifact`).
        backend: ``auto``, ``tensorrt``, ``torch`` or ``onnxruntime``.
        precision: ``fp32``, or ``fp16`` (a GPU backend only).
        throughput_batch: batch of separate throughput runs; None: throughput from the latency runs.
        cuda_graphs: torch on a GPU replays a CUDA graph (other backends ignore it).
        end_to_end: also time image decode + preprocessing + inference (``latency_e2e_ms``).
        workspace_mb: TensorRT's builder workspace limit, in MiB.
        device: where the trial runs: ``cpu`` or a CUDA device; ``auto`` uses a GPU only if given one.
        cache_dir: folder of TensorRT's timing cache (None: no cache).
        surgery: export and time the physically smaller network: units that are dead in the
            weights (:func:`trainables.compress.surgery.alive_units`) are removed by
            :func:`trainables.compress.surgery.checked_shrink` first (which refuses a shrunk network
            that computes something else, or a check past its time limit). The artifact keeps the
            full shapes (its zeros compress), so a rerun rebuilds the architecture from it.
        int8: time and size the INT8 model of the exported (shrunk) network instead
            (:func:`trainables.measure.int8_model.build_int8`): ``model.int8.onnx`` in the engine's
            format is what ONNX Runtime runs and TensorRT builds its engine from (strongly typed,
            explicit quantization), ``model.int8.h5`` is ``size_bytes`` (the float artifact's is
            ``float_size_bytes``), ``accuracy``/``top5`` are the INT8 model's in ONNX Runtime, and
            ``latency_precision`` is ``int8``. The torch backend runs no INT8 model: refused.

    Returns:
        ``size_bytes`` (length of model.h5), the keys of :meth:`~trainables.measure.backends.Latency.metrics`
        (``latency_ms`` the median, ``latency_p90_ms``, ``latency_batch``, ``latency_threads``,
        ``latency_backend``, ``latency_precision``, ``latency_device``, ``latency_clock``,
        ``latency_sparse_weights``, ``throughput_ips``, ``throughput_batch``, and with
        ``end_to_end`` ``latency_e2e_ms``, ``latency_e2e_p90_ms``), ``units_removed`` (share of
        units surgery removed before timing) and ``params_timed`` (parameters of the timed
        network), and the paths ``artifact`` and ``onnx`` as strings.

    Raises:
        FrontierError: a backend this machine cannot run (``tensorrt`` without the package or a
            GPU, ``fp16`` on the CPU), a bad argument, or surgery's check refusing the model.
    """
    input_shape = _check_input_shape(input_shape)  # before surgery's check makes an image of it
    engine, device = resolve_backend(backend, precision, device)
    if int8 is not None:
        _check_int8(engine, precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plain = plain_copy(model)
    files = ModelFiles(out_dir)
    artifact = files.artifact
    size = save_artifact(plain.state_dict(), artifact, attrs=attrs)
    plain, removed = without_dead_units(plain, input_shape) if surgery else (plain, 0.0)
    onnx_path = export_onnx(plain, files.onnx, input_shape)
    quantized = None if int8 is None else build_int8(onnx_path, out_dir, int8, engine=engine, attrs=attrs)
    timed = onnx_path if quantized is None else quantized.onnx
    common = dict(batch_size=batch_size, threads=threads, warmup=warmup, runs=runs,
                  throughput_batch=throughput_batch, end_to_end=end_to_end)
    if engine == "onnxruntime":
        latency = onnx_latency(timed, **common)
    elif engine == "torch":
        latency = torch_latency(plain, input_shape, device=device, precision=precision, cuda_graphs=cuda_graphs,
                                **common)
    else:
        engine_onnx = timed if precision == "fp32" else export_onnx(
            plain, files.fp16_onnx, input_shape, half=True)
        latency = tensorrt_latency(engine_onnx, precision=precision, sparse_weights=has_2to4_sparsity(plain),
                                   cache_dir=cache_dir, workspace_mb=workspace_mb, device=device, **common)
    result = {"size_bytes": size, **latency.metrics(), "units_removed": removed,
              "params_timed": sum(p.numel() for p in plain.parameters()), "artifact": str(artifact),
              "onnx": str(onnx_path), "precision": precision}
    if quantized is not None:
        result.update(quantized.metrics, size_bytes=quantized.size_bytes, float_size_bytes=size,
                      latency_precision="int8", precision="int8", int8_onnx=str(quantized.onnx),
                      int8_artifact=str(quantized.artifact))
    return result


def _check_int8(engine: str, precision: str) -> None:
    """Refuse, in one line, an INT8 model on an engine that cannot run one."""
    if engine == "torch":
        raise FrontierError("int8: the torch backend times the float torch model and cannot run an INT8 model; "
                            f"use backend onnxruntime (CPU) or tensorrt (GPU, {INSTALL_HINT})")
    if precision != "fp32":
        raise FrontierError(f"int8: an INT8 model is built from the float32 export; precision must be fp32, "
                            f"not {precision}")


def _check_input_shape(input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, int) and d > 0 for d in shape):
        raise FrontierError(f"input_shape must be (channels, height, width), positive ints, but got {input_shape!r}")
    return shape  # type: ignore[return-value]


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
