"""The searcher a spec asks for: its Optuna sampler, seeded, and the searcher around it."""

from __future__ import annotations

import threading
from typing import Any

import optuna

from search.spec.constraints import SelectConstraints, search_constraints
from search.spec.schema import SamplerOptions, Spec

from .outcome import TRIAL_CONSTRAINTS
from .reference_blind import ReferenceBlind
from .searcher import FailAwareOptunaSearch
from .space_function import SpaceFunction

CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")  # the samplers that learn constraints


class NSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: Ray Tune pickles the searcher into the experiment's
    checkpoint, and Optuna's genetic samplers hold a ``threading.Lock`` (``_thread_lock``, Optuna
    4.5 to 5.1 at least) that cannot be pickled, so every ``sampler: nsga2`` search failed there. The
    lock guards the sampler's generation cache within one process: a copy gets a fresh one."""

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_thread_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


def make_sampler(name: str, seed: int, constraints: SelectConstraints | None = None,
                 options: SamplerOptions | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec names, seeded, learning ``constraints`` where it can (not ``random``),
    with ``options`` (the spec's ``sampler_options``) where set and Optuna's defaults elsewhere."""
    options = options or SamplerOptions()
    startup = {} if options.startup is None else {"n_startup_trials": options.startup}
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constraints_func=constraints,
                                          **startup)
    # GP and NSGA-II model the intersection of the trials' parameters, which the reference trial
    # (none sampled) empties: blind to it, they model the space (search.run.reference_blind)
    if name == "nsga2":
        population = {} if options.population is None else {"population_size": options.population}
        return ReferenceBlind(NSGAIISampler(seed=seed, constraints_func=constraints, **population))
    if name == "gp":
        return ReferenceBlind(optuna.samplers.GPSampler(seed=seed, constraints_func=constraints, **startup))
    return optuna.samplers.RandomSampler(seed=seed)


def make_searcher(spec: Spec, study_name: str, storage: optuna.storages.BaseStorage | None, *,
                  budget: int | None = None) -> FailAwareOptunaSearch:
    """The searcher of a spec: its space, objectives and sampler, its ``select`` as constraints
    (learned by the sampler where it can), the study in ``storage``, and ``budget`` trials that
    were not stopped (early stopping on) or None (Tune's ``num_samples`` counts)."""
    bounds = search_constraints(spec.select, spec.fidelity)
    learned = (SelectConstraints(len(bounds)) if bounds and spec.sampler in CONSTRAINED_SAMPLERS
               and not TRIAL_CONSTRAINTS else None)
    return FailAwareOptunaSearch(space=SpaceFunction(spec), metric=spec.objective_names, mode=spec.directions,
                                 sampler=make_sampler(spec.sampler, spec.seed, learned, spec.sampler_options), storage=storage,
                                 study_name=study_name, budget=budget, bounds=bounds)
