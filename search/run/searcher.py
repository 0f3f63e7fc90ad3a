"""The searcher: Ray's ``OptunaSearch`` that never runs a plan twice and tells Optuna what became of each trial."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import optuna
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .optuna_state import OptunaSearchState
from trainables.pipeline.result import STOPPED

from .outcome import Outcome, outcome, tell
from .study import DUPLICATE_OF, LOST_TRIALS, PIPELINE, TUNE_ID


class FailAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that never runs a plan twice and tells Optuna what became of each trial.

    **Outcomes.** Ray's version tells COMPLETE with the last intermediate result's values; when
    those lack an objective (a trial that died between stages) Optuna refuses it and the Optuna
    trial stays RUNNING forever (ARCHITECTURE.md, stack facts). Here each trial is told what
    happened to it (:func:`search.run.outcome.outcome`): COMPLETE with its objectives (``ok``), PRUNED when the early
    stopping scheduler stopped it at a stage boundary (``stopped``: it ended without an error
    before its last stage), else FAIL (``failed``). Before the tell the Optuna trial gets the user
    attributes :mod:`search.run.study` names (``tune_trial_id``, ``pipeline``, ``status``,
    ``stopped_at``, ``constraints``), so the study on disk says everything ``trials.csv`` says
    about the trial.

    The config of a trial is what :class:`SpaceFunction` returns (``plan``, ``pipeline``, ``order``,
    ``optuna_trial`` and the sampled ``params``); Ray also merges the sampled values in at the top
    level, which nothing here reads.

    **Constraints.** With ``bounds`` (the spec's ``select``, :func:`search.spec.constraints.search_constraints`)
    an ok trial's constraint values (``{"min_accuracy": 0.9 - accuracy, ...}``) are stored before it
    is told: as its ``constraints`` user attribute, and with Optuna 5's ``Trial.set_constraint``,
    which TPE, NSGA-II and GP read (on Optuna 4 the sampler's ``constraints_func``,
    :class:`search.spec.constraints.SelectConstraints`, reads the attribute).

    **Duplicates.** TPE over a small discrete space proposes plans it has already proposed; each
    such trial would spend a slot of the budget measuring a known point. A proposal whose plan was
    already proposed in this search never runs: its Optuna trial gets ``duplicate_of`` (the Tune
    trial that runs the plan) and is told that trial's outcome, at once when it is known, else when
    it arrives. In its place runs the nearest unseen plan (:meth:`unseen_neighbour`): the
    proposal's parameters with one (then more) of them redrawn at random, up to
    ``duplicate_retries`` draws, enqueued as the next Optuna trial. The sampler is asked once per
    trial, never again for a duplicate: each ask refits it on every trial so far, so the driver's
    cost per trial stays flat however long the search (``bench/soak.py`` measures it). A space with
    no unseen plan near the proposal runs the proposal anyway.

    **Budget.** With ``budget`` (early stopping on, Tune's ``num_samples=-1``) the searcher ends the
    search itself: it proposes trials until ``budget`` of them were not stopped, so a stopped
    trial's slot goes to a new one. It waits (None) while running trials might still be stopped,
    and says FINISHED when none is left to wait for.

    **Resume.** On a restore the study is reopened from its storage, which may hold trials asked
    after the snapshot the restore reads; those never ran and are told FAIL (listed in the study's
    ``lost_trials`` attribute). The overrides reach Ray's private state through
    :class:`OptunaSearchState` only; the added state pickles with the searcher for a restore.
    """

    DUPLICATE_RETRIES = 64  # cheap draws (no sampler fit): a redrawn parameter, then two, ... up to all

    def __init__(self, *args: Any, duplicate_retries: int = DUPLICATE_RETRIES, budget: int | None = None,
                 bounds: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicate_retries = duplicate_retries
        self.budget, self.bounds = budget, dict(bounds or {})
        self._plan_trials: dict[str, str] = {}  # plan as JSON -> the first trial that ran it
        self._outcomes: dict[str, Outcome] = {}  # trial -> what became of it, once known
        self._waiting: dict[str, list[optuna.trial.Trial]] = {}  # trial -> duplicates told when it ends
        self._started: set[str] = set()
        self._stopped: set[str] = set()
        self.duplicates_skipped = 0

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.budget is not None and len(self._started) - len(self._stopped) >= self.budget:
            return None if self._started - set(self._outcomes) else Searcher.FINISHED
        config = super().suggest(trial_id)
        first = self._plan_trials.get(_plan_key(config))
        if first is not None:
            neighbour = self.unseen_neighbour(OptunaSearchState(self).asked[trial_id])
            if neighbour is not None:
                self._skip_duplicate(trial_id, first)
                OptunaSearchState(self).study.enqueue_trial(neighbour)
                config = super().suggest(trial_id)  # the enqueued parameters: no sampler fit
        key = _plan_key(config)
        if key is not None:
            self._plan_trials.setdefault(key, trial_id)
        ot_trial = OptunaSearchState(self).asked.get(trial_id)
        if ot_trial is not None and isinstance(config, dict):
            ot_trial.set_user_attr(TUNE_ID, trial_id)
            ot_trial.set_user_attr(PIPELINE, config.get("pipeline"))
            self._started.add(trial_id)
        return config

    def unseen_neighbour(self, proposal: optuna.trial.Trial) -> dict[str, Any] | None:
        """Parameters of a plan not proposed yet in this search, near ``proposal``'s: its parameters
        with ``1 + i // 8`` of them (draw ``i``) left to a random sampler; None if ``duplicate_retries``
        draws found none. Draws run the space on a throwaway in-memory study (a plan is a pure
        function of its parameters), seeded by the proposal's number: a resumed search draws the same."""
        params, space = dict(proposal.params), OptunaSearchState(self).space
        rng = np.random.default_rng(proposal.number)
        scratch = _scratch_study(seed=proposal.number)
        for draw in range(self.duplicate_retries):
            redrawn = set(rng.permutation(sorted(params))[:1 + draw // 8].tolist())
            scratch.enqueue_trial({k: v for k, v in params.items() if k not in redrawn})
            candidate = scratch.ask()
            if _plan_key(space(candidate)) not in self._plan_trials:
                return candidate.params
        return None

    def _skip_duplicate(self, trial_id: str, first: str) -> None:
        """Close ``trial_id``'s Optuna trial, a repeat of ``first``'s plan, with ``first``'s outcome."""
        state = OptunaSearchState(self)
        ot_trial = state.asked.pop(trial_id)
        ot_trial.set_user_attr(DUPLICATE_OF, first)
        known = self._outcomes.get(first)
        if known is None:
            self._waiting.setdefault(first, []).append(ot_trial)
        else:
            tell(state.study, ot_trial, known)
        self.duplicates_skipped += 1

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fail_lost_trials()

    def _fail_lost_trials(self) -> None:
        """Tell FAIL for RUNNING trials of the study this searcher never handed to Tune or that its
        snapshot does not know (asked after it, before the driver was killed)."""
        state = OptunaSearchState(self)
        known = {t.number for t in state.asked.values()} | {t.number for ts in self._waiting.values() for t in ts}
        running = state.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        lost = [t.number for t in running if t.number not in known]
        for number in lost:
            state.study.tell(number, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        if lost:
            earlier = state.study.user_attrs.get(LOST_TRIALS, [])
            state.study.set_user_attr(LOST_TRIALS, sorted({*earlier, *lost}))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        state = OptunaSearchState(self)
        known = outcome(result, error, self.metric, self.bounds)
        self._outcomes[trial_id] = known
        if known.status == STOPPED:
            self._stopped.add(trial_id)
        if trial_id in state.asked and trial_id not in state.told:
            tell(state.study, state.asked[trial_id], known)
            state.told.add(trial_id)
        for duplicate in self._waiting.pop(trial_id, []):
            tell(state.study, duplicate, known)


def _scratch_study(seed: int) -> optuna.Study:
    """An in-memory study with a seeded random sampler, for draws no one is told about (created
    without Optuna's "A new study created" log line)."""
    storage = optuna.storages.InMemoryStorage()
    logger, level = logging.getLogger("optuna"), logging.getLogger("optuna").level
    logger.setLevel(logging.WARNING)
    try:
        name = storage.get_study_name_from_id(
            storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], study_name="scratch"))
    finally:
        logger.setLevel(level)
    return optuna.Study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler(seed=seed))


def _plan_key(config: dict | None) -> str | None:
    return json.dumps(config.get("plan"), sort_keys=True) if isinstance(config, dict) else None
