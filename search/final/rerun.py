"""``frontier rerun``: run one trial's plan again, in full, and export it as a final model.

``--trial best`` picks, among the front's trials that meet the constraints (the spec's ``select``,
overridden by flags), the one with the highest accuracy (then the smallest size). The plan runs
in this process with the same seed and the full budget (a search run at a lower ``fidelity`` ran
a cheaper plan: ``plans.full.json`` has the full one) and without the stage cache; the output folder
holds ``model.pt`` (state dict), ``model.onnx``, ``model.h5`` (the compressed artifact) and
``card.json`` (pipeline, parameters, metrics next to the trial's, versions); an INT8 trial also
``model.int8.onnx`` (what its engine ran) and ``model.int8.h5`` (its ``size_bytes``).

A trial of a spec with ``repeats: k`` reruns all k seeds, as the trial ran them (its plan carries
``repeats``): the card's ``metrics`` are their mean and spread
(:func:`trainables.pipeline.repeats.aggregate`), compared with the trial's means, and its ``runs``
each seed's own; ``model.pt`` and the exports beside it are the first seed's (the spec's ``seed``:
``files_seed``), the model to deploy, and ``repeat<r>/`` holds run r's exports.
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from trainables.errors import FrontierError
from trainables.files import atomic_path, atomic_write
from trainables.layout import FinalFolder, ModelFiles, RunFolder
from trainables.objectives import OBJECTIVE_NAMES
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import Plan
from trainables.pipeline.repeats import aggregate
from trainables.pipeline.run import run_plan
from trainables.stage import Context
from trainables.train import loader_workers_for, set_loader_workers
from search.results.report import load_front
from search.spec.constraints import active_constraints, feasible
from search.spec.load import load_spec

# A rerun repeats the trial's computation with the same seed; these are the differences allowed
# (thread counts change float summation order; latency is measured anew and not compared).
ACCURACY_TOLERANCE = 0.02
SIZE_TOLERANCE = 0.02
MODEL = ModelFiles(Path())  # the exported files' names, as measure() writes them beside model.pt


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
          max_size_bytes: float | None = None, max_latency_ms: float | None = None,
          cache: StageCache | None = None) -> Path:
    """Rerun ``trial`` (an id or ``best``) of ``run_dir``; returns the output folder.

    ``cache``: a stage cache the rerun reads and fills (None, the default: every stage computed);
    :func:`rerun_front` shares one among the front's trials, never the search's."""
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
    plan = Plan.model_validate(full_budget_plans(run)[trial_id])
    out = Path(out) if out else run.final(trial_id)
    out.mkdir(parents=True, exist_ok=True)
    final = FinalFolder(out)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # as the trial ran: same float summation order
    start = time.perf_counter()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    set_loader_workers(loader_workers_for(device, spec.resources.cpu), pin_memory=device == "cuda")
    runs = []
    for repeat in range(plan.repeats):  # one run per seed; the first one's model is the final model
        single = plan.repeat(repeat)
        model, metrics = run_plan(single, Context(plan.source, plan.target, final.repeat(repeat), seed=single.seed,
                                                  device=device), cache=cache)
        if repeat == 0:
            with atomic_path(final.state_dict) as tmp:
                torch.save(model.state_dict(), tmp)
        runs.append(metrics)
        del model
    card = make_card(trial_id, row.iloc[0], plan, aggregate(runs), time.perf_counter() - start)
    if plan.repeats > 1:
        card["files_seed"] = plan.seed
        card["runs"] = [{"seed": plan.repeat(r).seed, **{k: m.get(k) for k in (*OBJECTIVE_NAMES, "accuracy_se")}}
                        for r, m in enumerate(runs)]
    atomic_write(final.card, json.dumps(card, indent=2))
    return out


def full_budget_plans(run: RunFolder) -> dict[str, Any]:
    """Each trial's plan at the full budget: ``plans.full.json`` where the search ran at a lower
    ``fidelity`` (the epoch budgets scaled down), else the plans it ran (``plans.json``)."""
    plans = json.loads(run.plans_json.read_text())
    full = run.plans_full_json
    return {**plans, **json.loads(full.read_text())} if full.is_file() else plans


def rerun_front(run_dir: str | Path, *, console: Any = None) -> dict[str, Any]:
    """Rerun every front trial of ``run_dir`` at the full budget (:func:`rerun`, into
    ``final/<trial>/``), print each trial's search-time and full-budget objectives side by side and,
    per objective, the rank correlation between them (Spearman's rho and Kendall's tau, scipy), and
    write it all to ``final/front_rerun.json``; returns what it wrote.

    With a fidelity below 1 the search ranked trials on cheap runs; the correlation says how far
    that ranking holds at the full budget (1: the same order). Fewer than 3 front trials, or an
    objective that is constant in one of the two columns, gives no correlation (None).

    Each row's ``feasible`` says whether the full-budget model meets the spec's whole ``select``: a
    search at a fidelity below 1 leaves the accuracy floor to this check
    (:func:`search.spec.constraints.search_constraints`).

    The reruns share a stage cache of their own (a temporary folder under ``final/``, removed at
    the end), so the front's common prefix (the dense and transferred models at the full budget)
    is computed once, not once per trial; each row's ``seconds`` is what its rerun took.
    """
    from rich.console import Console
    from rich.table import Table
    from scipy.stats import kendalltau, spearmanr

    run = RunFolder(Path(run_dir))
    frame, summary = load_front(run.root)
    names = [o["name"] for o in summary["objectives"]]
    spec = load_spec(run.spec_yaml)
    fidelity, bounds = float(spec.fidelity), active_constraints(spec.select)
    rows = []
    run.front_rerun_json.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rerun-cache-", dir=run.front_rerun_json.parent) as shared:
        cache = StageCache(shared)
        for t in summary["trials"]:
            out = rerun(run.root, t["trial_id"], cache=cache)
            card = json.loads(FinalFolder(out).card.read_text())
            rows.append({"trial_id": t["trial_id"], "pipeline": t["pipeline"], "final": str(out),
                         "seconds": card["seconds"], "search": {n: float(t[n]) for n in names},
                         "full": {n: card["metrics"].get(n) for n in names},
                         "feasible": feasible(bounds, card["metrics"])})
    correlation = {}
    for n in names:
        a, b = [r["search"][n] for r in rows], [r["full"][n] for r in rows]
        usable = len(rows) >= 3 and len(set(a)) > 1 and len(set(b)) > 1
        correlation[n] = ({"spearman": float(spearmanr(a, b).statistic), "kendall": float(kendalltau(a, b).statistic)}
                          if usable else {"spearman": None, "kendall": None})
    report = {"fidelity": fidelity, "trials": rows, "rank_correlation": correlation}
    atomic_write(run.front_rerun_json, json.dumps(report, indent=2))
    table = Table(title=f"front of {run.name}: search at fidelity {fidelity:g} vs full budget")
    for header in ["trial", "pipeline", *(f"{n} {w}" for n in names for w in ("search", "full"))]:
        table.add_column(header, no_wrap=header in ("trial", "pipeline"))  # ids and pipelines are never cut
    for r in rows:
        table.add_row(r["trial_id"], r["pipeline"], *(f"{r[w][n]:.4g}" if r[w][n] is not None else "-"
                                                      for n in names for w in ("search", "full")))
    console = console or Console()
    if not console.is_terminal:  # to a pipe or a log: whole, however wide (as the front table)
        console.width = console.measure(table, options=console.options.update_width(10**6)).maximum
    console.print(table)
    for n, c in correlation.items():
        text = "n/a (fewer than 3 trials or a constant column)" if c["spearman"] is None else \
            f"spearman {c['spearman']:.3f}, kendall {c['kendall']:.3f}"
        console.print(f"rank correlation of {n}: {text}")
    return report


def make_card(trial_id: str, row: pd.Series, plan: Plan, metrics: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What ``card.json`` says about the final model (``metrics``: the rerun's, the mean over the
    seeds for a repeated trial, beside the trial's own ``trial_metrics``)."""
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
        "cached_stages": metrics.get("cached_stages", ""),  # taken from the shared cache of `rerun --front`
        "files": {"state_dict": FinalFolder(Path()).state_dict.name, "onnx": MODEL.onnx.name,
                  "artifact": MODEL.artifact.name,
                  **({"int8_onnx": MODEL.int8_onnx.name, "int8_artifact": MODEL.int8_artifact.name}
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
