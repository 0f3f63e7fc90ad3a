"""Run ``frontier front`` on a search while it runs: a thread that waits for the first ``trials.csv``."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class FrontWatch:
    """As a context manager around a search into ``run_dir``: as soon as ``trials.csv`` appears (the
    first trial ended), run ``frontier front RUN_DIR --json`` in a fresh process and keep what it printed.

    After the block: ``front`` is the printed JSON (None if the file never appeared or the command
    failed, ``error`` then says why), ``rows_before`` the trials.csv lines (header excluded) seen just
    before the command ran.
    """

    def __init__(self, run_dir: Path, timeout_s: float = 600.0) -> None:
        self.run_dir, self.timeout_s = Path(run_dir), timeout_s
        self.front: dict[str, Any] | None = None
        self.rows_before: int | None = None
        self.error = "trials.csv never appeared"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FrontWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def _watch(self) -> None:
        csv = self.run_dir / "trials.csv"
        deadline = time.monotonic() + self.timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if csv.is_file():
                self.rows_before = len(csv.read_text().splitlines()) - 1
                done = subprocess.run([sys.executable, "-m", "search.cli", "front", str(self.run_dir), "--json"],
                                      capture_output=True, text=True, timeout=120)
                if done.returncode == 0:
                    self.front = json.loads(done.stdout)
                else:
                    self.error = done.stderr.strip()
                return
            time.sleep(0.1)
