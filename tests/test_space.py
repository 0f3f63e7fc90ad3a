"""The space as Optuna sees it: conditional parameters, PBA's s2 > s1, and the plans it yields."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.run.space_function import SpaceFunction
from search.spec.space import SpaceError, parse_space, suggest
from search.spec.load import load_spec
from trainables.pipeline.plan import Plan

SPACES = Path(__file__).resolve().parent.parent / "spaces"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def sample(spec, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=seed))
    space, out = SpaceFunction(spec), []
    for _ in range(n):
        trial = study.ask()
        constants = space(trial)
        out.append((dict(trial.params), constants))
        study.tell(trial, [0.5, 1.0])
    return out


def test_conditional_parameters_appear_only_in_their_branch() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    seen = set()
    for params, constants in sample(spec, 60):
        order = params["order"]
        seen.add(order)
        branch = {k for k in params if ":" in k and not k.startswith(("Q", "I8:", "epruning:"))}
        expected = {"PB": {"PB:s1"}, "PA": {"PA:s2"}, "PBA": {"PBA:s1", "PBA:s2"}}[order]
        assert branch == expected, (order, params)
        assert constants["order"] == order
        evolution = {k for k in params if k.startswith("epruning:")}
        assert evolution == ({"epruning:prune.epruning.mutation", "epruning:prune.epruning.crossover"}
                             if params["prune.method"] == "epruning" else set())
        int8 = {k for k in params if k.startswith("I8:")}
        assert int8 == ({"I8:int8.method", "I8:int8.fallback"} if params["quantize"] == "I8" else set())
    assert seen == {"PB", "PA", "PBA"}


def test_pba_always_samples_s2_above_s1_and_plans_follow_the_paper_notation() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    for params, constants in sample(spec, 80, seed=1):
        plan = Plan.model_validate(constants["plan"])
        prune = "E" if params["prune.method"] == "epruning" else "P"
        steps = [s.kind if s.kind != "E" else "P" for s in plan.steps if s.kind != "Q"]
        assert all(s.kind == prune for s in plan.steps if s.kind in "PE")
        mark = "E" if prune == "E" else ""
        shares = [s for s in plan.steps if s.kind == "Q"]
        assert len(shares) == (params["quantize"] in ("Q", "QR"))
        if shares:
            assert plan.steps[-2] is shares[0], "sharing comes after pruning, before the benchmark"
            assert (shares[0].retrain is not None) == (params["quantize"] == "QR")
            assert shares[0].config.groups["layer3"] == params[f"{params['quantize']}:share.groups.layer3"]
        tail = {"none": "", "Q": "Q|", "QR": "Q|R|", "I8": "I8|"}[params["quantize"]]
        assert (plan.benchmark.int8 is not None) == (params["quantize"] == "I8"), "INT8 is the benchmark's precision"
        if params["order"] == "PBA":
            assert params["PBA:s2"] > params["PBA:s1"]
            s1, s2 = round(params["PBA:s1"] * 100), round(params["PBA:s2"] * 100)
            assert constants["pipeline"] == f"D|{mark}{s1}|T|{mark}{s2}|{tail}B"
            assert steps == ["D", "P", "T", "P", "B"]
            if prune == "P":
                assert plan.steps[3].config.initial == pytest.approx(params["PBA:s1"])
            else:
                assert plan.steps[3].sparsity == pytest.approx(params["PBA:s2"])
                assert plan.steps[3].config.mutation == params["epruning:prune.epruning.mutation"]
        elif params["order"] == "PB":
            assert steps == ["D", "P", "T", "B"] and plan.steps[1].domain == "source"
        else:
            assert steps == ["D", "T", "P", "B"] and plan.steps[2].domain == "target"


def test_dotted_overrides_reach_the_plan() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    raw = spec.model_dump()
    raw["space"] = {**spec.space, "transfer.optim.lr": {"log": [0.0003, 0.003]},
                    "prune.frequency.every": {"int": [1, 8]}}
    from search.spec.load import parse_spec

    for params, constants in sample(parse_spec(raw), 20, seed=2):
        plan = Plan.model_validate(constants["plan"])
        transfer = next(s for s in plan.steps if s.kind == "T")
        assert transfer.config.optim.lr == pytest.approx(params["transfer.optim.lr"])
        for step in plan.steps:
            if step.kind == "P":
                assert step.config.frequency.every == params["prune.frequency.every"]
                assert step.config.frequency.unit == "batch", "quickstart's bare int counts batches"


def test_pba_lower_bound_sees_a_top_level_s1() -> None:
    nodes = parse_space({"s1": {"float": [0.5, 0.89], "increment": 0.01},
                         "order": {"choice": {"PBA": {"s2": {"float": [0.5, 0.9], "increment": 0.05}}}}})
    from search.spec.to_plan import pba_lower_bound

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(50):
        trial = study.ask()
        values = suggest(trial, nodes, lower=pba_lower_bound)
        assert values["s2"] > values["s1"]
        assert round(values["s2"] / 0.05, 6).is_integer(), "s2 stays on its step grid"
        study.tell(trial, 0.0)


def test_parse_rejects_names_that_ray_would_split() -> None:
    with pytest.raises(SpaceError, match="cannot contain"):
        parse_space({"a/b": 1})


def test_a_list_option_goes_to_optuna_as_text_and_comes_back_as_the_list() -> None:
    nodes = parse_space({"s2": {"choice": [0.8, [0.7, 0.8]]}})
    assert nodes[0].options == (0.8, [0.7, 0.8]) and nodes[0].encoded == [0.8, "[0.7, 0.8]"]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        trial = study.ask()
        value = suggest(trial, nodes)["s2"]
        assert trial.params["s2"] == (value if value == 0.8 else "[0.7, 0.8]")
        seen.add(repr(value))
        study.tell(trial, 0.0)
    assert seen == {"0.8", "[0.7, 0.8]"}
    with pytest.raises(SpaceError, match="a list option must be a non-empty list of plain values"):
        parse_space({"s1": {"choice": [[0.3, [0.5]]]}})
    with pytest.raises(SpaceError, match="options repeat"):
        parse_space({"s1": {"choice": [[0.3, 0.5], [0.3, 0.5]]}})


def test_milestone_lists_give_one_stage_each_and_pba_stays_above_s1() -> None:
    import yaml

    from search.spec.load import parse_spec

    raw = yaml.safe_load((SPACES / "quickstart.yaml").read_text())
    raw["space"] = {"order": {"choice": {
        "PBA": {"s1": {"choice": [0.5, [0.3, 0.5]]}, "s2": {"choice": [[0.7, 0.8], 0.8]}},
        "PA": {"s2": {"float": [0.6, 0.9], "increment": 0.1}}}},
        "s1": {"choice": [0.4, [0.2, 0.6]]}}
    pipelines = set()
    for params, constants in sample(parse_spec(raw), 40, seed=4):
        plan = Plan.model_validate(constants["plan"])
        pipelines.add(constants["pipeline"])
        prunes = [(s.domain, s.config.initial, s.config.final) for s in plan.steps if s.kind == "P"]
        for (_, _, before), (_, initial, final) in zip(prunes, prunes[1:]):
            assert initial == before < final, "each milestone starts where the one before ended"
        slots = [plan.slot(i) for i, s in enumerate(plan.steps) if s.kind == "P"]
        assert len(set(slots)) == len(slots) and set(slots) <= {"P1", "P1.2", "P2", "P2.2"}
    assert {"D|50|T|70|80|B", "D|30|50|T|70|80|B", "D|30|50|T|80|B", "D|50|T|80|B"} <= pipelines


def test_pba_lower_bound_is_above_the_last_s1_milestone() -> None:
    from search.spec.to_plan import pba_lower_bound

    assert pba_lower_bound("s2", {"order": "PBA", "s1": [0.3, 0.6]}) == pytest.approx(0.61)
    assert pba_lower_bound("s2", {"order": "PBA", "s1": 0.3}) == pytest.approx(0.31)
    assert pba_lower_bound("s2", {"order": "PA"}) is None


def test_s1_and_s2_take_a_plain_list_as_fixed_milestones_and_other_keys_do_not() -> None:
    import yaml

    from search.spec.load import parse_spec

    raw = yaml.safe_load((SPACES / "quickstart.yaml").read_text())
    raw["space"] = {"order": "PBA", "s1": [0.3, 0.5], "s2": [0.7, 0.8]}
    (params, constants), = sample(parse_spec(raw), 1)
    assert constants["pipeline"] == "D|30|50|T|70|80|B" and params == {}, "fixed: nothing left for Optuna"
    with pytest.raises(SpaceError, match=r"space.transfer.mode: a list is not a node.*only s1 and s2"):
        parse_space({"transfer.mode": ["finetune", "freeze"]})


def test_a_range_increment_and_its_old_name_step_which_warns_once() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new name warns nothing
        (new,) = parse_space({"s1": {"float": [0.3, 0.9], "increment": 0.1}})
    with pytest.warns(FutureWarning, match=r"space\.s1\.step: renamed 'increment'") as caught:
        (old,) = parse_space({"s1": {"float": [0.3, 0.9], "step": 0.1}})
    assert len(caught) == 1 and old == new and new.increment == 0.1
    with pytest.raises(SpaceError, match=r"space\.s1\.step: is the old name of 'increment'"):
        parse_space({"s1": {"float": [0.3, 0.9], "step": 0.1, "increment": 0.1}})
    with pytest.raises(SpaceError, match=r"space\.s1\.increment: must be a positive number"):
        parse_space({"s1": {"float": [0.3, 0.9], "increment": -1}})
