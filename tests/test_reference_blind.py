"""GP and NSGA-II model the space although the reference trial (no parameter) is in the study
(search.run.reference_blind): real Optuna studies, the reference trial enqueued as a search does."""

from __future__ import annotations

import optuna
import pytest

from search.run.reference_blind import ReferenceBlind
from search.run.sampler import make_sampler
from search.run.study import REFERENCE
from search.spec.schema import SamplerOptions

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _objective(trial: optuna.Trial) -> float:
    if trial.user_attrs.get(REFERENCE):  # the dense model: samples nothing
        return 0.5
    return float(trial.suggest_categorical("x", list(range(10))) == 7) + 0.01 * trial.suggest_float("y", 0, 1)


def _study(sampler: optuna.samplers.BaseSampler, trials: int) -> optuna.Study:
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({}, user_attrs={REFERENCE: True})
    study.optimize(_objective, n_trials=trials)
    return study


@pytest.mark.parametrize("name", ["gp", "nsga2"])
def test_the_reference_trial_no_longer_empties_the_modelled_space(name: str) -> None:
    blind = make_sampler(name, seed=0)
    assert isinstance(blind, ReferenceBlind)
    study = _study(blind, 6)
    trial = study.trials[-1]
    assert set(blind.infer_relative_search_space(study, trial)) == {"x", "y"}
    plain = make_sampler(name, seed=0).sampler  # a fresh one: the search space is computed incrementally
    assert plain.infer_relative_search_space(study, trial) == {}, "unwrapped, Optuna models nothing"


def test_gp_blind_to_the_reference_learns_where_it_fell_back_to_chance() -> None:
    """After its startup trials GP proposes the best of ten categories far more often than chance
    (1 in 10); unwrapped, with the reference trial in the study, it draws what random search draws."""
    options = optuna.samplers.GPSampler
    blind = _study(ReferenceBlind(options(seed=1, n_startup_trials=4)), 24)
    plain = _study(options(seed=1, n_startup_trials=4), 24)
    random = _study(optuna.samplers.RandomSampler(seed=1), 24)
    later = [t.params["x"] for t in blind.trials[8:]]
    assert later.count(7) >= 8, later
    assert [t.params for t in plain.trials[1:]] == [t.params for t in random.trials[1:]], "the fall-back to chance"


def test_tpe_learns_with_the_reference_trial_in_sight() -> None:
    """TPE (multivariate, group) is not wrapped: its group decomposition keeps the reference trial's
    empty parameter set a group of its own, and it still learns the best category."""
    study = _study(make_sampler("tpe", seed=1, options=SamplerOptions(startup=4)), 24)
    later = [t.params["x"] for t in study.trials[8:]]
    assert later.count(7) >= 8, later


def test_nsga2_blind_to_the_reference_breeds_generations_asked_and_told_apart() -> None:
    """A search asks for trials before earlier ones are told (Ray Tune runs them concurrently);
    NSGA-II's generation cache indexes the trial list by trial number, so the reference trial is
    shown failed, never left out: left out, the second generation's ask failed (IndexError)."""
    sampler = make_sampler("nsga2", seed=0, options=SamplerOptions(population=4))
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.enqueue_trial({}, user_attrs={REFERENCE: True})
    running = [study.ask(), study.ask()]
    for _ in range(14):
        trial = running.pop(0)
        values = (0.5, 0.5) if trial.user_attrs.get(REFERENCE) else (
            trial.suggest_categorical("x", list(range(10))) / 10, trial.suggest_float("y", 0, 1))
        study.tell(trial, values)
        running.append(study.ask())
    generations = {v for t in study.trials for k, v in t.system_attrs.items() if k.endswith(":generation")}
    assert len(study.trials) == 16 and max(generations) >= 2, generations
