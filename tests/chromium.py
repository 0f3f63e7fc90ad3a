"""Headless Chromium for the report's browser test: find (or name why not) and drive it from the shell.

``.ci/run`` installs Debian's ``chromium`` where it is missing; :func:`chromium` returns its path or
None, and :func:`chromium_missing` the reason a test skips. The flags keep it off the network (a
closed network refuses its background connections) and out of any profile but a fresh one.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars")


def chromium() -> str | None:
    """The first Chromium-like browser on PATH, or None."""
    return next((p for p in map(shutil.which, CANDIDATES) if p), None)


def chromium_missing() -> str:
    """Why the browser test cannot run here."""
    return ("no headless Chromium here (`apt-get install -y chromium`; .ci/run installs it where apt-get "
            "can): the report's browser test needs one")


def _run(page: Path, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    browser = chromium()
    if browser is None:
        raise RuntimeError(chromium_missing())
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *extra, page.resolve().as_uri()],
                              capture_output=True, text=True, timeout=timeout_s)


def rendered_dom(page: Path, budget_ms: int = 20000) -> str:
    """The page's DOM after its scripts ran (JavaScript on) for ``budget_ms`` of virtual time."""
    done = _run(page, f"--virtual-time-budget={budget_ms}", "--dump-dom")
    if done.returncode != 0 or "<html" not in done.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


def screenshot(page: Path, out: Path, size: tuple[int, int] = (1400, 1800), budget_ms: int = 20000) -> Path:
    """A PNG of the page's top ``size`` pixels once its scripts ran."""
    done = _run(page, f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}",
                f"--screenshot={out}")
    if not out.is_file():
        raise RuntimeError(f"chromium --screenshot wrote nothing ({done.returncode}): {done.stderr[-2000:]}")
    return out
