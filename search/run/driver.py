"""Run a search: Optuna proposes plans, Ray Tune runs them, the results land in ``runs/<name>/``.

Every trial runs :func:`trainables.pipeline.run.tune_trial` with the spec's resources; local Ray by
default, ``address`` for a cluster. While it runs the result files are rewritten as trials end
(:mod:`search.run.live`); at the end ``trials.csv``, ``front.json`` and ``plans.json`` (and
``plans.full.json`` at a fidelity below 1) are written from Tune's final list of trials.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ray import tune

from search.results.files import write_results
from search.results.rows import FinishedTrial, rows_and_plans
from search.spec.constraints import search_constraints
from search.spec.schema import Spec
from trainables.errors import FrontierError
from trainables.files import atomic_write
from trainables.layout import TUNE_EXPERIMENT, RunFolder
from trainables.pipeline.run import tune_trial

from .clean import TrialEnd
from .early_stop import ParetoHalving
from .live import LiveResults
from .optuna_state import OptunaSearchState
from .progress import SearchProgress
from .ray_start import start_ray
from .resources import TrialResources
from .sampler import make_searcher
from .study import REFERENCE, WARM_START_FROM, open_storage, warm_start_points


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

    The Optuna study is kept in the run folder (:mod:`search.run.study`); ``--resume`` reopens it.
    ``warm_start`` (an earlier run folder) enqueues that run's front plans before anything is sampled.
    With ``spec.early_stop.enabled`` a :class:`search.run.early_stop.ParetoHalving` scheduler stops trials
    at stage boundaries and the searcher gives their slots to new trials.
    ``cache_dir`` is a stage cache shared across runs (recorded in the run's ``cache.json``, reused by
    ``--resume``), else the run's ``cache/``; it is evicted to ``spec.cache.max_gb``. A trial's stage
    checkpoints and cache holds go once its final result is recorded (:class:`search.run.clean.TrialEnd`).
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
    names, directions, bounds = spec.objective_names, spec.directions, search_constraints(spec.select, spec.fidelity)
    storage = open_storage(run.study_journal, repair=resume)  # resume: the searcher's pickle reopens it
    start_ray(address)
    progress = SearchProgress(total, names, directions, bounds)
    trainable = tune.with_resources(
        tune.with_parameters(tune_trial, run_dir=str(run_dir), cache=spec.cache.enabled if cache is None else cache,
                             boundary_runs=early.runs if early.enabled else 0, cache_dir=str(run.cache_root()),
                             max_bytes=spec.cache.max_bytes),
        TrialResources(spec.resources.cpu, spec.resources.gpu),
    )
    run_config = tune.RunConfig(
        name=TUNE_EXPERIMENT,
        storage_path=str(run_dir),
        callbacks=[progress, LiveResults(run_dir, names, directions, bounds),
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
        if spec.reference:  # the dense model as it is, first: the front's reference row
            OptunaSearchState(searcher).study.enqueue_trial({}, user_attrs={REFERENCE: True})
        for params, source in points:
            OptunaSearchState(searcher).study.enqueue_trial(params, user_attrs={WARM_START_FROM: source},
                                                            skip_if_exists=True)
        scheduler = (ParetoHalving(names, directions, early, record=run.early_stop_jsonl)
                     if early.enabled else None)
        tune_config = tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                      num_samples=-1 if early.enabled else total,
                                      max_concurrent_trials=spec.concurrency,
                                      trial_dirname_creator=trial_dirname, reuse_actors=True)
        tuner = tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)
    grid = tuner.fit()
    finished = [FinishedTrial(result.metrics.get("trial_id") or Path(result.path).name, result.config or {},
                              result.metrics or {},
                              None if result.error is None else f"{type(result.error).__name__}: {result.error}")
                for result in grid]
    table = rows_and_plans(finished, bounds)
    for trial in finished:  # on --resume Tune called a copy of progress restored from the run: count here
        progress.record(trial.trial_id, trial.result, error=trial.error)
    write_results(run_dir, table.rows, names, directions, table.plans, full_plans=table.full_plans)
    print(progress.summary())
    return run_dir


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default name holds the whole config)."""
    return trial.trial_id
