"""Real latency of pruning on ONNX Runtime: dense vs 90% unstructured vs 50% of units removed.

Workload (issue 6): torchvision's ResNet-18 (random weights, ImageNet's 1000-class head), one
224x224 image (batch 1, the deployment case and the size its FLOP counts are quoted at), ONNX
Runtime's CPU provider with 2 intra-op threads (the 2 cores of these machines), all graph
optimisations. Three contenders, exported by :func:`trainables.measure.metrics.export_onnx`:

- dense: the model as built;
- unstructured 90%: every conv/linear but the input conv and the head masked to 90% zeros by
  magnitude (``trainables.stages.gradual.prune_to``), masks made permanent. The kernels stay dense;
- surgery 50%: in every unit layer (the block-internal convs, see :mod:`trainables.compress.units`) the
  half of the output channels with the largest L1 norm kept, the rest removed by
  :func:`trainables.compress.surgery.shrink`. Channels joined by a residual add (the stem, each block's
  last conv, the downsample convs) are not units, so this removes less than half of the FLOPs:
  the table states the parameter and multiply-accumulate shares it removes.

The three ONNX Runtime sessions are set up as :func:`trainables.measure.metrics.onnx_latency` sets
its own (CPU provider, ``THREADS`` intra-op threads, 1 inter-op, sequential, ``ORT_ENABLE_ALL``)
and take turns: in each turn each model (the order rotating) runs once untimed, then ``BLOCK``
timed runs, ``--runs`` timed runs in all. The load that other jobs put on the shared machine
changes within seconds, so timing the models one after another (as ``onnx_latency`` would, one
model per call) lets that drift into the ratios; alternating run by run does not work either:
ORT's intra-op threads spin after a run and slow the next session down (measured: ratios off by
0.3 and more). A model's time is the median of its runs; its ratio is the median over turns of
its turn median over dense's turn median. The surgery model's ONNX output is checked against the
gated torch model. Goal (issue 6): surgery latency at most 0.6x the dense latency, the
unstructured ratio shown beside it.

    python bench/latency.py [--runs 100] [--smoke]

``--smoke``: one turn (``BLOCK`` timed runs per model), the same models, exports and checks.
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import add_smoke_flag, finish  # noqa: E402
from torchvision.models import resnet18  # noqa: E402

from trainables.compress.masks import make_permanent, prunable_layers  # noqa: E402
from trainables.compress.surgery import gated, shrink  # noqa: E402
from trainables.compress.units import unit_layers  # noqa: E402
from trainables.measure.metrics import export_onnx  # noqa: E402
from trainables.stages.gradual import prune_to  # noqa: E402

INPUT = (3, 224, 224)
THREADS = 2
WARMUP = 5  # untimed runs of each model before the turns
BLOCK = 10  # timed runs of one model per turn
UNSTRUCTURED = 0.9
KEPT_UNITS = 0.5


def unstructured(model: nn.Module, sparsity: float) -> nn.Module:
    """A copy with every layer but the input conv and the head at ``sparsity`` zeros (magnitude)."""
    pruned = copy.deepcopy(model).eval()
    for _, layer in prunable_layers(pruned):
        prune_to(layer, sparsity)
    return make_permanent(pruned)


def largest_units(model: nn.Module, share: float) -> dict[str, torch.Tensor]:
    """Keep masks: the ``share`` of each unit layer's output channels with the largest L1 norm."""
    keep = {}
    for unit in unit_layers(model):
        norms = model.get_submodule(unit.name).weight.detach().flatten(1).abs().sum(dim=1)
        vector = torch.zeros(unit.size, dtype=torch.bool)
        vector[norms.topk(round(share * unit.size)).indices] = True
        keep[unit.name] = vector
    return keep


def macs(model: nn.Module) -> int:
    """Multiply-accumulates of one forward at ``INPUT``, over every conv and linear."""
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * k
        else:
            total += module.in_features * module.out_features

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(count) for m in layers]
    with torch.no_grad():
        model(torch.zeros(1, *INPUT))
    for handle in handles:
        handle.remove()
    return total


def params(model: nn.Module, nonzero: bool = False) -> int:
    return sum(int((p != 0).sum()) if nonzero else p.numel() for p in model.parameters())


def session(path: Path):
    """An ONNX Runtime CPU session with :func:`trainables.measure.metrics.onnx_latency`'s settings."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def interleaved(paths: dict[str, Path], runs: int) -> dict[str, list[list[float]]]:
    """Milliseconds per timed run of each model, grouped by turn (see the module doc).

    Hand-written rather than :func:`trainables.measure.metrics.onnx_latency` per model: that times one
    model per call, and the shared machine's load drifts between calls.
    """
    sessions = {name: session(path) for name, path in paths.items()}
    x = np.random.default_rng(0).standard_normal((1, *INPUT), dtype=np.float32)
    feeds = {name: {s.get_inputs()[0].name: x} for name, s in sessions.items()}
    names = list(sessions)
    for name in names:
        for _ in range(WARMUP):
            sessions[name].run(None, feeds[name])
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for turn in range(max(1, runs // BLOCK)):
        for name in names[turn % len(names):] + names[:turn % len(names)]:
            sessions[name].run(None, feeds[name])  # untimed: the previous session's threads wind down
            block = []
            for _ in range(BLOCK):
                start = time.perf_counter_ns()
                sessions[name].run(None, feeds[name])
                block.append((time.perf_counter_ns() - start) / 1e6)
            times[name].append(block)
    return times


def onnx_matches(path: Path, model: nn.Module, keep: dict[str, torch.Tensor]) -> float:
    """Max abs difference between the ONNX file's logits and the gated torch model's."""
    import onnxruntime as ort

    x = torch.randn(1, *INPUT, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad(), gated(model, keep):
        expected = model(x).numpy()
    return float(np.abs(got - expected).max())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        args.runs = BLOCK
    torch.manual_seed(0)
    torch.set_num_threads(THREADS)
    start = time.perf_counter()
    dense = resnet18(num_classes=1000).eval()
    keep = largest_units(dense, KEPT_UNITS)
    models = {"dense": dense, "unstructured": unstructured(dense, UNSTRUCTURED), "surgery": shrink(dense, keep)}
    folder = Path(tempfile.mkdtemp(prefix="frontier-latency-", dir=os.environ.get("FRONTIER_BENCH_TMP")))
    paths = {name: export_onnx(m, folder / f"{name}.onnx", INPUT) for name, m in models.items()}
    check = onnx_matches(paths["surgery"], dense, keep)
    turns = interleaved(paths, args.runs)
    shutil.rmtree(folder)
    ms = {name: statistics.median(sum(blocks, [])) for name, blocks in turns.items()}
    p90 = {name: float(np.percentile(sum(blocks, []), 90)) for name, blocks in turns.items()}
    turn_ms = {name: [statistics.median(block) for block in blocks] for name, blocks in turns.items()}
    ratio = {name: statistics.median(m / d for m, d in zip(values, turn_ms["dense"]))
             for name, values in turn_ms.items()}
    dense_params, dense_macs = params(dense), macs(dense)
    removed_params = 1 - params(models["surgery"]) / dense_params
    removed_macs = 1 - macs(models["surgery"]) / dense_macs
    unstructured_zeros = 1 - params(models["unstructured"], nonzero=True) / dense_params
    units = sum(u.size for u in unit_layers(dense))
    removed_units = sum(int((~k).sum()) for k in keep.values())
    seconds = time.perf_counter() - start
    finish(
        [("model / input", f"ResNet-18 (random weights), 1x{INPUT[0]}x{INPUT[1]}x{INPUT[2]}, batch 1"),
         ("engine", f"ONNX Runtime CPU, {THREADS} threads, {len(turn_ms['dense'])} turns x {BLOCK} runs "
                    f"per model (+{WARMUP} warm-up)"),
         ("", "median ms   p90 ms   ratio to dense"),
         ("dense", f"{ms['dense']:9.2f} {p90['dense']:8.2f}   1.000x"),
         ("unstructured 90%", f"{ms['unstructured']:9.2f} {p90['unstructured']:8.2f}   {ratio['unstructured']:.3f}x"),
         ("surgery 50% of units", f"{ms['surgery']:9.2f} {p90['surgery']:8.2f}   {ratio['surgery']:.3f}x"),
         ("units removed", f"{removed_units} of {units} (block-internal conv channels)"),
         ("surgery: params / MACs removed", f"{removed_params:.1%} / {removed_macs:.1%}"),
         ("unstructured: zero params", f"{unstructured_zeros:.1%} (of {dense_params / 1e6:.2f} M)"),
         ("surgery ratio per turn", " ".join(f"{m / d:.2f}" for m, d in zip(turn_ms["surgery"], turn_ms["dense"]))),
         ("surgery ONNX vs gated torch (max abs)", f"{check:.2e}"),
         ("wall (s)", f"{seconds:.1f}")],
        {"input": [1, *INPUT], "threads": THREADS, "runs": args.runs,
         "dense_ms": round(ms["dense"], 3), "unstructured_ms": round(ms["unstructured"], 3),
         "surgery_ms": round(ms["surgery"], 3), "unstructured_ratio": round(ratio["unstructured"], 4),
         "surgery_ratio": round(ratio["surgery"], 4), "surgery_units_removed": round(removed_units / units, 4),
         "surgery_params_removed": round(removed_params, 4), "surgery_macs_removed": round(removed_macs, 4),
         "unstructured_zero_params": round(unstructured_zeros, 4), "surgery_onnx_max_abs_diff": check,
         "wall_s": round(seconds, 1)},
        "ResNet-18 with 50% of units removed by surgery: ONNX Runtime latency <= 0.6x dense (2 threads, 1x3x224x224)",
        ratio["surgery"] <= 0.6 and check < 1e-3, smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
