"""``repeats: k``: a plan's runs with k seeds, the stages they share, the aggregate a trial reports and
how the results show it (no Ray here; tests/test_repeats_search.py runs a repeated search)."""

from __future__ import annotations

import math
from io import StringIO
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from rich.console import Console

from search.cli import main
from search.results.files import write_results
from search.results.format import accuracy_interval
from search.results.report import load_front, print_front_table
from search.results.rows import trial_row, trials_frame
from tests.conftest import SOURCE, TARGET
from trainables import BenchmarkConfig, Context, DenseConfig, TransferConfig, make_plan, run_plan
from trainables.models import build_model
from trainables.objectives import wilson_interval
from trainables.pipeline.cache import StageCache, stage_key
from trainables.pipeline.plan import DenseStep, Plan, PruneBudget, ShareStep
from trainables.pipeline.repeats import aggregate, mean_accuracy_se
from trainables.pipeline.result import FAILED, final_result
from trainables.stages.share import RetrainConfig, ShareConfig

FAST = BenchmarkConfig(warmup=1, runs=5)


def weights(tmp_path: Path, classes: int = 5) -> str:
    """A small_resnet state dict with a ``classes``-way head (the source's five digits by default)."""
    torch.manual_seed(123)
    path = tmp_path / f"small_resnet_{classes}.pt"
    torch.save(build_model("small_resnet", classes).state_dict(), path)
    return str(path)


def loaded_plan(tmp_path: Path, *, order: str = "none", repeats: int = 2, seed: int = 0) -> Plan:
    """``D|T|B`` from given weights: D loads them (0 epochs, no seed), T trains (seeded)."""
    return make_plan(order=order, s2=0.5, seed=seed, repeats=repeats, source=SOURCE, target=TARGET,
                     dense=DenseConfig(model="small_resnet", weights=weights(tmp_path), epochs=0),
                     transfer=TransferConfig(epochs=1, batch_size=64),
                     prune=PruneBudget(epochs=1, recover_epochs=0, frequency=4, batch_size=64), benchmark=FAST)


def test_each_step_kind_says_whether_the_seed_reaches_it(tmp_path: Path) -> None:
    trained = make_plan(order="PA", s2=0.5, quantize="QR", source=SOURCE, target=TARGET,
                        dense=DenseConfig(model="small_resnet", epochs=1), transfer=TransferConfig(epochs=1),
                        prune=PruneBudget(method="epruning"), benchmark=FAST)
    assert {step.label: step.seeded for step in trained.steps} == {"D": True, "T": True, "E50": True, "Q|R": True,
                                                                  "B": False}
    assert DenseStep(config=DenseConfig(model="small_resnet", weights=weights(tmp_path), epochs=0)).seeded is False
    assert ShareStep(config=ShareConfig()).seeded is False  # clustering is deterministic
    assert ShareStep(config=ShareConfig(), retrain=RetrainConfig()).seeded is True
    gradual = make_plan(order="PA", s2=0.5, source=SOURCE, target=TARGET, benchmark=FAST,
                        dense=DenseConfig(model="small_resnet", epochs=1), transfer=TransferConfig(epochs=1))
    assert gradual.steps[2].label == "50" and gradual.steps[2].seeded


def test_a_plan_dumps_repeats_only_above_one_and_each_run_has_its_seed(tmp_path: Path) -> None:
    one, three = loaded_plan(tmp_path, repeats=1, seed=4), loaded_plan(tmp_path, repeats=3, seed=4)
    assert "repeats" not in one.model_dump(mode="json"), "a plan of one run hashes as before repeats existed"
    assert three.model_dump(mode="json")["repeats"] == 3
    assert Plan.model_validate(three.model_dump(mode="json")) == three
    assert [three.repeat(r).seed for r in range(3)] == [4, 5, 6]
    assert three.repeat(2).steps == three.steps and three.repeat(2).repeats == 1
    with pytest.raises(ValueError, match="repeat 3 of a plan of 3"):
        three.repeat(3)
    with pytest.raises(ValueError, match="run_plan runs one run of a plan"):
        run_plan(three, Context(SOURCE, TARGET, tmp_path / "x"))


def test_two_seeds_share_the_unseeded_stage_and_train_their_own(tmp_path: Path) -> None:
    """D loads weights (no seed): run 1 reads run 0's entry, whose key has no seed. T trains: one
    entry per seed, each keyed as every seeded stage always was (config, input, data, the seed)."""
    plan = loaded_plan(tmp_path)
    cache = StageCache(tmp_path / "cache")
    run_plan(plan.repeat(0), Context(SOURCE, TARGET, tmp_path / "a", seed=0), cache=cache)
    assert (cache.hits, cache.misses) == (0, 2)
    _, second = run_plan(plan.repeat(1), Context(SOURCE, TARGET, tmp_path / "b", seed=1), cache=cache)
    assert (cache.hits, cache.misses) == (1, 3) and second["cached_stages"] == "D"
    dense, transfer = (step.model_dump(mode="json") for step in plan.steps[:2])
    dense_key = stage_key(dense, None, plan.data_key(), None)
    loaded = cache.get(dense_key)
    assert loaded is not None, "the dense stage's key leaves the seed out"
    transfer_keys = [stage_key(transfer, loaded[2], plan.data_key(), seed) for seed in (0, 1)]
    assert {e.key for e in cache.entries()} == {dense_key, *transfer_keys}
    assert cache.get(transfer_keys[0])[2] != cache.get(transfer_keys[1])[2], "two seeds train two models"


def test_an_unseeded_stage_runs_with_a_fixed_seed_so_its_output_is_a_function_of_its_key(tmp_path: Path) -> None:
    """A dense model of three classes loaded for a source of five gets a new head drawn at random:
    it is drawn from the same seed whatever the plan's, as the shared cache entry must be."""
    config = DenseConfig(model="small_resnet", weights=weights(tmp_path, classes=3), epochs=0)
    states = []
    for seed in (0, 5):
        plan = Plan(seed=seed, source=SOURCE, target=TARGET, steps=[DenseStep(config=config)])
        model, _ = run_plan(plan, Context(SOURCE, TARGET, tmp_path / str(seed), seed=seed))
        states.append(model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_mean_the_spread_and_each_run_of_every_objective() -> None:
    runs = [{"accuracy": 0.90, "accuracy_se": 0.0095, "accuracy_n": 1000, "top5": 1.0, "size_bytes": 1000,
             "latency_ms": 2.0, "latency_iqr_ms": 0.1, "sparsity": 0.5, "seconds.D": 1.0, "seconds.T": 4.0,
             "cached_stages": "", "resumed_at": "", "pipeline": "D|T|50|B", "latency_backend": "onnxruntime"},
            {"accuracy": 0.94, "accuracy_se": 0.0075, "accuracy_n": 1000, "top5": 1.0, "size_bytes": 1100,
             "latency_ms": 3.0, "latency_iqr_ms": 0.3, "sparsity": 0.5, "seconds.D": 0.1, "seconds.T": 5.0,
             "cached_stages": "D", "resumed_at": "1", "pipeline": "D|T|50|B", "latency_backend": "onnxruntime"}]
    out = aggregate(runs)
    assert out["repeats"] == 2
    assert out["accuracy"] == pytest.approx(0.92) and out["accuracy_std"] == pytest.approx(0.04 / math.sqrt(2))
    assert out["size_bytes"] == 1050 and out["size_bytes_std"] == pytest.approx(100 / math.sqrt(2))
    assert out["latency_ms"] == 2.5 and out["latency_iqr_ms"] == pytest.approx(0.2)
    assert out["sparsity"] == 0.5 and out["sparsity_std"] == 0.0 and out["top5_std"] == 0.0
    assert [out["repeat.0.accuracy"], out["repeat.1.accuracy"]] == [0.90, 0.94]
    # the test split's binomial error of the mean (shared by both runs) and the seeds' standard error
    assert out["accuracy_se"] == pytest.approx(math.sqrt(0.92 * 0.08 / 1000 + out["accuracy_std"] ** 2 / 2))
    assert out["accuracy_n"] == 1000 and isinstance(out["accuracy_n"], int)
    assert out["seconds.D"] == pytest.approx(1.1) and out["seconds.T"] == 9.0, "what the trial spent there"
    assert out["cached_stages"] == ";D" and out["resumed_at"] == ";1"
    assert out["pipeline"] == "D|T|50|B" and out["latency_backend"] == "onnxruntime"
    assert aggregate(runs[:1]) == runs[0], "one run reports as it always has"


def test_a_mean_of_one_seed_has_the_binomial_error_and_spread_adds_to_it() -> None:
    assert mean_accuracy_se(0.9, 400, 0.0, 1) == pytest.approx(0.015)
    assert mean_accuracy_se(0.9, 400, 0.03, 1) == pytest.approx(0.015), "no spread is known from one seed"
    assert mean_accuracy_se(0.9, 400, 0.03, 9) == pytest.approx(math.sqrt(0.015 ** 2 + 0.01 ** 2))
    assert mean_accuracy_se(0.9, None, 0.0, 2, [0.02, 0.04]) == pytest.approx(math.sqrt((0.02**2 + 0.04**2) / 2))


def test_an_objective_not_finite_in_one_run_fails_the_mean() -> None:
    out = aggregate([{"accuracy": 0.9, "size_bytes": 10.0}, {"accuracy": float("nan"), "size_bytes": 10.0}])
    assert math.isnan(out["accuracy"])
    assert "accuracy" in final_result(out, 4)[FAILED]


def test_trials_csv_keeps_the_spread_and_each_run(tmp_path: Path) -> None:
    result = {"accuracy": 0.92, "accuracy_se": 0.01, "accuracy_n": 100, "accuracy_std": 0.02, "repeats": 2,
              "repeat.0.accuracy": 0.90, "repeat.1.accuracy": 0.94, "size_bytes": 10.0, "size_bytes_std": 0.0,
              "stage_index": 8, "stages": 8, "top5": 1.0, "latency_ms": 1.0, "sparsity": 0.5}
    row = trial_row("t1", {"pipeline": "D|T|50|B"}, result, None)
    assert row["status"] == "ok"
    assert {k: row[k] for k in ("repeats", "accuracy_std", "repeat.0.accuracy", "repeat.1.accuracy")} == {
        "repeats": 2, "accuracy_std": 0.02, "repeat.0.accuracy": 0.90, "repeat.1.accuracy": 0.94}
    columns = list(trials_frame([row]).columns)
    assert columns[9:13] == ["accuracy_se", "accuracy_n", "repeats", "accuracy_std"], columns


def test_the_front_shows_mean_and_spread_and_the_interval_of_the_mean(tmp_path: Path) -> None:
    rows = [{"trial_id": f"t{i}", "status": "ok", "pipeline": p, "order": "PA", "accuracy": a, "accuracy_se": se,
             "accuracy_n": 500, "accuracy_std": sd, "repeats": 3, "top5": 1.0, "top5_std": 0.0,
             "size_bytes": size, "size_bytes_std": 2_000.0, "latency_ms": 1.5, "latency_ms_std": 0.05,
             "sparsity": 0.5} for i, (p, a, se, sd, size) in enumerate([
                 ("D|T|50|B", 0.9613, 0.0101, 0.0180, 1_200_000.0), ("D|T|80|B", 0.8810, 0.0172, 0.0203, 600_000.0)])]
    write_results(tmp_path, rows, ["accuracy", "size_bytes"], ["max", "min"], {})
    frame, summary = load_front(tmp_path)
    console = Console(file=StringIO())
    print_front_table(frame, summary, console)
    text = console.file.getvalue()
    assert "0.9613 ± 0.0180" in text and "1.20 MB ± 2.00 kB" in text and "1.50 ± 0.0500" in text, text
    assert "mean over 3 seeds" in text, text
    front = {t["trial_id"]: t for t in summary["trials"]}  # what front.json and `frontier front --json` hold
    assert (front["t0"]["repeats"], front["t0"]["accuracy_std"], front["t0"]["size_bytes_std"]) == (3, 0.018, 2000.0)
    low, high = accuracy_interval(frame.iloc[0])
    assert (low, high) == pytest.approx((0.9613 - 1.96 * 0.0101, 0.9613 + 1.96 * 0.0101))
    assert f"{low:.3f}-{high:.3f}" in text
    single = pd.Series({"accuracy": 0.9213, "accuracy_se": 0.0151, "accuracy_n": 500})
    assert accuracy_interval(single) == wilson_interval(0.9213, 500), "one seed: the Wilson interval"


@pytest.mark.parametrize("value", [0, -2, 1.5, "three", True])
def test_a_bad_repeats_is_one_line_naming_the_key_and_the_value(value, tmp_path: Path, capsys) -> None:
    spec = {"name": "r", "data": {"source": {"name": "digits"}, "target": {"name": "digits"}}, "model": {"name": "small_resnet"},
            "budgets": {"dense": {"epochs": 1}}, "repeats": value}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"frontier: repeats: runs of each plan (one seed each) must be a whole number >= 1 but got {value!r}"]
    spec["repeats"] = 3
    path.write_text(yaml.safe_dump(spec))
    assert main(["check", str(path)]) == 0
    assert "12 trials of 3 seeds each" in capsys.readouterr().out
