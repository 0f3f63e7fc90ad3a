"""Pipelines on digits: the CPU pipeline from Python, the stage cache, and resuming mid-plan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SOURCE, TARGET
from trainables import (
    Benchmark,
    BenchmarkConfig,
    Context,
    Dense,
    DenseConfig,
    GradualConfig,
    GradualPrune,
    Transfer,
    TransferConfig,
    make_plan,
    run_plan,
    run_stages,
)
from trainables.compress.artifact import load_artifact
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import PruneBudget, PruneSide

FAST = BenchmarkConfig(warmup=1, runs=5)


@pytest.mark.slow  # end to end on digits: 20-26 s, off the 5-minute loop
def test_digits_pipeline_pretrain_transfer_prune_measure(tmp_path: Path) -> None:
    ctx = Context(source=SOURCE, target=TARGET, workdir=tmp_path)
    model, metrics = run_stages([
        Dense(DenseConfig(model="small_resnet", epochs=6, batch_size=32)),
        Transfer(TransferConfig(epochs=6, batch_size=32)),
        GradualPrune(GradualConfig(final=0.8, epochs=1, recover_epochs=1, frequency=4, batch_size=32,
                                   optim={"name": "adam", "lr": 5e-4}), domain="target"),
        Benchmark(FAST, nominal_sparsity=0.8),
    ], ctx)
    assert metrics["pipeline"] == "D|T|80|B"
    assert metrics["accuracy"] >= 0.9
    n = len(ctx.data("target").test)  # accuracy's binomial standard error on the test split
    assert metrics["accuracy_n"] == n and metrics["accuracy_se"] == pytest.approx(
        (metrics["accuracy"] * (1 - metrics["accuracy"]) / n) ** 0.5)
    assert metrics["real_sparsity"] > 0.75 and metrics["sparsity"] == 0.8
    assert metrics["size_bytes"] == os.path.getsize(tmp_path / "model.h5")
    assert metrics["latency_ms"] > 0 and (tmp_path / "model.onnx").is_file()
    state, _ = load_artifact(tmp_path / "model.h5")
    assert set(state) == set(model.state_dict())
    assert {"seconds.D", "seconds.T", "seconds.P2", "seconds.B"} <= set(metrics), "run_stages names slots, as run_plan"


def tiny_plan(order: str = "PBA", s1=0.4, s2=0.7, quantize: str = "none"):
    return make_plan(
        order=order, s1=s1, s2=s2, seed=0, source=SOURCE, target=TARGET, quantize=quantize,
        dense=DenseConfig(model="small_resnet", epochs=1, batch_size=64),
        transfer=TransferConfig(epochs=1, batch_size=64),
        prune=PruneBudget(epochs=1, recover_epochs=0, frequency=4, batch_size=64),
        benchmark=FAST,
    )


def test_cache_reuses_every_stage_but_the_benchmark(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    plan = tiny_plan()
    _, first = run_plan(plan, Context(SOURCE, TARGET, tmp_path / "a"), cache=cache)
    assert cache.hits == 0 and cache.misses == 4
    _, second = run_plan(plan, Context(SOURCE, TARGET, tmp_path / "b"), cache=cache)
    assert cache.hits == 4
    assert second["cached_stages"] == "D,P1,T,P2"
    assert second["size_bytes"] == first["size_bytes"] and second["accuracy"] == first["accuracy"]
    assert (tmp_path / "b" / "model.h5").read_bytes() == (tmp_path / "a" / "model.h5").read_bytes()
    for slot in ("D", "P1", "T", "P2"):  # a hit reports what the stage cost when it was computed
        assert 0 < first[f"compute.{slot}"] <= first[f"seconds.{slot}"], slot  # seconds adds the cache's write
        assert second[f"compute.{slot}"] == first[f"compute.{slot}"], slot
    assert 0 < second["compute.B"] <= second["seconds.B"], "B is not cached: computed each time"
    assert "B" not in second["cached_stages"].split(",")


def test_a_different_prefix_misses_and_a_shared_prefix_hits(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    run_plan(tiny_plan("PB"), Context(SOURCE, TARGET, tmp_path / "a"), cache=cache)  # D, P1(0.4), T
    hits = cache.hits
    run_plan(tiny_plan("PBA"), Context(SOURCE, TARGET, tmp_path / "b"), cache=cache)  # D, P1(0.4), T shared
    assert cache.hits - hits == 3


def test_resume_after_the_last_finished_stage_gives_the_same_result(tmp_path: Path) -> None:
    plan = tiny_plan()
    saved = {}

    def after(model, progress):
        if progress.index == 2:
            saved["state"] = {k: v.clone() for k, v in model.state_dict().items()}
            saved["progress"] = type(progress)(**{**progress.__dict__, "seconds": dict(progress.seconds)})

    _, full = run_plan(plan, Context(SOURCE, TARGET, tmp_path / "full"), after_stage=after)
    from trainables.models import rebuild

    ran = []
    resumed_ctx = Context(SOURCE, TARGET, tmp_path / "resumed", progress=lambda label, rec: ran.append(label))
    _, resumed = run_plan(plan, resumed_ctx, model=rebuild("small_resnet", saved["state"]), progress=saved["progress"])
    assert "D" not in ran and "40" not in ran and "T" in ran, "stages before the checkpoint are not rerun"
    assert resumed["size_bytes"] == full["size_bytes"]
    assert resumed["accuracy"] == pytest.approx(full["accuracy"])


def test_each_milestone_is_a_stage_cached_as_a_prefix(tmp_path: Path) -> None:
    """D|40|60|T|B: the 60 stage starts from 40 and reuses D|40 from a plan that stopped there."""
    cache = StageCache(tmp_path / "cache")
    run_plan(tiny_plan("PB", s1=0.4), Context(SOURCE, TARGET, tmp_path / "a"), cache=cache)  # D, P1(0.4), T
    plan = tiny_plan("PB", s1=[0.4, 0.6])
    assert plan.pipeline == "D|40|60|T|B"
    assert [plan.slot(i) for i in range(len(plan.steps))] == ["D", "P1", "P1.2", "T", "B"]
    assert (plan.steps[2].config.initial, plan.steps[2].config.final) == (0.4, 0.6)
    hits = cache.hits
    _, metrics = run_plan(plan, Context(SOURCE, TARGET, tmp_path / "b"), cache=cache)
    assert cache.hits - hits == 2 and metrics["cached_stages"] == "D,P1", "D and D|40 reused, 60 and T computed"
    assert {"seconds.P1", "seconds.P1.2"} <= set(metrics)
    assert metrics["real_sparsity"] > 0.5 and metrics["sparsity"] == 0.6


@pytest.mark.parametrize("s1,s2,message", [
    ([0.5, 0.3], 0.8, r"s1: milestones must increase strictly, got \[0.5, 0.3\]"),
    ([0.3, 0.5], [0.5, 0.8], "order PBA needs s2 > s1"),
    (0.3, [0.7, 1.0], r"s2: a sparsity must be a number in \[0, 1\), got 1.0"),
    ([], 0.8, "s1 needs at least one sparsity"),
])
def test_make_plan_rejects_bad_milestones(s1, s2, message) -> None:
    with pytest.raises(ValueError, match=message):
        tiny_plan("PBA", s1=s1, s2=s2)


def test_an_epruning_stage_gets_its_sides_augmentation() -> None:
    plan = make_plan(order="PBA", dense=DenseConfig(model="small_resnet", epochs=1), transfer=TransferConfig(epochs=1),
                     prune=PruneBudget(method="epruning", after=PruneSide(augment="shift_mirror")), benchmark=BenchmarkConfig(),
                     source=SOURCE, target=TARGET, s1=0.3, s2=0.5)
    before, after = plan.stages()[1], plan.stages()[3]
    assert [(s.label, s.schedule.augment) for s in (before, after)] == [("E30", "none"), ("E50", "shift_mirror")]
