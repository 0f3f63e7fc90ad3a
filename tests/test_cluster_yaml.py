"""cluster.yaml is a valid Ray cluster-launcher file, keeps the dashboard on 127.0.0.1, and its setup
commands really install frontier on a node."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_validates_against_the_schema_ray_ships() -> None:
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(CONFIG, schema)


def test_has_a_head_and_gpu_workers_that_install_frontier() -> None:
    types = CONFIG["available_node_types"]
    assert CONFIG["head_node_type"] in types
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and gpu[0]["max_workers"] >= 1
    assert any(re.search(r"pip\"? install .*frontier", c) for c in CONFIG["setup_commands"])
    assert any("/mnt/frontier" in c for c in CONFIG["setup_commands"]), "the runs live on shared storage"


def test_dashboard_is_bound_to_loopback_only() -> None:
    heads = [c for c in CONFIG["head_start_ray_commands"] if "ray start" in c and "--head" in c]
    assert heads, "the head starts Ray"
    for command in heads:
        assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", command), command
    assert "0.0.0.0" not in (ROOT / "cluster.yaml").read_text()


# What each node runs to install frontier, in order (the EFS mount excepted, see below).
INSTALL = [c for c in CONFIG["setup_commands"] if "mount -t nfs4" not in c]
MOUNT = [c for c in CONFIG["setup_commands"] if "mount -t nfs4" in c]


def _as_file_mounts_copies(directory: str, names: list[str]) -> set[str]:
    """What ``file_mounts: {~/frontier: .}`` leaves out of the copy (cluster.yaml's rsync_exclude:
    .git, .venv, runs/), and caches."""
    skip = {n for n in names if n in (".git", ".venv", "__pycache__", ".pytest_cache") or n.endswith(".egg-info")}
    return skip | ({"runs"} & set(names) if Path(directory) == ROOT else set())


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> tuple[Path, dict[str, str], list[subprocess.CompletedProcess]]:
    """A fresh node's HOME after the setup commands ran there through bash, as the cluster launcher runs them.

    The checkout is copied to ``$HOME/frontier`` as ``file_mounts`` copies it. The commands' text is
    cluster.yaml's; only their environment keeps the run cheap and offline: pip reads its options from
    ``PIP_*`` variables, so ``PIP_NO_DEPS`` installs frontier alone (not torch's GBs again),
    ``PIP_NO_INDEX`` forbids the network and ``PIP_NO_BUILD_ISOLATION=0`` (pip's inverted spelling of
    ``--no-build-isolation``) builds with the setuptools at hand instead of downloading one. The
    dependencies come from this test's own environment through ``PYTHONPATH``, which, unlike the new
    venv's site-packages, runs no ``.pth`` file: frontier itself is found only through what the
    commands installed. The TensorRT step runs too: ``torch.version.cuda`` is read from the
    test's torch, and with ``PIP_NO_DEPS`` the extra's TensorRT wheels are not downloaded.
    """
    home = tmp_path_factory.mktemp("home")
    shutil.copytree(ROOT, home / "frontier", ignore=_as_file_mounts_copies, symlinks=True)
    env = {"HOME": str(home), "PATH": f"{Path(sys.base_prefix) / 'bin'}:{os.environ['PATH']}",
           "PYTHONPATH": str(_dependencies(tmp_path_factory.mktemp("deps"))), "PIP_NO_DEPS": "1", "PIP_NO_INDEX": "1",
           "PIP_NO_BUILD_ISOLATION": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "LANG": "C.UTF-8"}
    runs = []
    for command in [*INSTALL, INSTALL[-1]]:  # the last (the PATH line in ~/.bashrc) twice: `ray up` reruns them all
        runs.append(subprocess.run(["bash", "-c", command], cwd=home, env=env, capture_output=True, text=True,
                                   timeout=300))
        assert runs[-1].returncode == 0, f"{command}\n{runs[-1].stdout}\n{runs[-1].stderr}"
    return home, env, runs


def _dependencies(folder: Path) -> Path:
    """``folder`` holding links to this environment's installed packages, frontier's own files left
    out (its packages, where it is installed from a wheel, and its editable finder module, whose
    name the node's install gives its own): from ``PYTHONPATH`` they would shadow the node's."""
    own = ("__editable__", "frontier-", "__pycache__", "search", "trainables")
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.startswith(own) and entry.suffix != ".pth":
            (folder / entry.name).symlink_to(entry)
    return folder


@pytest.mark.slow
def test_the_setup_commands_install_frontier_into_the_nodes_venv(node) -> None:
    home, env, runs = node
    venv = home / "venv"
    where = subprocess.run([venv / "bin" / "python", "-c", "import search, trainables; print(search.__file__)"],
                           cwd=home, env=env, capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(home / "frontier"), "frontier comes from the node's copy"
    help_ = subprocess.run([venv / "bin" / "frontier", "--help"], cwd=home, env=env, capture_output=True, text=True)
    assert help_.returncode == 0 and "usage" in help_.stdout.lower(), help_.stderr
    assert (home / ".bashrc").read_text().count("venv/bin") == 1, "the PATH line is added once"


@pytest.mark.slow
def test_the_tensorrt_extra_matches_the_cuda_torch_was_built_for(node) -> None:
    import torch

    _, _, runs = node
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    trt = next(run for command, run in zip(INSTALL, runs) if "tensorrt" in command)
    if torch.version.cuda is None:
        assert "no TensorRT" in trt.stdout
        return
    major = torch.version.cuda.split(".")[0]
    assert f"tensorrt-cu{major}" in extras, f"pyproject.toml has no extra tensorrt-cu{major}: {sorted(extras)}"
    assert "does not provide the extra" not in trt.stderr, trt.stderr


def test_the_efs_mount_is_not_run_here() -> None:
    assert len(MOUNT) == 1
    pytest.skip("the EFS mount needs sudo, an NFS client and an AWS file system: read, not run")
