"""A plan's steps own their identity: label, slot, stage, caching and Ray bundles (no training)."""

from __future__ import annotations

import pytest

from tests.conftest import SOURCE, TARGET
from trainables import BenchmarkConfig, DenseConfig, TransferConfig, make_plan
from trainables.pipeline.cache import stage_key
from trainables.pipeline.plan import (
    PruneBudget,
    ORDER_SPARSITIES,
    ORDERS,
    BenchmarkStep,
    EPruneStep,
    Plan,
    numbered,
)


def plan(order: str = "PBA", *, quantize: str = "none", prune: dict | None = None, **sparsities) -> Plan:
    return make_plan(order=order, dense=DenseConfig(model="small_resnet", epochs=1), transfer=TransferConfig(epochs=1),
                     prune=PruneBudget.model_validate(prune or {}), benchmark=BenchmarkConfig(), source=SOURCE, target=TARGET,
                     quantize=quantize, **sparsities)


@pytest.mark.parametrize("kwargs,pipeline,slots", [
    ({"order": "none"}, "D|T|B", ["D", "T", "B"]),
    ({"s1": [0.4, 0.6], "s2": 0.8, "quantize": "QR"}, "D|40|60|T|80|Q|R|B", ["D", "P1", "P1.2", "T", "P2", "Q", "B"]),
    ({"order": "PA", "s2": [0.5, 0.7], "quantize": "Q", "prune": {"method": "epruning"}},
     "D|T|E50|E70|Q|B", ["D", "T", "P2", "P2.2", "Q", "B"]),
    ({"order": "PB", "s1": 0.5, "prune": {"method": "epruning", "epruning": {"constrain": False}}},
     "D|E|T|B", ["D", "P1", "T", "B"]),
])
def test_each_step_names_its_label_and_slot_as_its_stage_does(kwargs, pipeline, slots) -> None:
    p = plan(**kwargs)
    assert p.pipeline == pipeline
    assert p.slots() == slots and [p.slot(i) for i in range(len(p.steps))] == slots
    assert [step.label for step in p.steps] == [stage.label for stage in p.stages()]
    assert [step.slot for step in p.steps] == [stage.slot for stage in p.stages()]
    assert [step.cached for step in p.steps] == [not isinstance(step, BenchmarkStep) for step in p.steps]


def test_only_an_actor_pool_reserves_bundles_and_the_widest_pool_decides() -> None:
    pool = {"evaluator": "actors", "actors": 3, "actor_cpus": 2.0, "actor_gpus": 0.5}
    actors = plan(order="PA", s2=0.5, prune={"method": "epruning", "epruning": pool})
    assert actors.bundles() == [{"CPU": 2.0, "GPU": 0.5}] * 3
    assert plan(order="PA", s2=0.5, prune={"method": "epruning"}).bundles() == []
    assert plan(order="PA", s2=0.5).bundles() == []
    wider = actors.model_copy(update={"steps": [*actors.steps[:-1], actors.steps[2].model_copy(
        update={"config": actors.steps[2].config.model_copy(update={"actors": 4, "actor_cpus": 1.0})}), actors.benchmark]})
    assert wider.bundles() == [{"CPU": 2.0, "GPU": 0.5}] * 3, "6 CPUs in 3 actors beat 4 in 4"


def test_an_epruning_step_holds_only_the_schedule_fields_it_reads() -> None:
    step = plan(order="PA", s2=0.5, prune={"method": "epruning", "granularity": "channel", "skip_first": False}).steps[2]
    assert isinstance(step, EPruneStep)
    assert set(step.schedule.model_dump()) == {"epochs", "recover_epochs", "batch_size", "optim", "augment", "residual",
                                               "distill"}
    assert not plan(order="PA", s2=0.5, prune={"method": "epruning", "residual": False}).steps[2].schedule.residual
    other = plan(order="PA", s2=0.5, prune={"method": "epruning", "frequency": 3}).steps[2]
    assert stage_key(step.model_dump(mode="json"), None, {}, 0) == stage_key(other.model_dump(mode="json"), None, {}, 0)


def test_the_order_table_names_the_sparsities_each_order_needs() -> None:
    assert ORDERS == tuple(ORDER_SPARSITIES) == ("none", "PB", "PA", "PBA", "P")
    for order, needs in ORDER_SPARSITIES.items():
        build = plan if order != "P" else target_plan
        for missing in needs:
            given = {name: 0.3 if name == "s1" else 0.6 for name in needs if name != missing}
            with pytest.raises(ValueError, match=f"order {order} needs {missing}"):
                build(order, **given)


def target_plan(order: str = "P", *, quantize: str = "none", prune: dict | None = None, **sparsities) -> Plan:
    """A plan of a model that is the target's own (no transfer)."""
    return make_plan(order=order, dense=DenseConfig(model="small_resnet", epochs=1, domain="target"), transfer=None,
                     prune=PruneBudget.model_validate(prune or {}), benchmark=BenchmarkConfig(), target=TARGET,
                     quantize=quantize, **sparsities)


@pytest.mark.parametrize("kwargs,pipeline,slots", [
    ({"order": "none"}, "D|B", ["D", "B"]),
    ({"s2": 0.5}, "D|50|B", ["D", "P2", "B"]),
    ({"s2": [0.5, 0.7], "quantize": "QRI8"}, "D|50|70|Q|R|I8|B", ["D", "P2", "P2.2", "Q", "B"]),
    ({"s2": 0.5, "quantize": "QR", "prune": {"method": "epruning"}}, "D|E50|Q|R|B", ["D", "P2", "Q", "B"]),
])
def test_a_model_of_the_target_is_compressed_without_transfer(kwargs, pipeline, slots) -> None:
    made = target_plan(**kwargs)
    assert made.pipeline == pipeline and made.slots() == slots
    assert made.source is None and made.architecture.domain == "target"
    assert all(made.domain_after(done) == "target" for done in range(len(made.steps) + 1))
    for step in made.steps[1:-1]:
        assert getattr(step, "domain", "target") == "target"  # every pruning stage prunes on the target


def test_orders_and_the_transfer_go_together() -> None:
    with pytest.raises(ValueError, match="order PA needs a transfer; this plan's orders are none, P"):
        target_plan("PA", s2=0.5)
    with pytest.raises(ValueError, match="order P runs without transfer"):
        plan("P", s2=0.5)
    with pytest.raises(ValueError, match="a plan without transfer needs a dense model of the target"):
        make_plan(order="none", dense=DenseConfig(model="small_resnet", epochs=1), transfer=None,
                  benchmark=BenchmarkConfig(), target=TARGET)
    assert plan("PB", s1=0.5).domain_after(1) == "source" and plan("PB", s1=0.5).domain_after(3) == "target"


def test_a_source_model_plan_dumps_as_before_the_dense_domain_existed() -> None:
    """The dense step's JSON (part of every cache key) has no ``domain`` unless it is the target."""
    assert "domain" not in plan("none").steps[0].model_dump(mode="json")["config"]
    assert target_plan("none").steps[0].model_dump(mode="json")["config"]["domain"] == "target"


def test_numbered_counts_repeats_from_two() -> None:
    assert numbered(["80", "T", "80", "80"]) == ["80", "T", "80.2", "80.3"]
