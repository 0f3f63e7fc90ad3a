"""The searcher tells Optuna FAIL for a trial that errored or lacks an objective, never leaves it RUNNING."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.run.searcher import FailAwareOptunaSearch
from search.run.space_function import SpaceFunction
from search.spec.load import load_spec, parse_spec
from search.spec.to_plan import plan_for
from tests.final_result import final
from trainables.pipeline.result import STAGE_INDEX, STAGES
from tests.tiny_spec import tiny_spec

SPACES = Path(__file__).resolve().parent.parent / "spaces"


@pytest.fixture()
def searcher() -> FailAwareOptunaSearch:
    spec = load_spec(SPACES / "quickstart.yaml")
    return FailAwareOptunaSearch(space=SpaceFunction(spec), metric=spec.objective_names, mode=spec.directions,
                                 sampler=optuna.samplers.RandomSampler(seed=0))


def states(searcher) -> list:
    return [t.state for t in searcher._ot_study.trials]


def test_study_is_multi_objective(searcher) -> None:
    assert searcher._ot_study.directions == [optuna.study.StudyDirection.MAXIMIZE,
                                             optuna.study.StudyDirection.MINIMIZE,
                                             optuna.study.StudyDirection.MINIMIZE]


def test_errored_trial_with_partial_results_is_failed(searcher) -> None:
    config = searcher.suggest("a")
    assert "plan" in config and "pipeline" in config
    searcher.on_trial_complete("a", {STAGE_INDEX: 2, STAGES: 5}, error=True)
    assert states(searcher) == [optuna.trial.TrialState.FAIL]


def test_non_finite_objective_is_failed_and_finite_is_complete(searcher) -> None:
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", final(accuracy=float("nan"), size_bytes=1.0, latency_ms=1.0))
    searcher.on_trial_complete("b", final(accuracy=0.9, size_bytes=100.0, latency_ms=0.5))
    assert states(searcher) == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]
    assert searcher._ot_study.trials[1].values == [0.9, 100.0, 0.5]


def test_trials_reserve_one_bundle_per_epruning_actor_only_when_their_plan_uses_actors() -> None:
    from search.run.resources import TrialResources

    spec = load_spec(SPACES / "cifar10_resnet18_epruning.yaml")
    resources = TrialResources(spec.resources.cpu, spec.resources.gpu)
    actors = plan_for(spec, {"order": "P", "s2": 0.5, "prune.method": "epruning"}).model_dump(mode="json")
    gradual = plan_for(spec, {"order": "P", "s2": 0.5, "prune.method": "gradual"}).model_dump(mode="json")
    assert resources({"plan": actors}).bundles == [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 2.0, "GPU": 1.0},
                                                   {"CPU": 2.0, "GPU": 1.0}]
    assert resources({"plan": gradual}).bundles == [{"CPU": 4.0, "GPU": 1.0}]


def test_a_plan_already_proposed_is_not_run_again() -> None:
    """A space of 4 plans, 4 trials: all 4 plans run once (random draws alone would repeat one with
    probability 1 - 4!/4**4 = 91%); the skipped proposals are told to Optuna with the first trial's
    objectives once known, and a 5th trial, with no new plan left, still runs."""
    raw = tiny_spec("dupes", trials=4, space={"order": {"choice": {"PA": {"s2": {"choice": [0.5, 0.7, 0.8, 0.9]}}}}})
    spec = parse_spec(raw)
    searcher = FailAwareOptunaSearch(space=SpaceFunction(spec), metric=spec.objective_names, mode=spec.directions,
                                     sampler=optuna.samplers.RandomSampler(seed=0))
    first = searcher.suggest("t0")
    searcher.on_trial_complete("t0", final(accuracy=0.9, size_bytes=100.0, latency_ms=0.5))
    pipelines = [first["pipeline"]] + [searcher.suggest(f"t{i}")["pipeline"] for i in range(1, 4)]
    assert sorted(pipelines) == sorted({"D|T|50|B", "D|T|70|B", "D|T|80|B", "D|T|90|B"})
    assert searcher.duplicates_skipped > 0
    told = [t for t in searcher._ot_study.trials if t.state != optuna.trial.TrialState.RUNNING]
    assert told and {t.state for t in told} <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL}
    repeats_of_first = [t for t in told if t.params == searcher._ot_study.trials[0].params and t.number > 0]
    assert repeats_of_first and all(t.values == [0.9, 100.0, 0.5] for t in repeats_of_first)
    fifth = searcher.suggest("t4")
    assert fifth["pipeline"] in pipelines


def test_the_config_carries_the_sampled_parameters_as_optuna_saw_them(searcher) -> None:
    """``config["params"]`` is the trial's Optuna parameters plus its order: trials.csv's param columns."""
    from search.results.rows import trial_row

    for i in range(8):
        config = searcher.suggest(f"t{i}")
        asked = searcher._ot_study.trials[-1].params
        assert config["params"] == {**asked, "order": config["order"]}
        row = trial_row(f"t{i}", config, {}, "not run")
        assert {k for k in row if k.startswith("param.")} == {f"param.{k}" for k in config["params"]}


def test_a_repeated_proposal_is_replaced_by_a_neighbour_without_asking_the_sampler_again() -> None:
    """14 trials of a 16-plan space under TPE: every trial runs a new plan, and a suggestion costs
    the sampler one fit at most (two study trials: the repeat and its replacement), however full
    the space; re-asking the sampler took up to 16 fits per trial here."""
    s = {"choice": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}
    spec = parse_spec(tiny_spec("near", trials=14, space={"order": {"choice": {"PA": {"s2": s}, "PB": {"s1": s}}}}))
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)
    searcher = FailAwareOptunaSearch(space=SpaceFunction(spec), metric=spec.objective_names, mode=spec.directions,
                                     sampler=sampler)
    fits = []
    original = sampler.sample_relative
    sampler.sample_relative = lambda *a, **k: fits.append(1) or original(*a, **k)  # counts the sampler's fits
    pipelines = []
    for i in range(14):
        before = len(fits)
        config = searcher.suggest(f"t{i}")
        pipelines.append(config["pipeline"])
        searcher.on_trial_complete(f"t{i}", final(accuracy=0.5 + i / 100, size_bytes=100.0 - i, latency_ms=1.0))
        assert len(fits) - before <= 1, f"trial {i}: the sampler was asked {len(fits) - before} times"
    assert len(set(pipelines)) == 14, pipelines
    assert searcher.duplicates_skipped > 0, "TPE repeated a plan at least once in a nearly full space"
    assert len(searcher._ot_study.trials) == 14 + searcher.duplicates_skipped
    replaced = [t for t in searcher._ot_study.trials if "duplicate_of" in t.user_attrs]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in replaced)
