"""Pruning stages to a latency target, on real digits, with a real latency model and ONNX Runtime checks."""

from __future__ import annotations

import copy
import json

import pytest

from trainables import Context, DataSpec, Dense, DenseConfig
from trainables.compress.surgery import alive_units
from trainables.compress.units import unit_groups
from trainables.pipeline.plan import Plan, PruneBudget, make_plan
from trainables.stages.benchmark import BenchmarkConfig
from trainables.stages.epruning import EPrune, EPruneSchedule, EPruningConfig
from trainables.stages.gradual import GradualConfig, GradualPrune
from trainables.stages.latency_budget import LatencyTarget
from trainables.train import OptimConfig

DIGITS = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32, max_per_class=40)
ENGINE = BenchmarkConfig(backend="onnxruntime", threads=1, warmup=2, runs=15, end_to_end=False)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A small ResNet trained briefly on digits 5-9."""
    ctx = Context(source=DIGITS, target=DIGITS, workdir=tmp_path_factory.mktemp("dense"))
    model, _ = Dense(DenseConfig(model="small_resnet", epochs=2, batch_size=32,
                                 optim=OptimConfig(name="adam", lr=0.001))).run(None, ctx)
    return model


def _gradual(share: float, **fields) -> GradualPrune:
    cfg = GradualConfig(latency=LatencyTarget(latency=share), benchmark=ENGINE, granularity="channel", epochs=1,
                        recover_epochs=0, batch_size=32, frequency=2, optim=OptimConfig(name="adam", lr=0.0005),
                        **fields)
    return GradualPrune(cfg, "target")


def _kept(model) -> dict[str, int]:
    return {name: int(keep.sum()) for name, keep in alive_units(model, unit_groups(model)).items()}


@pytest.mark.slow  # ~12 s with the dense fixture; the 5-minute loop keeps the allocation's and the plans' tests
def test_a_gradual_stage_prunes_to_the_counts_its_budget_allocated(dense, tmp_path):
    ctx = Context(source=DIGITS, target=DIGITS, workdir=tmp_path / "t1", seed=0)
    stage = _gradual(0.5, pace="agp", allocation="latency")
    assert stage.label == "L50" and stage.cfg.allocation == "latency"
    pruned, metrics = stage.run(copy.deepcopy(dense), ctx)
    for key in ("latency_target_ms", "latency_predicted_ms", "latency_checked_ms", "latency_dense_ms",
                "latency_model_seconds", "latency_model_cached", "latency_checks"):
        assert key in metrics, key
    assert metrics["latency_target_ms"] == pytest.approx(0.5 * metrics["latency_dense_ms"])
    assert metrics["latency_predicted_ms"] <= metrics["latency_target_ms"] * 1.5  # corrected by the checks, at most
    assert metrics["latency_model_cached"] == 0.0 and metrics["pruning_updates"] > 1  # the AGP ramp, several updates
    kept, full = _kept(pruned), {g.name: g.size for g in unit_groups(dense)}
    assert any(kept[g] < full[g] for g in kept), "units were removed"
    assert 0 < metrics["unit_sparsity"] < 1
    cached = list((tmp_path / "t1" / "latency").glob("*.json"))
    assert len(cached) == 1 and json.loads(cached[0].read_text())["dense_ms"] == pytest.approx(
        metrics["latency_dense_ms"])


@pytest.mark.slow  # ~7 s: a stage with its latency model and checks; the first test keeps one in the 5-minute loop
def test_the_second_stage_of_a_run_folder_loads_the_latency_model(dense, tmp_path):
    first = Context(source=DIGITS, target=DIGITS, workdir=tmp_path, seed=0)
    _, a = _gradual(0.6).run(copy.deepcopy(dense), first)
    _, b = _gradual(0.4).run(copy.deepcopy(dense), first)
    assert a["latency_model_cached"] == 0.0 and b["latency_model_cached"] == 1.0
    assert b["latency_model_seconds"] == a["latency_model_seconds"]  # the build time as recorded
    assert b["latency_dense_ms"] == a["latency_dense_ms"]
    assert b["latency_target_ms"] < a["latency_target_ms"]


@pytest.mark.slow  # ~7 s: a stage with its latency model and checks; the first test keeps one in the 5-minute loop
def test_uniform_and_latency_allocations_differ_in_shape(dense, tmp_path):
    ctx = Context(source=DIGITS, target=DIGITS, workdir=tmp_path, seed=0)
    assert _gradual(0.5).cfg.allocation == "uniform", "a latency target's default allocation"
    uniform, _ = _gradual(0.5).run(copy.deepcopy(dense), ctx)
    shares = {g.name: k / g.size for g in unit_groups(dense)
              for name, k in _kept(uniform).items() if name == g.name and k < g.size}
    assert shares and max(shares.values()) - min(shares.values()) < 0.3, "uniform: one share for every pruned group"


@pytest.mark.slow  # ~7 s: a stage with its latency model and checks; the first test keeps one in the 5-minute loop
def test_epruning_holds_every_group_at_its_allocated_count(dense, tmp_path):
    ctx = Context(source=DIGITS, target=DIGITS, workdir=tmp_path, seed=0)
    schedule = EPruneSchedule(epochs=1, recover_epochs=0, batch_size=32, optim=OptimConfig(name="adam", lr=0.0005))
    stage = EPrune(EPruningConfig(population=4), schedule, sparsity=None, latency=LatencyTarget(latency=0.5),
                   benchmark=ENGINE)
    assert stage.label == "EL50"
    pruned, metrics = stage.run(copy.deepcopy(dense), ctx)
    assert metrics["latency_target_ms"] == pytest.approx(0.5 * metrics["latency_dense_ms"])
    assert 0 < metrics["unit_sparsity"] < 1
    with pytest.raises(ValueError, match="exactly one of sparsity and latency"):
        EPrune(EPruningConfig(), schedule, sparsity=0.5, latency=LatencyTarget(latency=0.5), benchmark=ENGINE)


def test_latency_targets_need_unit_pruning_and_an_engine():
    with pytest.raises(ValueError, match="needs unit pruning"):
        GradualConfig(latency=LatencyTarget(latency=0.5), benchmark=ENGINE, granularity="unstructured")
    with pytest.raises(ValueError, match="needs benchmark"):
        GradualConfig(latency=LatencyTarget(latency=0.5), granularity="channel")
    with pytest.raises(ValueError, match="exactly one of final"):
        GradualConfig(final=0.5, latency=LatencyTarget(latency=0.5), benchmark=ENGINE, granularity="channel")
    with pytest.raises(ValueError, match="needs a latency target"):
        GradualConfig(final=0.5, granularity="channel", allocation="latency")


def _plan(s2, method="gradual", order="P", s1=None, **prune):
    return make_plan(order=order, dense=DenseConfig(model="small_resnet", domain="target"), transfer=None,
                     benchmark=ENGINE, prune=PruneBudget(granularity="channel", method=method, **prune),
                     target=DIGITS, s2=s2, s1=s1)


def test_plans_label_latency_targets_and_keep_sparsity_plans_as_they_were():
    assert _plan({"latency": 0.4}).pipeline == "D|L40|B"
    assert _plan({"latency_ms": 2.0}).pipeline == "D|L2ms|B"
    assert _plan({"latency": 0.4}, method="epruning").pipeline == "D|EL40|B"
    step = _plan({"latency": 0.4}).steps[1]
    assert step.config.benchmark == ENGINE and step.config.final is None and step.config.allocation == "uniform"
    data = _plan(0.5).model_dump(mode="json")["steps"][1]["config"]
    assert "latency" not in data and "benchmark" not in data and "allocation" not in data and data["final"] == 0.5
    for plan in (_plan({"latency": 0.4}), _plan({"latency_ms": 3.0}, method="epruning"),
                 _plan({"latency": 0.4}, allocation="uniform")):
        dumped = plan.model_dump(mode="json")
        assert Plan.model_validate(dumped).model_dump(mode="json") == dumped
    with pytest.raises(ValueError, match="s2: "):
        _plan({"latency": 1.5})
