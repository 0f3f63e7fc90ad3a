"""A sampler that does not see the reference trial: the dense model, which samples no parameter.

A search with ``reference: true`` (the default) runs the dense model as it is first, as an Optuna
trial enqueued with no parameters (:data:`~search.run.study.REFERENCE`), so that the front has its
reference row. Optuna's GP and NSGA-II samplers model the *intersection* of every finished trial's
parameters (``IntersectionSearchSpace``); one trial with none empties it, and from then on they
sample every parameter independently, that is at random, without a warning (optuna#6164). Measured
by ``bench/search_efficiency.py`` before this wrapper: NSGA-II and GP drew the very trials random
search drew, all 14 of every seed.

:class:`ReferenceBlind` wraps such a sampler and hands it the study without the reference trial
(:class:`_WithoutReference`: every trial list the sampler reads through ``Study._get_trials``, as
Optuna 4 and 5 samplers do, with the reference left out); the trial itself still runs and counts
everywhere else (``trials.csv``, the front, the report).
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from .study import REFERENCE


class _WithoutReference:
    """``study`` as a sampler reads it, less the reference trial; every other attribute is the study's."""

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return [t for t in trials if not t.user_attrs.get(REFERENCE)]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


class ReferenceBlind(BaseSampler):
    """``sampler`` with the reference trial out of its sight (module doc); otherwise the same sampler.

    Args:
        sampler: the wrapped Optuna sampler (GP, NSGA-II).
    """

    def __init__(self, sampler: BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(_WithoutReference(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(_WithoutReference(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(_WithoutReference(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(_WithoutReference(study), trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(_WithoutReference(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
