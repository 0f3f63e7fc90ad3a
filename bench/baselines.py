"""Baselines for a run's front: what a user would script by hand with Torch-Pruning and ONNX Runtime.

From a finished run folder: the model the run's reference trial starts from (the dense model as the
run has it, ``D|T`` for a spec with a transfer), rebuilt by running the reference plan's stages but
the benchmark through the run's stage cache (nothing retrains when the cache holds them); then

- ``dense``: that model as it is, exported to ONNX (FP32);
- ``dense+int8``: the same file quantized statically to INT8;
- per ratio r, ``tp-uniform-<r>``: Torch-Pruning's ``MetaPruner`` with magnitude importance (L2,
  ``GroupMagnitudeImportance``), the same ratio in every layer, the classifier ignored, then
  fine-tuned on the target's training split for the spec's ``prune.recover_epochs`` (at least 1)
  with the prune budget's optimizer and batch; and ``tp-uniform-<r>+int8``, its INT8 file.

INT8 is ONNX Runtime's ``quantize_static`` through :func:`trainables.measure.int8.quantize_onnx` with
the settings frontier's INT8 trials use (QDQ, per-channel int8 weights, uint8 activations, the
spec's calibration method), calibrated on the spec's ``int8.images`` unlabeled target training
images: the baselines differ from the trials in how they were pruned, not in how they were quantized.

Each point is measured as the trials are: accuracy in ONNX Runtime on every image of the target's
test split (the trials' ``accuracy``, with its standard error), latency in an ONNX Runtime CPU
session with the spec's benchmark settings (batch, threads, warm-up, runs; the median and IQR, as
``latency_ms`` / ``latency_iqr_ms``). ``size_bytes`` is measured as a trial's is, with the
project's own artifact (``trainables/compress/artifact.py``: HDF5, gzip 9): the FP32 model's state
dict (``model.h5``), or the INT8 file's tensors, int8 codes and scales (``model.int8.h5``), so the
front and the baselines compare bytes in one unit (the ``dense`` row's equals the reference trial's
``size_bytes``: the same weights through the same code). The deployable ONNX file's own bytes are
beside it, ``onnx_bytes``, and after gzip -9, ``onnx_gzip_bytes``: on the quickstart's small ResNet
1.28x and 1.08x the artifact for FP32 (the graph, and float32 weights gzip barely shrinks), 1.51x
and 1.04x for INT8. A run whose trials were timed on another engine is refused.

Writes ``RUN/baselines.json`` (:mod:`search.results.baselines` reads it; ``frontier front`` lists
the points and its report draws them), then prints the table and one JSON line. The goal: every
Torch-Pruning baseline is dominated by some front trial (under the front's noise rule).

    python bench/baselines.py RUN [--ratios 0.3 0.5 0.7] [--out DIR] [--smoke]

``--smoke`` without ``RUN`` first runs the tiniest quickstart search (the reference trial and one
more, sklearn's digits at 16 px) and makes the baselines of it at one ratio.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_smoke_flag, finish, quickstart, timed_search  # noqa: E402

from search.results.baselines import DOMINATED_BY, dominated_by  # noqa: E402
from search.results.format import is_reference  # noqa: E402
from search.results.report import load_front  # noqa: E402
from search.spec.load import load_spec  # noqa: E402
from search.spec.schema import Spec  # noqa: E402
from trainables.compress.artifact import save_artifact  # noqa: E402
from trainables.errors import FrontierError  # noqa: E402
from trainables.files import atomic_write  # noqa: E402
from trainables.layout import ModelFiles, RunFolder  # noqa: E402
from trainables.measure.backends import ORT_BACKEND, onnx_latency  # noqa: E402
from trainables.measure.int8 import int8_state, onnx_scores, quantize_onnx  # noqa: E402
from trainables.measure.metrics import export_onnx  # noqa: E402
from trainables.models import head_name  # noqa: E402
from trainables.objectives import accuracy_error  # noqa: E402
from trainables.pipeline.cache import StageCache  # noqa: E402
from trainables.pipeline.plan import BenchmarkStep, Plan  # noqa: E402
from trainables.pipeline.run import run_plan  # noqa: E402
from trainables.stage import Context  # noqa: E402
from trainables.stages.benchmark import BenchmarkConfig  # noqa: E402
from trainables.train import EVAL_BATCH_SIZE, fit, loader, seed_everything  # noqa: E402

GZIP_LEVEL = 9  # a trial's artifact streams are gzip 9 too (trainables/compress/artifact.py)
REFERENCE_ASSIGNMENT = {"order": "none", "quantize": "none"}  # the dense model as it is (search/run/space_function.py)


def reference_plan(run: RunFolder, spec: Spec) -> tuple[Plan, str | None]:
    """The plan the run's reference trial ran (``plans.json``: its cache keys are the run's), and the
    trial's id; the spec's reference plan (``D|T|B``) and None for a run without a reference trial."""
    from search.results.files import read_trials

    frame = read_trials(run.root)
    plans = json.loads(run.plans_json.read_text()) if run.plans_json.is_file() else {}
    for _, row in frame.iterrows():
        if is_reference(row) and row["status"] == "ok" and row["trial_id"] in plans:
            return Plan.model_validate(plans[row["trial_id"]]), str(row["trial_id"])
    from search.spec.to_plan import plan_for

    return plan_for(spec, dict(REFERENCE_ASSIGNMENT)), None


def dense_model(run: RunFolder, plan: Plan, workdir: Path) -> tuple[nn.Module, Context, str]:
    """The model the reference plan benchmarks (its steps but ``B``), through the run's stage cache;
    its context, and the stages the cache held (``D,T``: nothing was trained again)."""
    stages = [step for step in plan.steps if not isinstance(step, BenchmarkStep)]
    ctx = Context(plan.source, plan.target, workdir, seed=plan.seed, device="cpu")
    model, metrics = run_plan(plan.model_copy(update={"steps": stages}), ctx, cache=StageCache(run.cache_root()))
    return model.cpu().eval(), ctx, str(metrics.get("cached_stages", ""))


def check_engine(run: RunFolder, bench: BenchmarkConfig) -> None:
    """Refuse a run whose trials were timed on another engine than ONNX Runtime on the CPU."""
    from search.results.files import read_trials

    frame = read_trials(run.root)
    engines = set(frame.get("latency_backend", []).dropna()) if "latency_backend" in frame else set()
    if engines - {ORT_BACKEND} or bench.backend not in ("auto", "onnxruntime"):
        raise FrontierError(f"RUN: baselines are timed on {ORT_BACKEND}; the trials of '{run.root}' were timed on "
                            f"{', '.join(sorted(engines)) or bench.backend}")


def tp_uniform(model: nn.Module, ctx: Context, ratio: float) -> nn.Module:
    """Torch-Pruning's MetaPruner on a copy of ``model``: magnitude importance, ``ratio`` of the
    channels of every layer removed (uniform), the classifier head left whole."""
    import torch_pruning as tp

    if not 0 < ratio < 1:
        raise FrontierError(f"--ratios: each ratio must be in (0, 1), got {ratio}")
    model = copy.deepcopy(model).cpu().eval()
    head = model.get_submodule(head_name(model))
    pruner = tp.pruner.MetaPruner(model, torch.zeros(1, *ctx.input_shape),
                                  importance=tp.importance.GroupMagnitudeImportance(p=2), pruning_ratio=ratio,
                                  global_pruning=False, ignored_layers=[head])
    pruner.step()
    return model


def fine_tune(model: nn.Module, ctx: Context, spec: Spec) -> nn.Module:
    """Train ``model`` on the target's training split for the prune budget's ``recover_epochs`` (at
    least 1), with its optimizer and batch size, validation on the target's validation split."""
    schedule = spec.budgets.prune.schedule("target")
    splits = ctx.data("target")
    seed_everything(ctx.seed)
    fit(model, loader(splits.train, schedule.batch_size, shuffle=True, seed=ctx.seed),
        loader(splits.val, EVAL_BATCH_SIZE, shuffle=False), schedule.optim, max(1, schedule.recover_epochs))
    return model.eval()


def measured(onnx: Path, artifact_bytes: int, ctx: Context, bench: BenchmarkConfig) -> dict[str, Any]:
    """Accuracy on the target's test split (ONNX Runtime) and latency of the file ``onnx``, its bytes
    plain and gzipped beside ``size_bytes`` (``artifact_bytes``: its weights as a trial's artifact)."""
    test = ctx.data("target").test
    scores = onnx_scores(onnx, test, threads=bench.threads)
    latency = onnx_latency(onnx, batch_size=bench.batch_size, threads=bench.threads, warmup=bench.warmup,
                           runs=bench.runs, throughput_batch=bench.throughput_batch)
    data = onnx.read_bytes()
    return {**scores, **accuracy_error(scores["accuracy"], len(test)), "size_bytes": artifact_bytes,
            "onnx_bytes": len(data), "onnx_gzip_bytes": len(gzip.compress(data, compresslevel=GZIP_LEVEL)),
            "latency_ms": latency.median_ms, "latency_iqr_ms": latency.iqr_ms}


def points_of(model: nn.Module, label: str, how: str, sparsity: float, folder: Path, ctx: Context,
              spec: Spec, bench: BenchmarkConfig) -> list[dict[str, Any]]:
    """The FP32 point of ``model`` and its INT8 point (``<label>+int8``), each measured (:func:`measured`)
    with its artifact written as a trial's is (``model.h5``; ``model.int8.h5`` of the INT8 file's tensors)."""
    files, int8 = ModelFiles(folder), spec.budgets.int8
    fp32 = export_onnx(model, files.onnx, ctx.input_shape)
    fp32_bytes = save_artifact(model.state_dict(), files.artifact)
    calibration = ctx.data(int8.calibration).unlabeled("train")
    quantized = quantize_onnx(fp32, files.int8_onnx, calibration, engine="onnxruntime", method=int8.method,
                              count=int8.images)
    int8_bytes = save_artifact(int8_state(quantized), files.int8_artifact, attrs={"precision": "int8"})
    how_int8 = (f"; ONNX Runtime quantize_static INT8 (QDQ, per-channel, {int8.method} on {int8.images} "
                f"{int8.calibration} images)")
    return [{"label": label, "how": how + "; FP32", "sparsity": sparsity, **measured(fp32, fp32_bytes, ctx, bench)},
            {"label": f"{label}+int8", "how": how + how_int8, "sparsity": sparsity,
             **measured(quantized, int8_bytes, ctx, bench)}]


def versions() -> dict[str, str]:
    """The versions of what made the baselines."""
    out = {}
    for name in ("torch-pruning", "onnxruntime", "onnx", "torch"):
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name.replace("-", "_")] = "not installed"
    return out


def make_baselines(run_dir: Path, ratios: list[float], out: Path) -> dict[str, Any]:
    """Every baseline of ``run_dir`` (see the module doc), written to ``RUN/baselines.json``; returns its content."""
    run = RunFolder(run_dir)
    spec = load_spec(run.spec_yaml)
    plan, reference = reference_plan(run, spec)
    bench = plan.benchmark.config
    check_engine(run, bench)
    torch.set_num_threads(max(1, int(spec.resources.cpu)))  # as the trials trained
    model, ctx, cached = dense_model(run, plan, out / "work")
    dense_how = f"the reference model ({'|'.join(s.label for s in plan.steps[:-1])}) as it is"
    points = points_of(model, "dense", dense_how, 0.0, out / "dense", ctx, spec, bench)
    epochs = max(1, spec.budgets.prune.schedule("target").recover_epochs)
    for ratio in ratios:
        pruned = fine_tune(tp_uniform(model, ctx, ratio), ctx, spec)
        how = (f"Torch-Pruning MetaPruner, L2 magnitude, {ratio:.0%} of every layer's channels (uniform, head kept), "
               f"fine-tuned {epochs} epoch(s) on the target")
        points += points_of(pruned, f"tp-uniform-{round(ratio * 100)}", how, ratio, out / f"r{ratio}", ctx, spec, bench)
    content = {"version": 1, "run": run.name, "reference_trial": reference, "cached_stages": cached,
               "size": ("size_bytes: the weights as a trial's artifact (model.h5; INT8: model.int8.h5 of the "
                        f"INT8 file's tensors); onnx_bytes: the ONNX file; onnx_gzip_bytes: it after gzip -{GZIP_LEVEL}"),
               "accuracy": f"ONNX Runtime on the target's test split ({len(ctx.data('target').test)} images)",
               "latency": {"backend": ORT_BACKEND, **bench.model_dump(include={"batch_size", "threads", "warmup", "runs"})},
               "versions": versions(), "points": points}
    atomic_write(run.baselines, json.dumps(content, indent=1))
    return content


def smoke_run() -> Path:
    """The tiniest quickstart search (the reference trial and one more), for ``--smoke`` without RUN;
    returns its run folder (under ``FRONTIER_BENCH_TMP`` when set, as every bench's)."""
    raw = quickstart(smoke=True)
    root = Path(tempfile.mkdtemp(prefix="frontier-baselines-run-", dir=os.environ.get("FRONTIER_BENCH_TMP")))
    timed_search(raw, cache=True, runs_root=root)
    return RunFolder.named(raw["name"], root).root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, help="a finished run folder (with --smoke: optional)")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                        help="shares of every layer's channels Torch-Pruning removes")
    parser.add_argument("--out", type=Path, help="folder for the exported files (default: a temporary folder)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.run_dir is None and not args.smoke:
        parser.error("RUN: give a finished run folder (only --smoke makes one itself)")
    start = time.perf_counter()
    run_dir = args.run_dir or smoke_run()
    ratios = [0.5] if args.smoke else args.ratios
    out = args.out or Path(tempfile.mkdtemp(prefix="frontier-baselines-"))
    try:
        content = make_baselines(run_dir, ratios, out)
    except FrontierError as exc:  # a user's mistake is one line (ARCHITECTURE.md)
        sys.exit(f"baselines: {exc}")
    frame, summary = load_front(run_dir)
    points = dominated_by(pd.DataFrame(content["points"]), frame, summary)
    reference = frame[frame["trial_id"] == content["reference_trial"]]
    front = len(summary["trials"])
    table = [(p["label"], f"acc {p['accuracy']:.4f} ± {p['accuracy_se']:.4f}   {p['size_bytes']:,} B "
              f"(onnx {p['onnx_bytes']:,}, gz {p['onnx_gzip_bytes']:,})   {p['latency_ms']:.3f} ms   "
              f"dominated by {p[DOMINATED_BY]} of {front}")
             for _, p in points.iterrows()]
    if len(reference):
        ref = reference.iloc[0]
        table.append(("reference trial (h5 artifact)", f"acc {ref['accuracy']:.4f}   {ref['size_bytes']:,.0f} B   "
                                                       f"{ref['latency_ms']:.3f} ms"))
    tp_points = points[points["label"].str.startswith("tp-")]
    met = bool(len(tp_points)) and bool((tp_points[DOMINATED_BY] > 0).all())
    table.append(("reference model's stages from the cache", content["cached_stages"] or "none (trained again)"))
    table.append(("wrote", str(RunFolder(run_dir).baselines)))
    finish(table, {"points": len(points), "front": front, "dominated": int((points[DOMINATED_BY] > 0).sum()),
                   "seconds": round(time.perf_counter() - start, 1), "versions": content["versions"]},
           "every Torch-Pruning baseline is dominated by a front trial (noise-aware)", met, smoke=args.smoke)


if __name__ == "__main__":
    main()
