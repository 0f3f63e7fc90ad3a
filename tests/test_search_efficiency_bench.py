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


def test_the_stoppable_seconds_are_the_stages_after_a_trials_first_telling_boundary() -> None:
    """The ceiling of what early stopping can save: a trial can be told from the others after its
    first compressing stage, where its next stage is computed in the search and not its last."""
    half, most = (tiny_plan("PA", s1=None, s2=s).model_dump(mode="json") for s in (0.5, 0.7))
    shared = tiny_plan("PA", s1=None, s2=0.5, quantize="QR").model_dump(mode="json")
    stage = {"seconds.D": 10.0, "seconds.T": 20.0, "seconds.P2": 30.0, "seconds.B": 5.0}
    frame = pd.DataFrame([
        {"trial_id": "a", "optuna_trial": 0, "time_total_s": 66.0, **stage},
        # D and T were a's: cache hits (0.5 s), charged as such
        {"trial_id": "b", "optuna_trial": 1, "time_total_s": 36.0, **stage, "seconds.D": 0.5, "seconds.T": 0.5,
         "compute.D": 10.0, "compute.T": 20.0},
        # a's D|T|P2 again, then sharing and retraining (slot Q): told apart after P2, where Q is computed
        {"trial_id": "c", "optuna_trial": 2, "time_total_s": 30.0, "seconds.D": 0.5, "seconds.T": 0.5,
         "seconds.P2": 0.5, "seconds.Q": 20.0, "seconds.B": 5.0}])
    plans = {"a": half, "b": most, "c": shared}
    assert bench.charged(frame, plans).tolist() == [66.0, 36.0, 30.0]
    # a and b end in P2 then B: no telling boundary leaves two stages; c can be cut after P2
    assert bench.stoppable(frame, plans).to_dict() == {"a": 0.0, "b": 0.0, "c": 25.0}
