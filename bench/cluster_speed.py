"""Weight-sharing clustering speed: our exact 1-D k-means vs sklearn KMeans, side by side.

Workload: one ResNet-50 layer4 conv's worth of weights (512*512*3*3 = 2,359,296 float32 values,
normal(0, 0.02), fixed seed) shared into 256 centroids (8 bits, the paper's maximum). Contenders on
the same data: ``cluster(..., "kmeans")``, ``cluster(..., "equal")`` (the paper's rule, for
information) and ``sklearn.cluster.KMeans(n_clusters=256, n_init=1, random_state=0)`` on the
values reshaped (-1, 1), no subsampling. Goal: our kmeans at least 20x faster than sklearn with an
SSE at most 1.01x sklearn's.

    python bench/cluster_speed.py [--smoke]

``--smoke``: the same three contenders on 64*64*3*3 = 36,864 values (a layer1 conv's worth); no
Ray, no workers, a few seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import add_smoke_flag, finish  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from trainables.compress.clustering import cluster  # noqa: E402

SIZE, K, SEED = 512 * 512 * 3 * 3, 256, 0
SMOKE_SIZE = 64 * 64 * 3 * 3


def sse(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared errors of the shared values, in float64."""
    return float(np.sum((values.astype(np.float64) - np.asarray(centroids, dtype=np.float64)[labels]) ** 2))


def timed(fn: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray, np.ndarray]:
    start = time.perf_counter()
    centroids, labels = fn()
    return time.perf_counter() - start, centroids, labels


def sklearn_kmeans(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    model = KMeans(n_clusters=K, n_init=1, random_state=0).fit(values.reshape(-1, 1))
    return model.cluster_centers_.ravel(), model.labels_


def main() -> None:
    parser = argparse.ArgumentParser()
    add_smoke_flag(parser)
    args = parser.parse_args()
    size = SMOKE_SIZE if args.smoke else SIZE
    values = np.random.default_rng(SEED).normal(0.0, 0.02, size).astype(np.float32)
    cluster(values[:4096], K)  # warm up numpy's allocator and code paths
    results = {
        "kmeans (ours)": timed(lambda: cluster(values, K, "kmeans")),
        "equal (ours, paper)": timed(lambda: cluster(values, K, "equal")),
        "sklearn KMeans n_init=1": timed(lambda: sklearn_kmeans(values)),
    }
    figures = {name: (seconds, sse(values, c, lab)) for name, (seconds, c, lab) in results.items()}
    ours_s, ours_sse = figures["kmeans (ours)"]
    equal_s, equal_sse = figures["equal (ours, paper)"]
    sk_s, sk_sse = figures["sklearn KMeans n_init=1"]
    speedup, sse_ratio = sk_s / ours_s, ours_sse / sk_sse
    table = [("workload", f"{size:,} float32 ~ normal(0, 0.02), seed {SEED}, k = {K}")]
    table += [(name, f"{seconds:8.3f} s   SSE {error:.6g}") for name, (seconds, error) in figures.items()]
    table += [("speedup sklearn / ours", f"{speedup:.1f}x"), ("SSE ours / sklearn", f"{sse_ratio:.4f}"),
              ("SSE equal / sklearn", f"{equal_sse / sk_sse:.2f}")]
    finish(
        table,
        {"n": size, "k": K, "kmeans_s": round(ours_s, 4), "equal_s": round(equal_s, 4), "sklearn_s": round(sk_s, 3),
         "kmeans_sse": ours_sse, "equal_sse": equal_sse, "sklearn_sse": sk_sse,
         "speedup": round(speedup, 2), "sse_ratio": round(sse_ratio, 5)},
        "kmeans at least 20x faster than sklearn KMeans(n_init=1) with SSE at most 1.01x sklearn's",
        speedup >= 20 and sse_ratio <= 1.01, smoke=args.smoke,
    )


if __name__ == "__main__":
    main()
