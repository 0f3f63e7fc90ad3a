"""Atomic file writes: a reader sees the old file or the whole new one, never half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (h5py, an ONNX exporter);
    moved onto ``path`` when the block ends, removed if it raises.

    The move is ``os.replace``, atomic within one file system; the folder is created if missing.
    ``suffix`` ends the temporary name, for writers that read the format from it.

    Example:
        >>> with atomic_path("/tmp/frontier-doc/a.txt") as tmp:
        ...     _ = tmp.write_text("whole")
        >>> Path("/tmp/frontier-doc/a.txt").read_text()
        'whole'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` (text or bytes) to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            with open(tmp, "w") as f:  # the platform's newline, as the text mode write did before
                f.write(data)
