"""The search spec: a YAML file, validated on load, every problem named by its key path.

A spec names the data (source and target), the model and its weights, the objectives, the
sampler, the trial count and concurrency, resources per trial, the stage budgets and the search
space (see :mod:`search.spec.space` for the tree's grammar), and ``repeats``: how many seeds each
trial's plan runs with (``seed``, ``seed + 1``, ...; the trial reports their mean and spread,
:mod:`trainables.pipeline.repeats`). ``frontier check SPEC`` prints one line per problem
(``budgets.transfer.epochs: Input should be greater than or equal to 1``) and exits 2.

Keys the space may set: ``order`` (none, PB, PA, PBA; for a model already trained on the target
none and P), ``s1`` (sparsity before transfer), ``s2`` (after, or on the target's own model), each a sparsity or a list of increasing milestones (``{choice: [0.5, [0.3, 0.5]]}``,
one pruning stage per milestone), or a latency target instead: ``{latency: 0.4}`` (a share of the dense
model's latency measured on the trial's own engine, in (0, 1); pipeline label ``L40``, ``EL40`` for
EPruning) or ``{latency_ms: 2.0}`` (``L2ms``), whose value is any node (``{latency: {choice: [0.3, 0.5]}}``,
Optuna's parameter ``s2.latency``), which needs unit pruning (``prune.granularity: channel`` or
``prune.method: epruning``) and takes ``prune.allocation: uniform`` by default, ``quantize`` (none, Q: weight sharing, QR: sharing then retraining; I8, QI8,
QRI8: the same, deployed in INT8), and any
budget field by its dotted path (``transfer.optim.lr``, ``transfer.mode``, ``prune.frequency.every``,
``prune.after.epochs`` (the pruning stages after transfer only), ``share.groups.layer3`` for a
group listed under ``budgets.share.groups``, ``retrain.mode``, ``int8.method``, ...).

This module is the schema (pydantic models, each key checked as it is read); it imports none of
the modules that read a spec. :mod:`search.spec.problems` finds the problems the schema cannot see,
:mod:`search.spec.load` runs the schema, then the space's parser, then those checks
(:func:`~search.spec.load.load_spec`, :func:`~search.spec.load.parse_spec`), and
:mod:`search.spec.to_plan` turns a sampled assignment of the space into a trial's plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from trainables.data import DataSpec
from trainables.errors import FrontierError
from trainables.models import name_problem
from trainables.objectives import OBJECTIVE_NAMES, OBJECTIVES
from trainables.pipeline.plan import PruneBudget
from trainables.stages.benchmark import BenchmarkConfig
from trainables.stages.dense import DenseBudget
from trainables.stages.int8 import Int8Config
from trainables.stages.share import RetrainConfig, ShareConfig
from trainables.stages.transfer import TransferConfig

from .space import Node

SAMPLERS = ("tpe", "nsga2", "gp", "random")


class SpecError(FrontierError):
    """A spec with problems; ``problems`` holds one ``key.path: what is wrong`` line each."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    name: Literal[OBJECTIVE_NAMES]  # type: ignore[valid-type]  # the names of trainables.objectives
    direction: Literal["max", "min"] | None = None  # None: the objective's natural direction

    @model_validator(mode="after")
    def _natural_direction(self) -> Objective:
        if self.direction is None:
            self.direction = OBJECTIVES[self.name].direction
        return self


class DataPair(_Strict):
    source: DataSpec | None = None
    target: DataSpec


class ModelSpec(_Strict):
    """The model: a torchvision classification model's name, ``small_resnet``, or the user's own
    ``package.module:function`` (its import is checked by :mod:`search.spec.problems`).

    ``trained_on``: ``source`` (default) when the weights, or ``D``'s training, are the source's and
    a transfer to the target follows; ``target`` when the model is already the target's own (its
    weights were trained on the target, or ``D`` trains it there from scratch): no transfer, the
    orders ``none`` (``D|B``) and ``P`` (``D|s2|B``).
    """

    name: str
    weights: str | None = None
    trained_on: Literal["source", "target"] = "source"

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(problem)
        return name


class Resources(_Strict):
    cpu: float = Field(1.0, gt=0)
    gpu: float = Field(0.0, ge=0)


class Budgets(_Strict):
    dense: DenseBudget = DenseBudget()
    transfer: TransferConfig = TransferConfig()
    prune: PruneBudget = PruneBudget()
    share: ShareConfig = ShareConfig()
    retrain: RetrainConfig = RetrainConfig()
    int8: Int8Config = Int8Config()
    benchmark: BenchmarkConfig = BenchmarkConfig()


class SamplerOptions(_Strict):
    """The spec's ``sampler_options``: how soon the sampler starts to learn (Optuna's defaults if unset).

    Args:
        startup: trials sampled at random before TPE or GP model the finished ones (Optuna: 10),
            the reference trial included. A search of 20 trials at the default learns from 10 only.
        population: NSGA-II's generation size (Optuna: 50); below the trial count, its first
            generation is all the search is, and it is random.
    """

    startup: int | None = Field(None, ge=1)
    population: int | None = Field(None, ge=2)


class Select(_Strict):
    """Constraints: the sampler learns them (search.spec.constraints), infeasible trials stay off the
    front, and ``frontier rerun --trial best`` picks among the feasible."""

    max_size_bytes: float | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)


DEFAULT_MARGINS = {"latency_ms": 0.25}  # early_stop.margins unless set


class EarlyStop(_Strict):
    """Multi-objective early stopping at stage boundaries (:mod:`search.run.early_stop`): trials are
    compared at rungs (the domain and the compressing kinds done, ``target:P``), and two values within
    their measured noise (accuracy's standard error, latency's IQR) are a tie.

    Args:
        enabled: stop trials at all (off by default).
        grace: trials that must have reached a rung before any trial is stopped there.
        eta: the share of the trials at a rung that continue is 1/eta, by non-dominated rank
            (successive halving: 2 keeps the better half).
        margin: the floor of the measured noise, as a share of a value: a difference in an
            objective below about ``margin`` times the value is a tie however tight the measurement
            (:func:`search.run.early_stop.floored`); noise must not stop a trial.
        margins: per objective overrides of ``margin``; latency's is 0.25 unless set (a few timed
            runs on a shared machine are that noisy).
        runs: timed runs of the boundary latency.
    """

    enabled: bool = False
    grace: int = Field(4, ge=1)
    eta: float = Field(2.0, gt=1)
    margin: float = Field(0.02, ge=0)
    margins: dict[Literal[OBJECTIVE_NAMES], float] = Field(default_factory=dict)  # type: ignore[valid-type]
    runs: int = Field(5, ge=1)

    def margin_of(self, objective: str) -> float:
        """The margin of ``objective``: its override, else latency's default, else ``margin``."""
        return self.margins.get(objective, DEFAULT_MARGINS.get(objective, self.margin))

    @field_validator("margins")
    @classmethod
    def _non_negative(cls, margins: dict[str, float]) -> dict[str, float]:
        for name, value in margins.items():
            if value < 0:
                raise ValueError(f"{name}: a margin must be >= 0 but got {value}")
        return margins


class CacheSpec(_Strict):
    """The spec's ``cache``: ``true``/``false`` (on without a budget / off) or ``{max_gb: N}``, a budget
    in gigabytes the stage cache is evicted to (least used and least recently used entries first,
    never one a running trial holds: :meth:`trainables.pipeline.cache.StageCache.evict`)."""

    enabled: bool = True
    max_gb: float | None = Field(None, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_bool(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @property
    def max_bytes(self) -> int | None:
        """The budget in bytes, or None (no budget)."""
        return None if self.max_gb is None else int(self.max_gb * 1e9)


def _default_objectives() -> list[Objective]:
    return [Objective(name="accuracy"), Objective(name="size_bytes"), Objective(name="latency_ms")]


class Spec(_Strict):
    """A validated search spec (see the module doc)."""

    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    seed: int = 0
    data: DataPair
    model: ModelSpec
    objectives: list[Objective] = Field(default_factory=_default_objectives, min_length=1)
    sampler: Literal["tpe", "nsga2", "gp", "random"] = "tpe"
    sampler_options: SamplerOptions = SamplerOptions()
    trials: int = Field(12, ge=1)
    concurrency: int = Field(1, ge=1)
    resources: Resources = Resources()
    budgets: Budgets = Budgets()
    space: dict[str, Any] = Field(default_factory=dict)
    select: Select = Select()
    cache: CacheSpec = CacheSpec()
    keep_checkpoints: bool = False  # keep a trial's stage checkpoints after its final result (search.run.clean)
    # the dense model as it is (order none, no sharing, no INT8: D|T|B, or D|B for the target's own
    # model) runs as the search's first trial, one of its `trials`: the reference row of the front
    reference: bool = True
    fidelity: float = Field(1.0, gt=0, le=1)  # scales every epoch budget of the search (search.spec.to_plan)
    # each trial runs its plan with seeds seed, seed + 1, ..., seed + repeats - 1 and reports the mean of
    # each objective (what Optuna is told) and its spread (trainables.pipeline.repeats)
    repeats: int = 1
    early_stop: EarlyStop = EarlyStop()
    _nodes: tuple[Node, ...] = PrivateAttr(default=())

    @field_validator("repeats", mode="before")
    @classmethod
    def _whole_runs(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"runs of each plan (one seed each) must be a whole number >= 1 but got {value!r}")
        return value

    @field_validator("objectives")
    @classmethod
    def _unique(cls, objectives: list[Objective]) -> list[Objective]:
        names = [o.name for o in objectives]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"objective '{name}' appears {names.count(name)} times")
        return objectives

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The parsed search space."""
        return self._nodes

    @property
    def objective_names(self) -> list[str]:
        """The objectives' names, in the spec's order."""
        return [o.name for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        """``max`` or ``min`` for each objective, in the spec's order."""
        return [o.direction for o in self.objectives]


def validation_lines(exc: ValidationError) -> list[str]:
    """One ``key.path: what is wrong`` line per error pydantic found."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "spec"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {message}")
    return lines
