"""Where a run keeps its files: the one description of a run folder's layout.

::

    runs/<name>/
        spec.yaml        the spec the run was started with
        trials.csv       one row per trial (search.results.rows)
        front.json       the front of the run's objectives
        plans.json       each trial's plan, for ``frontier rerun``
        plans.full.json  a search at fidelity < 1: each trial's plan at the full budget (what rerun runs)
        study.journal    the Optuna study (search.run.study)
        early_stop.jsonl the early-stopping scheduler's judgements (search.run.early_stop)
        cache/           stage outputs by content hash (trainables.pipeline.cache)
        cache.json       where the run's stage cache is when it is shared (``--cache DIR``)
        trials/<id>/     a trial's working folder (its stages' files); with ``repeats: k`` the first
                         run's, and ``repeat<r>/`` inside it run r's (seed + r)
        tune/            the Ray Tune experiment (for ``--resume``)
        tensorrt/        TensorRT timing caches, shared by the run's trials
        latency/         per-layer latency models (trainables.measure.latency_model), one JSON per
                         architecture, input shape and engine, shared by the run's trials
        final/<id>/      a rerun's final model (:class:`FinalFolder`; ``repeat<r>/``: run r's exports)
        final/front_rerun.json  ``frontier rerun --front``'s comparison of search and full budget
        baselines.json   hand-scripted baselines (``bench/baselines.py``) the report overlays on the front

The driver (``search``), the Tune trainable (:func:`trainables.pipeline.run.tune_trial`) and the
benchmark stage (the TensorRT cache) use it, so it is a base module; it imports neither torch nor
Ray (``frontier front`` reads a run folder).

Example:
    >>> run = RunFolder.named("quick", runs_root="runs")
    >>> run.trial("a1b2").relative_to(run.root).as_posix()
    'trials/a1b2'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import FrontierError

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
TRIALS, FINAL = "trials", "final"  # the folders holding a trial's and a rerun's working folder
BOUNDARY_FILES = "boundary"  # trials/<id>/boundary/: the files of the boundary measurements (ModelFiles)
REPEAT = re.compile(r"^repeat[1-9][0-9]*$")  # trials/<id>/repeat<r>/: run r > 0 of a trial of ``repeats: k``
TUNE_EXPERIMENT = "tune"  # the experiment's name under the run folder (Tune's RunConfig(name=...))


def repeat_folder(index: int) -> str:
    """The folder name of run ``index`` > 0 of a repeated trial, inside the trial's (or rerun's) folder."""
    if index < 1:
        raise ValueError(f"run {index} has no folder of its own: run 0 works in the trial's folder")
    return f"repeat{index}"


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run folder (see the module doc).

    Args:
        root: the run folder, ``runs_root/<name>``.
    """

    root: Path

    @classmethod
    def named(cls, name: str, runs_root: str | Path = "runs") -> RunFolder:
        """``runs_root/name``, resolved; a name that could leave the runs folder is refused."""
        if not NAME_PATTERN.match(name) or name in (".", ".."):
            raise FrontierError(f"--name: '{name}' must be 1-64 letters, digits, '_', '-' or '.', "
                                "not starting with them")
        return cls(Path(runs_root).resolve() / name)

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def spec_yaml(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def trials_csv(self) -> Path:
        return self.root / "trials.csv"

    @property
    def front_json(self) -> Path:
        return self.root / "front.json"

    @property
    def plans_json(self) -> Path:
        return self.root / "plans.json"

    @property
    def plans_full_json(self) -> Path:
        """Each trial's plan at the full budget, written when the search ran at a ``fidelity`` below 1."""
        return self.root / "plans.full.json"

    @property
    def study_journal(self) -> Path:
        """The run's Optuna study, a journal file."""
        return self.root / "study.journal"

    @property
    def early_stop_jsonl(self) -> Path:
        """The early-stopping scheduler's judgements, one JSON line each."""
        return self.root / "early_stop.jsonl"

    @property
    def cache(self) -> Path:
        """The stage cache's folder."""
        return self.root / "cache"

    @property
    def cache_pointer(self) -> Path:
        """``cache.json``: ``{"root": DIR}`` when the run uses a cache outside it (``--cache DIR``)."""
        return self.root / "cache.json"

    def cache_root(self) -> Path:
        """The stage cache the run uses: the folder ``cache.json`` names, else ``cache/``."""
        if self.cache_pointer.is_file():
            return Path(json.loads(self.cache_pointer.read_text())["root"])
        return self.cache

    def trial_checkpoints(self, trial_id: str) -> list[Path]:
        """The stage checkpoint folders Ray Tune keeps for ``trial_id`` (``tune/<id>/checkpoint_*``)."""
        return sorted((self.tune / trial_id).glob("checkpoint_*"))

    @property
    def tune(self) -> Path:
        """The Ray Tune experiment folder (Tune writes it as ``storage_path / TUNE_EXPERIMENT``)."""
        return self.root / TUNE_EXPERIMENT

    def trial(self, trial_id: str, repeat: int = 0) -> Path:
        """The working folder of trial ``trial_id``; of its run ``repeat`` > 0 (spec ``repeats``), a
        folder inside it (:func:`repeat_folder`)."""
        folder = self.root / TRIALS / trial_id
        return folder if repeat == 0 else folder / repeat_folder(repeat)

    def final(self, trial_id: str) -> Path:
        """The default output folder of ``frontier rerun`` for ``trial_id``."""
        return self.root / FINAL / trial_id

    @property
    def front_rerun_json(self) -> Path:
        """What ``frontier rerun --front`` reports: each front trial's search and full-budget objectives."""
        return self.root / FINAL / "front_rerun.json"

    @property
    def baselines(self) -> Path:
        """``baselines.json``: points a user would script by hand (``bench/baselines.py``: Torch-Pruning
        and ONNX Runtime's INT8), which ``frontier front`` and its report show beside the front
        (:mod:`search.results.baselines`)."""
        return self.root / "baselines.json"

    @property
    def tensorrt(self) -> Path:
        """TensorRT's timing caches, shared by every trial of the run."""
        return self.root / "tensorrt"

    @property
    def latency(self) -> Path:
        """Per-layer latency models (:mod:`trainables.measure.latency_model`), shared by every trial of the run."""
        return self.root / "latency"

    @classmethod
    def holding(cls, workdir: str | Path) -> RunFolder | None:
        """The run folder whose trial or rerun folder ``workdir`` is (``RUN/trials/<id>``,
        ``RUN/final/<id>``, or a run's folder inside one, ``RUN/trials/<id>/repeat1``), or None for a
        folder elsewhere.

        Example:
            >>> RunFolder.holding("runs/quick/trials/a1b2").root.as_posix(), RunFolder.holding("out")
            ('runs/quick', None)
            >>> RunFolder.holding("runs/quick/trials/a1b2/repeat1").root.as_posix()
            'runs/quick'
        """
        workdir = Path(workdir)
        if REPEAT.match(workdir.name) and workdir.parent.parent.name in (TRIALS, FINAL):
            workdir = workdir.parent
        return cls(workdir.parent.parent) if workdir.parent.name in (TRIALS, FINAL) else None


@dataclass(frozen=True)
class FinalFolder:
    """The files ``frontier rerun`` writes for one trial (``final/<id>/`` or its ``--out``) that the
    driver names; the exported artifacts beside them are named by the export that writes them.

    Args:
        root: the folder.
    """

    root: Path

    @property
    def state_dict(self) -> Path:
        """The final model's state dict (``torch.save``); of a repeated trial, its first run's (the spec's seed)."""
        return self.root / "model.pt"

    def repeat(self, index: int) -> Path:
        """Where run ``index`` of a repeated trial writes its exports: the folder itself for run 0,
        ``repeat<r>/`` inside it for the others (:func:`repeat_folder`)."""
        return self.root if index == 0 else self.root / repeat_folder(index)

    @property
    def card(self) -> Path:
        """``card.json``: the pipeline, parameters, metrics beside the trial's, versions, the plan."""
        return self.root / "card.json"

    @property
    def sensitivity_csv(self) -> Path:
        """``frontier sweep``'s table: accuracy and bytes per layer group and centroid count."""
        return self.root / "sensitivity.csv"

    @property
    def sensitivity_html(self) -> Path:
        """``frontier sweep``'s page of the same table."""
        return self.root / "sensitivity.html"


@dataclass(frozen=True)
class ModelFiles:
    """The exported files of one measured model, in a trial's folder (``trials/<id>/``), a rerun's
    (``final/<id>/``) or a boundary's (``trials/<id>/boundary/``); ``measure`` writes them.

    Args:
        root: the folder.
    """

    root: Path

    @property
    def artifact(self) -> Path:
        """``model.h5``: the compressed artifact whose length is ``size_bytes`` (``compress/artifact.py``)."""
        return self.root / "model.h5"

    @property
    def onnx(self) -> Path:
        """``model.onnx``: the float model after surgery, what the latency backend runs."""
        return self.root / "model.onnx"

    @property
    def fp16_onnx(self) -> Path:
        """``model.fp16.onnx``: the half-precision file TensorRT builds an fp16 engine from."""
        return self.root / "model.fp16.onnx"

    @property
    def int8_onnx(self) -> Path:
        """``model.int8.onnx``: an INT8 trial's quantized model (QDQ), what its engine runs."""
        return self.root / "model.int8.onnx"

    @property
    def int8_artifact(self) -> Path:
        """``model.int8.h5``: an INT8 trial's artifact (int8 codes and scales), its ``size_bytes``."""
        return self.root / "model.int8.h5"
