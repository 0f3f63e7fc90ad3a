"""One GPU check, ready for any GPU at hand: the GPU tests and the GPU benches in one command.

frontier is built and tested on machines without a GPU; the GPU machine it can be checked on has
torch but neither Ray nor TensorRT, for a few minutes at a time. This script runs, each part in its
own process with its own time limit, what can be checked there:

- ``stage_devices``: the cuda leg of ``tests/test_stage_devices.py`` (every stage keeps its model
  on the context's GPU; training in bf16 autocast and channels-last along the way);
- ``gpu_tests``: the tests marked ``gpu`` of the torch backend, the training loop, EPruning's
  weight shipping and distillation's teacher (bf16, channels-last) (``tests/test_backends.py``,
  ``tests/test_train.py``, ``tests/test_epruning.py``, ``tests/test_distill.py``; TensorRT's skip
  with their reason where it is not installed);
- ``train_speed``: ``bench/train_speed.py --device cuda`` (images/s, the loop before against today's);
- ``epruning_population``: ``bench/epruning_population.py --device cuda``.

It prints a table and one JSON line: the GPU, torch's version, the project's packages that are
missing, and per part its status, counts or figures, seconds and the tail of a failure. Logs go
to ``--out`` (default ``gpu_check_logs/``). On one H200 the whole check takes about 4 minutes (at
most 8).

On a GPU machine without the project's pure-Python dependencies, carry them as wheels (the
device tool's README): ``bash bench/gpu_wheels.sh`` here downloads them into ``.whl/``; there,
``python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl`` and
``PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py``.

``--smoke`` (on a CPU, in CI): without a GPU each part is skipped with its reason, after checking
what can be checked without one, as the GPU machine would run it, that is with Ray made
unimportable: each test selection is collected (importable, not empty) and each bench is started
(``--help``: its imports, and a ``--device`` option); ``tests/test_bench_smoke.py`` runs the benches.

    python bench/gpu_check.py [--out DIR] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_smoke_flag, finish  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# the modules the checked code imports (the project's dependencies but Ray, Optuna and TensorRT)
NEEDED = ("pydantic", "torch_pruning", "torchvision", "h5py", "onnx", "onnxscript", "onnx_ir", "onnxruntime",
          "scipy", "sklearn", "yaml", "PIL", "pandas", "pytest", "xdist", "pytest_timeout")
NO_RAY = "import ray failed on purpose: the GPU machine has no Ray (bench/gpu_check.py --smoke)"


@dataclass
class Part:
    """One part of the check: a pytest selection or a bench, with its time limit."""

    name: str
    args: list[str]
    limit_s: int
    pytest: bool = False
    record: dict = field(default_factory=dict)


def parts(cuda: bool, smoke: bool) -> list[Part]:
    """The parts, as run on a GPU (``cuda``) or checked on a CPU (``smoke``)."""
    collect = ["--collect-only"] if not cuda else []
    # without a GPU a bench is only started (its imports, its arguments): tests/test_bench_smoke.py runs each
    bench = ["--help"] if not cuda else ["--device", "cuda"]
    return [
        Part("stage_devices", ["tests/test_stage_devices.py", "-k", "cuda", *collect], 300, pytest=True),
        Part("gpu_tests", ["tests/test_backends.py", "tests/test_train.py", "tests/test_epruning.py",
                           "tests/test_distill.py", "-m", "gpu", *collect], 180, pytest=True),
        Part("train_speed", ["bench/train_speed.py", *bench], 240),
        Part("epruning_population", ["bench/epruning_population.py", *bench], 150),
    ]


def run_part(part: Part, env: dict[str, str], out: Path) -> dict:
    """Run ``part`` in its own process; returns its record (status, counts or figures, seconds)."""
    command = ([sys.executable, "-m", "pytest", "-n", "0", "-q", "-rs", "-p", "no:cacheprovider", *part.args]
               if part.pytest else [sys.executable, *part.args])
    log = out / f"{part.name}.log"
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=part.limit_s)
        text, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        text, code = f"{exc.stdout or ''}{exc.stderr or ''}\nran past {part.limit_s} s", None
    log.write_text(text if isinstance(text, str) else text.decode(errors="replace"))
    record = {"seconds": round(time.perf_counter() - start, 1), "log": str(log)}
    record.update(pytest_record(text, code, part) if part.pytest else bench_record(text, code))
    return record


def pytest_record(text: str, code: int | None, part: Part) -> dict:
    """Counts from pytest's closing line (or, collecting, the number of tests selected)."""
    if "--collect-only" in part.args:
        found = re.search(r"(\d+)(?:/\d+)? tests? collected|(\d+) tests? selected", text)
        n = int(next(g for g in found.groups() if g)) if found else 0
        ok = code == 0 and n > 0
        return {"status": "collected" if ok else "failed", "collected": n, **({} if ok else {"tail": text[-1500:]})}
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|errors?)", text.splitlines()[-1] if text else "")}
    ok = code == 0 and counts.get("passed", 0) > 0
    status = "passed" if ok else "failed" if code not in (0, 5) or counts.get("failed") else "skipped"
    return {"status": status, **counts, **({} if ok else {"tail": text[-1500:]})}


def bench_record(text: str, code: int | None) -> dict:
    """The bench's closing JSON line (``--help``: started, its options include ``--device``)."""
    if "--device" in text and "usage:" in text:
        return {"status": "passed" if code == 0 else "failed", "started": True}
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                figures = json.loads(line)
            except json.JSONDecodeError:
                break
            return {"status": "passed" if code == 0 else "failed", "goal_met": figures.get("goal_met"),
                    "figures": figures}
    return {"status": "failed", "tail": text[-1500:]}


def without_ray(folder: Path) -> Path:
    """A folder holding a ``ray`` package whose import fails, to put first on ``PYTHONPATH``."""
    package = folder / "ray"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(f"raise ImportError({NO_RAY!r})\n")
    return folder


def missing() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for the parts' logs (default gpu_check_logs/)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    out = Path(args.out or (tempfile.mkdtemp(prefix="gpu-check-") if args.smoke else ROOT / "gpu_check_logs"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    paths = [str(ROOT)]
    if not cuda:
        paths.insert(0, str(without_ray(out / "no_ray")))  # check as the GPU machine would run it
    env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
    figures: dict = {"cuda": cuda, "device": torch.cuda.get_device_name() if cuda else "cpu",
                     "torch": torch.__version__, "missing": missing(), "parts": {}}
    table: list[tuple[str, str]] = [("device", f"{figures['device']} (torch {torch.__version__})")]
    if figures["missing"]:
        table.append(("missing packages", ", ".join(figures["missing"]) + "  (carry them: bench/gpu_wheels.sh)"))
    start = time.perf_counter()
    for part in parts(cuda, args.smoke):
        record = run_part(part, env, out)
        if not cuda:
            record["gpu"] = "skipped: torch sees no CUDA GPU; checked on the CPU without Ray instead"
        figures["parts"][part.name] = record
        table.append((part.name, f"{record['status']} in {record['seconds']} s"
                      + (f", {', '.join(f'{k} {v}' for k, v in record.items() if k in ('passed', 'failed', 'skipped', 'collected'))}"
                         if part.pytest else "")))
    figures["seconds"] = round(time.perf_counter() - start, 1)
    good = {"passed", "collected"}
    met = all(r["status"] in good for r in figures["parts"].values()) and not figures["missing"]
    goal = ("every part passes on the GPU, in at most 8 minutes" if cuda
            else "no GPU: every part is importable and runs without Ray on the CPU (the GPU runs are skipped)")
    finish(table, figures, goal, met and (figures["seconds"] <= 480 or not cuda), smoke=args.smoke)
    if not met:
        sys.exit(1)


if __name__ == "__main__":
    main()
