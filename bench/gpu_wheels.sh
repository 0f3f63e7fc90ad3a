#!/usr/bin/env bash
# Download, into .whl/, the wheels bench/gpu_check.py needs on a GPU machine that has torch but not
# the project's other pure-Python dependencies (the device tool's README: Python 3.12, x86-64,
# manylinux). Versions are this checkout's .venv's, so the GPU runs what CI tests.
#   bash bench/gpu_wheels.sh            # here, with the registry reachable
#   (there) python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
#   (there) PYTHONPATH=/tmp/site:. python3 bench/gpu_check.py
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
for name in pydantic pydantic-core annotated-types typing-inspection torch-pruning; do
  version=$("$PY" -m pip show "$name" | sed -n 's/^Version: //p')
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$name==$version"
done
ls .whl
