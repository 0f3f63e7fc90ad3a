"""``sampler_options``: the spec sets how soon TPE and GP learn and NSGA-II's generation size."""

from __future__ import annotations

import pickle

import optuna
from search.run.sampler import make_searcher
from search.spec.load import parse_spec
from tests.tiny_spec import tiny_spec


def _sampler(**raw) -> optuna.samplers.BaseSampler:
    spec = parse_spec({**tiny_spec("s", trials=4, space={}), **raw})
    return make_searcher(spec, "s", None)._sampler


def test_the_options_reach_the_samplers_and_unset_keeps_optunas_defaults() -> None:
    assert _sampler(sampler="tpe", sampler_options={"startup": 3})._n_startup_trials == 3
    assert _sampler(sampler="tpe")._n_startup_trials == 10
    assert _sampler(sampler="gp", sampler_options={"startup": 4}).sampler._n_startup_trials == 4
    assert _sampler(sampler="nsga2", sampler_options={"population": 6}).sampler._population_size == 6
    assert _sampler(sampler="nsga2").sampler._population_size == 50  # GP and NSGA-II: search.run.reference_blind


def test_tpe_learns_after_its_startup_trials() -> None:
    """After ``startup`` trials TPE proposes from its model: on a one-parameter problem where the
    best value is one of ten, it proposes that value far more often than chance (1 in 10)."""
    study = optuna.create_study(direction="maximize", sampler=_sampler(sampler="tpe", sampler_options={"startup": 3}))
    study.optimize(lambda t: t.suggest_categorical("x", list(range(10))) == 7, n_trials=30)
    later = [t.params["x"] for t in study.trials[10:]]
    assert later.count(7) >= 8, later


def test_nsga2_survives_the_pickling_ray_does_and_goes_on_sampling() -> None:
    """Ray Tune pickles the searcher into its checkpoint; Optuna's NSGA-II holds a lock that could not
    be pickled, which failed every ``sampler: nsga2`` search after its first trial."""
    sampler = _sampler(sampler="nsga2", sampler_options={"population": 4})
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    copy = pickle.loads(pickle.dumps(sampler))
    study.sampler = copy
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    assert len(study.trials) == 12 and copy.sampler._population_size == 4
