"""Allocation under a latency budget (stages/allocation.counts_for_latency, latency_counts) and the
budget's check-and-correct loop (stages/latency_budget.LatencyBudget), on predictors written here."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from trainables.stages.allocation import counts_for_latency, kept_counts, latency_counts
from trainables.stages.latency_budget import LatencyBudget, LatencyTarget, is_latency_target, keep_masks


def _alive(**sizes: int) -> dict[str, torch.Tensor]:
    return {name: torch.ones(size, dtype=torch.bool) for name, size in sizes.items()}


def _linear(cost: dict[str, float], sizes: dict[str, int], fixed: float = 0.0):
    """A network whose group g costs cost[g] ms at full width, proportionally to its kept units."""
    return lambda kept: fixed + sum(c * kept.get(g, sizes[g]) / sizes[g] for g, c in cost.items())


def _normalised_kept(scores, alive, counts) -> float:
    masks = keep_masks(alive, scores, counts)
    return sum(float((scores[g] / scores[g].mean())[masks[g]].sum()) for g in scores)


def test_latency_counts_meet_the_target_and_cut_the_costly_group_first():
    sizes = {"early": 64, "late": 256}
    alive = _alive(**sizes)
    scores = {g: torch.linspace(1.0, 2.0, n) for g, n in sizes.items()}
    predict = _linear({"early": 6.0, "late": 2.0}, sizes)  # an early unit costs 12x a late one
    counts = latency_counts(alive, scores, predict, 4.0, floor=0.1, round_to=8)
    assert predict(counts) <= 4.0
    assert counts["early"] < 64 and counts["late"] == 256  # the late units are cheap: none goes
    assert all(c % 8 == 0 for c in counts.values())


def test_latency_keeps_more_importance_than_uniform_at_the_same_prediction():
    sizes = {"a": 64, "b": 128, "c": 256, "d": 512}
    alive = _alive(**sizes)
    generator = torch.Generator().manual_seed(0)
    scores = {g: torch.rand(n, generator=generator) + 0.1 for g, n in sizes.items()}
    predict = _linear({"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}, sizes, fixed=0.5)
    for target in (3.0, 5.0, 7.0):
        latency = counts_for_latency(alive, scores, predict, target, allocation="latency", round_to=8)
        uniform = counts_for_latency(alive, scores, predict, target, allocation="uniform", round_to=8)
        assert predict(latency) <= target and predict(uniform) <= target
        assert _normalised_kept(scores, alive, latency) > _normalised_kept(scores, alive, uniform)


def test_uniform_under_a_latency_is_the_least_share_that_meets_it():
    sizes = {"a": 100, "b": 100}
    alive = _alive(**sizes)
    scores = {g: torch.ones(n) for g, n in sizes.items()}
    predict = _linear({"a": 5.0, "b": 5.0}, sizes)
    counts = counts_for_latency(alive, scores, predict, 6.0, allocation="uniform")
    assert counts == {"a": 60, "b": 60}  # s = 0.4 exactly meets 6 ms; s = 0.39 would not
    assert counts == kept_counts(alive, scores, 0.4)
    assert counts_for_latency(alive, scores, predict, 11.0, allocation="uniform") == {"a": 100, "b": 100}


def test_latency_counts_stop_at_the_floor_when_the_target_is_out_of_reach():
    sizes = {"a": 64, "b": 32}
    counts = latency_counts(_alive(**sizes), {g: torch.rand(n) for g, n in sizes.items()},
                            _linear({"a": 1.0, "b": 1.0}, sizes, fixed=5.0), 1.0, floor=0.25, round_to=8)
    assert counts == {"a": 16, "b": 8}


def test_latency_counts_never_exceed_the_alive_units():
    alive = {"a": torch.tensor([True] * 40 + [False] * 24)}
    counts = latency_counts(alive, {"a": torch.rand(64)}, _linear({"a": 1.0}, {"a": 64}), 0.3, round_to=8)
    assert 1 <= counts["a"] <= 40 and counts["a"] % 8 == 0


def test_a_latency_allocation_is_refused_for_a_sparsity():
    with pytest.raises(ValueError, match="latency target"):
        kept_counts(_alive(a=8), {"a": torch.rand(8)}, 0.5, allocation="latency")


@dataclass
class _Model:
    """A latency model's surface as LatencyBudget reads it."""

    dense_ms: float
    sizes: dict[str, int]
    multiple: int = 8
    build_seconds: float = 1.5
    cached: bool = False

    def predict(self, kept):
        return self.dense_ms * sum(kept.get(g, n) for g, n in self.sizes.items()) / sum(self.sizes.values())


def test_the_budget_corrects_a_biased_model_by_the_engine_check():
    sizes = {"a": 1024, "b": 1024}  # fine steps: 16 of 2,048 units per step of 8 in each group
    model = _Model(dense_ms=10.0, sizes=sizes)
    checks = []

    def engine(keep):  # the engine is 30% slower than the model predicts, plus 0.5 ms of its own
        kept = {g: int(m.sum()) for g, m in keep.items()}
        checks.append(kept)
        return 1.3 * model.predict(kept) + 0.5, 10.0  # (pruned, dense) measured together

    budget = LatencyBudget(target=LatencyTarget(latency_ms=5.0), model=model, check=engine)
    alive, scores = _alive(**sizes), {g: torch.rand(n) for g, n in sizes.items()}
    counts = budget.allocate(alive, scores, allocation="uniform", floor=0.1, round_to=1)
    record = budget.metrics()
    assert record["latency_target_ms"] == 5.0
    assert abs(record["latency_checked_ms"] - 5.0) <= 0.05 * 5.0  # the engine's figure, within the tolerance
    assert record["latency_checked_ms"] == pytest.approx(engine(keep_masks(alive, scores, counts))[0])
    assert 1.3 * model.predict(checks[0]) + 0.5 > 5.0 * 1.05  # the first allocation missed: it was corrected
    assert record["latency_predicted_ms"] == pytest.approx(model.predict(counts))
    assert 1 < record["latency_checks"] <= budget.rounds and record["latency_model_seconds"] == 1.5
    assert all(c % 8 == 0 for c in counts.values())  # round_to 1 takes the engine's multiple


def test_a_share_target_is_judged_by_the_share_measured_beside_the_dense_network():
    sizes = {"a": 1024}
    model = _Model(dense_ms=10.0, sizes=sizes)  # an exact model, measured on a machine since slowed 2x

    def slow_engine(keep):
        return 2 * model.predict({g: int(m.sum()) for g, m in keep.items()}), 2 * model.dense_ms

    budget = LatencyBudget(target=LatencyTarget(latency=0.4), model=model, check=slow_engine)
    counts = budget.allocate(_alive(**sizes), {"a": torch.rand(1024)}, allocation="latency", floor=0.1, round_to=8)
    assert budget.metrics()["latency_checks"] == 1, "the drift is no miss"
    assert budget.metrics()["latency_checked_ms"] == pytest.approx(model.predict(counts))
    ms_target = LatencyBudget(target=LatencyTarget(latency_ms=4.0), model=model, check=slow_engine)
    ms_target.allocate(_alive(**sizes), {"a": torch.rand(1024)}, allocation="latency", floor=0.1, round_to=8)
    assert ms_target.metrics()["latency_checks"] > 1, "milliseconds are milliseconds: the slow engine misses"


def test_the_budget_keeps_the_closest_check_when_none_is_within_tolerance():
    model = _Model(dense_ms=10.0, sizes={"a": 16})
    budget = LatencyBudget(target=LatencyTarget(latency_ms=3.0), model=model, check=lambda keep: (9.0, 10.0), rounds=2)
    budget.allocate(_alive(a=16), {"a": torch.rand(16)}, allocation="latency", floor=0.1, round_to=8)
    assert budget.metrics()["latency_checks"] == 2 and budget.metrics()["latency_checked_ms"] == 9.0


def test_without_a_check_the_prediction_stands():
    model = _Model(dense_ms=8.0, sizes={"a": 64})
    budget = LatencyBudget(target=LatencyTarget(latency=0.5), model=model)
    counts = budget.allocate(_alive(a=64), {"a": torch.rand(64)}, allocation="latency", floor=0.1, round_to=8)
    assert counts == {"a": 32} and math.isnan(budget.metrics()["latency_checked_ms"])


def test_keep_masks_keep_the_highest_scored_alive_units():
    alive = {"a": torch.tensor([True, True, False, True])}
    masks = keep_masks(alive, {"a": torch.tensor([0.1, 0.5, 9.0, 0.3])}, {"a": 2})
    assert masks["a"].tolist() == [False, True, False, True]


def test_latency_targets():
    assert LatencyTarget(latency=0.3).label == "L30" and LatencyTarget(latency_ms=2.5).label == "L2.5ms"
    assert LatencyTarget(latency_ms=4.0).ms(dense_ms=100.0) == 4.0
    assert is_latency_target({"latency": 0.4}) and not is_latency_target(0.4) and not is_latency_target([0.4])
    for bad in ({}, {"latency": 0.4, "latency_ms": 2.0}, {"latency": 1.2}, {"latency_ms": 0}):
        with pytest.raises(ValueError):
            LatencyTarget(**bad)



@dataclass
class _Skewed(_Model):
    """``heavy`` costs 9x any other group at full width; each group's time is linear in its kept share."""

    heavy: str = ""

    def predict(self, kept):
        weight = {g: 9.0 if g == self.heavy else 1.0 for g in self.sizes}
        return self.dense_ms * sum(w * kept.get(g, self.sizes[g]) / self.sizes[g] for g, w in weight.items()) / sum(
            weight.values())


def test_epruning_holds_the_uniform_allocation_under_a_latency_target():
    from trainables.compress.units import unit_groups
    from trainables.models import SmallResNet
    from trainables.stages.epruning import _latency_counts

    model = SmallResNet(num_classes=5, widths=(32, 64, 128))
    groups = unit_groups(model)
    skewed = _Skewed(dense_ms=10.0, sizes={g.name: g.size for g in groups}, multiple=1, heavy=groups[-1].name)
    knapsack = LatencyBudget(target=LatencyTarget(latency=0.5), model=skewed).allocate(
        {g.name: torch.ones(g.size, dtype=torch.bool) for g in groups}, {g.name: torch.rand(g.size) for g in groups},
        allocation="latency", floor=0.0, round_to=1)
    spread = [knapsack[g.name] / g.size for g in groups]
    assert max(spread) - min(spread) > 0.3, f"the knapsack's shares differ from group to group: {spread}"
    counts, record = _latency_counts(model, groups, LatencyBudget(target=LatencyTarget(latency=0.5), model=skewed))
    shares = [k / g.size for k, g in zip(counts, groups)]
    assert record["latency_predicted_ms"] <= 5.0
    assert max(shares) - min(shares) < 0.05, f"one share of every group, not the knapsack's cut: {shares}"
