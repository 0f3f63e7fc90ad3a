"""Early stopping where pipelines are long: rungs by stage kind (shared by plans whose slots differ),
the noise-aware rank (a trial worse by less than its measured noise is not stopped, one worse by
well more is), the record of a run from before rungs read back after a resume, and no judgement at
a boundary whose next stage is a cache hit (nothing to save)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from ray import tune
from ray.tune.schedulers import TrialScheduler

from search.run.early_stop import ParetoHalving, should_stop
from search.spec.schema import EarlyStop
from tests.conftest import SOURCE, TARGET
from trainables import BenchmarkConfig, Context, DenseConfig, TransferConfig, make_plan, run_plan
from trainables.pipeline.boundary import PREFIX, RUNG, measured_at, rung_name
from trainables.pipeline.cache import StageCache
from trainables.pipeline.plan import PruneBudget
from trainables.pipeline.result import BOUNDARY, BOUNDARY_SECONDS
from trainables.pipeline.run import Progress, measure_or_reuse, next_stage_cached, tune_trial
from trainables.stages.share import ShareConfig

FAST = BenchmarkConfig(warmup=1, runs=3, end_to_end=False)
NAMES, DIRECTIONS = ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"]


def plan(order: str, s1=None, s2=None, quantize: str = "none", seed: int = 0):
    return make_plan(order=order, s1=s1, s2=s2, seed=seed, source=SOURCE, target=TARGET, quantize=quantize,
                     share=ShareConfig() if quantize != "none" else None,
                     dense=DenseConfig(model="small_resnet", epochs=1, batch_size=64),
                     transfer=TransferConfig(epochs=1, batch_size=64),
                     prune=PruneBudget(epochs=1, recover_epochs=0, frequency=4, batch_size=64), benchmark=FAST)


def rungs(p) -> dict[str, str]:
    slots = p.slots()
    return {"|".join(slots[:done]): rung_name(p, done) for done in range(1, len(slots))}


def test_rungs_are_the_domain_and_the_compressing_kinds_done() -> None:
    assert rungs(plan("PA", s2=0.5)) == {"D": "source:none", "D|T": "target:none", "D|T|P2": "target:P"}
    assert rungs(plan("PB", s1=0.5)) == {"D": "source:none", "D|P1": "source:P", "D|P1|T": "target:P"}
    pba = rungs(plan("PBA", s1=0.4, s2=0.7))
    assert pba["D|P1|T"] == "target:P" == rungs(plan("PA", s2=0.5))["D|T|P2"], "PB and PA meet, pruned once"
    assert pba["D|P1|T|P2"] == "target:P+P"
    assert rungs(plan("PB", s1=[0.4, 0.6]))["D|P1|P1.2"] == "source:P+P", "two milestones: pruned twice"
    shared = plan("PA", s2=0.5, quantize="Q")
    assert shared.slots() == ["D", "T", "P2", "Q", "B"]
    assert rung_name(shared, 4) == "target:P+Q"
    with pytest.raises(ValueError, match="done must be between 0 and 5 .* but got 6"):
        rung_name(shared, 6)


def rung_of(gap: float) -> list[list[float]]:
    """Four trials of the same size and latency whose accuracies are ``gap`` apart, from 0.90 down."""
    return [[0.90 - k * gap, 1000.0, 1.0] for k in range(4)]


@pytest.mark.parametrize("se", [0.005, 0.02])
def test_a_trial_worse_by_less_than_its_noise_is_not_stopped_and_one_worse_by_well_more_is(se: float) -> None:
    z = [1.96, None, None]
    tie = 1.96 * (2 * se * se) ** 0.5  # two accuracies this close are equal within their errors
    spreads = [[se, 0.0, 0.0]] * 4
    judge = lambda points, i: should_stop(points, i, DIRECTIONS, [0.0] * 3, grace=4, eta=2, spreads=spreads, z=z)
    within = rung_of(0.6 * tie / 3)  # the last is worse than the first by 0.6 of the tie width
    assert not any(judge(within, i) for i in range(4)), "noise alone stops no trial"
    assert any(should_stop(within, i, DIRECTIONS, [0.0] * 3, grace=4, eta=2) for i in range(4)), \
        "without the measured noise the same gaps would stop trials"
    beyond = rung_of(3 * tie)  # each worse than the one before by 3 tie widths
    assert [judge(beyond, i) for i in range(4)] == [False, False, True, True]


def test_the_margin_is_a_floor_on_the_measured_noise() -> None:
    rung = rung_of(0.01)  # accuracies 0.90, 0.89, 0.88, 0.87; measured errors tiny
    spreads = [[1e-4, 0.0, 0.0]] * 4
    args = dict(grace=4, eta=2, spreads=spreads, z=[1.96, None, None])
    assert should_stop(rung, 3, DIRECTIONS, [0.0] * 3, **args), "0.03 apart beyond errors of 1e-4"
    assert not should_stop(rung, 3, DIRECTIONS, [0.05, 0.0, 0.0], **args), "within a 5% margin: a tie"


def test_the_scheduler_judges_at_the_rung_with_the_reported_noise(tmp_path: Path) -> None:
    scheduler = ParetoHalving(NAMES, DIRECTIONS, EarlyStop(enabled=True, grace=2, eta=2, margin=0.0,
                                                           margins={"latency_ms": 0.0}), record=tmp_path / "r.jsonl")

    class Trial:  # what the scheduler reads of Tune's trial
        def __init__(self, trial_id: str) -> None:
            self.trial_id = trial_id

    def result(boundary: str, accuracy: float, se: float) -> dict:
        return {BOUNDARY: boundary, RUNG: "target:P", "boundary_plan": boundary + str(accuracy),
                PREFIX + "accuracy": accuracy, PREFIX + "accuracy_se": se, PREFIX + "size_bytes": 1000.0,
                PREFIX + "latency_ms": 1.0, PREFIX + "latency_iqr_ms": float("nan")}

    assert scheduler.on_trial_result(None, Trial("pa"), result("D|T|P2", 0.90, 0.02)) == TrialScheduler.CONTINUE
    # PB's D|P1|T meets PA's D|T|P2 at target:P; 0.05 lower is within 1.96 combined errors of 0.02
    assert scheduler.on_trial_result(None, Trial("pb"), result("D|P1|T", 0.85, 0.02)) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, Trial("pc"), result("D|P1|T", 0.70, 0.02)) == TrialScheduler.STOP
    lines = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [(e["rung"], e[BOUNDARY], e["spreads"]) for e in lines] == [
        ("target:P", "D|T|P2", [0.02, 0.0, 0.0]), ("target:P", "D|P1|T", [0.02, 0.0, 0.0]),
        ("target:P", "D|P1|T", [0.02, 0.0, 0.0])]
    assert scheduler.stopped == {"pc": "D|P1|T"}, "a stopped trial keeps its boundary's name (stopped_at)"


def test_a_record_from_before_rungs_reads_back_at_the_boundary_name(tmp_path: Path) -> None:
    record = tmp_path / "early_stop.jsonl"
    old = [{"trial_id": "a", "boundary": "D|P1", "group": "ga", "values": [0.9, 100.0, 1.0], "stop": False,
            "rung_size": 1},
           {"trial_id": "b", "boundary": "D|P1", "group": "gb", "values": [0.5, 200.0, 1.0], "stop": True,
            "rung_size": 2}]
    record.write_text("".join(json.dumps(e) + "\n" for e in old) + '{"trial_id": "cut')  # a line cut by a kill
    resumed = ParetoHalving(NAMES, DIRECTIONS, EarlyStop(enabled=True, grace=2, eta=2, margin=0.0), record=record)
    assert resumed.judge("b", "D|P1", [0.5, 200.0, 1.0], "gb") == TrialScheduler.STOP, "judged before: same answer"
    assert resumed.rungs == {"D|P1": {"a": [0.9, 100.0, 1.0], "b": [0.5, 200.0, 1.0]}}
    assert resumed.spreads["D|P1"]["a"] == [0.0, 0.0, 0.0], "no noise recorded: exact"
    # a new trial reporting that boundary without a rung joins the old lines' rung
    assert resumed.judge("c", "D|P1", [0.4, 300.0, 1.0], "gc") == TrialScheduler.STOP
    assert json.loads(record.read_text().splitlines()[-1])["rung"] == "D|P1"


def test_the_next_stage_is_known_cached_before_it_runs(tmp_path: Path) -> None:
    cache = StageCache(tmp_path / "cache")
    seen: dict[str, list[bool]] = {}

    def looking_ahead(name: str, p):
        seen[name] = []
        return lambda model, progress: seen[name].append(next_stage_cached(p, progress, cache))

    first, other = plan("PA", s2=0.5), plan("PA", s2=0.7)
    run_plan(first, Context(SOURCE, TARGET, tmp_path / "a"), cache=cache, after_stage=looking_ahead("first", first))
    hits = cache.hits
    run_plan(first, Context(SOURCE, TARGET, tmp_path / "b"), cache=cache, after_stage=looking_ahead("again", first))
    run_plan(other, Context(SOURCE, TARGET, tmp_path / "c"), cache=cache, after_stage=looking_ahead("other", other))
    # after D, D|T, D|T|P2: the next is T, P2, B (the benchmark is never cached)
    assert seen == {"first": [False, False, False], "again": [True, True, False], "other": [True, False, False]}
    assert cache.hits - hits == 3 + 2, "looking ahead reads nothing: only the runs' own hits count"
    assert not next_stage_cached(first, Progress(index=1), None), "no cache: nothing is a hit"


@pytest.mark.slow  # a local Ray and two trials of a 4-stage plan through Tune: ~20-30 s on 2 CPUs
@pytest.mark.usefixtures("local_ray")
def test_a_trial_whose_next_stages_are_cached_is_never_measured_nor_judged(tmp_path: Path) -> None:
    p = plan("PA", s2=0.5)
    assert [done for done in range(len(p.steps)) if measured_at(p, done)] == [1, 2]
    record = tmp_path / "early_stop.jsonl"
    scheduler = ParetoHalving(NAMES, DIRECTIONS, EarlyStop(enabled=True, grace=1, eta=100.0, margin=0.0),
                              record=record)
    trainable = tune.with_parameters(tune_trial, run_dir=str(tmp_path / "run"), cache=True, boundary_runs=2)
    same = p.model_dump(mode="json")
    tuner = tune.Tuner(trainable, param_space={"plan": tune.grid_search([same, same])},
                       tune_config=tune.TuneConfig(scheduler=scheduler, max_concurrent_trials=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), verbose=0))
    results = sorted(tuner.fit(), key=lambda r: r.metrics["trial_id"])
    first, second = (r.metrics_dataframe for r in results)
    assert [r.metrics["stage_index"] for r in results] == [4, 4], "both ran to the end"
    assert first[BOUNDARY].dropna().tolist() == ["D", "D|T"]
    assert BOUNDARY not in second.columns or second[BOUNDARY].isna().all(), "the second measured no boundary"
    assert results[0].metrics[BOUNDARY_SECONDS] == pytest.approx(first[PREFIX + "seconds"].sum())
    assert results[0].metrics[BOUNDARY_SECONDS] > 0 and results[1].metrics[BOUNDARY_SECONDS] == 0.0
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    judged = [e["trial_id"] for e in lines if not e.get("peer")]
    assert judged == [results[0].metrics["trial_id"]] * 2, "only the first trial was judged"
    # each finished float benchmark counts, unjudged, at the rung its model passed (target:P)
    peers = [(e["trial_id"], e["rung"], e["stop"]) for e in lines if e.get("peer")]
    assert sorted(peers) == [(r.metrics["trial_id"], "target:P", False) for r in results]
    assert not scheduler.stopped


def test_a_model_is_measured_once_at_a_boundary_and_reused_from_its_cache_entry(tmp_path: Path) -> None:
    """Every trial of a PA search holds the same ``D|T``: the first trial to measure it keeps the
    measurement beside the cache entry; a trial that took ``D|T`` from the cache reuses it at no cost."""
    cache = StageCache(tmp_path / "cache")
    p = plan("PA", s2=0.5)
    held: dict[str, object] = {}

    def keep(model, progress):
        if progress.index == 2:  # after D|T
            held.update(model=model, progress=copy.deepcopy(progress))

    run_plan(p, Context(SOURCE, TARGET, tmp_path / "a"), cache=cache, after_stage=keep)
    ctx = Context(SOURCE, TARGET, tmp_path / "b")
    first, spent = measure_or_reuse(held["model"], p, held["progress"], ctx, 2, cache)
    assert spent > 0 and first[BOUNDARY] == "D|T" and first[PREFIX + "seconds"] == spent
    again, spent_again = measure_or_reuse(held["model"], p, held["progress"], ctx, 2, cache)
    assert spent_again == 0.0 and again == first, "the kept measurement, not a new one"
    _, other_runs = measure_or_reuse(held["model"], p, held["progress"], ctx, 3, cache)
    assert other_runs > 0, "another number of timed runs is another measurement"
    assert measure_or_reuse(held["model"], p, Progress(index=2), ctx, 2, None)[1] > 0, "no cache: measured each time"
