"""Every benchmark still starts: each ``bench/*.py`` (but ``_``-prefixed helpers) runs with ``--smoke``.

A smoke run is the bench's tiniest configuration of the same code path (see ``bench/_common.py``).
This checks that it exits 0 and ends with the JSON line every bench prints (``goal``,
``goal_met``, ``smoke``); its figures mean nothing and are not checked. The scripts are found by
a glob, so a new bench is covered without touching this file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
# Benches whose smoke run is a real Ray search (seconds of Ray start-up and training per trial).
SEARCHES = {"cache_speedup.py", "search_overhead.py", "early_stop.py"}
TIMEOUT_S = 240


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if p.name in SEARCHES else []) for p in BENCHES],
)
def test_bench_smoke(script: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each bench starts its own Ray
    env.update(RAY_AUTH_MODE="disabled", FRONTIER_BENCH_TMP=str(tmp_path))
    try:
        done = subprocess.run([sys.executable, str(script), "--smoke"], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        pytest.fail(f"{script.name} --smoke ran past {TIMEOUT_S} s; stdout tail:\n{out[-2000:]}")
    tail = f"stdout tail:\n{done.stdout[-2000:]}\nstderr tail:\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{script.name} --smoke exited {done.returncode}\n{tail}"
    lines = done.stdout.strip().splitlines()
    assert lines, f"{script.name} --smoke printed nothing\n{tail}"
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{script.name} --smoke: the last stdout line is not JSON: {lines[-1]!r}\n{tail}")
    assert isinstance(figures, dict) and {"goal", "goal_met"} <= figures.keys(), \
        f"{script.name} --smoke: the JSON line lacks goal / goal_met: {lines[-1]!r}"
    assert isinstance(figures["goal_met"], bool)
    assert figures.get("smoke") is True, f"{script.name} --smoke: the JSON line does not say \"smoke\": true"
