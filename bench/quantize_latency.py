"""INT8 deployment against float32, with and without half the units removed (issue 16).

For torchvision's ResNet-18 and ResNet-50 (random init, ``torch.manual_seed(0)``; no pretrained
weights on this machine, and latency and bytes do not depend on them) this measures, side by side
in one process, through the benchmark's own :func:`trainables.measure.metrics.measure` (ONNX
Runtime on the CPU, 2 threads, 224x224, batch 1):

- dense float32;
- INT8: static post-training quantization of the exported model (QDQ, per-channel int8 weights,
  uint8 activations: ONNX Runtime's fast CPU format), calibrated on 16 seeded random images;
- 50% units removed: half the units of every unit group (``trainables.compress.units``, every
  other channel) removed physically by ``trainables.compress.surgery.shrink``;
- 50% units removed + INT8: that smaller network, quantized.

Latency is the median of ``runs`` timed inferences after warm-up, the lowest of ``rounds``
rounds (the contenders take turns, so a busy machine slows them alike); bytes are each model's
compressed artifact (``model.h5``, or ``model.int8.h5`` for INT8). Both are printed as ratios to
dense float32. Goals: INT8 <= 0.4x the dense float32 latency on both models, and 50% units
removed + INT8 <= 0.15x on ResNet-18.

    python bench/quantize_latency.py [--smoke]

``--smoke``: frontier's small ResNet only, at 32x32, 2 timed runs, one round (the same contenders
and code path in seconds); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402
from _common import add_smoke_flag, finish  # noqa: E402

from trainables.compress.surgery import shrink  # noqa: E402
from trainables.compress.units import unit_groups  # noqa: E402
from trainables.measure.int8_model import Int8Request  # noqa: E402
from trainables.measure.metrics import measure  # noqa: E402
from trainables.models import build_model  # noqa: E402

THREADS = 2
CALIBRATION_IMAGES = 16
GOAL_INT8, GOAL_PRUNED_INT8 = 0.4, 0.15


def half_units_removed(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` without every other unit of every unit group (half of each, rounded down)."""
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in unit_groups(model)}
    return shrink(model, keep)


def contenders(name: str) -> dict[str, tuple[torch.nn.Module, bool]]:
    torch.manual_seed(0)
    dense = build_model(name, 1000).eval()
    pruned = half_units_removed(copy.deepcopy(dense)).eval()
    return {"dense fp32": (dense, False), "INT8": (dense, True), "50% units removed": (pruned, False),
            "50% units removed + INT8": (pruned, True)}


def request(size: int) -> Int8Request:
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(3, size, size, generator=gen) for _ in range(CALIBRATION_IMAGES)]
    return Int8Request(calibration=images, test=[(x, 0) for x in images[:4]], count=CALIBRATION_IMAGES,
                       threads=THREADS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_smoke_flag(parser)
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    names = ["small_resnet"] if args.smoke else ["resnet18", "resnet50"]
    size = 32 if args.smoke else 224
    runs, warmup, rounds = (2, 1, 1) if args.smoke else (40, 10, 3)
    table: list[tuple[str, str]] = []
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            models = contenders(name)
            best: dict[str, dict] = {}
            for r in range(rounds):
                for label, (model, int8) in models.items():
                    out = Path(tmp) / name / label.replace(" ", "_").replace("%", "").replace("+", "")
                    metrics = measure(model, (3, size, size), out, threads=THREADS, warmup=warmup, runs=runs,
                                      end_to_end=False, surgery=False, backend="onnxruntime",
                                      int8=request(size) if int8 else None)
                    if label not in best or metrics["latency_ms"] < best[label]["latency_ms"]:
                        best[label] = metrics
            base = best["dense fp32"]
            table.append((name, f"dense fp32: {base['latency_ms']:.2f} ms, {base['size_bytes'] / 1e6:.1f} MB "
                                f"(ONNX Runtime, {THREADS} threads, {size}x{size}, batch 1)"))
            for label, metrics in best.items():
                latency = metrics["latency_ms"] / base["latency_ms"]
                size_ratio = metrics["size_bytes"] / base["size_bytes"]
                key = label.replace(" ", "_").replace("%", "pct").replace("_+_", "_")
                figures[f"{name}.{key}.latency_ratio"] = round(latency, 4)
                figures[f"{name}.{key}.bytes_ratio"] = round(size_ratio, 4)
                table.append((f"  {label}", f"latency {latency:.3f}x ({metrics['latency_ms']:.2f} ms), "
                                            f"bytes {size_ratio:.3f}x, params timed {metrics['params_timed']:,}"))
    met = all(figures[f"{n}.INT8.latency_ratio"] <= GOAL_INT8 for n in names)
    met = met and figures[f"{names[0]}.50pct_units_removed_INT8.latency_ratio"] <= GOAL_PRUNED_INT8
    finish(table, figures, f"INT8 <= {GOAL_INT8}x dense float32 latency; 50% units removed + INT8 <= "
                           f"{GOAL_PRUNED_INT8}x on resnet18", met, smoke=args.smoke)


if __name__ == "__main__":
    main()
