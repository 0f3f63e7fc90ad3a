"""Ray's ``OptunaSearch`` private state, named in one place (see :class:`OptunaSearchState`)."""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch


class OptunaSearchState:
    """Ray's ``OptunaSearch`` private state that :class:`FailAwareOptunaSearch` uses, named only here.

    Checked against Ray 2.60.0 (``ray/tune/search/optuna/optuna_search.py``), whose own
    ``suggest``, ``on_trial_complete``, ``save`` and ``restore`` use the same three attributes;
    ``pyproject.toml`` bounds Ray to the versions checked (recheck these names before raising it).

    Args:
        searcher: the searcher whose state to reach.
    """

    def __init__(self, searcher: OptunaSearch) -> None:
        self.searcher = searcher

    @property
    def study(self) -> optuna.Study:
        """The Optuna study (``_ot_study``)."""
        return self.searcher._ot_study

    @property
    def asked(self) -> dict[str, optuna.trial.Trial]:
        """Tune trial id -> the Optuna trial asked for it (``_ot_trials``)."""
        return self.searcher._ot_trials

    @property
    def space(self) -> Any:
        """The define-by-run space function (``_space``: :class:`SpaceFunction` here)."""
        return self.searcher._space

    @property
    def told(self) -> set[str]:
        """Tune trial ids whose result Optuna was told (``_completed_trials``)."""
        return self.searcher._completed_trials
