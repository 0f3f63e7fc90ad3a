"""What a run holds on disk, and removing what is safe to remove.

Two things a run no longer needs once a trial's final result is recorded: the trial's stage
checkpoints (``tune/<id>/checkpoint_*``, only a retried or resumed trial reads them) and its holds
on stage cache entries (:meth:`trainables.pipeline.cache.StageCache.hold`). :class:`TrialEnd`
drops both while the search runs, as each trial ends and a snapshot has recorded it (the
checkpoints stay with the spec's ``keep_checkpoints``); ``frontier clean RUN`` (:func:`clean_run`) reports the run folder's bytes by
kind and removes the checkpoints of finished trials and the cache entries no trial holds.
What ``frontier rerun`` needs stays: the plans (``plans.json``) and the trials' artifacts.

Example:
    >>> from pathlib import Path; import tempfile
    >>> usage = disk_usage(RunFolder(Path(tempfile.mkdtemp())))
    >>> usage["total"]
    0
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from trainables.layout import TRIALS, RunFolder
from trainables.pipeline.cache import StageCache

KINDS = ("cache", "checkpoints", "trials", "final", "tune", "other")  # disk_usage's kinds, in its order


def drop_trial_state(run: RunFolder, trial_id: str, *, keep_checkpoints: bool = False) -> int:
    """Release ``trial_id``'s cache holds and (unless ``keep_checkpoints``) remove its stage
    checkpoints; returns the bytes removed."""
    StageCache(run.cache_root()).release(trial_id)
    if keep_checkpoints:
        return 0
    freed = 0
    for folder in run.trial_checkpoints(trial_id):
        freed += _bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
    return freed


class TrialEnd(tune.Callback):
    """Drops a trial's checkpoints and cache holds once Tune has recorded its final result.

    Tune calls ``on_trial_complete`` after the last result (or a scheduler's stop) and
    ``on_trial_error`` only when the trial will not be retried, so a retried trial keeps the
    checkpoint it resumes from. The checkpoints go only once an experiment snapshot written after
    the trial ended is on disk: ``--resume`` restores from the last snapshot, which until then still
    lists the trial as running with its checkpoint (deleting at once made a resumed trial fail with
    "Could not recover from checkpoint"). What is left pending goes when the experiment ends.
    Picklable (Tune restores callbacks on ``--resume``).

    Args:
        run_dir: the run folder.
        keep_checkpoints: the spec's ``keep_checkpoints``: release the holds, keep the checkpoints.
    """

    def __init__(self, run_dir: str | Path, keep_checkpoints: bool = False) -> None:
        self.run_dir, self.keep_checkpoints = str(run_dir), keep_checkpoints
        self.pending: dict[str, float] = {}  # trial id -> when it ended

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.pending[trial.trial_id] = time.time()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.pending[trial.trial_id] = time.time()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.pending:
            snapshot = _snapshot_time(RunFolder(Path(self.run_dir)).tune)
            self._drop([t for t, ended in self.pending.items() if ended < snapshot - SNAPSHOT_MARGIN_S])

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._drop(list(self.pending))

    def _drop(self, trial_ids: list[str]) -> None:
        run = RunFolder(Path(self.run_dir))
        for trial_id in trial_ids:
            drop_trial_state(run, trial_id, keep_checkpoints=self.keep_checkpoints)
            self.pending.pop(trial_id, None)


SNAPSHOT_MARGIN_S = 1.0  # a snapshot this much younger than a trial's end was begun after it


def _snapshot_time(tune_dir: Path) -> float:
    """The modification time of the newest experiment snapshot in ``tune_dir`` (0 when none)."""
    times = [p.stat().st_mtime for p in tune_dir.glob("experiment_state-*.json") if p.is_file()]
    return max(times, default=0.0)


def disk_usage(run: RunFolder) -> dict[str, int]:
    """Bytes the run holds, by kind: ``cache`` (the run's own cache, or its share of none when the
    cache is shared: that one is reported as ``shared cache`` by :func:`clean_run`), ``checkpoints``
    (Tune's stage checkpoints), ``trials`` (artifacts), ``final`` (reruns), ``tune`` (Tune's other
    files), ``other``; and ``total``."""
    usage = dict.fromkeys(KINDS, 0)
    if run.root.is_dir():
        for path in run.root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            parts = path.relative_to(run.root).parts
            if parts[0] == "cache":
                kind = "cache"
            elif parts[0] == "tune":
                kind = "checkpoints" if any(p.startswith("checkpoint_") for p in parts) else "tune"
            elif parts[0] in (TRIALS, "final"):
                kind = parts[0]
            else:
                kind = "other"
            try:
                usage[kind] += path.stat().st_size
            except FileNotFoundError:
                continue
    usage["total"] = sum(usage.values())
    return usage


def finished_trials(run: RunFolder) -> set[str]:
    """Trials whose final result is recorded: the ``trial_id``\\ s of ``trials.csv`` (none before
    the search ended)."""
    if not run.trials_csv.is_file():
        return set()
    return set(pd.read_csv(run.trials_csv, usecols=["trial_id"])["trial_id"].astype(str))


def clean_run(run_dir: str | Path, *, dry_run: bool = False) -> dict[str, Any]:
    """Report ``run_dir``'s disk use and remove what is safe; returns the report.

    Removed: the stage checkpoints and cache holds of finished trials (:func:`finished_trials`),
    then every cache entry no trial holds or computes. A shared cache (``--cache DIR``) is cleaned
    the same way, so entries another run's running trials hold stay. With ``dry_run`` nothing is
    removed and the report says what would be. A folder that is not a run is a
    :class:`~trainables.errors.FrontierError`.
    """
    from trainables.errors import FrontierError

    run = RunFolder(Path(run_dir).resolve())
    if not run.spec_yaml.is_file():
        raise FrontierError(f"RUN: '{run_dir}' is not a run folder (it has no spec.yaml)")
    before = disk_usage(run)
    cache = StageCache(run.cache_root())
    checkpoints, released = 0, 0
    for trial_id in sorted(finished_trials(run)):
        folders = run.trial_checkpoints(trial_id)
        checkpoints += sum(_bytes(f) for f in folders)
        if (cache.holds / trial_id).is_file():
            released += 1
        if not dry_run:
            drop_trial_state(run, trial_id)
    if dry_run:  # what eviction would see once those holds were released
        finished = finished_trials(run)
        held = set()
        for path in cache.holds.glob("*") if cache.holds.is_dir() else ():
            if path.name not in finished:
                held.update(path.read_text().split())
        held |= {p.name[: -len(".claim")] for p in cache.root.glob("*.claim")}
        entries = [e for e in cache.entries() if e.key not in held]
    else:
        entries = cache.evict(0)
    report = {"run": str(run.root), "dry_run": dry_run, "bytes": before,
              "cache_root": str(cache.root),
              "removed": {"checkpoints": checkpoints, "cache": sum(e.bytes for e in entries),
                          "cache_entries": len(entries), "holds_released": released}}
    if not dry_run:
        report["bytes_after"] = disk_usage(run)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`clean_run` as a few readable lines."""
    lines = [f"{report['run']}:"]
    for kind, size in report["bytes"].items():
        lines.append(f"  {kind:<12} {_mb(size)}")
    removed = report["removed"]
    verb = "would remove" if report["dry_run"] else "removed"
    lines.append(f"{verb}: checkpoints of finished trials {_mb(removed['checkpoints'])}, "
                 f"{removed['cache_entries']} unheld cache entries {_mb(removed['cache'])} "
                 f"(cache {report['cache_root']})")
    if "bytes_after" in report:
        lines.append(f"now: {_mb(report['bytes_after']['total'])}")
    return "\n".join(lines)


def _mb(size: int) -> str:
    return f"{size / 1e6:9.2f} MB"


def _bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


__all__ = ["KINDS", "TrialEnd", "clean_run", "disk_usage", "drop_trial_state", "finished_trials",
           "format_report"]
