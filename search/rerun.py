"""``frontier rerun``: run one trial's plan again, in full, and export it as a final model.

``--trial best`` picks, among the front's trials that meet the constraints (the spec's ``select``,
overridden by flags), the one with the highest accuracy (then the smallest size). The plan runs
in this process with the same seed and budget and without the stage cache; the output folder
holds ``model.pt`` (state dict), ``model.onnx``, ``model.h5`` (the compressed artifact) and
``card.json`` (pipeline, parameters, metrics next to the trial's, versions); an INT8 trial also
``model.int8.onnx`` (what its engine ran) and ``model.int8.h5`` (its ``size_bytes``).
"""

from __future__ import annotations

import json
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from trainables.errors import FrontierError
from trainables.files import atomic_path, atomic_write
from trainables.layout import RunFolder
from trainables.objectives import OBJECTIVE_NAMES
from trainables.pipeline.plan import Plan
from trainables.pipeline.run import run_plan
from trainables.stage import Context
from trainables.train import loader_workers_for, set_loader_workers

from .report import load_front
from .spec import load_spec

# A rerun repeats the trial's computation with the same seed; these are the differences allowed
# (thread counts change float summation order; latency is measured anew and not compared).
ACCURACY_TOLERANCE = 0.02
SIZE_TOLERANCE = 0.02


def select_best(frame: pd.DataFrame, front_ids: list[str], constraints: dict[str, float | None]) -> str:
    """The front trial with the highest accuracy meeting ``constraints``; raises if none does."""
    rows = frame[frame["trial_id"].isin(front_ids) & (frame["status"] == "ok")]
    if constraints.get("max_size_bytes") is not None:
        rows = rows[rows["size_bytes"] <= constraints["max_size_bytes"]]
    if constraints.get("max_latency_ms") is not None:
        rows = rows[rows["latency_ms"] <= constraints["max_latency_ms"]]
    if constraints.get("min_accuracy") is not None:
        rows = rows[rows["accuracy"] >= constraints["min_accuracy"]]
    if rows.empty:
        given = ", ".join(f"{k}={v}" for k, v in constraints.items() if v is not None) or "none"
        raise FrontierError(f"--trial best: no front trial meets the constraints ({given})")
    return str(rows.sort_values(["accuracy", "size_bytes"], ascending=[False, True]).iloc[0]["trial_id"])


def rerun(run_dir: str | Path, trial: str, *, out: str | Path | None = None,
          max_size_bytes: float | None = None, max_latency_ms: float | None = None) -> Path:
    """Rerun ``trial`` (an id or ``best``) of ``run_dir``; returns the output folder."""
    run = RunFolder(Path(run_dir))
    frame, summary = load_front(run.root)
    spec = load_spec(run.spec_yaml)
    constraints = {
        "max_size_bytes": max_size_bytes if max_size_bytes is not None else spec.select.max_size_bytes,
        "max_latency_ms": max_latency_ms if max_latency_ms is not None else spec.select.max_latency_ms,
        "min_accuracy": spec.select.min_accuracy,
    }
    front_ids = [t["trial_id"] for t in summary["trials"]]
    trial_id = select_best(frame, front_ids, constraints) if trial == "best" else trial
    row = frame[frame["trial_id"] == trial_id]
    if row.empty:
        raise FrontierError(f"--trial: no trial '{trial_id}' in {run.trials_csv}")
    if row.iloc[0]["status"] != "ok":
        raise FrontierError(f"--trial: trial '{trial_id}' failed in the search and has no metrics to reproduce")
    plans = json.loads(run.plans_json.read_text())
    plan = Plan.model_validate(plans[trial_id])
    out = Path(out) if out else run.final(trial_id)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # as the trial ran: same float summation order
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    set_loader_workers(loader_workers_for(device, spec.resources.cpu))
    ctx = Context(plan.source, plan.target, out, seed=plan.seed, device=device)
    model, metrics = run_plan(plan, ctx)
    with atomic_path(out / "model.pt") as tmp:
        torch.save(model.state_dict(), tmp)
    card = make_card(trial_id, row.iloc[0], plan, metrics, time.perf_counter() - start)
    atomic_write(out / "card.json", json.dumps(card, indent=2))
    return out


def make_card(trial_id: str, row: pd.Series, plan: Plan, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What ``card.json`` says about the final model."""
    keys = (*OBJECTIVE_NAMES, "real_sparsity", "precision")
    now = {k: metrics.get(k) for k in keys}
    then = {k: (None if pd.isna(row.get(k)) else row[k] if k == "precision" else float(row[k])) for k in keys if k in row}
    return {
        "trial_id": trial_id,
        "pipeline": plan.pipeline,
        "order": row.get("order"),
        "params": {k[6:]: _plain(v) for k, v in row.items() if k.startswith("param.") and not pd.isna(v)},
        "metrics": now,
        "trial_metrics": then,
        "matches_trial": {
            "accuracy": abs(now["accuracy"] - then["accuracy"]) <= ACCURACY_TOLERANCE,
            "size_bytes": abs(now["size_bytes"] - then["size_bytes"]) <= SIZE_TOLERANCE * then["size_bytes"],
        },
        "seconds": seconds,
        "files": {"state_dict": "model.pt", "onnx": "model.onnx", "artifact": "model.h5",
                  **({"int8_onnx": "model.int8.onnx", "int8_artifact": "model.int8.h5"}
                     if metrics.get("precision") == "int8" else {})},
        "plan": plan.model_dump(mode="json"),
        "versions": _versions(),
    }


def _plain(value: Any) -> Any:
    """A numpy scalar from the CSV as a plain Python value for JSON."""
    return value.item() if hasattr(value, "item") else value


def _versions() -> dict[str, str]:
    names = ("frontier", "torch", "torchvision", "onnx", "onnxruntime", "h5py", "ray", "optuna")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions
