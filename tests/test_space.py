"""The space as Optuna sees it: conditional parameters, PBA's s2 > s1, and the plans it yields."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.runner import SpaceFunction
from search.space import SpaceError, parse_space, suggest
from search.spec import load_spec
from trainables.plan import Plan

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
        branch = {k for k in params if ":" in k and not k.startswith(("Q", "epruning:"))}
        expected = {"PB": {"PB:s1"}, "PA": {"PA:s2"}, "PBA": {"PBA:s1", "PBA:s2"}}[order]
        assert branch == expected, (order, params)
        assert constants["order"] == order
        evolution = {k for k in params if k.startswith("epruning:")}
        assert evolution == ({"epruning:prune.epruning.mutation", "epruning:prune.epruning.crossover"}
                             if params["prune.method"] == "epruning" else set())
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
        assert len(shares) == (params["quantize"] != "none")
        if shares:
            assert plan.steps[-2] is shares[0], "sharing comes after pruning, before the benchmark"
            assert (shares[0].retrain is not None) == (params["quantize"] == "QR")
            assert shares[0].config.groups["layer3"] == params[f"{params['quantize']}:share.groups.layer3"]
        tail = {"none": "", "Q": "Q|", "QR": "Q|R|"}[params["quantize"]]
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
    raw["space"] = {**spec.space, "transfer.optim.lr": {"log": [0.0003, 0.003]}, "prune.frequency.every": {"int": [1, 8]}}
    from search.spec import parse_spec

    for params, constants in sample(parse_spec(raw), 20, seed=2):
        plan = Plan.model_validate(constants["plan"])
        transfer = next(s for s in plan.steps if s.kind == "T")
        assert transfer.config.optim.lr == pytest.approx(params["transfer.optim.lr"])
        for step in plan.steps:
            if step.kind == "P":
                assert step.config.frequency.every == params["prune.frequency.every"]
                assert step.config.frequency.unit == "batch", "quickstart's bare int counts batches"


def test_pba_lower_bound_sees_a_top_level_s1() -> None:
    nodes = parse_space({"s1": {"float": [0.5, 0.89], "step": 0.01},
                         "order": {"choice": {"PBA": {"s2": {"float": [0.5, 0.9], "step": 0.05}}}}})
    from search.spec import pba_lower_bound

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
