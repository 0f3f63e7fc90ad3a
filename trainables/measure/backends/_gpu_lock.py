"""One timing at a time per physical GPU: a node-local file lock named by the GPU's identity.

Two trials that share a GPU (``resources.gpu < 1``), or a rerun beside a search, would otherwise
build TensorRT engines and time them at the same moment: each one's kernel timings, and so the
tactics it picks and the choices it saves into the timing cache every trial shares, would include
the other's work. :func:`gpu_lock` holds an exclusive ``fcntl.flock`` on
``<tempdir>/frontier-gpu-<identity>.lock`` while a backend builds and times; a second process
asking for the same GPU waits until the first lets go. The identity is the GPU's UUID (the same
whatever ``CUDA_VISIBLE_DEVICES`` numbers it in each Ray worker), else its PCI address.

The lock lives on the node (``tempfile.gettempdir()``: the processes of one node must share
``TMPDIR``, as Ray's workers inherit the raylet's), never in the run folder, whose NFS/EFS
``flock`` is not to be trusted; it is released when the holder exits, even when it is killed.
POSIX only (``fcntl``), like the Ray clusters frontier runs on.

Example:
    >>> with exclusive(lock_path("GPU-0f3c")):  # doctest: +SKIP
    ...     time_the_engine()
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ...errors import FrontierError


def gpu_identity(uuid: str | None, pci: tuple[int, int, int] | None, name: str) -> str:
    """A name for one physical GPU, safe in a file name: its UUID, else its PCI address
    (``pci-0000:3b:00``), else (neither known) ``name`` itself.

    Args:
        uuid: the device's UUID as torch gives it (``GPU-...`` or bare hex); None or empty: unknown.
        pci: ``(domain, bus, device)`` of its PCI address; None: unknown.
        name: the device's name, the last resort (two GPUs of one model then share a lock: safe,
            only slower).
    """
    if uuid and uuid.strip("-0"):
        text = str(uuid).strip()
        text = text if text.upper().startswith(("GPU-", "MIG-")) else f"GPU-{text}"
    elif pci is not None:
        text = "pci-{:04x}:{:02x}:{:02x}".format(*pci)
    else:
        text = f"name-{name}"
    return re.sub(r"[^A-Za-z0-9.:-]+", "-", text).strip("-")


def cuda_identity(device: str) -> str:
    """:func:`gpu_identity` of CUDA ``device`` (``cuda``, ``cuda:1``) as torch sees it."""
    import torch

    props = torch.cuda.get_device_properties(torch.device(device))
    uuid = getattr(props, "uuid", None)
    pci_fields = [getattr(props, f"pci_{part}_id", None) for part in ("domain", "bus", "device")]
    pci = tuple(pci_fields) if all(isinstance(v, int) for v in pci_fields) else None
    return gpu_identity(None if uuid is None else str(uuid), pci, props.name)  # type: ignore[arg-type]


def lock_path(identity: str, directory: str | Path | None = None) -> Path:
    """The lock file of the GPU named ``identity``: ``<directory>/frontier-gpu-<identity>.lock``,
    ``directory`` defaulting to ``tempfile.gettempdir()`` (node-local).

    Raises:
        FrontierError: an ``identity`` that is empty or holds a character unsafe in a file name.
    """
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", identity or ""):
        raise FrontierError(f"identity must be a GPU identity from gpu_identity() but got {identity!r}")
    return Path(directory if directory is not None else tempfile.gettempdir()) / f"frontier-gpu-{identity}.lock"


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; wait while
    another process holds it. The file is left in place (removing it would let a waiter lock a
    file that no longer has a name while a newcomer locks a new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextlib.contextmanager
def gpu_lock(device: str, directory: str | Path | None = None) -> Iterator[None]:
    """Hold the node-local lock of the physical GPU behind CUDA ``device`` for the block (see the
    module doc): builds and timings on one GPU run one at a time, across processes."""
    with exclusive(lock_path(cuda_identity(device), directory)):
        yield
