"""Which backend times a model: the spec's ``budgets.benchmark.backend``, or ``auto``.

``auto`` takes the fastest engine the trial can use: TensorRT when the trial has a CUDA GPU and
the ``tensorrt`` package imports, else torch on that GPU, else ONNX Runtime on the CPU. An explicit
``tensorrt`` without a GPU or without the package is a :class:`~trainables.errors.FrontierError`
naming what is missing; ``torch`` runs on the GPU when there is one, else on the CPU; ``onnxruntime``
always runs on the CPU. FP16 is timed on a GPU only.
"""

from __future__ import annotations

import functools
from typing import Literal

from ...errors import FrontierError

Requested = Literal["auto", "tensorrt", "torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "torch", "onnxruntime")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
INSTALL_HINT = "pip install 'frontier[tensorrt]'"


def choose_backend(requested: str, cuda_available: bool, tensorrt_available: bool) -> tuple[str, str]:
    """The engine and device that time a model: ``("tensorrt" | "torch" | "onnxruntime", "cuda" | "cpu")``.

    A pure function of its arguments (the module doc states the rule).

    Example:
        >>> choose_backend("auto", cuda_available=True, tensorrt_available=False)
        ('torch', 'cuda')

    Args:
        requested: ``auto``, ``tensorrt``, ``torch`` or ``onnxruntime``.
        cuda_available: the trial has a CUDA GPU.
        tensorrt_available: the ``tensorrt`` package imports.

    Raises:
        FrontierError: an unknown ``requested``, or ``tensorrt`` without a GPU or the package.
    """
    if requested not in BACKENDS:
        raise FrontierError(f"backend must be one of {', '.join(BACKENDS)} but got {requested!r}")
    if requested == "tensorrt":
        problem = tensorrt_problem(cuda_available, tensorrt_available)
        if problem:
            raise FrontierError(f"backend: 'tensorrt' was asked for, but {problem}")
        return "tensorrt", "cuda"
    if requested == "auto":
        if cuda_available:
            return ("tensorrt" if tensorrt_available else "torch"), "cuda"
        return "onnxruntime", "cpu"
    if requested == "torch":
        return "torch", "cuda" if cuda_available else "cpu"
    return "onnxruntime", "cpu"


def tensorrt_problem(cuda_available: bool, tensorrt_available: bool) -> str | None:
    """Why TensorRT cannot run here, as one phrase starting ``tensorrt``; None if it can."""
    if not tensorrt_available:
        gpu = "" if cuda_available else " and no CUDA GPU is visible"
        return f"tensorrt is not installed ({INSTALL_HINT}){gpu}"
    if not cuda_available:
        return "tensorrt needs a CUDA GPU but none is visible"
    return None


def check_precision(precision: str, device: str) -> None:
    """Raise :class:`FrontierError` unless ``precision`` is known and, for ``fp16``, ``device`` is a GPU."""
    if precision not in PRECISIONS:
        raise FrontierError(f"precision must be one of {', '.join(PRECISIONS)} but got {precision!r}")
    if precision == "fp16" and not device.startswith("cuda"):
        raise FrontierError(f"precision: fp16 is timed on a CUDA GPU only, but this model is timed on {device!r}")


@functools.cache
def tensorrt_available() -> bool:
    """The ``tensorrt`` package imports (its libraries load). Checked once per process."""
    try:
        import tensorrt  # noqa: F401
    except Exception:  # ImportError, or an OSError from a library that does not load
        return False
    return True


def cuda_available(device: str = "cuda") -> bool:
    """``device`` names a CUDA device and torch sees one."""
    import torch

    return device.startswith("cuda") and torch.cuda.is_available()


def resolve_backend(requested: str, precision: str, device: str) -> tuple[str, str]:
    """:func:`choose_backend` for a trial on ``device`` (``cpu``, ``cuda``, ``cuda:1``), with this
    process's TensorRT, and the precision checked against the device chosen; a ``cuda`` device
    comes back as given (``cuda:1`` stays ``cuda:1``)."""
    has_cuda = cuda_available(device)
    # importing tensorrt takes a while: only where it can be used or was asked for
    has_tensorrt = tensorrt_available() if has_cuda or requested == "tensorrt" else False
    engine, kind = choose_backend(requested, has_cuda, has_tensorrt)
    chosen = "cpu" if kind == "cpu" else device
    check_precision(precision, chosen)
    return engine, chosen
