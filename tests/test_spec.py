"""Spec validation: the shipped specs validate; each kind of mistake is one line naming its key path."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from search.cli import main
from search.spec.space import walk
from search.spec.load import load_spec, parse_spec
from search.spec.schema import SpecError

SPACES = Path(__file__).resolve().parent.parent / "spaces"


def quickstart() -> dict:
    return yaml.safe_load((SPACES / "quickstart.yaml").read_text())


@pytest.mark.parametrize("name", sorted(p.name for p in SPACES.glob("*.yaml")))
def test_shipped_specs_validate(name: str) -> None:
    spec = load_spec(SPACES / name)
    assert spec.trials >= 1 and spec.objectives


def test_quickstart_is_a_cpu_search_over_all_three_orders() -> None:
    spec = load_spec(SPACES / "quickstart.yaml")
    order = next(n for n in spec.nodes if n.name == "order")
    assert set(order.options) == {"PB", "PA", "PBA"}
    assert spec.trials >= 12 and spec.resources.gpu == 0 and spec.data.target.name == "digits"


def mutate(path: str, value) -> dict:
    raw = copy.deepcopy(quickstart())
    node = raw
    *parents, leaf = path.split("/")
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return raw


DELETE = object()

BAD = [
    ("unknown top-level key", "colour", "red", "colour: unknown key"),
    ("wrong type", "trials", "many", "trials: Input should be a valid integer"),
    ("zero trials", "trials", 0, "trials: Input should be greater than or equal to 1"),
    ("negative concurrency", "concurrency", -1, "concurrency: Input should be greater than or equal to 1"),
    ("unknown model", "model/name", "resnet9", "model.name: unknown architecture 'resnet9'"),
    ("unknown dataset", "data/target/name", "emnist", "data.target.name: Input should be"),
    ("empty objectives", "objectives", [], "objectives: List should have at least 1 item"),
    ("duplicate objective", "objectives", [{"name": "accuracy"}, {"name": "accuracy"}], "objectives: objective 'accuracy' appears 2 times"),
    ("unknown objective", "objectives", [{"name": "flops"}], "objectives.0.name: Input should be"),
    ("unknown sampler", "sampler", "cmaes", "sampler: Input should be"),
    ("bad budget", "budgets/transfer/epochs", 0, "budgets.transfer.epochs: Input should be greater than or equal to 1"),
    ("unknown budget key", "budgets/prune/speed", 3, "budgets.prune.speed: unknown key"),
    ("sparsity above 1", "space/order/choice/PB/s1", {"float": [0.3, 1.2]}, "space.order.choice.PB.s1: a sparsity must be a number in [0, 1), got 1.2"),
    ("PBA s2 not above s1", "space/order/choice/PBA", {"s1": 0.6, "s2": 0.5}, "space.order.choice.PBA: PBA needs s2 > s1"),
    ("order branch missing s2", "space/order/choice/PA", {}, "space.order.choice.PA: order PA needs 's2'"),
    ("unknown order", "space/order", {"choice": {"PX": {}}}, "space.order: order must be one of"),
    ("unknown space parameter", "space/warp", {"int": [1, 3]}, "space.warp: unknown parameter 'warp'"),
    ("bad override value", "space/transfer.epochs", {"int": [0, 3]}, "space.transfer.epochs: 0 is not valid for budgets.transfer.epochs"),
    ("range low above high", "space/transfer.optim.lr", {"log": [0.1, 0.01]}, "space.transfer.optim.lr.log: low must be below high"),
    ("log range at zero", "space/transfer.optim.lr", {"log": [0, 0.01]}, "space.transfer.optim.lr.log: a log range needs low > 0"),
    ("list instead of choice", "space/transfer.mode", ["finetune", "freeze"], "space.transfer.mode: a list is not a node"),
    ("two kinds in one node", "space/transfer.optim.lr", {"log": [0.1, 1], "int": [1, 2]}, "a node has exactly one of"),
    ("bad run name", "name", "../escape", "name: String should match pattern"),
    ("unknown share group", "budgets/share/groups", {"layer9": "keep"}, "budgets.share.groups.layer9: small_resnet has no layer group 'layer9'; it has stem, layer1"),
    ("centroids not a power of two", "budgets/share/groups", {"layer3": 3}, "budgets.share.groups: layer3: centroids must be a power of two from 1 to 256 or 'keep', got 3"),
    ("centroids above 256", "space/share.groups.layer3", {"choice": [16, 512]}, "space.share.groups.layer3: 512 is not valid for budgets.share.groups: layer3: centroids must be"),
    ("share group not in budgets", "space/share.groups.layer9", {"choice": [4]}, "space.share.groups.layer9: 'share.groups.layer9' is not a budget field; list layer9 under budgets.share.groups to search it"),
    ("prune side value", "budgets/prune/after", {"epochs": 0}, "budgets.prune.after.epochs: Input should be greater than or equal to 1"),
    ("prune side unknown key", "budgets/prune/before", {"method": "epruning"}, "budgets.prune.before.method: unknown key"),
    ("prune side optimizer unset", "space/prune.after.optim.lr", {"log": [0.001, 0.01]}, "space.prune.after.optim.lr: 'prune.after.optim.lr' is not a budget field while budgets.prune.after.optim is unset; set budgets.prune.after.optim to search its fields"),
    ("prune side bad search value", "space/prune.before.recover_epochs", {"choice": [1, -1]}, "space.prune.before.recover_epochs: -1 is not valid for budgets.prune.before.recover_epochs"),
    ("milestones not increasing", "space/order/choice/PBA", {"s1": {"choice": [[0.5, 0.3]]}, "s2": 0.8}, "space.order.choice.PBA.s1: s1's milestones must increase strictly, got [0.5, 0.3]"),
    ("an s2 milestone not above s1's", "space/order/choice/PBA", {"s1": {"choice": [0.3, [0.3, 0.75]]}, "s2": {"choice": [[0.7, 0.8]]}}, "space.order.choice.PBA: PBA needs s2 > s1, but s2 can be 0.7 and s1 can be 0.75"),
    ("a milestone at 1", "space/order/choice/PB/s1", {"choice": [[0.5, 1.0]]}, "space.order.choice.PB.s1: a sparsity must be a number in [0, 1), got 1.0"),
    ("empty milestones", "space/order/choice/PA/s2", {"choice": [0.5, []]}, "space.order.choice.PA.s2.choice: a list option must be a non-empty list of plain values, got []"),
    ("unknown quantize", "space/quantize", {"choice": ["Q", "Z"]}, "space.quantize: quantize must be one of none, Q, QR, I8, QI8, QRI8, got 'Z'"),
    ("P with a transfer", "space/order/choice/P", {"s2": 0.5}, "space.order.choice.P: order P prunes without a transfer; it needs model.trained_on: target"),
    ("PA without a transfer", "model/trained_on", "target", "space.order.choice.PA: order PA places pruning around a transfer, but model.trained_on is target (no transfer): use none or P"),
    ("PB without a source", "data/source", DELETE, "space.order.choice.PB: order PB prunes on the source, but data.source is not given"),
    ("no weights, no source", "data/source", DELETE, "data.source: model.weights is not given, so D trains the model on the source"),
    ("no weights, no epochs", "budgets/dense/epochs", 0, "budgets.dense.epochs: model.weights is not given, so D trains the model from scratch; epochs must be > 0"),
    ("trained on nothing", "model/trained_on", "scratch", "model.trained_on: Input should be 'source' or 'target'"),
]


@pytest.mark.parametrize("what,path,value,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_spec_names_its_key_path(what, path, value, expected) -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(mutate(path, value))
    assert any(expected in line for line in info.value.problems), info.value.problems


def test_a_model_of_the_target_runs_without_transfer_and_plans_say_so() -> None:
    from search.spec.to_plan import plan_for

    raw = quickstart()
    del raw["data"]["source"]
    raw["model"]["trained_on"] = "target"  # no weights: D trains it on the target from scratch
    raw["budgets"]["retrain"]["unlabeled"] = "target"
    raw["space"]["order"] = {"choice": {"none": {}, "P": {"s2": {"choice": [0.5, 0.8]}}}}
    spec = parse_spec(raw)
    assert plan_for(spec, {"order": "none"}).pipeline == "D|B"
    made = plan_for(spec, {"order": "P", "s2": 0.5, "quantize": "QR"})
    assert made.pipeline == "D|50|Q|R|B" and made.source is None and made.architecture.domain == "target"


def test_a_share_group_not_listed_is_one_line_saying_where_to_list_it() -> None:
    with pytest.raises(SpecError) as info:
        parse_spec(mutate("space/share.groups.stem", {"choice": [4, 16]}))
    assert info.value.problems == ["space.share.groups.stem: 'share.groups.stem' is not a budget field; "
                                   "list stem under budgets.share.groups to search it"]


def test_the_order_spec_prunes_with_the_papers_budget_on_each_side() -> None:
    """Sec. 4.1: PB prunes 10 epochs + 5 to adjust, PA 25 + 25; lr 0.005 decaying 5% per epoch, batch 64."""
    from search.spec.to_plan import plan_for

    spec = load_spec(SPACES / "cifar10_resnet34_order.yaml")
    plan = plan_for(spec, {"order": "PBA", "s1": 0.5, "s2": 0.8})
    before, after = (s for s in plan.steps if s.kind == "P")
    assert (before.domain, before.config.epochs, before.config.recover_epochs) == ("source", 10, 5)
    assert (after.domain, after.config.epochs, after.config.recover_epochs) == ("target", 25, 25)
    for step in (before, after):
        assert step.config.frequency.model_dump() == {"every": 1, "unit": "epoch"}
        assert step.config.batch_size == 64
        optim = step.config.optim
        assert (optim.name, optim.lr, optim.schedule, optim.gamma) == ("sgd", 0.005, "exponential", 0.95)
    assert all(":prune." not in path for path, _ in walk(spec.nodes)), "no per-branch budget override"
    assert before.config.augment == after.config.augment == "shift_mirror", "sec. 4.1: shifting/mirroring"
    assert next(s for s in plan.steps if s.kind == "T").config.augment == "shift_mirror"


def test_a_side_of_the_prune_budget_is_searchable_by_its_path() -> None:
    from search.spec.to_plan import plan_for

    raw = quickstart()
    raw["space"] = {"order": "PBA", "s1": 0.3, "s2": 0.6, "prune.after.epochs": {"choice": [3, 4]}}
    spec = parse_spec(raw)
    plan = plan_for(spec, {"order": "PBA", "s1": 0.3, "s2": 0.6, "prune.after.epochs": 4})
    before, after = (s for s in plan.steps if s.kind == "P")
    assert (before.config.epochs, after.config.epochs) == (1, 4), "the shared epochs stay on the other side"
    assert after.config.frequency.every == 4 and after.config.optim.lr == 0.0005, "unset fields inherit"
    raw["budgets"]["prune"]["after"] = {"augment": "shift_mirror"}
    plan = plan_for(parse_spec(raw), {"order": "PBA", "s1": 0.3, "s2": 0.6})
    assert [s.config.augment for s in plan.steps if s.kind == "P"] == ["none", "shift_mirror"]


def test_retraining_on_source_images_needs_a_source() -> None:
    raw = quickstart()
    del raw["data"]["source"]
    raw["budgets"]["dense"]["epochs"] = 0
    raw["model"]["weights"] = "w.pth"
    raw["space"] = {"quantize": "QR"}
    with pytest.raises(SpecError) as info:
        parse_spec(raw)
    assert info.value.problems == [
        "budgets.retrain.unlabeled: retraining reads the source's images but data.source is not given "
        "(unlabeled: target retrains on the target's images)"]


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata: {target: [unclosed\n")
    with pytest.raises(SpecError, match=r"not valid YAML at line \d+"):
        load_spec(bad)


def test_missing_spec_file() -> None:
    with pytest.raises(SpecError, match="spec: file 'nope.yaml' does not exist"):
        load_spec("nope.yaml")


def test_check_cli_prints_one_line_per_problem_and_exits_2(tmp_path: Path, capsys) -> None:
    raw = mutate("trials", 0)
    raw["budgets"]["transfer"]["epochs"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["frontier: trials: Input should be greater than or equal to 1",
                   "frontier: budgets.transfer.epochs: Input should be greater than or equal to 1"]


def test_check_cli_names_missing_data_root_and_weights(tmp_path: Path, capsys) -> None:
    raw = quickstart()
    raw["data"]["target"] = {"name": "cifar10", "root": str(tmp_path / "nowhere")}
    raw["model"]["weights"] = str(tmp_path / "w.pth")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "frontier: data.target.root:" in err and "nowhere" in err
    assert f"frontier: model.weights: file '{tmp_path / 'w.pth'}' does not exist" in err


def test_check_cli_ok(capsys) -> None:
    assert main(["check", str(SPACES / "quickstart.yaml")]) == 0
    assert "ok (12 trials" in capsys.readouterr().out


def test_check_cli_says_a_renamed_key_in_one_line_and_goes_on(tmp_path: Path, capsys) -> None:
    raw = quickstart()
    raw["space"]["prune.optim.lr"] = {"float": [0.001, 0.005], "step": 0.001}  # a range's old 'increment'
    raw["space"]["retrain.optim.lr"] = {"float": [0.001, 0.005], "step": 0.002}
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", str(path)]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [line for line in err if "step" in line] == [
        "frontier: warning: space.prune.optim.lr.step: renamed 'increment'; 'step' stops working in the next release",
        "frontier: warning: space.retrain.optim.lr.step: renamed 'increment'; 'step' stops working in the next release"]
    assert not any("warnings.warn" in line or "FrontierDeprecation" in line for line in err)  # no source line


def test_the_order_spec_reaches_table_2s_multi_step_pipelines() -> None:
    """Table 2: D|T|50|70|80 (PA), D|50|T|70|80 (PBA), D|50|70|80|T (PB), each a choice of its branch."""
    from search.spec.to_plan import plan_for

    spec = load_spec(SPACES / "cifar10_resnet34_order.yaml")
    order = next(n for n in spec.nodes if n.name == "order")
    options = {(o, n.name): n.options for o in order.options for n in order.branches[o]}
    table_2 = {("PB", "s1", (0.5, 0.7, 0.8)): "D|50|70|80|T|B", ("PA", "s2", (0.5, 0.7, 0.8)): "D|T|50|70|80|B",
               ("PBA", "s2", (0.7, 0.8)): "D|50|T|70|80|B"}
    for (branch, name, milestones), pipeline in table_2.items():
        assert list(milestones) in options[(branch, name)]
        assignment = {"order": branch, "s1": 0.5, name: list(milestones)}
        assert plan_for(spec, assignment).pipeline == pipeline
