"""The recovery recipe of unit pruning: allocation across unit groups, aligned widths, the pace."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from trainables.compress.importance.l1 import L1Importance
from trainables.models import build_model
from trainables.pipeline.plan import PruneBudget, PruneStep
from trainables.stages.allocation import aligned, kept_counts
from trainables.stages.gradual import GradualConfig, PruneSchedule, gradual_prune
from trainables.stages.pruners import Channel
from trainables.stages.schedule import oneshot_schedule


def all_alive(**sizes: int) -> dict[str, torch.Tensor]:
    return {name: torch.ones(size, dtype=torch.bool) for name, size in sizes.items()}


def test_uniform_keeps_every_group_at_the_same_share_whatever_the_scores() -> None:
    alive = all_alive(a=10, b=64, c=3)
    scores = {name: torch.rand(len(keep)) for name, keep in alive.items()}
    assert kept_counts(alive, scores, 0.5) == {"a": 5, "b": 32, "c": 1}  # c: round(1.5) = 2 of 3 pruned
    assert kept_counts(alive, scores, 0.9) == {"a": 1, "b": 6, "c": 1}, "each group keeps at least one unit"


def test_global_prunes_the_lowest_normalised_scores_across_groups() -> None:
    alive = all_alive(a=4, b=4)
    # b's scores are a's times 100: normalised by each group's mean they are the same, so the
    # ranking is decided by shape, not scale: a's two weak units and b's one weak unit go first
    scores = {"a": torch.tensor([1.0, 1.0, 10.0, 10.0]), "b": torch.tensor([100.0, 900.0, 1000.0, 1000.0])}
    kept = kept_counts(alive, scores, 3 / 8, allocation="global")
    assert kept == {"a": 2, "b": 3}
    scaled = kept_counts(alive, {"a": scores["a"] * 1e4, "b": scores["b"]}, 3 / 8, allocation="global")
    assert scaled == kept, "a group's scale does not decide its share"
    assert sum(kept.values()) == 8 - round(3 / 8 * 8)


def test_global_holds_each_groups_floor_and_counts_units_already_pruned() -> None:
    alive = all_alive(a=10, b=10)
    scores = {"a": torch.ones(10), "b": torch.linspace(0.01, 2.0, 10)}
    kept = kept_counts(alive, scores, 0.6, allocation="global", floor=0.3)
    assert kept["a"] == 3 and kept["b"] == 5, "b's weak units go first, down to a's floor (0.3 of 10 units)"
    assert sum(kept.values()) == 20 - 12
    alive["a"][:5] = False  # five of a's units already pruned (an earlier update): they count
    later = kept_counts(alive, scores, 0.5, allocation="global")
    assert later["a"] <= 5 and sum(later.values()) == 10


def test_kept_counts_never_exceed_the_units_alive() -> None:
    alive = all_alive(a=8)
    alive["a"][:6] = False
    for allocation in ("uniform", "global"):
        assert kept_counts(alive, {"a": torch.ones(8)}, 0.1, allocation=allocation) == {"a": 2}


def test_aligned_widths_are_multiples_of_round_to() -> None:
    assert [aligned(c, 64, 8) for c in (1, 4, 5, 12, 13, 60, 63, 64)] == [8, 8, 8, 16, 16, 64, 64, 64]
    assert aligned(3, 6, 8) == 3 and aligned(0, 6, 8) == 1, "a group smaller than round_to keeps its count"
    alive = all_alive(a=64, b=100)
    kept = kept_counts(alive, {"a": torch.rand(64), "b": torch.rand(100)}, 0.7, round_to=8)
    assert all(count % 8 == 0 for count in kept.values()) and kept == {"a": 16, "b": 32}
    with pytest.raises(ValueError, match="round_to must be >= 1 but got 0"):
        aligned(5, 10, 0)


def test_kept_counts_rejects_bad_arguments() -> None:
    alive = all_alive(a=4)
    with pytest.raises(ValueError, match="allocation must be one of uniform, global, latency but got 'random'"):
        kept_counts(alive, {"a": torch.ones(4)}, 0.5, allocation="random")
    with pytest.raises(ValueError, match="floor must be in"):
        kept_counts(alive, {"a": torch.ones(4)}, 0.5, allocation="global", floor=1.0)


def test_the_channel_pruner_allocates_globally_by_importance() -> None:
    torch.manual_seed(0)
    model = build_model("small_resnet", 4)
    uniform = Channel(model, GradualConfig(final=0.5, granularity="channel"))
    uniform.update(0.5, last=True)
    torch.manual_seed(0)
    model = build_model("small_resnet", 4)
    cfg = GradualConfig(final=0.5, granularity="channel", allocation="global", floor=0.1)
    pruner = Channel(model, cfg)
    pruner.update(0.5, last=True)
    shares = [float(pruner.pruned[g.name].float().mean()) for g in pruner.groups]
    units = sum(g.size for g in pruner.groups)
    assert sum(int(p.sum()) for p in pruner.pruned.values()) == round(0.5 * units)
    assert max(shares) - min(shares) > 0.1, "a global ranking gives groups different shares"
    assert all(int((~pruner.pruned[g.name]).sum()) >= math.ceil(0.1 * g.size) for g in pruner.groups)
    uniform_shares = [float(uniform.pruned[g.name].float().mean()) for g in uniform.groups]
    assert max(uniform_shares) - min(uniform_shares) < 0.1
    scores = {g.name: L1Importance()(model, g) for g in pruner.groups}
    for group in pruner.groups:  # within a group, the pruned units are its weakest ones
        gone, kept = scores[group.name][pruner.pruned[group.name]], scores[group.name][~pruner.pruned[group.name]]
        if len(gone) and len(kept):
            assert float(gone.max()) <= float(kept.min())


def test_oneshot_pace_cuts_the_final_structure_before_the_first_batch() -> None:
    assert oneshot_schedule(GradualConfig(final=0.7, initial=0.3, epochs=3), 5) == {0: 0.7}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 32, 32, generator=g), torch.randint(0, 4, (96,), generator=g)

    class Splits:
        train, val, test = TensorDataset(x, y), TensorDataset(x[:32], y[:32]), TensorDataset(x[:32], y[:32])

    cfg = GradualConfig(final=0.5, epochs=2, recover_epochs=0, batch_size=32, granularity="channel", pace="oneshot")
    _, metrics = gradual_prune(build_model("small_resnet", 4), Splits, cfg)
    assert metrics["pruning_updates"] == 1 and metrics["unit_sparsity"] == pytest.approx(0.5, abs=0.02)


def test_the_recipe_is_dumped_only_when_set_so_old_cache_keys_hold() -> None:
    plain = PruneStep(domain="target", config=GradualConfig(final=0.5)).model_dump(mode="json")
    assert not {"pace", "importance", "allocation", "floor", "round_to"} & set(plain["config"])
    set_ = PruneStep(domain="target", config=GradualConfig(final=0.5, allocation="global", pace="oneshot", round_to=8))
    dumped = set_.model_dump(mode="json")["config"]
    assert (dumped["allocation"], dumped["pace"], dumped["round_to"]) == ("global", "oneshot", 8)
    assert PruneStep.model_validate(set_.model_dump(mode="json")) == set_


def test_an_unknown_importance_is_named() -> None:
    with pytest.raises(ValueError, match="importance must be one of .*l1.* but got 'magic'"):
        PruneSchedule(importance="magic")


FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


@pytest.mark.skipif(not FASHION.exists(), reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_the_recovery_spec_searches_importance_allocation_and_distillation() -> None:
    from search.spec.load import load_spec

    spec = load_spec(Path(__file__).resolve().parent.parent / "spaces" / "fashion_mnist_recovery.yaml")
    assert {"prune.importance", "prune.allocation", "prune.distill.weight"} <= set(spec.space)


@pytest.mark.parametrize("pace,weight", [(None, None), ("agp", 0.0), ("oneshot", 0.0), ("agp", 0.7)])
def test_a_channel_plans_recipe_survives_its_json(pace, weight) -> None:
    """Unset, channel pruning gets UNIT_RECIPE; set (even to the plain values a plan's JSON leaves
    out), it keeps what was set after the plan is written and read back, as a worker reads it."""
    from trainables.pipeline.plan import Plan, make_plan
    from trainables.stages.benchmark import BenchmarkConfig
    from trainables.stages.dense import DenseConfig
    from trainables.stages.gradual import UNIT_RECIPE
    from trainables.data import DataSpec

    budget = PruneBudget(granularity="channel", pace=pace, distill={"weight": weight})
    plan = make_plan(order="P", dense=DenseConfig(model="small_resnet", domain="target"), transfer=None,
                     benchmark=BenchmarkConfig(), prune=budget, target=DataSpec(name="digits"), s2=0.5)
    back = Plan.model_validate_json(plan.model_dump_json())
    config = back.steps[1].config
    expected = (pace or UNIT_RECIPE["pace"], UNIT_RECIPE["distill_weight"] if weight is None else weight)
    assert (config.pace, config.distill.weight) == expected
