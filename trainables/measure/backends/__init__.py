"""Latency backends: the engines a model's latency is measured on, and how one is chosen.

:func:`trainables.measure.metrics.measure` times the final model of a trial on one of them (ARCHITECTURE.md:
measured, never estimated):

- ``tensorrt`` (:func:`tensorrt_latency`): an engine built from the ONNX file, FP32 or FP16, on a
  CUDA GPU; GPU-only time with CUDA events and end-to-end time. Needs the extra of torch's CUDA
  (``tensorrt-cu12`` or ``tensorrt-cu13``, :func:`install_hint`), imported only when used.
- ``torch`` (:func:`torch_latency`): the model itself on a GPU (eager, or a CUDA-graph replay) or
  on the CPU: the baseline the transfer paper compares TensorRT against.
- ``onnxruntime`` (:func:`onnx_latency`): the ONNX file in a CPU session with stated threads.

:func:`choose_backend` picks one (``auto``: TensorRT if the trial has a GPU and TensorRT is
installed, else torch on the GPU, else ONNX Runtime on the CPU; a TensorRT installed but unusable is
an error, never a quiet fallback). Each returns a :class:`Latency`: median and
90th percentile at the latency batch after warm-up, throughput at a stated batch, and what was
measured (backend, precision, batch, threads, device, clock), flattened by :meth:`Latency.metrics`
into the ``latency_*`` and ``throughput_*`` keys of the benchmark stage.
"""

from ._choice import (
    BACKENDS,
    INSTALL_HINT,
    PRECISIONS,
    check_precision,
    check_tensorrt,
    choose_backend,
    cuda_available,
    cuda_mismatch,
    install_hint,
    resolve_backend,
    tensorrt_available,
    tensorrt_cuda_majors,
    tensorrt_problem,
)
from ._gpu_lock import gpu_lock
from ._images import EncodedImages
from ._onnxruntime import ORT_BACKEND, cpu_session, onnx_latency
from ._tensorrt import (
    BuiltEngine,
    EngineRunner,
    batch_profiles,
    build_engine,
    has_2to4_sparsity,
    recorded_precision,
    tensorrt_latency,
)
from ._timing import CUDA_EVENTS, WALL, Latency
from ._torch import torch_latency

__all__ = [
    "BACKENDS", "CUDA_EVENTS", "INSTALL_HINT", "ORT_BACKEND", "PRECISIONS", "WALL", "BuiltEngine", "EncodedImages",
    "EngineRunner", "Latency", "batch_profiles", "build_engine", "check_precision", "check_tensorrt", "choose_backend",
    "cpu_session", "cuda_available", "cuda_mismatch", "gpu_lock", "has_2to4_sparsity", "install_hint", "onnx_latency",
    "recorded_precision", "resolve_backend", "tensorrt_available", "tensorrt_cuda_majors", "tensorrt_latency",
    "tensorrt_problem", "torch_latency",
]
