"""``bench/search_efficiency.py``'s consensus latency: one model, one latency, in every arm of a seed."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from tests.test_pipeline import tiny_plan

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import search_efficiency as bench  # noqa: E402


def _arm(rows: list[tuple[str, str, float]], plans: dict) -> dict:
    frame = pd.DataFrame(rows, columns=["trial_id", "status", "latency_ms"])
    return {"frame": frame, "plans": plans}


def test_a_plan_run_by_several_arms_counts_at_the_median_of_its_measurements() -> None:
    half, most = (tiny_plan("PA", s1=None, s2=s).model_dump(mode="json") for s in (0.5, 0.7))
    arms = {"random": _arm([("r1", "ok", 1.0), ("r2", "ok", 5.0)], {"r1": half, "r2": most}),
            "tpe": _arm([("t1", "ok", 2.0), ("t2", "failed", math.nan)], {"t1": half, "t2": most}),
            "early_stop": _arm([("e1", "ok", 9.0)], {"e1": half}),
            "fidelity": _arm([("f1", "ok", 100.0)], {"f1": half})}
    bench.consensus_latency(arms)
    assert arms["random"]["frame"]["latency_ms"].tolist() == [2.0, 5.0]  # median of 1, 2 and 9; 5 alone
    assert arms["tpe"]["frame"]["latency_ms"].iloc[0] == 2.0 and math.isnan(arms["tpe"]["frame"]["latency_ms"].iloc[1])
    assert arms["early_stop"]["frame"]["latency_ms"].tolist() == [2.0]
    assert arms["fidelity"]["frame"]["latency_ms"].tolist() == [100.0], "low-fidelity models are other models"
    assert bench.plan_key(half) != bench.plan_key(most)
