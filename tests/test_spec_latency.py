"""Pruning to a latency: the spec side. ``s1``/``s2`` take ``{latency: share}`` or ``{latency_ms: ms}``
whose value is any node; it parses to a node named ``s2.latency`` (Optuna's parameter, trials.csv's
``param.s2.latency``), reaches the plan as ``s2={"latency": v}``, and every misuse is one line naming
its key path (a share outside (0, 1), both kinds, weights pruned one by one, PBA's two targets, the
``latency`` allocation where a side prunes to a sparsity)."""

from __future__ import annotations

import copy
from pathlib import Path

import optuna
import pytest
import yaml

from search.cli import main
from search.run.space_function import SpaceFunction
from search.spec.load import parse_spec
from search.spec.schema import SpecError
from search.spec.space import Choice, Const, Range, SpaceError, parse_space, suggest, walk
from search.spec.to_plan import SPECIAL_KEYS, pba_lower_bound, side_target

SPACES = Path(__file__).resolve().parent.parent / "spaces"
optuna.logging.set_verbosity(optuna.logging.WARNING)
CHANNEL = {"granularity": "channel"}  # unit pruning: what a latency target needs of the gradual method


def spec_raw(space: dict, prune: dict | None = None) -> dict:
    """The quickstart spec with ``space`` as its space and ``prune`` merged into ``budgets.prune``."""
    raw = copy.deepcopy(yaml.safe_load((SPACES / "quickstart.yaml").read_text()))
    raw["space"] = space
    raw["budgets"]["prune"].update(prune or {})
    return raw


def problems(space: dict, prune: dict | None = None) -> list[str]:
    """The spec's problems, one line each; [] when it is valid."""
    try:
        parse_spec(spec_raw(space, prune))
    except SpecError as exc:
        return exc.problems
    return []


# parsing: s2: {latency: <node>} is a node named s2.latency


@pytest.mark.parametrize(("raw", "expected"), [
    ({"s2": {"latency": 0.4}}, Const("s2.latency", 0.4)),
    ({"s1": {"latency_ms": 2.0}}, Const("s1.latency_ms", 2.0)),
    ({"s2": {"latency": {"choice": [0.3, 0.5]}}}, Choice("s2.latency", (0.3, 0.5))),
    ({"s2": {"latency": {"float": [0.2, 0.6], "increment": 0.1}}}, Range("s2.latency", "float", 0.2, 0.6, False, 0.1)),
    ({"s2": {"latency_ms": {"int": [1, 5]}}}, Range("s2.latency_ms", "int", 1, 5)),
    ({"s2": {"latency_ms": {"log": [0.5, 8.0]}}}, Range("s2.latency_ms", "float", 0.5, 8.0, True)),
])
def test_a_latency_target_parses_to_a_node_named_by_its_side_and_kind(raw: dict, expected) -> None:
    assert parse_space(raw) == (expected,)


def test_a_latency_target_in_a_branch_keeps_its_path() -> None:
    nodes = parse_space({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}}}}})
    assert [(path, node.name) for path, node in walk(nodes)] == [
        ("space.order", "order"), ("space.order.choice.PA.s2.latency", "s2.latency")]


@pytest.mark.parametrize(("raw", "expected"), [
    ({"s2": {"latency": 1.2}}, "space.s2.latency: a latency target's share of the dense model's latency must be a "
                               "number in (0, 1), got 1.2"),
    ({"s2": {"latency": 0}}, "space.s2.latency: a latency target's share"),
    ({"s2": {"latency": 1}}, "space.s2.latency: a latency target's share"),
    ({"s2": {"latency": "fast"}}, "space.s2.latency: a latency target's share"),
    ({"s2": {"latency": {"choice": [0.3, 1.5]}}}, "space.s2.latency.choice: a latency target's share of the dense "
                                                   "model's latency must be a number in (0, 1), got 1.5"),
    ({"s2": {"latency": {"choice": [0.3, [0.4, 0.5]]}}}, "space.s2.latency.choice: a latency target's share"),
    ({"s2": {"latency": {"float": [0.2, 1.0]}}}, "space.s2.latency.float: a latency target's share of the dense "
                                                  "model's latency must be a number in (0, 1), got 1.0"),
    ({"s2": {"latency": {"float": [0.0, 0.5]}}}, "space.s2.latency.float: a latency target's share"),
    ({"s1": {"latency_ms": 0}}, "space.s1.latency_ms: latency_ms must be a number of milliseconds > 0, got 0"),
    ({"s1": {"latency_ms": -2.0}}, "space.s1.latency_ms: latency_ms must be a number of milliseconds > 0, got -2.0"),
    ({"s2": {"latency_ms": {"choice": [2.0, 0]}}}, "space.s2.latency_ms.choice: latency_ms must be a number"),
    ({"s2": {"latency_ms": {"int": [0, 4]}}}, "space.s2.latency_ms.int: latency_ms must be a number"),
    ({"s2": {"latency": 0.3, "latency_ms": 2.0}}, "space.s2: a latency target is one of latency"),
    ({"s2": {"latency": 0.3, "budget": 2}}, "space.s2.budget: unknown key"),
    ({"s2": {"latncy": 0.3}}, "space.s2.latncy: unknown key; s2 takes a sparsity, a node"),
    ({"s2": {}}, "space.s2: is empty"),
    ({"s2": {"latency": [0.3, 0.5]}}, "space.s2.latency: a list is not a node"),
    ({"s2": {"latency": {"choice": {"0.3": {}}}}}, "space.s2.latency.choice: a latency target's choice is a list"),
    ({"order": {"choice": {"PA": {"s2": {"latency": 2.0}}}}}, "space.order.choice.PA.s2.latency: a latency target's share"),
    ({"s2.latency": 0.4}, "space.s2.latency: write a latency target under s2: s2: {latency: ...}"),
])
def test_a_bad_latency_target_is_refused_naming_its_key_path(raw: dict, expected: str) -> None:
    with pytest.raises(SpaceError) as info:
        parse_space(raw)
    assert str(info.value).startswith(expected), str(info.value)
    assert "\n" not in str(info.value)


def test_an_unknown_key_under_s2_is_one_line_from_the_spec_too() -> None:
    assert problems({"order": "PA", "s2": {"latency": 0.5, "ms": 3}}, CHANNEL) == [
        "space.s2.ms: unknown key; s2 takes a sparsity, a node (choice, int, float, log) or a latency target "
        "({latency: <share of the dense latency>} or {latency_ms: <ms>})"]


# sampling: Optuna's parameter is s2.latency


def test_suggest_returns_the_latency_target_under_its_node_name() -> None:
    nodes = parse_space({"order": "PA", "s2": {"latency": {"choice": [0.3, 0.5]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        values = suggest(trial, nodes, lower=pba_lower_bound)
        assert set(values) == {"order", "s2.latency"} and trial.params == {"s2.latency": values["s2.latency"]}
        seen.add(values["s2.latency"])
        study.tell(trial, 0.0)
    assert seen == {0.3, 0.5}


def test_a_latency_range_is_sampled_within_its_bounds_and_never_bounded_by_s1() -> None:
    nodes = parse_space({"order": "PBA", "s1": 0.5, "s2": {"latency_ms": {"float": [0.5, 4.0]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        values = suggest(study.ask(), nodes, lower=pba_lower_bound)
        assert 0.5 <= values["s2.latency_ms"] <= 4.0
    assert pba_lower_bound("s2.latency", {"order": "PBA", "s1": 0.5}) is None


def test_the_space_function_records_the_latency_parameter_for_trials_csv(monkeypatch) -> None:
    import search.run.space_function as space_function

    spec = parse_spec(spec_raw({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}}}}}, CHANNEL))
    seen: list[dict] = []

    class FakePlan:  # the plan's own tests are the pipeline's; here only what the space function hands it
        pipeline = "D|T|L?|B"

        def model_dump(self, mode: str) -> dict:
            return {}

    monkeypatch.setattr(space_function, "plan_for", lambda spec, assignment, **_: seen.append(assignment) or FakePlan())
    trial = optuna.create_study().ask()
    config = SpaceFunction(spec)(trial)
    assert set(config["params"]) == {"PA:s2.latency", "order"}  # trials.csv: param.PA:s2.latency
    assert seen == [{"order": "PA", "s2.latency": config["params"]["PA:s2.latency"]}]


# assignment -> what make_plan receives


@pytest.mark.parametrize(("assignment", "side", "expected"), [
    ({"order": "PA", "s2.latency": 0.4}, "s2", {"latency": 0.4}),
    ({"order": "PA", "s2.latency_ms": 2}, "s2", {"latency_ms": 2.0}),
    ({"order": "PBA", "s1.latency": 0.6, "s2.latency": 0.3}, "s1", {"latency": 0.6}),
    ({"order": "PA", "s2": [0.5, 0.7]}, "s2", [0.5, 0.7]),
    ({"order": "PA", "s2": 0.5}, "s2", 0.5),
    ({"order": "PA", "s2.latency": 0.4}, "s1", None),
])
def test_side_target_is_a_latency_dict_or_the_sparsity(assignment: dict, side: str, expected) -> None:
    got = side_target(assignment, side)
    assert got == expected and type(got) is type(expected)
    if isinstance(expected, dict):
        assert all(type(v) is float for v in got.values()), "2 and 2.0 ms are one plan"


def test_a_side_with_two_targets_in_one_assignment_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"s2 has more than one target in one trial \(s2, s2.latency\)"):
        side_target({"s2": 0.5, "s2.latency": 0.4}, "s2")


def test_latency_keys_are_special_not_budget_overrides(monkeypatch) -> None:
    import search.spec.to_plan as to_plan

    assert {"s1.latency", "s2.latency", "s1.latency_ms", "s2.latency_ms"} <= set(SPECIAL_KEYS)
    spec = parse_spec(spec_raw({"order": "PA", "s2": {"latency": 0.4}, "transfer.epochs": 3}, CHANNEL))
    received = {}
    monkeypatch.setattr(to_plan, "make_plan", lambda **kwargs: received.update(kwargs))
    to_plan.plan_for(spec, {"order": "PA", "s2.latency": 0.4, "transfer.epochs": 3})
    assert received["s2"] == {"latency": 0.4} and received["s1"] is None
    assert received["transfer"].epochs == 3  # the budget override still applies


# the spec's checks


def test_a_valid_latency_space_has_no_problem() -> None:
    assert problems({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}},
                                          "PB": {"s1": {"latency_ms": 2.0}}}}}, CHANNEL) == []
    assert problems({"order": "PA", "s2": {"latency": 0.4}}, {"method": "epruning"}) == []
    # gradual pruning of units in the gradual branch, EPruning in the other
    assert problems({"order": "PA", "s2": {"latency": 0.4},
                     "prune.method": {"choice": {"gradual": {"prune.granularity": "channel"}, "epruning": {}}}}) == []


@pytest.mark.parametrize("granularity", ["unstructured", "2:4"])
def test_a_latency_target_where_weights_are_pruned_one_by_one_is_one_line(granularity: str) -> None:
    found = problems({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}}}}},
                     {"granularity": granularity})
    assert found == [f"space.order.choice.PA.s2.latency: a latency target needs unit pruning: budgets.prune.granularity "
                     f"can be '{granularity}' with prune.method gradual there, which masks single weights and removes "
                     f"no unit; set prune.granularity: channel or prune.method: epruning"]


def test_the_unit_pruning_check_follows_the_space_s_branches() -> None:
    # the quickstart's method choice: gradual (unstructured, the default) can meet the target
    found = problems({"order": "PA", "s2": {"latency": 0.4},
                      "prune.method": {"choice": {"gradual": {}, "epruning": {}}}})
    assert len(found) == 1 and found[0].startswith("space.s2.latency: a latency target needs unit pruning: "
                                                   "budgets.prune.granularity can be 'unstructured'")
    # a searched granularity names its own path
    found = problems({"order": "PA", "s2": {"latency_ms": 2.0}, "prune.granularity": {"choice": ["channel", "2:4"]}})
    assert len(found) == 1 and found[0].startswith("space.s2.latency_ms: a latency target needs unit pruning: "
                                                   "space.prune.granularity can be '2:4'")
    # unstructured only in the gradual branch: the line names that branch's key
    found = problems({"order": "PA", "s2": {"latency": 0.4},
                      "prune.method": {"choice": {"gradual": {"prune.granularity": "unstructured"}, "epruning": {}}}},
                     CHANNEL)
    assert len(found) == 1 and "space.prune.method.choice.gradual.prune.granularity can be 'unstructured'" in found[0]
    # unstructured only where the order prunes to a sparsity: no latency target meets it
    assert problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}, "prune.granularity": "channel"},
                                          "PB": {"s1": 0.5}}}}) == []


def test_an_order_is_satisfied_by_a_latency_target_and_still_needs_one_per_side() -> None:
    assert problems({"order": "PBA", "s1": {"latency": 0.6}, "s2": 0.9}, CHANNEL) == []
    found = problems({"order": {"choice": {"PBA": {"s2": {"latency": 0.4}}}}}, CHANNEL)
    assert found == ["space.order.choice.PBA: order PBA needs 's1' in the space (a sparsity, milestones, or a latency "
                     "target s1: {latency: ...})"]


def test_a_side_given_a_sparsity_and_a_latency_target_is_one_line() -> None:
    found = problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}}, "PB": {"s1": 0.5}}}, "s2": 0.5}, CHANNEL)
    assert found == ["space.order.choice.PA.s2.latency: s2 has more than one target in one trial (space.s2, "
                     "space.order.choice.PA.s2.latency); give s2 a sparsity or a latency target, not both"]


@pytest.mark.parametrize(("s1", "s2", "expected"), [
    ({"latency": {"choice": [0.6, 0.7]}}, {"latency": {"float": [0.2, 0.5]}}, None),
    ({"latency_ms": 4.0}, {"latency_ms": {"choice": [1.0, 2.0]}}, None),
    ({"latency": 0.4}, {"latency": {"float": [0.2, 0.5]}},
     "space.order: PBA needs s2's latency target below s1's (the pruning after transfer goes further), but s2.latency "
     "can be 0.5 and s1.latency can be 0.4; make every s2 target smaller than every s1 target"),
    ({"latency_ms": {"choice": [2.0, 3.0]}}, {"latency_ms": 2.0}, "space.order: PBA needs s2's latency target below s1's"),
    ({"latency": 0.4}, {"latency_ms": 2.0}, None),  # a share and milliseconds: not compared
    ({"latency_ms": 1.0}, {"latency": 0.9}, None),
    (0.9, {"latency": 0.4}, None),  # a sparsity and a latency target: not compared
    ({"latency": 0.2}, 0.5, None),
])
def test_pba_with_latency_targets(s1, s2, expected: str | None) -> None:
    found = problems({"order": "PBA", "s1": s1, "s2": s2}, CHANNEL)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and found[0].startswith(expected), found


def test_the_latency_allocation_needs_a_latency_target_on_every_side_it_prunes() -> None:
    latency = {**CHANNEL, "allocation": "latency"}
    assert problems({"order": "PA", "s2": {"latency": 0.4}}, latency) == []
    assert problems({"order": {"choice": {"none": {}, "PA": {"s2": {"latency": 0.4}}}}}, latency) == []  # none prunes nothing
    found = problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}}, "PB": {"s1": 0.5}}}}, latency)
    assert found == ["budgets.prune.allocation: allocation 'latency' needs a latency target, but order PB prunes s1 to a "
                     "sparsity (space.order.choice.PB.s1); give s1 a latency target (s1: {latency: ...}) there or "
                     "another allocation"]
    found = problems({"order": "PBA", "s1": 0.3, "s2": {"latency": 0.4},
                      "prune.allocation": {"choice": ["uniform", "latency"]}}, CHANNEL)
    assert len(found) == 1 and found[0].startswith("space.prune.allocation: allocation 'latency' needs a latency target, "
                                                   "but order PBA prunes s1 to a sparsity (space.s1)")
    # EPruning does not read the allocation
    assert problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}}, "PB": {"s1": 0.5}}}},
                    {"allocation": "latency", "method": "epruning"}) == []
    found = problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}}, "PB": {"s1": 0.5}}},
                      "prune.method": {"choice": {"epruning": {}, "gradual": {"prune.granularity": "channel"}}}},
                     {"allocation": "latency"})
    assert len(found) == 1 and found[0].startswith("budgets.prune.allocation: allocation 'latency' needs a latency "
                                                   "target, but order PB prunes s1 to a sparsity"), found
    # set only in the branch that has a target: fine
    assert problems({"order": {"choice": {"PA": {"s2": {"latency": 0.4}, "prune.allocation": "latency"},
                                          "PB": {"s1": 0.5}}}}, CHANNEL) == []


def test_the_granularity_sparsity_check_skips_latency_targets() -> None:
    # 2:4 cannot reach a sparsity above 0.5; a latency share of 0.8 is no sparsity (the unit check says why it fails)
    found = problems({"order": "PA", "s2": {"latency": 0.8}}, {"granularity": "2:4"})
    assert len(found) == 1 and "needs unit pruning" in found[0] and "above 0.5" not in found[0]


def test_frontier_check_prints_the_latency_problem_in_one_line_and_exits_2(tmp_path: Path, capsys) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_raw({"order": "PA", "s2": {"latency": {"choice": [0.3, 0.5]}}})))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["frontier: space.s2.latency: a latency target needs unit pruning: budgets.prune.granularity can be "
                   "'unstructured' with prune.method gradual there, which masks single weights and removes no unit; "
                   "set prune.granularity: channel or prune.method: epruning"]


# the plan (make_plan takes the latency targets: trainables/pipeline/plan.py)


def test_plan_for_turns_the_latency_keys_into_labelled_stages() -> None:
    from search.spec.to_plan import plan_for

    spec = parse_spec(spec_raw({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}},
                                                     "PB": {"s1": {"latency_ms": 2.0}},
                                                     "PBA": {"s1": 0.5, "s2": {"latency": 0.4}}}}}, CHANNEL))
    assert plan_for(spec, {"order": "PA", "s2.latency": 0.4}).pipeline == "D|T|L40|B"
    assert plan_for(spec, {"order": "PB", "s1.latency_ms": 2}).pipeline == "D|L2ms|T|B"
    assert plan_for(spec, {"order": "PBA", "s1": 0.5, "s2.latency": 0.4}).pipeline == "D|50|T|L40|B"
    assert plan_for(spec, {"order": "PA", "s2.latency_ms": 2}) == plan_for(spec, {"order": "PA", "s2.latency_ms": 2.0})
    epruning = parse_spec(spec_raw({"order": "PA", "s2": {"latency": 0.4}}, {"method": "epruning"}))
    assert plan_for(epruning, {"order": "PA", "s2.latency": 0.4}).pipeline == "D|T|EL40|B"


def test_sampled_latency_targets_reach_the_plan_and_trials_csv_s_params() -> None:
    spec = parse_spec(spec_raw({"order": {"choice": {"PA": {"s2": {"latency": {"choice": [0.3, 0.5]}}}}}}, CHANNEL))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    pipelines = set()
    for _ in range(10):
        trial = study.ask()
        config = SpaceFunction(spec)(trial)
        share = config["params"]["PA:s2.latency"]
        assert config["pipeline"] == f"D|T|L{round(share * 100)}|B"
        pipelines.add(config["pipeline"])
        study.tell(trial, [0.5, 1.0])
    assert pipelines == {"D|T|L30|B", "D|T|L50|B"}


def test_every_plan_of_a_checked_latency_space_is_made() -> None:
    """What frontier check accepts, make_plan makes: PBA's two targets of one kind, s2's below s1's."""
    from search.spec.to_plan import plan_for

    spec = parse_spec(spec_raw({"order": "PBA", "s1": {"latency": {"choice": [0.6, 0.7]}},
                                "s2": {"latency": {"choice": [0.3, 0.5]}}}, CHANNEL))
    for s1 in (0.6, 0.7):
        for s2 in (0.3, 0.5):
            plan = plan_for(spec, {"order": "PBA", "s1.latency": s1, "s2.latency": s2})
            assert plan.pipeline == f"D|L{round(s1 * 100)}|T|L{round(s2 * 100)}|B"
