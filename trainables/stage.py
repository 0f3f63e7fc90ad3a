"""The stage contract: ``run(model, context) -> (model, metrics)``.

A stage (``D``, ``T``, ``P<s>``, ``B``; ARCHITECTURE.md's vocabulary) is a small object with a ``label``
for the pipeline string, a ``slot`` for its results and one method. It does not import Ray. Everything it needs besides the
model comes from the :class:`Context`: the data of both domains, the device, the seed, a folder
to write into, and a progress callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from torch import nn

from .data import DataSpec, Splits, load_data
from .errors import FrontierError

Domain = Literal["source", "target"]
Metrics = dict[str, float]


@dataclass
class Context:
    """What stages share within one pipeline run.

    Args:
        source: the dataset the model is (pre)trained on; needed by ``D`` training and ``PB``.
        target: the dataset the model is transferred to and measured on.
        workdir: a folder the stage may write into (exports, artifacts).
        seed: seeds data order and initialisation; a rerun with the same seed repeats the run.
        device: torch device string.
        progress: called as ``progress(stage_label, record)`` after each epoch of a stage.
        teachers: per domain, the frozen model that distilling stages on that domain learn from
            (:meth:`teacher`): the model as it entered the first compressing stage on that domain.
            The runner (:func:`~trainables.pipeline.run.run_stages`, ``run_plan``) fills it; a
            stage only reads it.
    """

    source: DataSpec | None
    target: DataSpec | None
    workdir: Path
    seed: int = 0
    device: str = "cpu"
    progress: Callable[[str, dict], None] | None = None
    teachers: dict[str, nn.Module] = field(default_factory=dict, repr=False)
    _loaded: dict[str, Splits] = field(default_factory=dict, repr=False)

    def data(self, domain: Domain) -> Splits:
        """The splits of ``domain``, loaded once."""
        if domain not in self._loaded:
            spec = self.source if domain == "source" else self.target
            if spec is None:
                raise FrontierError(f"data.{domain}: this pipeline needs a {domain} dataset but none is given")
            self._loaded[domain] = load_data(spec)
        return self._loaded[domain]

    def teacher(self, domain: Domain) -> nn.Module:
        """The teacher of a distilling stage on ``domain`` (frozen, in eval mode; see ``teachers``).

        A teacher never crosses domains: the transfer gives the model the target's classes, so a
        stage on the target learns from a model of the target, never from the source's.

        Raises:
            FrontierError: no teacher was captured for ``domain`` (the stage did not run through
                the runner, or a resumed trial lost it).
        """
        if domain not in self.teachers:
            held = ", ".join(sorted(self.teachers)) or "none"
            raise FrontierError(f"distill: a stage on the {domain} domain distills but no teacher of the {domain} "
                                f"was captured (teachers held: {held}); run the stages through run_stages or run_plan")
        return self.teachers[domain]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The (channels, height, width) the model is measured at: the target's image size."""
        spec = self.target or self.source
        if spec is None:
            raise FrontierError("data: neither a source nor a target dataset is given")
        return (3, spec.image_size, spec.image_size)

    def reporter(self, label: str) -> Callable[[dict], None] | None:
        """The per-epoch callback for stage ``label``, or None."""
        if self.progress is None:
            return None
        progress = self.progress
        return lambda record: progress(label, record)


def prune_slot(domain: Domain) -> str:
    """The slot of a pruning stage on ``domain``: ``P1`` on the source (before the transfer), ``P2`` on the target."""
    return "P1" if domain == "source" else "P2"


class Stage(Protocol):
    """One stage of a pipeline.

    ``label`` is its part of the pipeline string (``D``, ``80``, ``E50``, ``Q|R``, ``I8|B``);
    ``slot`` its stable name in results (``D``, ``T``, ``P1``/``P2`` by domain, ``Q``, ``B``;
    ARCHITECTURE.md's vocabulary), the same a plan step of it has: ``seconds.<slot>`` and
    ``stage.<slot>.*`` name its time and metrics, repeats numbered (``P1.2``).

    A stage that compresses the model (pruning, sharing) also has ``compresses = True`` and the
    ``domain`` it trains on; the model entering the first such stage on a domain is that domain's
    teacher (:meth:`Context.teacher`). One that learns from it has ``distills`` True and reads
    ``ctx.teacher(domain)`` only then (:func:`is_compressing`, :func:`distills`).
    """

    label: str
    slot: str

    def run(self, model: nn.Module | None, ctx: Context) -> tuple[nn.Module, Metrics]:
        """Transform ``model`` (None only for the first stage) and report its metrics.

        The model may arrive on any device (a cache hit or a checkpoint is rebuilt on the CPU); the
        stage moves it to ``ctx.device`` itself and hands it back there
        (``tests/test_stage_devices.py`` checks every stage).
        """
        ...


def is_compressing(stage: Stage) -> bool:
    """Whether ``stage`` compresses the model (``compresses`` True: pruning, sharing)."""
    return bool(getattr(stage, "compresses", False))


def distills(stage: Stage) -> bool:
    """Whether ``stage`` learns from its domain's teacher (``distills`` True: a distill weight above 0)."""
    return bool(getattr(stage, "distills", False))
