"""Run several ``bench/*.py --smoke`` in this one process, so Python, torch and Ray are imported once.

Usage: ``python tests/bench_smokes.py OUT_DIR bench/a.py bench/b.py ...`` (``tests/test_bench_smoke.py``
runs it). Each script, in the order given, runs as ``__main__`` (:func:`runpy.run_path`) with
``sys.argv = [script, "--smoke"]``, its own folder first on ``sys.path`` (as ``python script`` would
have it; the benches do ``from _common import ...``) and ``FRONTIER_BENCH_TMP`` naming a fresh folder
``OUT_DIR/<stem>.tmp``. Its stdout and stderr are redirected at the file-descriptor level into
``OUT_DIR/<stem>.out`` and ``OUT_DIR/<stem>.err``, so what C code and child processes write lands
there too.

``OUT_DIR/results.json`` maps each finished script's stem to ``{"code": int, "seconds": float}`` and is
rewritten after every script, so a crash of this process leaves the earlier records. ``code`` is 0 on a
normal return, the ``SystemExit`` code (``None`` is 0; a non-int is written to the ``.err`` file and
counts as 1), or 1 on any other exception, whose traceback goes into the ``.err`` file. Between scripts,
a Ray left initialised is shut down and ``torch``'s thread count, ``sys.argv`` and ``sys.path`` are
restored; other process state (``os.environ`` aside from ``FRONTIER_BENCH_TMP``, imported modules,
logging) carries over. This process exits 0 once every script has run, whatever their codes.
"""

from __future__ import annotations

import ctypes
import json
import os
import runpy
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
import torch

RESULTS = "results.json"


def _flush_all() -> None:
    """Flush Python's ``sys.stdout``/``sys.stderr`` and the C library's stdio buffers."""
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    try:
        ctypes.CDLL(None).fflush(None)  # what C code printf'd but has not written yet
    except (OSError, AttributeError):
        pass  # no C library to reach (not on Linux/macOS): Python's own buffers are flushed


@contextmanager
def fd_redirect(out_path: Path, err_path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``out_path`` and ``err_path`` (truncated) for the block.

    Python's streams and the C buffers are flushed on entry and exit, so output written before the
    block stays on the original descriptors and output written inside it lands in the files; the
    original descriptors are restored on exit, even on an exception.
    """
    _flush_all()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    try:
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            try:
                yield
            finally:
                _flush_all()
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)


def exit_code(exc: SystemExit) -> int:
    """The status a ``SystemExit`` would end Python with; a non-int code is written to stderr, as Python does."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def run_script(script: Path) -> int:
    """Run ``script --smoke`` as ``__main__`` in this process; its exit status (tracebacks go to stderr).

    ``sys.argv`` and ``sys.path`` are set for the run and restored after it.
    """
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(script), "--smoke"]
    sys.path = [str(script.parent), *[p for p in sys.path[1:] if p != str(script.parent)]]
    try:
        runpy.run_path(str(script), run_name="__main__")
        return 0
    except SystemExit as exc:
        return exit_code(exc)
    except Exception:  # noqa: BLE001 - any failure of the bench is its exit status 1, as for `python script`
        traceback.print_exc()
        return 1
    finally:
        sys.argv, sys.path = saved_argv, saved_path


def reset_state(threads: int) -> None:
    """Undo what one bench may leave for the next: an initialised Ray, a changed torch thread count."""
    if ray.is_initialized():
        ray.shutdown()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def run_bench(script: Path, out_dir: Path) -> dict[str, Any]:
    """Run one bench with its output in ``out_dir/<stem>.out|.err`` and a fresh ``FRONTIER_BENCH_TMP``.

    Returns its record: ``{"code": exit status, "seconds": wall time}``.
    """
    tmp = out_dir / f"{script.stem}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.environ["FRONTIER_BENCH_TMP"] = str(tmp)
    start = time.perf_counter()
    try:
        with fd_redirect(out_dir / f"{script.stem}.out", out_dir / f"{script.stem}.err"):
            code = run_script(script)
    finally:
        os.environ.pop("FRONTIER_BENCH_TMP", None)
    return {"code": code, "seconds": round(time.perf_counter() - start, 3)}


def write_results(out_dir: Path, results: dict[str, dict[str, Any]]) -> None:
    """Write ``results`` to ``out_dir/results.json`` atomically (a reader never sees half a file)."""
    part = out_dir / f"{RESULTS}.part"
    part.write_text(json.dumps(results, indent=1))
    part.replace(out_dir / RESULTS)


def main(argv: list[str]) -> int:
    """Run every script ``argv[1:]`` names, recording each in ``argv[0]/results.json``; 0 once all ran."""
    if len(argv) < 2:
        print(f"usage: {Path(__file__).name} OUT_DIR SCRIPT.py [SCRIPT.py ...]", file=sys.stderr)
        return 2
    out_dir = Path(argv[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    results: dict[str, dict[str, Any]] = {}
    for name in argv[1:]:
        script = Path(name).resolve()
        print(f"{script.stem}: running", file=sys.stderr, flush=True)
        results[script.stem] = run_bench(script, out_dir)
        write_results(out_dir, results)
        print(f"{script.stem}: {results[script.stem]}", file=sys.stderr, flush=True)
        reset_state(threads)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
