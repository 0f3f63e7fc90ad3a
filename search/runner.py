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
from pathlib import Path
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from trainables.errors import FrontierError
from trainables.files import atomic_write
from trainables.layout import TUNE_EXPERIMENT, RunFolder
from trainables.pipeline.plan import Plan
from trainables.pipeline.run import tune_trial

from .progress import SearchProgress
from .results import PARAMS_KEY, trial_row, write_results
from .space import suggest
from .spec import Spec
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
        return {"plan": plan.model_dump(mode="json"), "pipeline": plan.pipeline, "order": order,
                PARAMS_KEY: {**trial.params, "order": order}}  # Optuna's record of what it sampled


class FailAwareOptunaSearch(OptunaSearch):
    """OptunaSearch that never runs a plan twice and tells Optuna FAIL for a trial that failed.

    **Failures.** Ray's version tells COMPLETE with the last intermediate result's values; when
    those lack an objective (a trial that died between stages) Optuna refuses it and the Optuna
    trial stays RUNNING forever (ARCHITECTURE.md, stack facts). Here a trial that errored or lacks a
    finite objective is told FAIL.

    The config of a trial is what :class:`SpaceFunction` returns (``plan``, ``pipeline``, ``order``
    and the sampled ``params``); Ray also merges the sampled values in at the top level, which
    nothing here reads.

    **Duplicates.** TPE over a small discrete space proposes plans it has already proposed; each
    such trial would spend a slot of the budget measuring a known point. A proposal whose plan was
    already proposed in this search is told to Optuna right away, with the first trial's
    objectives when they are known (else FAIL, as it is still running), and Optuna is asked again,
    up to ``duplicate_retries`` times; a space with fewer plans than trials runs the last proposal
    anyway. The overrides reach Ray's private state through :class:`OptunaSearchState` only; the
    added state pickles with the searcher for a restore.
    """

    DUPLICATE_RETRIES = 16

    def __init__(self, *args: Any, duplicate_retries: int = DUPLICATE_RETRIES, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.duplicate_retries = duplicate_retries
        self._plan_trials: dict[str, str] = {}  # plan as JSON -> the first trial that ran it
        self._trial_values: dict[str, list[float]] = {}  # trial -> finite objectives, once known
        self.duplicates_skipped = 0

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        for _ in range(self.duplicate_retries):
            first = self._plan_trials.get(_plan_key(config))
            if first is None:
                break
            self._tell_duplicate(trial_id, first)
            config = super().suggest(trial_id)
        key = _plan_key(config)
        if key is not None:
            self._plan_trials.setdefault(key, trial_id)
        return config

    def _tell_duplicate(self, trial_id: str, first: str) -> None:
        """Close ``trial_id``'s Optuna trial, a repeat of ``first``'s plan, with what ``first`` measured."""
        state = OptunaSearchState(self)
        ot_trial, known = state.asked.pop(trial_id), self._trial_values.get(first)
        if known is None:
            state.study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        else:
            state.study.tell(ot_trial, known)
        self.duplicates_skipped += 1

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        defaults = {"_plan_trials": {}, "_trial_values": {}, "duplicates_skipped": 0,
                    "duplicate_retries": self.DUPLICATE_RETRIES}
        for name, value in defaults.items():
            self.__dict__.setdefault(name, value)  # a searcher saved before duplicates were skipped

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        values = [result.get(m) for m in self.metric] if result else []
        finite = bool(values) and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
        if finite and not error:
            self._trial_values[trial_id] = [float(v) for v in values]
        state = OptunaSearchState(self)
        if trial_id in state.asked and (error or not finite) and trial_id not in state.told:
            state.study.tell(state.asked[trial_id], state=optuna.trial.TrialState.FAIL)
            state.told.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)


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
    def told(self) -> set[str]:
        """Tune trial ids whose result Optuna was told (``_completed_trials``)."""
        return self.searcher._completed_trials


def _plan_key(config: dict | None) -> str | None:
    return json.dumps(config.get("plan"), sort_keys=True) if isinstance(config, dict) else None


class TrialResources:
    """A trial's placement group: one bundle for the trial, plus one per EPruning actor its plan starts.

    Tune calls it with each trial's config (``tune.with_resources`` accepts a callable), so only
    trials whose plan evaluates the population on Ray actors reserve their bundles (ARCHITECTURE.md:
    actors started inside a trial need their own bundles).
    """

    def __init__(self, cpu: float, gpu: float) -> None:
        self.cpu, self.gpu = cpu, gpu

    def __call__(self, config: dict[str, Any]) -> tune.PlacementGroupFactory:
        bundles = [{"CPU": self.cpu, "GPU": self.gpu}]
        bundles += actor_bundles((config or {}).get("plan") or {})
        return tune.PlacementGroupFactory(bundles)


def actor_bundles(plan: dict[str, Any]) -> list[dict[str, float]]:
    """The bundles ``plan`` (a plan's JSON) needs beyond the trial's own: each step says its own
    (:meth:`trainables.pipeline.plan.Plan.bundles`; EPruning's actor pools)."""
    return Plan.model_validate(plan).bundles() if plan else []


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default name holds the whole config)."""
    return trial.trial_id


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec names, seeded."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


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
) -> Path:
    """Run the search ``spec`` describes; returns the run folder."""
    run = RunFolder.named(spec.name if name is None else name, runs_root)
    run_dir = run.root
    if run.tune.exists() and not resume:
        raise FrontierError(f"run '{run.name}' already exists in {run_dir.parent}; pass --resume or another --name")
    if resume and not run.tune.exists():
        raise FrontierError(f"--resume: there is no run '{run.name}' in {run_dir.parent} to resume")
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run.spec_yaml, spec_text)
    total = trials or spec.trials
    _start_ray(address)
    progress = SearchProgress(total, spec.metric_names, spec.modes)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, run_dir=str(run_dir), cache=spec.cache if cache is None else cache),
        TrialResources(spec.resources.cpu, spec.resources.gpu),
    )
    run_config = tune.RunConfig(
        name=TUNE_EXPERIMENT,
        storage_path=str(run_dir),
        callbacks=[progress],
        verbose=0,
        failure_config=tune.FailureConfig(max_failures=1),
        # keep every stage checkpoint (at most one per stage): a limit forces an experiment
        # snapshot on the driver after each report, which costs more than the disk it saves
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None),
    )
    if resume:
        tuner = tune.Tuner.restore(str(run.tune), trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher = FailAwareOptunaSearch(
            space=SpaceFunction(spec), metric=spec.metric_names, mode=spec.modes,
            sampler=make_sampler(spec.sampler, spec.seed),
        )
        tune_config = tune.TuneConfig(search_alg=searcher, num_samples=total, max_concurrent_trials=spec.concurrency,
                                      trial_dirname_creator=trial_dirname, reuse_actors=True)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()
    rows, plans = [], {}
    for result in grid:
        trial_id = result.metrics.get("trial_id") or Path(result.path).name
        rows.append(trial_row(trial_id, result.config or {}, result.metrics or {},
                              None if result.error is None else f"{type(result.error).__name__}: {result.error}"))
        plans[trial_id] = (result.config or {}).get("plan")
        # on --resume Tune called a copy of progress restored from the run: count the results here
        progress.record(trial_id, result.metrics or {}, failed=result.error is not None)
    write_results(run_dir, rows, spec.metric_names, spec.modes, plans)
    print(progress.summary())
    return run_dir


def _start_ray(address: str | None) -> None:
    """Connect to ``address`` or start (or reuse) a local Ray without its dashboard."""
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
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
