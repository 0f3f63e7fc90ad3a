"""cluster.yaml is a valid Ray cluster-launcher file and keeps the dashboard on 127.0.0.1."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
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
    assert any("pip install" in c and "frontier" in c for c in CONFIG["setup_commands"])
    assert any("/mnt/frontier" in c for c in CONFIG["setup_commands"]), "the runs live on shared storage"


def test_dashboard_is_bound_to_loopback_only() -> None:
    heads = [c for c in CONFIG["head_start_ray_commands"] if "ray start" in c and "--head" in c]
    assert heads, "the head starts Ray"
    for command in heads:
        assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", command), command
    assert "0.0.0.0" not in (ROOT / "cluster.yaml").read_text()
