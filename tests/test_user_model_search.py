"""A search on the user's own model, ``somepkg.somemod:build``, from a folder that is not installed:
the driver imports it from its working directory, the Ray workers (whose ``sys.path`` lacks that
folder) from the plan's ``model_path``, and ``frontier rerun`` in a fresh process started, as the
search was, in the user's folder.

The stages are the ones that need no unit graph: dense, transfer, gradual unstructured pruning,
weight sharing and the benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from search.run.driver import run_search
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec
from tests.user_models import write_user_package
from search.results.files import read_trials

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
MODEL = "somepkg.somemod:build"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    project = tmp_path_factory.mktemp("project")  # the user's folder: holds somepkg/, never installed
    write_user_package(project, "somepkg", "somemod")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024**2,
             log_to_driver=False)  # started here, so its workers' sys.path holds this repository, not project
    spec = tiny_spec("user", trials=2, space={"order": "PA", "s2": {"choice": [0.5, 0.7]}, "quantize": "Q"})
    spec["model"] = {"name": MODEL}
    spec["budgets"]["share"] = {"groups": {"layer1": 16, "layer2": 16}}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)  # `frontier run` from the user's folder: the driver finds somepkg here
        patch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(project))])
        try:
            yield run_search(parse_spec(spec), yaml.safe_dump(spec), runs_root=tmp_path_factory.mktemp("runs"))
        finally:
            ray.shutdown()


def test_every_trial_of_the_user_model_finishes(run_dir: Path) -> None:
    frame = read_trials(run_dir)
    assert len(frame) == 2 and (frame["status"] == "ok").all(), frame["error"].tolist()
    assert sorted(frame["pipeline"]) == ["D|T|50|Q|B", "D|T|70|Q|B"]
    assert (frame["accuracy"] > 0.3).all(), "better than chance (0.2) on digits 5-9"
    assert (frame["sparsity"] > 0.45).all() and (frame["size_bytes"] > 0).all()


def test_the_plan_carries_the_folder_the_module_came_from(run_dir: Path) -> None:
    plans = json.loads((run_dir / "plans.json").read_text())
    for plan in plans.values():
        dense = plan["steps"][0]["config"]
        assert dense["model"] == MODEL and Path(dense["model_path"]) == _project(run_dir).resolve()


def test_rerun_in_a_fresh_process_reproduces_a_trial(run_dir: Path, tmp_path: Path) -> None:
    trial = read_trials(run_dir)["trial_id"][0]
    out = tmp_path / "final"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "search.cli", "rerun", str(run_dir), "--trial", trial,
                           "--out", str(out)], capture_output=True, text=True, cwd=_project(run_dir), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert card["matches_trial"] == {"accuracy": True, "size_bytes": True}


def _project(run_dir: Path) -> Path:
    return run_dir.parent.parent / "project0"
