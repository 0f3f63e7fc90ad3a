"""Every benchmark still starts: each ``bench/*.py`` (but ``_``-prefixed helpers) runs with ``--smoke``.

A smoke run is the bench's tiniest configuration of the same code path (see ``bench/_common.py``).
This checks that it exits 0 and ends with the JSON line every bench prints (``goal``,
``goal_met``, ``smoke``); its figures mean nothing and are not checked. The scripts are found by
a glob, so a new bench is covered without touching this file.

The selected benches (all, less any ``-k``/``-m`` deselects) run one after another in a single child
process (``tests/bench_smokes.py``, started once per module by the ``smokes`` fixture), so Python,
torch and Ray are imported once rather than once per bench; it records each bench's exit status,
seconds and stdout/stderr in a folder, and one test per bench reads its own record. A bench fails
past ``TIMEOUT_S`` seconds; the child as a whole is killed past ``TIMEOUT_S`` times the number of
benches, and then the bench that hung and every one after it fail, saying so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHES = sorted(p for p in (ROOT / "bench").glob("*.py") if not p.name.startswith("_"))
TIMEOUT_S = 240  # budget per bench
TOTAL_TIMEOUT_S = TIMEOUT_S * len(BENCHES)
HELPER = Path(__file__).resolve().parent / "bench_smokes.py"

# pytest-timeout's limit (addopts) covers fixture setup, so the test that starts the helper gets its budget
# slow, all of it: the child process runs every bench's smoke (minutes); `-m "not slow"` skips the module
pytestmark = [pytest.mark.timeout(TOTAL_TIMEOUT_S + 60), pytest.mark.slow]


def tail(path: Path, chars: int) -> str:
    """The last ``chars`` characters of the text file ``path``; a note instead where it does not exist."""
    if not path.exists():
        return f"({path.name} was not written)"
    return path.read_text(errors="replace")[-chars:]


def run_helper(out_dir: Path, benches: list[Path]) -> None:
    """Run ``bench_smokes.py`` over ``benches`` into ``out_dir``, within ``TIMEOUT_S`` per bench.

    The helper's own stdout/stderr go to ``out_dir/_helper.out|.err``. Past the timeout, its whole
    process group (Ray's processes too) is killed and a line saying so is appended to ``_helper.err``;
    nothing is raised, since the benches it finished keep their records.
    """
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each bench starts its own Ray
    env.update(RAY_AUTH_MODE="disabled")
    timeout = TIMEOUT_S * len(benches)
    with open(out_dir / "_helper.out", "wb") as out, open(out_dir / "_helper.err", "wb") as err:
        # a session of its own, so a timeout can kill the Ray processes a bench started with it
        proc = subprocess.Popen([sys.executable, str(HELPER), str(out_dir), *map(str, benches)], cwd=ROOT, env=env,
                                stdout=out, stderr=err, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
            note = f"the helper exited {code}" if code else ""
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            note = f"the helper ran past {timeout} s ({TIMEOUT_S} s a bench) and was killed"
    if note:
        with open(out_dir / "_helper.err", "a") as err:
            err.write(f"\n[test_bench_smoke] {note}\n")


def selected_benches(session: pytest.Session) -> list[Path]:
    """The benches whose ``test_bench_smoke`` this session runs (after ``-k``/``-m`` deselection), in run order."""
    return [item.callspec.params["script"] for item in session.items
            if isinstance(item, pytest.Function) and item.originalname == "test_bench_smoke"
            and item.module.__name__ == __name__]


@pytest.fixture(scope="module")
def smokes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder where one helper run over the selected benches left ``results.json`` and each ``<stem>.out|.err``."""
    out_dir = tmp_path_factory.mktemp("bench_smokes")
    run_helper(out_dir, selected_benches(request.session))
    return out_dir


def record(out_dir: Path, script: Path) -> dict:
    """``script``'s record in ``out_dir/results.json``; fails the test where the helper never finished it."""
    results_file = out_dir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if script.stem not in results:
        when = "while running it" if (out_dir / f"{script.stem}.out").exists() else "before starting it"
        pytest.fail(f"{script.name} --smoke: the helper process ended {when} (a crash, or a hang past the "
                    f"budget)\nhelper stderr tail:\n{tail(out_dir / '_helper.err', 4000)}\n"
                    f"{script.stem} stdout tail:\n{tail(out_dir / f'{script.stem}.out', 2000)}\n"
                    f"{script.stem} stderr tail:\n{tail(out_dir / f'{script.stem}.err', 4000)}")
    return results[script.stem]


@pytest.mark.parametrize(
    "script",
    [pytest.param(p, id=p.stem) for p in BENCHES],
)
def test_bench_smoke(script: Path, smokes: Path) -> None:
    """``script --smoke`` exited 0 within ``TIMEOUT_S`` and its last stdout line is the closing JSON line."""
    done = record(smokes, script)
    stdout = (smokes / f"{script.stem}.out").read_text(errors="replace")
    stderr = (smokes / f"{script.stem}.err").read_text(errors="replace")
    tails = f"stdout tail:\n{stdout[-2000:]}\nstderr tail:\n{stderr[-4000:]}"
    assert done["seconds"] <= TIMEOUT_S, f"{script.name} --smoke ran past {TIMEOUT_S} s ({done['seconds']} s)\n{tails}"
    assert done["code"] == 0, f"{script.name} --smoke exited {done['code']}\n{tails}"
    lines = stdout.strip().splitlines()
    assert lines, f"{script.name} --smoke printed nothing\n{tails}"
    try:
        figures = json.loads(lines[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{script.name} --smoke: the last stdout line is not JSON: {lines[-1]!r}\n{tails}")
    assert isinstance(figures, dict) and {"goal", "goal_met"} <= figures.keys(), \
        f"{script.name} --smoke: the JSON line lacks goal / goal_met: {lines[-1]!r}"
    assert isinstance(figures["goal_met"], bool)
    assert figures.get("smoke") is True, f"{script.name} --smoke: the JSON line does not say \"smoke\": true"
