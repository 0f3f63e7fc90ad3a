"""A sampler that does not see the reference trial: the dense model, which samples no parameter.

A search with ``reference: true`` (the default) runs the dense model as it is first, as an Optuna
trial enqueued with no parameters (:data:`~search.run.study.REFERENCE`), so that the front has its
reference row. Optuna's GP and NSGA-II samplers model the *intersection* of every finished trial's
parameters (``IntersectionSearchSpace``); one trial with none empties it, and from then on they
sample every parameter independently, that is at random, without a warning (optuna#6164). Measured
by ``bench/search_efficiency.py`` before this wrapper: NSGA-II and GP drew the very trials random
search drew, all 14 of every seed.

:class:`ReferenceBlind` wraps such a sampler and hands it the study with the reference trial
shown as failed (:class:`_ReferenceAsFailed`: every trial list the sampler reads through
``Study._get_trials``, as Optuna 4 and 5 samplers do); the trial itself is complete and counts
everywhere else (the study, ``trials.csv``, the front, the report).
"""

from __future__ import annotations

import copy
from collections.abc import Container, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from .study import REFERENCE


class _ReferenceAsFailed:
    """``study`` as a sampler reads it, the reference trial shown as failed; every other attribute is the study's.

    Failed, not left out: samplers learn from COMPLETE trials only, and Optuna's genetic samplers
    index the trial list by trial number (``trials[trial.number]``), which a list without the
    reference would shift.
    """

    def __init__(self, study: optuna.Study) -> None:
        self._study = study

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None,
                    use_cache: bool = False) -> list[FrozenTrial]:
        trials = [_failed(t) if t.user_attrs.get(REFERENCE) else t
                  for t in self._study._get_trials(deepcopy=deepcopy, use_cache=use_cache)]
        return trials if states is None else [t for t in trials if t.state in states]

    def get_trials(self, deepcopy: bool = True, states: Container[TrialState] | None = None) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def _failed(trial: FrozenTrial) -> FrozenTrial:
    """A copy of ``trial`` whose state reads FAIL (a finished trial no sampler learns from)."""
    shown = copy.copy(trial)
    shown.state = TrialState.FAIL
    return shown


class ReferenceBlind(BaseSampler):
    """``sampler`` with the reference trial out of its sight (module doc); otherwise the same sampler.

    Args:
        sampler: the wrapped Optuna sampler (GP, NSGA-II).
    """

    def __init__(self, sampler: BaseSampler) -> None:
        self.sampler = sampler

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(_ReferenceAsFailed(study), trial)

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return self.sampler.sample_relative(_ReferenceAsFailed(study), trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(_ReferenceAsFailed(study), trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(_ReferenceAsFailed(study), trial)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self.sampler.after_trial(_ReferenceAsFailed(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
