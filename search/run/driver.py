"""Run a search: Optuna proposes plans, Ray Tune runs them, the results land in ``runs/<name>/``.

The define-by-run space goes to ``OptunaSearch(space=..., metric=[...], mode=[...])`` (the lists to
the searcher, not to ``TuneConfig``, or the study silently turns single-objective). Every trial
runs :func:`trainables.pipeline.run.tune_trial` with the spec's resources; local Ray by default,
``address`` for a cluster. At the end ``trials.csv``, ``front.json`` and ``plans.json`` are written.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
from ray import tune
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables.errors import FrontierError
from trainables.files import atomic_write
from trainables.layout import TUNE_EXPERIMENT, RunFolder
from trainables.objectives import FAILED
from trainables.pipeline.plan import Plan
from trainables.pipeline.run import tune_trial

from trainables.pipeline.boundary import BOUNDARY

from .clean import TrialEnd
from .constraints import CONSTRAINTS, SelectConstraints, active_constraints, constraint_values
from .early_stop import ParetoHalving, early_stop_record
from .live import LiveResults
from .progress import SearchProgress
from .results import FULL_PLAN_KEY, FULL_PLANS_FILE, OPTUNA_TRIAL_KEY, PARAMS_KEY, mark_feasible, trial_row, write_results
from .space import suggest
from .spec import Spec
from .study import (DUPLICATE_OF, LOST_TRIALS, PIPELINE, STATUS, STOPPED_AT, TUNE_ID, WARM_START_FROM, finished_state,
                    open_storage, study_path, warm_start_points)
from .to_plan import pba_lower_bound, plan_for


class SpaceFunction:
    """The define-by-run space of a spec: samples an assignment and returns its plan as constants.

    A class rather than a closure so the searcher (which holds it) can be pickled for a restore.
    """

    def __init__(self, spec: Spec) -> None:
        self.spec = spec

    def __call__(self, trial: Any) -> dict[str, Any]:
        assignment = suggest(trial, self.spec.nodes, lower=pba_lower_bound)
        plan = plan_for(self.spec, assignment)
        order = str(assignment.get("order", "none"))
        config = {"plan": plan.model_dump(mode="json"), "pipeline": plan.pipeline, "order": order,
                  OPTUNA_TRIAL_KEY: trial.number,
                  PARAMS_KEY: {**trial.params, "order": order}}  # Optuna's record of what it sampled
        if self.spec.fidelity < 1:  # what `frontier rerun` runs: the same plan at the full budget
            config[FULL_PLAN_KEY] = plan_for(self.spec, assignment, fidelity=1.0).model_dump(mode="json")
        return config


class FailAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that never runs a plan twice and tells Optuna what became of each trial.

    **Outcomes.** Ray's version tells COMPLETE with the last intermediate result's values; when
    those lack an objective (a trial that died between stages) Optuna refuses it and the Optuna
    trial stays RUNNING forever (ARCHITECTURE.md, stack facts). Here each trial is told what
    happened to it (:func:`outcome`): COMPLETE with its objectives (``ok``), PRUNED when the early
    stopping scheduler stopped it at a stage boundary (``stopped``: it ended without an error
    before its last stage), else FAIL (``failed``). Before the tell the Optuna trial gets the user
    attributes :mod:`search.study` names (``tune_trial_id``, ``pipeline``, ``status``,
    ``stopped_at``, ``constraints``), so the study on disk says everything ``trials.csv`` says
    about the trial.

    The config of a trial is what :class:`SpaceFunction` returns (``plan``, ``pipeline``, ``order``,
    ``optuna_trial`` and the sampled ``params``); Ray also merges the sampled values in at the top
    level, which nothing here reads.

    **Constraints.** With ``bounds`` (the spec's ``select``, :func:`search.constraints.active_constraints`)
    an ok trial's constraint values (``{"min_accuracy": 0.9 - accuracy, ...}``) are stored before it
    is told: as its ``constraints`` user attribute, and with Optuna 5's ``Trial.set_constraint``,
    which TPE, NSGA-II and GP read (on Optuna 4 the sampler's ``constraints_func``,
    :class:`search.constraints.SelectConstraints`, reads the attribute).

    **Duplicates.** TPE over a small discrete space proposes plans it has already proposed; each
    such trial would spend a slot of the budget measuring a known point. A proposal whose plan was
    already proposed in this search never runs: its Optuna trial gets ``duplicate_of`` (the Tune
    trial that runs the plan) and is told that trial's outcome, at once when it is known, else when
    it arrives. In its place runs the nearest unseen plan (:meth:`unseen_neighbour`): the
    proposal's parameters with one (then more) of them redrawn at random, up to
    ``duplicate_retries`` draws, enqueued as the next Optuna trial. The sampler is not asked again:
    each ask refits TPE on every trial so far, and re-asking (up to 16 times) took 14 asks and
    1.4 s of driver time per trial at 200 trials of the quickstart space (``bench/soak.py``). A
    space with no unseen plan near the proposal runs the proposal anyway.

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
            _tell(state.study, ot_trial, known)
        self.duplicates_skipped += 1

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        defaults = {"_plan_trials": {}, "_outcomes": {}, "_waiting": {}, "_started": set(), "_stopped": set(),
                    "duplicates_skipped": 0, "duplicate_retries": self.DUPLICATE_RETRIES, "budget": None,
                    "bounds": {}}
        for name, value in defaults.items():
            self.__dict__.setdefault(name, value)  # a searcher saved by an older version
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
        if known.status == "stopped":
            self._stopped.add(trial_id)
        if trial_id in state.asked and trial_id not in state.told:
            _tell(state.study, state.asked[trial_id], known)
            state.told.add(trial_id)
        for duplicate in self._waiting.pop(trial_id, []):
            _tell(state.study, duplicate, known)


@dataclass(frozen=True)
class Outcome:
    """What became of a trial: its ``trials.csv`` status (``ok``, ``stopped``, ``failed``), its
    objectives when ok, the boundary a stopped trial stopped at, its constraint values when ok."""

    status: str
    values: list[float] | None = None
    stopped_at: str | None = None
    constraints: dict[str, float] | None = None


def outcome(result: dict | None, error: bool, metrics: list[str], bounds: dict[str, float]) -> Outcome:
    """The :class:`Outcome` of a trial that ended with ``result`` (its last result) and ``error``.

    A trial whose result names a failure (``failed``: it diverged, an objective is not finite) failed;
    one that reported every objective as a finite float is ok; one that ended without an error
    before its last stage was stopped by the scheduler (nothing else ends a trial early); any other
    failed.
    """
    result = result or {}
    values = [result.get(m) for m in metrics]
    if result.get(FAILED):  # the trial ended itself with a failure that would repeat (not retried)
        return Outcome("failed")
    if not error and values and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
        measured = constraint_values(bounds, result) if bounds else None
        return Outcome("ok", [float(v) for v in values],
                       constraints=None if measured is None else dict(zip(bounds, measured)))
    index, stages = result.get("stage_index"), result.get("stages")
    if not error and isinstance(index, int) and isinstance(stages, int) and index < stages:
        return Outcome("stopped", stopped_at=result.get(BOUNDARY))
    return Outcome("failed")


def _tell(study: optuna.Study, trial: optuna.trial.Trial, known: Outcome) -> None:
    """Record ``known`` on ``trial`` (user attributes) and tell it; a trial told already (before a
    resume) is left as it is."""
    try:
        trial.set_user_attr(STATUS, known.status)
        if known.stopped_at is not None:
            trial.set_user_attr(STOPPED_AT, known.stopped_at)
        if known.constraints is not None:
            trial.set_user_attr(CONSTRAINTS, known.constraints)
            if TRIAL_CONSTRAINTS:  # Optuna 5: the samplers read the trial's own constraints
                for name, value in known.constraints.items():
                    trial.set_constraint(name, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return
    study.tell(trial, known.values if known.status == "ok" else None, state=finished_state(known.status),
               skip_if_finished=True)


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


class TrialResources:
    """A trial's placement group: one bundle for the trial, plus one per EPruning actor its plan starts.

    Tune calls it with each trial's config (``tune.with_resources`` accepts a callable), so only
    trials whose plan evaluates the population on Ray actors reserve their bundles (ARCHITECTURE.md:
    actors started inside a trial need their own bundles). A group with actor bundles is
    ``STRICT_PACK``: the trial and its actors on one node, so the weights the trial ships at every
    training step stay in that node's object store (Ray's default, ``PACK``, spreads the bundles
    over nodes when one node cannot hold them all); such a trial then needs a node that holds its
    bundles together (``tests/test_cluster_fits.py`` checks ``spaces/`` against ``cluster.yaml``).

    Args:
        cpu / gpu: the trial's own bundle (the spec's ``resources``).
    """

    #: the placement strategy of a trial with actor bundles (one node)
    ACTORS_STRATEGY = "STRICT_PACK"

    def __init__(self, cpu: float, gpu: float) -> None:
        self.cpu, self.gpu = cpu, gpu

    def __call__(self, config: dict[str, Any]) -> tune.PlacementGroupFactory:
        actors = actor_bundles((config or {}).get("plan") or {})
        return tune.PlacementGroupFactory([{"CPU": self.cpu, "GPU": self.gpu}, *actors],
                                          strategy=self.ACTORS_STRATEGY if actors else "PACK")


def actor_bundles(plan: dict[str, Any]) -> list[dict[str, float]]:
    """The bundles ``plan`` (a plan's JSON) needs beyond the trial's own: each step says its own
    (:meth:`trainables.pipeline.plan.Plan.bundles`; EPruning's actor pools)."""
    return Plan.model_validate(plan).bundles() if plan else []


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default name holds the whole config)."""
    return trial.trial_id


CONSTRAINED_SAMPLERS = ("tpe", "nsga2", "gp")  # the samplers that learn constraints
# Optuna 5 deprecates the samplers' constraints_func for Trial.set_constraint, which they all read
TRIAL_CONSTRAINTS = hasattr(optuna.trial.Trial, "set_constraint")


def make_sampler(name: str, seed: int, constraints: SelectConstraints | None = None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec names, seeded, learning ``constraints`` where it can (not ``random``)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constraints_func=constraints)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, constraints_func=constraints)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, constraints_func=constraints)
    return optuna.samplers.RandomSampler(seed=seed)


def make_searcher(spec: Spec, study_name: str, storage: optuna.storages.BaseStorage | None, *,
                  budget: int | None = None) -> FailAwareOptunaSearch:
    """The searcher of a spec: its space, objectives and sampler, its ``select`` as constraints
    (learned by the sampler where it can), the study in ``storage``, and ``budget`` trials that
    were not stopped (early stopping on) or None (Tune's ``num_samples`` counts)."""
    bounds = active_constraints(spec.select)
    learned = (SelectConstraints(len(bounds)) if bounds and spec.sampler in CONSTRAINED_SAMPLERS
               and not TRIAL_CONSTRAINTS else None)
    return FailAwareOptunaSearch(space=SpaceFunction(spec), metric=spec.metric_names, mode=spec.modes,
                                 sampler=make_sampler(spec.sampler, spec.seed, learned), storage=storage,
                                 study_name=study_name, budget=budget, bounds=bounds)


def run_search(
    spec: Spec,
    spec_text: str,
    *,
    name: str | None = None,
    address: str | None = None,
    trials: int | None = None,
    resume: bool = False,
    cache: bool | None = None,
    runs_root: str | Path = "runs",
    warm_start: str | Path | None = None,
    cache_dir: str | Path | None = None,
    callbacks: Sequence[tune.Callback] = (),
) -> Path:
    """Run the search ``spec`` describes; returns the run folder.

    The Optuna study is kept in the run folder (:mod:`search.study`); ``--resume`` reopens it.
    ``warm_start`` (an earlier run folder) enqueues that run's front plans before anything is sampled.
    With ``spec.early_stop.enabled`` a :class:`search.early_stop.ParetoHalving` scheduler stops trials
    at stage boundaries and the searcher gives their slots to new trials.
    ``cache_dir`` is a stage cache shared across runs (recorded in the run's ``cache.json``, reused by
    ``--resume``), else the run's ``cache/``; it is evicted to ``spec.cache.max_gb``. A trial's stage
    checkpoints and cache holds go once its final result is recorded (:class:`search.clean.TrialEnd`).
    ``callbacks`` are more Tune callbacks (a benchmark's probes).
    """
    run = RunFolder.named(spec.name if name is None else name, runs_root)
    run_dir = run.root
    if run.tune.exists() and not resume:
        raise FrontierError(f"run '{run.name}' already exists in {run_dir.parent}; pass --resume or another --name")
    if resume and not run.tune.exists():
        raise FrontierError(f"--resume: there is no run '{run.name}' in {run_dir.parent} to resume")
    points = warm_start_points(warm_start) if warm_start is not None and not resume else []
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run.spec_yaml, spec_text)
    if cache_dir is not None:
        atomic_write(run.cache_pointer, json.dumps({"root": str(Path(cache_dir).resolve())}))
    total = trials or spec.trials
    early = spec.early_stop
    storage = open_storage(study_path(run_dir), repair=resume)  # resume: the searcher's pickle reopens it
    _start_ray(address)
    progress = SearchProgress(total, spec.metric_names, spec.modes, active_constraints(spec.select))
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, run_dir=str(run_dir), cache=spec.cache.enabled if cache is None else cache,
                             boundary_runs=early.runs if early.enabled else 0, cache_dir=str(run.cache_root()),
                             max_bytes=spec.cache.max_bytes),
        TrialResources(spec.resources.cpu, spec.resources.gpu),
    )
    run_config = tune.RunConfig(
        name=TUNE_EXPERIMENT,
        storage_path=str(run_dir),
        callbacks=[progress, LiveResults(run_dir, spec.metric_names, spec.modes, active_constraints(spec.select)),
                   TrialEnd(run_dir, spec.keep_checkpoints), *callbacks],
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=1),
        # keep every stage checkpoint (at most one per stage): a limit forces an experiment
        # snapshot on the driver after each report, which costs more than the disk it saves
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
    )
    if resume:
        tuner = tune.Tuner.restore(str(run.tune), trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher = make_searcher(spec, run.name, storage, budget=total if early.enabled else None)
        for params, source in points:
            OptunaSearchState(searcher).study.enqueue_trial(params, user_attrs={WARM_START_FROM: source},
                                                            skip_if_exists=True)
        scheduler = (ParetoHalving(spec.metric_names, spec.modes, early, record=early_stop_record(run_dir))
                     if early.enabled else None)
        tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                      num_samples=-1 if early.enabled else total,
                                      max_concurrent_trials=spec.concurrency,
                                      trial_dirname_creator=trial_dirname, reuse_actors=True)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()
    rows, plans, full_plans = [], {}, {}
    bounds = active_constraints(spec.select)
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        row = trial_row(trial_id, result.config or {}, result.metrics or {},
                        None if result.error is None else f"{type(result.error).__name__}: {result.error}")
        rows.append(mark_feasible(row, bounds))
        plans[trial_id] = (result.config or {}).get("plan")
        if (result.config or {}).get(FULL_PLAN_KEY) is not None:
            full_plans[trial_id] = result.config[FULL_PLAN_KEY]
        # on --resume Tune called a copy of progress restored from the run: count the results here
        progress.record(trial_id, result.metrics or {}, failed=result.error is not None)
    write_results(run_dir, rows, spec.metric_names, spec.modes, plans)
    if full_plans:
        atomic_write(run.root / FULL_PLANS_FILE, json.dumps(full_plans, indent=1))
    print(progress.summary())
    return run_dir


def _start_ray(address: str | None) -> None:
    """Connect to ``address`` (else ``RAY_ADDRESS``, Ray's own variable) or start a local Ray without
    its dashboard; a Ray this process already started is reused. Never Ray's default of joining
    whatever cluster it finds on the machine: a search without ``--address`` runs locally."""
    # Intermediate per-stage reports carry no objectives; Tune's strict check would reject them.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # one checkpoint per stage is the design; Ray warns about that frequency on every snapshot
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("ray.tune").setLevel(logging.WARNING)
    # Tune's console reporter: our SearchProgress is the display; verbose=0 silences the old one
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if ray.is_initialized():
        return
    ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
