"""Which channel multiple ONNX Runtime's CPU convolutions prefer here: 8 or 16 (the latency model's rule).

MLAS, ONNX Runtime's CPU kernels, runs convolutions in the NCHWc layout: channels in blocks of 16
floats with AVX-512F, 8 with AVX2. A width that is not a multiple of the block pads to it, so the
time per channel should be lowest on the block's multiples. This sweeps, side by side in one
process, a 3x3 conv at 56x56 over widths 48..80 (in = out) and a 1x1 conv at 28x28 over 112..144,
each a hand-built ONNX graph (Conv + Relu, random weights) in a session with the benchmark's
options (:func:`trainables.measure.latency_model._ort_session`: 2 intra-op threads, sequential,
ORT_ENABLE_ALL), the widths timed in turn for ``rounds`` rounds (each width's time the least of its
rounds' medians, so a burst of another process's load hits one round). It prints ms per channel
(time / width) at every width, then the mean over the multiples of 16 and over the multiples of 8
that are not multiples of 16. ``preferred`` is 16 when multiples of 16 are the cheaper per channel,
else 8; the goal: the measurement agrees with :func:`~trainables.measure.latency_model.preferred_multiple`.

    python bench/latency_multiples.py [--smoke]

``--smoke``: widths 48, 56, 64 of the 3x3 conv only, at 14x14, one round of few runs; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from _common import add_smoke_flag, finish  # noqa: E402

from trainables.measure import latency_model as lm  # noqa: E402

THREADS = 2


def session(width: int, kernel: int, hw: int):
    layer = lm._Layer("probe", "conv", width, width, (kernel, kernel), (1, 1), (kernel // 2,) * 4, (1, 1), 1, (hw, hw))
    model = lm._probe_onnx(layer, width, width, 1, 1, half=False, dynamic=False)
    sess = lm._ort_session(model.SerializeToString(), THREADS)
    (spec,) = sess.get_inputs()
    feed = {spec.name: np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)}
    return lambda: sess.run(None, feed)


def median_ms(call, runs: int) -> float:
    import time

    for _ in range(3):
        call()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        call()
        times.append(time.perf_counter_ns() - t0)
    return float(np.median(times)) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:
        sweeps, rounds, runs = {"3x3 @14": (3, 14, [48, 56, 64])}, 1, 3
    else:
        sweeps = {"3x3 @56": (3, 56, list(range(48, 81, 4))), "1x1 @28": (1, 28, list(range(112, 145, 4)))}
        rounds, runs = 5, 60
    table: list[tuple[str, str]] = []
    figures: dict[str, float] = {}
    per16, per8 = [], []
    for label, (kernel, hw, widths) in sweeps.items():
        calls = {w: session(w, kernel, hw) for w in widths}
        best = {w: float("inf") for w in widths}
        for _ in range(rounds):
            for w, call in calls.items():
                best[w] = min(best[w], median_ms(call, runs))
        cheapest = min(best[w] / w for w in widths)
        for w in widths:
            per_channel = best[w] / w / cheapest
            note = "x16" if w % 16 == 0 else "x8" if w % 8 == 0 else ""
            table.append((f"{label} width {w}", f"{best[w]:.4f} ms, per channel {per_channel:.3f}x the cheapest {note}"))
            (per16 if w % 16 == 0 else per8 if w % 8 == 0 else []).append(per_channel)
            figures[f"{label.replace(' ', '').replace('@', '_at')}.w{w}.ms"] = round(best[w], 5)
    mean16, mean8 = float(np.mean(per16)), float(np.mean(per8)) if per8 else float("nan")
    preferred = 16 if not per8 or mean16 <= mean8 else 8
    rule = lm.preferred_multiple("onnxruntime")
    table.append(("per channel, multiples of 16", f"{mean16:.3f}x the cheapest (mean)"))
    table.append(("per channel, other multiples of 8", f"{mean8:.3f}x the cheapest (mean)"))
    table.append(("preferred (measured / rule)", f"{preferred} / {rule} (CPU flags: "
                  f"{'avx512f' if 'avx512f' in lm._cpu_flags() else 'avx2' if 'avx2' in lm._cpu_flags() else 'neither'})"))
    figures.update(preferred=preferred, rule=rule, per_channel_16=round(mean16, 4), per_channel_8=round(mean8, 4))
    finish(table, figures, "the measured preferred multiple equals preferred_multiple('onnxruntime')",
           preferred == rule, smoke=args.smoke)


if __name__ == "__main__":
    main()
