"""Accuracy carries its error bar, and accuracy noise cannot decide the front (issue 25).

Each trial's accuracy is measured on the target's n test images, so it carries its binomial
standard error ``accuracy_se = sqrt(p (1 - p) / n)``; two accuracies are equal to the front when
they differ by at most 1.96 standard errors of their difference, ``1.96 * sqrt(se_a**2 + se_b**2)``
(the two-sided two-proportion test at 5%). Latency keeps its rule (the sum of the IQRs). A
``trials.csv`` from before ``accuracy_se`` keeps exact accuracies.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from search.results.files import read_trials, write_results
from search.results.report import front_table
from search.results.summary import front_summary, spreads
from search.run.progress import SearchProgress
from tests.final_result import final
from trainables.objectives import accuracy_error, wilson_interval

NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]
N = 600


def trials(rows: list[dict], n: int | None = N) -> pd.DataFrame:
    """ok trials of one run; each accuracy with its error on ``n`` test images (none when ``n`` is None)."""
    base = {"status": "ok", "pipeline": "D|T|B", "order": "none", "sparsity": 0.0, "latency_iqr_ms": 0.001}
    out = []
    for i, r in enumerate(rows):
        error = accuracy_error(r["accuracy"], n) if n else {}
        out.append({**base, "trial_id": f"t{i}", **error, **r})
    return pd.DataFrame(out)


def front_ids(frame: pd.DataFrame) -> list[str]:
    return [t["trial_id"] for t in front_summary(frame, NAMES, DIRECTIONS)["trials"]]


def test_the_standard_error_and_the_wilson_interval() -> None:
    assert accuracy_error(0.95, N) == {"accuracy_se": pytest.approx(0.008898, abs=1e-6), "accuracy_n": N}
    assert accuracy_error(1.0, 130)["accuracy_se"] == 0.0
    assert math.isnan(accuracy_error(0.5, 0)["accuracy_se"])
    low, high = wilson_interval(0.95, N)
    assert low < 0.95 < high and (low, high) == pytest.approx((0.9295, 0.9648), abs=1e-4)  # 570 of 600, by hand
    assert wilson_interval(1.0, 100) == pytest.approx((100 / (100 + 1.96 ** 2), 1.0))  # not empty at p = 1
    assert all(math.isnan(v) for v in wilson_interval(0.9, math.nan))


def test_half_a_point_more_accurate_but_slower_is_noise_five_points_is_not() -> None:
    """On 600 test images a trial 0.5 points more accurate than another, but slower and no smaller,
    is off the front (its edge is noise); 5 points more accurate, it is on it."""
    faster = {"accuracy": 0.900, "size_bytes": 1000, "latency_ms": 1.0}
    noise = trials([faster, {"accuracy": 0.905, "size_bytes": 1000, "latency_ms": 2.0}])
    assert front_ids(noise) == ["t0"]
    real = trials([faster, {"accuracy": 0.950, "size_bytes": 1000, "latency_ms": 2.0}])
    assert front_ids(real) == ["t0", "t1"]
    # the same half point measured exactly (or on far more images) is a real edge
    assert front_ids(trials(noise.to_dict("records"), n=None).drop(columns=["accuracy_se"])) == ["t0", "t1"]
    assert front_ids(trials([faster, {"accuracy": 0.905, "size_bytes": 1000, "latency_ms": 2.0}], n=10**7)) == ["t0", "t1"]


def test_the_rule_is_196_standard_errors_of_the_difference() -> None:
    se = accuracy_error(0.9, N)["accuracy_se"]
    tolerance = 1.96 * math.sqrt(2) * se  # two accuracies with (nearly) the same error
    for gap, on_front in ((tolerance * 0.9, ["t0"]), (tolerance * 1.1, ["t0", "t1"])):
        frame = trials([{"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 1.0},
                        {"accuracy": 0.9 + gap, "size_bytes": 1000, "latency_ms": 2.0}])
        frame["accuracy_se"] = se
        assert front_ids(frame) == on_front, gap
    # latency's rule is unchanged: the sum of the spreads, the IQRs (at least 2% of the median)
    latency = trials([{"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 1.00, "latency_iqr_ms": 0.03},
                      {"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 0.95, "latency_iqr_ms": 0.03}])
    assert front_ids(latency) == ["t0", "t1"]  # 0.05 ms apart, within 0.06: equal, so neither dominates
    assert spreads(latency, NAMES)[:, 2].tolist() == [0.03, 0.03]


def test_an_older_trials_csv_without_the_error_keeps_exact_accuracies(tmp_path: Path) -> None:
    rows = [{"accuracy": 0.900, "size_bytes": 1000, "latency_ms": 1.0},
            {"accuracy": 0.905, "size_bytes": 1000, "latency_ms": 2.0}]
    old = trials(rows, n=None)
    write_results(tmp_path, old.to_dict("records"), NAMES, DIRECTIONS, {t: {"steps": []} for t in old["trial_id"]})
    back = read_trials(tmp_path)
    assert "accuracy_se" not in back and front_ids(back) == ["t0", "t1"]
    table = front_table(back, front_summary(back, NAMES, DIRECTIONS))
    console = Console(width=300, record=True)
    console.print(table)
    assert "95% interval" in console.export_text()  # the column is there, "-" for each trial


def test_the_csv_carries_the_error_beside_accuracy_and_the_table_shows_the_interval(tmp_path: Path) -> None:
    frame = trials([{"accuracy": 0.900, "size_bytes": 1000, "latency_ms": 1.0},
                    {"accuracy": 0.950, "size_bytes": 1000, "latency_ms": 2.0}])
    write_results(tmp_path, frame.to_dict("records"), NAMES, DIRECTIONS, {t: {"steps": []} for t in frame["trial_id"]})
    back = read_trials(tmp_path)
    columns = list(back.columns)
    assert columns.index("accuracy_se") > columns.index("accuracy") and "accuracy_n" in columns
    console = Console(width=300, record=True)
    console.print(front_table(back, front_summary(back, NAMES, DIRECTIONS)))
    text = console.export_text()
    low, high = wilson_interval(0.95, N)
    assert f"{low:.3f}-{high:.3f}" in text and "1.96 standard errors" in text


def test_the_progress_lines_front_count_uses_the_same_rule() -> None:
    progress = SearchProgress(3, NAMES, DIRECTIONS)
    rows = [{"accuracy": 0.900, "size_bytes": 1000.0, "latency_ms": 1.0},
            {"accuracy": 0.905, "size_bytes": 1000.0, "latency_ms": 2.0},
            {"accuracy": 0.950, "size_bytes": 2000.0, "latency_ms": 3.0}]
    for i, row in enumerate(rows):
        progress.record(f"t{i}", final(**row, latency_iqr_ms=0.001, **accuracy_error(row["accuracy"], N)))
    assert progress.front_size() == len(front_ids(trials(rows))) == 2
    old = SearchProgress(3, NAMES, DIRECTIONS)  # results without accuracy_se: exact accuracies
    for i, row in enumerate(rows):
        old.record(f"t{i}", final(**row, latency_iqr_ms=0.001))
    assert old.front_size() == 3


def test_a_row_dominated_only_by_rows_off_the_front_stays_on_it() -> None:
    """Fashion-MNIST's search (5,000 test images): the dense model and the 30%-pruned one are equal in
    accuracy within their errors, so are the 30% and the 50%, but the dense model is more accurate
    than the 50% beyond theirs. The front is the 50% and the dense model, not the 50% alone."""
    from search.results.front import pareto_front

    accuracy, n = [0.9224, 0.9174, 0.9106], 5000
    se = [math.sqrt(p * (1 - p) / n) for p in accuracy]
    values = [[a, size, latency] for a, size, latency in zip(accuracy, [37_974_852, 18_802_522, 9_768_899], [6.86, 2.53, 0.40])]
    spread = [[e, 0.0, 0.0] for e in se]
    assert pareto_front(values, ["max", "min", "min"], spread, z=[1.96, None, None]) == [0, 2]
    # without the middle row nothing changes for the other two: the kernel keeps what a chain cannot reach
    assert pareto_front([values[0], values[2]], ["max", "min", "min"], [spread[0], spread[2]], z=[1.96, None, None]) == [0, 1]
    # without noise, dominance is transitive and the kernel is the plain front: all three trade off
    assert pareto_front(values, ["max", "min", "min"]) == [0, 1, 2]


def test_front_json_entries_carry_the_error_bar_they_were_judged_with() -> None:
    frame = trials([{"accuracy": 0.95, "size_bytes": 100, "latency_ms": 2.0}])
    entry = front_summary(frame, NAMES, DIRECTIONS)["trials"][0]
    assert entry["accuracy_se"] == pytest.approx(accuracy_error(0.95, N)["accuracy_se"]) and entry["accuracy_n"] == N
    old = trials([{"accuracy": 0.95, "size_bytes": 100, "latency_ms": 2.0}], n=None)
    assert "accuracy_se" not in front_summary(old, NAMES, DIRECTIONS)["trials"][0], "a run from before has none"
