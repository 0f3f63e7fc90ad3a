"""Which backend times a model: the spec's ``budgets.benchmark.backend``, or ``auto``.

``auto`` takes the fastest engine the trial can use: TensorRT when the trial has a CUDA GPU and
the ``tensorrt`` package is installed, else torch on that GPU, else ONNX Runtime on the CPU. An
explicit ``tensorrt`` without a GPU or without the package is a :class:`~trainables.errors.FrontierError`
naming what is missing; ``torch`` runs on the GPU when there is one, else on the CPU; ``onnxruntime``
always runs on the CPU. FP16 is timed on a GPU only.

*Not installed* and *installed but unusable* are two cases: without the package (no ``tensorrt``
module to find) ``auto`` quietly takes torch, but a TensorRT that is there and does not import,
or was built for another CUDA major version than torch (``tensorrt-cu13`` beside a CUDA 12
torch), is a :class:`~trainables.errors.FrontierError` for ``auto`` too: falling back would
time some trials of a front on torch and others on TensorRT.

TensorRT comes from the extra of torch's CUDA major, ``frontier[tensorrt-cu12]`` or
``frontier[tensorrt-cu13]`` (:func:`install_hint`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
from collections.abc import Iterable
from typing import Literal

from ...errors import FrontierError

Requested = Literal["auto", "tensorrt", "torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("auto", "tensorrt", "torch", "onnxruntime")
PRECISIONS: tuple[str, ...] = ("fp32", "fp16")
EXTRA_CUDA_MAJORS: tuple[int, ...] = (12, 13)  # pyproject.toml's extras tensorrt-cu12, tensorrt-cu13
# TensorRT's wheels name their CUDA major: tensorrt-cu12, tensorrt_cu12_libs, tensorrt-lean-cu13-bindings, ...
_TENSORRT_DIST = re.compile(r"^tensorrt(?:-(?:lean|dispatch))?-cu(\d+)(?:-(?:libs|bindings))?$")


def cuda_major(version: str | None) -> int | None:
    """The major number of a CUDA version string (``torch.version.cuda``): ``"12.8"`` -> 12; None
    for None (a CPU build of torch).

    Raises:
        FrontierError: a string that does not start with a number.
    """
    if version is None:
        return None
    match = re.match(r"\s*(\d+)", str(version))
    if match is None:
        raise FrontierError(f"cuda version must look like '12.8' but got {version!r}")
    return int(match.group(1))


def install_hint(torch_cuda: str | None) -> str:
    """How to install the TensorRT that matches a torch built for CUDA ``torch_cuda``, as one phrase.

    Example:
        >>> install_hint("12.8")
        "pip install 'frontier[tensorrt-cu12]'"

    Args:
        torch_cuda: ``torch.version.cuda`` (``"13.0"``), None for a CPU build of torch.
    """
    major = cuda_major(torch_cuda)
    if major in EXTRA_CUDA_MAJORS:
        return f"pip install 'frontier[tensorrt-cu{major}]'"
    extras = " or ".join(f"'frontier[tensorrt-cu{m}]'" for m in EXTRA_CUDA_MAJORS)
    if major is None:
        return f"this torch is a CPU build: install a CUDA build of torch, then pip install {extras} to match its CUDA"
    covered = " and ".join(map(str, EXTRA_CUDA_MAJORS))
    return f"pip install 'tensorrt-cu{major}>=10' (frontier's extras, {extras}, cover CUDA {covered})"


def _torch_cuda() -> str | None:
    import torch

    return torch.version.cuda


INSTALL_HINT = install_hint(_torch_cuda())


def choose_backend(requested: str, cuda_available: bool, tensorrt_available: bool) -> tuple[str, str]:
    """The engine and device that time a model: ``("tensorrt" | "torch" | "onnxruntime", "cuda" | "cpu")``.

    A pure function of its arguments (the module doc states the rule).

    Example:
        >>> choose_backend("auto", cuda_available=True, tensorrt_available=False)
        ('torch', 'cuda')

    Args:
        requested: ``auto``, ``tensorrt``, ``torch`` or ``onnxruntime``.
        cuda_available: the trial has a CUDA GPU.
        tensorrt_available: the ``tensorrt`` package is installed and usable (:func:`tensorrt_available`).

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


def tensorrt_cuda_majors(distributions: Iterable[str]) -> set[int]:
    """The CUDA majors named by the TensorRT wheels among ``distributions`` (distribution names as
    installed, any case, ``-``/``_``/``.`` alike): ``{"tensorrt_cu12_libs", "numpy"}`` -> ``{12}``."""
    majors = set()
    for name in distributions:
        match = _TENSORRT_DIST.match(re.sub(r"[-_.]+", "-", name).lower())
        if match:
            majors.add(int(match.group(1)))
    return majors


def cuda_mismatch(tensorrt_majors: set[int], torch_cuda: str | None) -> str | None:
    """Why TensorRT built for CUDA ``tensorrt_majors`` cannot run beside a torch built for CUDA
    ``torch_cuda``, as one phrase; None when they match or either is unknown (no CUDA build of torch,
    no TensorRT wheel named by its CUDA)."""
    major = cuda_major(torch_cuda)
    if major is None or not tensorrt_majors or major in tensorrt_majors:
        return None
    majors = sorted(tensorrt_majors)
    wheels = ", ".join(f"tensorrt-cu{m}" for m in majors)
    return (f"tensorrt is installed for CUDA {'/'.join(map(str, majors))} ({wheels}) but torch is built for CUDA "
            f"{torch_cuda}; uninstall it and {install_hint(torch_cuda)}")


def check_tensorrt(torch_cuda: str | None) -> bool:
    """Whether TensorRT can be used beside a torch built for CUDA ``torch_cuda``.

    Returns False when the ``tensorrt`` package is not installed (no module to find), True when
    it is installed for torch's CUDA major (as far as its wheels' names tell) and imports.

    Raises:
        FrontierError: TensorRT is installed but for another CUDA major than torch's, or does not
            import (a missing or mismatched library); one line naming the cause.
    """
    if importlib.util.find_spec("tensorrt") is None:
        return False
    names = (dist.metadata["Name"] or "" for dist in importlib.metadata.distributions())
    mismatch = cuda_mismatch(tensorrt_cuda_majors(names), torch_cuda)
    if mismatch:
        raise FrontierError(f"backend: {mismatch}")
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # ImportError, or an OSError from a library that does not load
        message = " ".join(str(exc).split())
        raise FrontierError(f"backend: tensorrt is installed but does not import ({type(exc).__name__}: {message}); "
                            f"fix the install ({install_hint(torch_cuda)}) or uninstall it") from None
    return True


@functools.cache
def tensorrt_available() -> bool:
    """:func:`check_tensorrt` for this process's torch, once per process (a FrontierError is not
    cached: it is raised again on the next call). False: not installed."""
    return check_tensorrt(_torch_cuda())


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
