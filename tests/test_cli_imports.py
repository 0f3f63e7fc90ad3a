"""The CLI loads only what a command uses: ``--help`` and ``front`` import neither torch nor Ray
(seconds of start-up each), ``check`` no Ray; ``trainables`` imports its names on first use.

Each case runs in a fresh interpreter, since this test process has long imported everything."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from search.results.files import write_results

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "ray", "optuna", "onnxruntime", "plotly")


def loaded_after(code: str, cwd: Path = ROOT) -> tuple[set[str], subprocess.CompletedProcess]:
    """Run ``code`` in a fresh interpreter; the heavy packages it imported, and the process."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # the checkout, from any working folder
    done = subprocess.run([sys.executable, "-c", probe], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1])), done


def cli(argv: list[str]) -> str:
    """Code that runs ``frontier ARGV`` as the console script does, keeping the exit code."""
    return (f"from search.cli import main\ntry:\n    code = main({argv!r})\n"
            "except SystemExit as exc:\n    code = exc.code\nprint('exit', code)")


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["check", "--help"], ["front", "--help"]],
                         ids=" ".join)
def test_help_imports_neither_torch_nor_ray(argv: list[str]) -> None:
    loaded, done = loaded_after(cli(argv))
    assert "usage: frontier" in done.stdout and "exit 0" in done.stdout, done.stdout
    assert loaded == set(), f"frontier {' '.join(argv)} imported {sorted(loaded)}"


def test_front_imports_neither_torch_nor_ray(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "done"
    rows = [{"trial_id": f"a1b2c3d{i}", "status": "ok", "pipeline": "D|50|70|T|80|90|Q|R|B", "order": "PBA",
             "accuracy": 0.9 - 0.1 * i, "top5": 1.0, "size_bytes": 1e6 / (i + 1), "latency_ms": 2.0 + i,
             "sparsity": 0.5} for i in range(3)]
    write_results(run_dir, rows, ["accuracy", "size_bytes"], ["max", "min"], {})
    loaded, done = loaded_after(cli(["front", str(run_dir)]), cwd=tmp_path)
    assert "exit 0" in done.stdout, done.stdout + done.stderr
    assert all(f" {row['trial_id']} " in done.stdout for row in rows), done.stdout  # piped: ids whole
    assert loaded == set(), f"frontier front imported {sorted(loaded)}"


def test_check_imports_no_ray() -> None:
    """``check`` validates model names and layer groups with trainables (torch), but needs no Ray."""
    loaded, done = loaded_after(cli(["check", str(ROOT / "spaces" / "quickstart.yaml")]))
    assert "quickstart.yaml: ok" in done.stdout and "exit 0" in done.stdout, done.stdout + done.stderr
    assert not loaded & {"ray", "optuna", "onnxruntime", "plotly"}, f"frontier check imported {sorted(loaded)}"


def test_trainables_errors_imports_no_torch() -> None:
    loaded, _ = loaded_after("import trainables.errors, trainables.files\nfrom trainables import FrontierError")
    assert loaded == set(), f"trainables.errors imported {sorted(loaded)}"


def test_trainables_names_import_on_first_use() -> None:
    code = ("import trainables\n"
            "assert set(trainables.__all__) <= set(dir(trainables)), 'dir lists the public names'\n"
            "assert 'torch' not in sys.modules\n"
            "from trainables import Dense\n"
            "assert Dense.__module__ == 'trainables.stages.dense'\n"
            "namespace = {}\n"
            "exec('from trainables import *', namespace)\n"
            "missing = set(trainables.__all__) - set(namespace)\n"
            "assert not missing, missing\n"
            "from trainables.compress import clustering  # a submodule, not a public name\n"
            "try:\n"
            "    trainables.no_such_name\n"
            "except AttributeError as exc:\n"
            "    assert 'no_such_name' in str(exc)\n"
            "else:\n"
            "    raise AssertionError('an unknown name is an AttributeError')\n")
    loaded, _ = loaded_after(code)
    assert "torch" in loaded  # Dense needed it: imported on use, not before
