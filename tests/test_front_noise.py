"""Latency noise cannot decide the front, and the normalised hypervolume (front.json, issue 18).

The rule: two latencies within their combined spread (the sum of their spreads: each the
interquartile range over the timed runs, ``latency_iqr_ms``, but at least 2% of the median) are
equal to the front; a trial whose only advantage over
another is such a latency, while it is worse in accuracy or bytes, is dominated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search.results.front import hypervolume, normalized_hypervolume, pareto_front
from search.results.summary import front_summary, spreads

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"status": "ok", "pipeline": "D|T|B", "order": "none", "sparsity": 0.0}
    return pd.DataFrame([{**base, "trial_id": f"t{i}", **r} for i, r in enumerate(rows)])


def test_a_latency_lower_only_by_noise_does_not_make_the_front() -> None:
    # t1 is worse in accuracy, same bytes, and faster by 0.06 ms: less than the combined spread 0.08
    trials = frame([{"accuracy": 0.90, "size_bytes": 1000, "latency_ms": 0.29, "latency_iqr_ms": 0.05},
                    {"accuracy": 0.85, "size_bytes": 1000, "latency_ms": 0.23, "latency_iqr_ms": 0.03}])
    assert [t["trial_id"] for t in front_summary(trials, NAMES, DIRECTIONS)["trials"]] == ["t0"]
    # the same latencies measured without noise: the faster trial is on the front again
    exact = trials.assign(latency_iqr_ms=0.0)
    assert [t["trial_id"] for t in front_summary(exact, NAMES, DIRECTIONS)["trials"]] == ["t0", "t1"]
    # a difference beyond the combined spread still counts
    sharp = trials.assign(latency_iqr_ms=[0.02, 0.01])
    assert [t["trial_id"] for t in front_summary(sharp, NAMES, DIRECTIONS)["trials"]] == ["t0", "t1"]


def test_noise_only_makes_values_equal_it_never_removes_a_real_tradeoff() -> None:
    # t1 is smaller in bytes (an exact objective): noise in latency does not take it off the front
    trials = frame([{"accuracy": 0.90, "size_bytes": 1000, "latency_ms": 0.29, "latency_iqr_ms": 0.05},
                    {"accuracy": 0.85, "size_bytes": 900, "latency_ms": 0.23, "latency_iqr_ms": 0.03}])
    assert len(front_summary(trials, NAMES, DIRECTIONS)["trials"]) == 2
    # two trials equal within noise in everything: neither dominates, both kept
    twins = frame([{"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.29, "latency_iqr_ms": 0.05},
                   {"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.26, "latency_iqr_ms": 0.05}])
    assert len(front_summary(twins, NAMES, DIRECTIONS)["trials"]) == 2


def test_a_latency_spread_is_at_least_its_repeatability() -> None:
    # the IQR of one session's runs can be tighter than what separate sessions differ by: 2% is the least
    trials = frame([{"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.060, "latency_iqr_ms": 0.0004},
                    {"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.050, "latency_iqr_ms": 0.0030}])
    assert spreads(trials, NAMES)[:, 2] == pytest.approx([0.0012, 0.0030])
    assert spreads(trials, NAMES)[:, :2].tolist() == [[0, 0], [0, 0]]  # accuracy and bytes stay exact
    # a 1.5% faster trial with worse accuracy is off the front; a 5% faster one is not
    close = frame([{"accuracy": 0.90, "size_bytes": 1000, "latency_ms": 0.0600, "latency_iqr_ms": 0.0001},
                   {"accuracy": 0.89, "size_bytes": 1000, "latency_ms": 0.0591, "latency_iqr_ms": 0.0001}])
    assert len(front_summary(close, NAMES, DIRECTIONS)["trials"]) == 1
    apart = close.assign(latency_ms=[0.0600, 0.0570])
    assert len(front_summary(apart, NAMES, DIRECTIONS)["trials"]) == 2


def test_a_run_without_the_spread_column_keeps_the_plain_front() -> None:
    trials = frame([{"accuracy": 0.90, "size_bytes": 1000, "latency_ms": 0.29},
                    {"accuracy": 0.85, "size_bytes": 1000, "latency_ms": 0.23}])
    assert spreads(trials, NAMES).tolist() == [[0, 0, 0], [0, 0, 0]]
    assert len(front_summary(trials, NAMES, DIRECTIONS)["trials"]) == 2
    # a NaN spread (not measured) is no noise either
    assert len(front_summary(trials.assign(latency_iqr_ms=math.nan), NAMES, DIRECTIONS)["trials"]) == 2


@pytest.mark.parametrize("seed", range(3))
def test_zero_spread_is_the_plain_definition(seed: int) -> None:
    points = np.random.default_rng(seed).integers(0, 6, size=(30, 3)).astype(float)
    assert pareto_front(points, DIRECTIONS, np.zeros_like(points)) == pareto_front(points, DIRECTIONS)


def test_pareto_front_refuses_a_spread_of_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        pareto_front([[1, 2]], ["min", "min"], spread=[[0, 0, 0]])
    with pytest.raises(ValueError, match=">= 0"):
        pareto_front([[1, 2]], ["min", "min"], spread=[[0, -1]])


def test_same_model_benchmarked_twice_is_one_latency_to_the_front(tmp_path: Path) -> None:
    """The issue's case from a real measurement: one ONNX model timed twice on ONNX Runtime gives two
    medians that differ by noise alone. The trial carrying the lower one, but worse accuracy, is off."""
    import torch

    from trainables.measure.backends import onnx_latency
    from trainables.measure.metrics import export_onnx
    from trainables.models import SmallResNet

    torch.manual_seed(0)
    path = export_onnx(SmallResNet(num_classes=5, widths=(8, 16, 16)).eval(), tmp_path / "m.onnx", (3, 32, 32))
    first, second = (onnx_latency(path, warmup=10, runs=200) for _ in range(2))
    assert first.iqr_ms > 0 and second.iqr_ms > 0
    slow, fast = sorted((first, second), key=lambda lat: lat.median_ms)[::-1]
    rows = [{"accuracy": 0.90, "size_bytes": 50_000, **slow.metrics()},
            {"accuracy": 0.89, "size_bytes": 50_000, **fast.metrics()}]  # its only advantage: the noise
    trials = frame(rows)
    noise = spreads(trials, NAMES)[:, 2]
    assert slow.median_ms - fast.median_ms <= noise.sum()  # noise, by the rule
    assert [t["trial_id"] for t in front_summary(trials, NAMES, DIRECTIONS)["trials"]] == ["t0"]
    if fast.median_ms < slow.median_ms:  # without the spread the noise would have decided
        no_noise = trials.drop(columns=["latency_iqr_ms"])
        assert len(front_summary(no_noise, NAMES, DIRECTIONS)["trials"]) == 2


def test_normalized_hypervolume_is_the_share_of_the_reference_box() -> None:
    # box between reference (0, 10) and ideal (1, 0) has volume 10; A (1, 5) dominates [0,1]x[5,10] = 5
    assert normalized_hypervolume([[1.0, 5.0]], ["max", "min"], [0, 10], [1, 0]) == pytest.approx(0.5)
    # the ideal point itself fills the box; nothing dominating the reference is 0
    assert normalized_hypervolume([[1.0, 0.0]], ["max", "min"], [0, 10], [1, 0]) == pytest.approx(1.0)
    assert normalized_hypervolume([[0.0, 12.0]], ["max", "min"], [0, 10], [1, 0]) == 0.0
    assert normalized_hypervolume([[1.0, 5.0]], ["max", "min"], [1, 10], [1, 0]) == 0.0  # flat box


def test_front_json_keeps_the_raw_hypervolume_and_adds_the_normalised_one() -> None:
    trials = frame([{"accuracy": 0.9, "size_bytes": 2000, "latency_ms": 2.0},
                    {"accuracy": 0.5, "size_bytes": 1000, "latency_ms": 1.0},
                    {"accuracy": 0.4, "size_bytes": 3000, "latency_ms": 3.0}])
    summary = front_summary(trials, NAMES, DIRECTIONS)
    reference = summary["reference"]
    assert reference == pytest.approx([0.0, 3300.0, 3.3])
    assert summary["ideal"] == [0.9, 1000.0, 1.0]
    raw = hypervolume([[0.9, 2000, 2.0], [0.5, 1000, 1.0]], DIRECTIONS, reference)
    assert summary["hypervolume"] == pytest.approx(raw)
    box = 0.9 * (3300 - 1000) * (3.3 - 1.0)
    assert summary["hypervolume_normalized"] == pytest.approx(raw / box)
    assert 0 < summary["hypervolume_normalized"] < 1
    assert summary["running"] == 0 and summary["trials_finished"] == 3
