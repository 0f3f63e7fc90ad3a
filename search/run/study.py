"""The run's Optuna study on disk: its storage, the spec's ``select`` as Optuna constraints, warm starts.

The study lives in ``runs/<name>/study.journal``, an Optuna journal file
(``JournalStorage(JournalFileBackend(...))``, named after the run). A journal rather than SQLite
because the run folder is on shared storage on a cluster (EFS, NFS), where SQLite's locking is
unreliable and Optuna recommends the journal; it is append-only (one JSON line per operation, each
fsynced), so a driver killed with SIGKILL loses at most its last line, which :func:`open_storage`
cuts off before a ``--resume``; it needs no schema or migration; and ``optuna-dashboard
runs/<name>/study.journal`` opens it by its path. Only the driver writes it (the searcher lives
there).

Every Optuna trial of a run carries user attributes: ``tune_trial_id`` and ``pipeline`` for a trial
Tune ran (the ``trial_id`` and ``pipeline`` of ``trials.csv``), ``status`` (``ok``, ``failed``,
``stopped``), ``stopped_at`` (the stage boundary of a stopped trial), ``constraints`` (see
:class:`search.spec.constraints.SelectConstraints`), ``duplicate_of`` (a proposal of a plan another
trial already ran: never run, told that trial's outcome) and ``warm_start_from`` (a plan enqueued
from an earlier run's front). The study's own ``lost_trials`` lists trials asked just before the
driver was killed, after its last snapshot: never run, told FAIL on ``--resume``.

Example::

    import optuna
    from search.run.study import open_storage
    study = optuna.load_study(study_name="quickstart", storage=open_storage("runs/quickstart/study.journal"))
    [(t.user_attrs.get("tune_trial_id"), t.state.name, t.values) for t in study.trials]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import TrialState

from trainables.errors import FrontierError
from trainables.layout import RunFolder

# Optuna trial user attributes (the module doc says what each holds)
TUNE_ID, PIPELINE, STATUS, STOPPED_AT = "tune_trial_id", "pipeline", "status", "stopped_at"
DUPLICATE_OF, WARM_START_FROM = "duplicate_of", "warm_start_from"
REFERENCE = "reference"  # a trial's user attribute: it runs the spec's reference plan (the dense model as it is)
LOST_TRIALS = "lost_trials"  # the study's user attribute: numbers of trials asked after the last snapshot of a killed driver


def open_storage(path: str | Path, *, repair: bool = False) -> JournalStorage:
    """The journal storage at ``path`` (created if missing).

    ``repair`` first cuts off a last line the driver did not finish writing (it was killed in the
    middle of an append): Optuna would otherwise refuse every line appended after it. The open-file
    lock works on NFSv3 and later (a run folder on a cluster's shared storage) and is the one
    optuna-dashboard takes.
    """
    path = Path(path)
    if repair and path.is_file():
        _cut_torn_line(path)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))


def _cut_torn_line(path: Path) -> None:
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


def load_run_study(run_dir: str | Path) -> optuna.Study:
    """The finished (or running) study of a run; a run without one is a clear error."""
    path = RunFolder(Path(run_dir)).study_journal
    if not path.is_file():
        raise FrontierError(f"run_dir: '{run_dir}' has no {path.name} (a run made before studies were kept?)")
    storage = open_storage(path)
    names = [s.study_name for s in storage.get_all_studies()]
    if len(names) != 1:
        raise FrontierError(f"run_dir: {path} holds {len(names)} studies, expected one")
    return optuna.load_study(study_name=names[0], storage=storage)


def warm_start_points(run_dir: str | Path) -> list[tuple[dict[str, Any], str]]:
    """The sampled parameters of each front trial of the earlier run ``run_dir``, with
    ``<run>/<trial id>`` to say where each came from, in the front's order.

    Read from the earlier run's study (the parameters exactly as Optuna sampled them), its front
    from ``front.json``.
    """
    import json

    run = RunFolder(Path(run_dir))
    if not run.front_json.is_file():
        raise FrontierError(f"--warm-start: '{run_dir}' has no front.json (is it a finished frontier run?)")
    front = [t["trial_id"] for t in json.loads(run.front_json.read_text())["trials"]]
    try:
        study = load_run_study(run.root)
    except FrontierError as exc:
        raise FrontierError(f"--warm-start: {str(exc).removeprefix('run_dir: ')}") from None
    by_id = {t.user_attrs.get(TUNE_ID): t for t in study.trials if t.user_attrs.get(TUNE_ID)}
    missing = [i for i in front if i not in by_id]
    if missing:
        raise FrontierError(f"--warm-start: front trial(s) {', '.join(missing)} are not in {run.study_journal}")
    return [(dict(by_id[i].params), f"{run.name}/{i}") for i in front]


def finished_state(status: str) -> TrialState:
    """The Optuna state of a ``trials.csv`` status: ok COMPLETE, stopped PRUNED, failed FAIL."""
    return {"ok": TrialState.COMPLETE, "stopped": TrialState.PRUNED}.get(status, TrialState.FAIL)
