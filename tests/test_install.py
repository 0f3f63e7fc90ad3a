"""A plain install works: the wheel ``pip install .`` builds holds every package of the checkout.

The editable install the tests run from finds any module in the checkout, so a package left out of
the wheel (``trainables/backends`` once was) goes unseen there. This test builds the wheel from a copy
of the checkout, installs it into an empty folder and imports every package from that folder alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOT_SOURCE = (".git", ".venv", "runs", "build", "__pycache__", ".pytest_cache", "*.egg-info")


def checkout_packages() -> list[str]:
    """Every package of the checkout (a folder with ``__init__.py`` under a top-level package), dotted."""
    packages = []
    for top in sorted(p for p in ROOT.iterdir() if (p / "__init__.py").is_file()):
        for folder, subfolders, files in os.walk(top):
            subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
            if "__init__.py" in files:
                packages.append(".".join(Path(folder).relative_to(ROOT).parts))
    return packages


def test_the_checkout_has_subpackages() -> None:
    """The walk below sees nested packages, not only the top-level ones."""
    assert {"search", "trainables", "trainables.measure.backends"} <= set(checkout_packages())


def test_the_built_wheel_imports_every_package_from_where_it_is_installed(tmp_path: Path) -> None:
    # build from a copy: an in-tree build would leave build/ and egg-info in the checkout
    source, wheels, target, elsewhere = (tmp_path / name for name in ("source", "wheels", "site", "elsewhere"))
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    # no network: the venv's setuptools builds (the 'test' extra asks for it), and no dependencies are fetched
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(source)],
                   check=True, capture_output=True, timeout=120)
    (wheel,) = wheels.glob("frontier-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=120)

    packages = checkout_packages()
    probe = ("import importlib, json, sys\n"
             f"print(json.dumps({{name: importlib.import_module(name).__file__ for name in {packages!r}}}))")
    # the installed folder first on the path; torch and the other dependencies come from the venv
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    files = json.loads(done.stdout.splitlines()[-1])
    outside = {name: file for name, file in files.items() if not Path(file).resolve().is_relative_to(target.resolve())}
    assert not outside, f"imported from outside the installed wheel: {outside}"
