"""The trial-result contract (trainables/pipeline/result.py): every branch of ``classify``, and the
readers that decide a trial's status with it agree (trials.csv's row, the searcher's outcome)."""

from __future__ import annotations

import math

import pytest

from search.results.rows import trial_row
from search.run.outcome import outcome
from tests.final_result import STAGE_COUNT, final
from trainables.pipeline.result import (BOUNDARY, FAILED, STAGE_INDEX, STAGES, classify, failed_result,
                                        final_result)

CASES = {
    "ok: the final result with every objective": (final(), None, "ok"),
    "stopped before its last stage": ({STAGE_INDEX: 2, STAGES: 5, BOUNDARY: "D|P1"}, None, "stopped"),
    "failed by its result's FAILED key": ({**final(), FAILED: "Diverged: loss is nan"}, None, "failed"),
    "failed by Tune's error": (final(), "RuntimeError: node died", "failed"),
    "failed by an error flag, partway": ({STAGE_INDEX: 2, STAGES: 5}, True, "failed"),
    "failed: an objective missing": ({k: v for k, v in final().items() if k != "top5"}, None, "failed"),
    "failed: an objective NaN": (final(latency_ms=math.nan), None, "failed"),
    "failed: an objective infinite": (final(size_bytes=math.inf), None, "failed"),
    "failed: an objective not a number": (final(accuracy="0.9"), None, "failed"),
    "failed: objectives without the stage keys": ({k: v for k, v in final().items() if k not in (STAGE_INDEX, STAGES)},
                                                  None, "failed"),
    "failed: nothing reported": (None, None, "failed"),
    "an empty error is no error": (final(), "", "ok"),
}


@pytest.mark.parametrize(("result", "error", "status"), CASES.values(), ids=CASES)
def test_classify(result, error, status) -> None:
    assert classify(result, error) == status


@pytest.mark.parametrize(("result", "error", "status"), CASES.values(), ids=CASES)
def test_trials_csv_and_the_searcher_say_what_classify_says(result, error, status) -> None:
    row = trial_row("t", {}, dict(result or {}), ("Tune's error" if error is True else error) or None)
    assert row["status"] == status
    assert (row["error"] == "") == (status != "failed")
    assert row["stopped_at"] == ("D|P1" if status == "stopped" else None)
    known = outcome(result, bool(error), ["accuracy", "size_bytes"], {})
    assert known.status == status
    assert known.values == ([0.5, 1000.0] if status == "ok" else None)


def test_the_trials_own_results_follow_the_contract() -> None:
    assert classify(final_result({**final(), "pipeline": "D|T|B", "bad": [1]}, STAGE_COUNT), None) == "ok"
    nan = final_result(final(accuracy=math.nan), STAGE_COUNT)
    assert classify(nan, None) == "failed" and nan[FAILED].startswith("objective(s) accuracy not finite")
    assert classify(failed_result("Diverged: loss is nan", 1, STAGE_COUNT), None) == "failed"
