"""A trial's plan: its data, seed and stages, as plain data the driver sends to a worker.

The driver (``search/``) turns a spec and one sampled assignment into a :class:`Plan`; the worker
turns the plan into stage objects. The plan is JSON, so it travels in the Ray trial config, is
hashed for the stage cache, and is rebuilt identically for a rerun.

The orders of the pruning-order paper (sec. 4.2):

    none  D|T|B          PB  D|s1|T|B          PA  D|T|s2|B          PBA  D|s1|T|s2|B  (s2 > s1)

A model that is already the target's (trained on it, or trained on it from scratch by ``D``: the
dense step's ``domain`` is ``target``) has no transfer stage; its orders are ``none`` (``D|B``, the
model as it is) and ``P`` (``D|s2|B``: pruned on the target, the EPruning and quantization papers'
protocol), and sharing and INT8 follow as for any order: ``D|E50|Q|R|B``, ``D|50|70|I8|B``.

where each pruning stage is gradual (``50``) or EPruning (``E50``, the ``prune.method``), each
optionally followed by weight sharing ``Q`` (quantization paper) or sharing and retraining
``Q|R`` before the benchmark: ``D|50|T|80|Q|R|B``. The benchmark may deploy the model in INT8
(``I8|B``, :mod:`trainables.stages.int8`), after sharing when both are chosen: ``D|T|E50|Q|I8|B``.

s1 and s2 may each be a list of milestones, one pruning stage per milestone, each starting from
the sparsity the one before reached (the paper's Table 2: ``D|50|T|70|80``, ``D|50|70|T|80``).
The milestones increase strictly, and for PBA every s2 milestone lies above every s1 milestone.
Each stage is its own cache entry, so ``D|50|70`` reuses ``D|50``. :data:`ORDER_SPARSITIES` is
the one table of which sparsities an order needs.

Instead of sparsities, a side may take one latency target (``{"latency": 0.4}``: a share of the
dense network's latency on the trial's engine; ``{"latency_ms": 2.0}``), for unit pruning (channel
granularity or EPruning): its stage is labelled ``L40`` (``EL40``) and carries the benchmark
settings it is measured against (:mod:`trainables.stages.latency_budget`): ``D|T|L40|B``.

Each step kind (a subclass of ``_Step``; ``kind`` is only its JSON tag) owns its identity: its
``label`` in the pipeline string, its ``slot`` (the ``seconds.<slot>`` column of ``trials.csv``),
``build()`` of its stage object, whether the stage cache keeps its output (``cached``), whether its
output depends on the plan's seed (``seeded``) and the Ray bundles it needs (``bundles()``). The
runner, the cache and the results read these, never ``kind``.

A plan with ``repeats: k`` is run k times by one trial, with seeds ``seed`` to ``seed + k - 1``
(:meth:`Plan.repeat`, :mod:`trainables.pipeline.repeats`); a step that is not ``seeded`` (a dense
model loaded as it is, sharing without retraining, the benchmark) has a cache key without the seed,
so the k runs compute it once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from ..augment import Augment
from ..data import DataSpec
from ..stage import Domain, Stage, prune_slot
from ..stages.benchmark import Benchmark, BenchmarkConfig
from ..stages.dense import Dense, DenseConfig
from ..stages.epruning import EPrune, EPruneSchedule, EPruningConfig
from ..stages.gradual import GradualConfig, GradualPrune, PruneSchedule, with_unit_recipe
from ..stages.latency_budget import LatencyTarget, is_latency_target
from ..stages.schedule import Frequency, Sparsity, milestones_problem
from ..stages.int8 import Int8Config
from ..stages.share import RetrainConfig, Share, ShareConfig
from ..stages.transfer import Transfer, TransferConfig
from ..train import OptimConfig

# order -> the sparsity keys it needs: s1 prunes before the transfer (on the source), s2 after it
ORDER_SPARSITIES: dict[str, tuple[str, ...]] = {"none": (), "PB": ("s1",), "PA": ("s2",), "PBA": ("s1", "s2"),
                                                 "P": ("s2",)}
ORDERS = tuple(ORDER_SPARSITIES)
TRANSFER_ORDERS = ("PB", "PA", "PBA")  # orders placed around a transfer; none runs with or without one
TARGET_ORDERS = ("none", "P")  # the orders of a model that is already the target's (no transfer)
# a spec's codes: no sharing; weight sharing; sharing then retraining (label Q|R); each of these then INT8 (I8|B)
QUANTIZE = ("none", "Q", "QR", "I8", "QI8", "QRI8")

Bundle = dict[str, float]  # a Ray placement-group bundle, e.g. {"CPU": 2.0, "GPU": 1.0}
UNSEEDED = 0  # the seed a step that is not ``seeded`` runs with, whatever the plan's (_Step.seeded)


class _Step(BaseModel):
    """One stage of a plan, as data. Each kind knows its own identity, so that nothing else branches
    on ``kind`` (the JSON discriminator, also part of the stage's cache key):

    - :attr:`label`: its part of the pipeline string (``D``, ``80``, ``E50``, ``Q|R``);
    - :attr:`slot`: its stable column name in ``trials.csv`` (``seconds.<slot>``; :meth:`Plan.slots`
      numbers repeats);
    - :meth:`build`: its stage object;
    - :attr:`cached`: whether its output goes to the stage cache (False: it runs anew every time);
    - :attr:`seeded`: whether its output depends on the plan's seed (see there);
    - :meth:`bundles`: the Ray bundles it needs beyond the trial's own (actors it starts).

    A new stage kind is a subclass here, added to :data:`StepSpec`.

    A step dumps a config's ``distill`` (:class:`~trainables.train.DistillConfig`: the pruning
    schedule's, the retraining's) only when its weight is above 0, so the plans and cache keys of
    steps that do not distill are those made before distillation existed.
    """

    model_config = ConfigDict(extra="forbid")

    cached: ClassVar[bool] = True

    @model_serializer(mode="wrap")
    def _distill_when_on(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for config in data.values():
            distill = config.get("distill") if isinstance(config, dict) else None
            if isinstance(distill, dict) and not distill.get("weight"):
                del config["distill"]
        return data

    @property
    def label(self) -> str:
        raise NotImplementedError

    @property
    def slot(self) -> str:
        return self.kind

    @property
    def seeded(self) -> bool:
        """Whether the stage draws random numbers for this config (it trains, shuffles or evolves), so
        that its output depends on the plan's seed; True unless a kind says otherwise.

        A seeded step's cache key holds the seed (as it always has); an unseeded one's leaves it out
        (:func:`~trainables.pipeline.run.run_plan`), so the repeats of a plan (seeds ``seed``,
        ``seed + 1``, ...) share its entry, and it runs with the seed :data:`UNSEEDED`: should it draw a
        random number after all, its output is still a function of its key.
        """
        return True

    def build(self) -> Stage:
        raise NotImplementedError

    def bundles(self) -> list[Bundle]:
        return []


class DenseStep(_Step):
    kind: Literal["D"] = "D"
    config: DenseConfig

    @property
    def label(self) -> str:
        return Dense.label

    @property
    def seeded(self) -> bool:
        """Only a dense stage that trains (``epochs > 0``); at 0 epochs it loads the given weights."""
        return self.config.epochs > 0

    def build(self) -> Stage:
        return Dense(self.config)


class TransferStep(_Step):
    kind: Literal["T"] = "T"
    config: TransferConfig

    @property
    def label(self) -> str:
        return Transfer.label

    def build(self) -> Stage:
        return Transfer(self.config)


class _PruneSlot:
    """A pruning stage's slot: ``P1`` on the source (before the transfer), ``P2`` on the target
    (the step's ``domain`` field says which; :func:`~trainables.stage.prune_slot`)."""

    @property
    def slot(self) -> str:
        return prune_slot(self.domain)


class PruneStep(_PruneSlot, _Step):
    kind: Literal["P"] = "P"
    domain: Domain
    config: GradualConfig

    @property
    def label(self) -> str:
        if self.config.latency is not None:
            return self.config.latency.label
        return GradualPrune.label_for(self.config.final)

    def build(self) -> Stage:
        return GradualPrune(self.config, self.domain)


class EPruneStep(_PruneSlot, _Step):
    """A ``P<s>`` stage by EPruning (labelled ``E<s>``, or ``EL40`` to a latency target): its schedule
    comes from the prune budget; ``latency`` and ``benchmark`` are dumped only when set."""

    kind: Literal["E"] = "E"
    domain: Domain
    sparsity: Sparsity | None = None
    config: EPruningConfig
    schedule: EPruneSchedule
    latency: LatencyTarget | None = None
    benchmark: BenchmarkConfig | None = None

    @model_serializer(mode="wrap")
    def _target_when_set(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = _Step._distill_when_on(self, handler)
        for name in ("sparsity", "latency", "benchmark"):
            if data.get(name, 0) is None:
                data.pop(name)
        return data

    @model_validator(mode="after")
    def _one_target(self) -> EPruneStep:
        if (self.sparsity is None) == (self.latency is None):
            raise ValueError("an EPruning step prunes to exactly one of sparsity and latency; got "
                             f"sparsity={self.sparsity!r}, latency={self.latency!r}")
        if self.latency is not None and self.benchmark is None:
            raise ValueError("a latency target needs benchmark: the engine its latency is measured on")
        return self

    @property
    def label(self) -> str:
        if self.latency is not None:
            return f"E{self.latency.label}"
        return EPrune.label_for(self.sparsity, self.config.constrain)

    def build(self) -> Stage:
        return EPrune(self.config, self.schedule, sparsity=self.sparsity, domain=self.domain, latency=self.latency,
                      benchmark=self.benchmark)

    def bundles(self) -> list[Bundle]:
        """One bundle per actor of an ``evaluator: actors`` pool (ARCHITECTURE.md: actors started inside a
        trial need their own bundles); none otherwise."""
        if self.config.evaluator != "actors":
            return []
        return [{"CPU": self.config.actor_cpus, "GPU": self.config.actor_gpus}] * self.config.actors


class PruneSide(BaseModel):
    """Schedule fields for the pruning stages on one side of the transfer; None inherits the shared one.

    The pruning-order paper gives the two sides different budgets (sec. 4.1): PB prunes "for 10
    epochs ... and let[s] the networks adjust ... for another 5", PA "for 25 epochs and let[s] the
    network adjust for 25". Each field is searchable by its path, ``prune.after.epochs``.

    Args:
        epochs, frequency, recover_epochs, batch_size, optim, augment: as in
            :class:`~trainables.stages.gradual.PruneSchedule`; ``optim``, when given, replaces the shared
            optimizer whole.
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1)
    frequency: Frequency | None = None
    recover_epochs: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1)
    optim: OptimConfig | None = None
    augment: Augment | None = None


SIDES: dict[Domain, str] = {"source": "before", "target": "after"}  # pruning on the source is before transfer


class PruneBudget(PruneSchedule):
    """The ``budgets.prune`` of a spec: the schedule, the method, and EPruning's population search.

    Args:
        method: ``gradual`` (automatic gradual pruning, :mod:`trainables.stages.gradual`) or ``epruning``
            (:mod:`trainables.stages.epruning`); searchable as ``prune.method``.
        epruning: the population search, searchable as ``prune.epruning.<field>``.
        before / after: :class:`PruneSide` overrides for the stages before transfer (on the
            source, ``PB``) and after it (on the target, ``PA``); unset fields take the shared ones.
    """

    method: Literal["gradual", "epruning"] = "gradual"
    epruning: EPruningConfig = EPruningConfig()
    before: PruneSide = PruneSide()
    after: PruneSide = PruneSide()

    def schedule(self, domain: Domain) -> PruneSchedule:
        """The schedule of a pruning stage on ``domain``: the shared fields, then its side's overrides.

        Example:
            >>> budget = PruneBudget(epochs=10, recover_epochs=5, after=PruneSide(epochs=25, recover_epochs=25))
            >>> budget.schedule("source").epochs, budget.schedule("target").epochs
            (10, 25)
        """
        side = getattr(self, SIDES[domain])
        overrides = {name: getattr(side, name) for name in PruneSide.model_fields if getattr(side, name) is not None}
        return PruneSchedule(**{**{name: getattr(self, name) for name in PruneSchedule.model_fields}, **overrides})


class ShareStep(_Step):
    kind: Literal["Q"] = "Q"
    config: ShareConfig
    retrain: RetrainConfig | None = None

    @property
    def label(self) -> str:
        return Share.label_for(self.retrain is not None)

    @property
    def seeded(self) -> bool:
        """Only with retraining: sharing alone clusters deterministically (:mod:`trainables.compress.clustering`)
        and evaluates in order."""
        return self.retrain is not None

    def build(self) -> Stage:
        return Share(self.config, self.retrain)


class BenchmarkStep(_Step):
    kind: Literal["B"] = "B"
    config: BenchmarkConfig
    nominal_sparsity: float = 0.0
    int8: Int8Config | None = None  # deploy in INT8 (label I8|B)

    cached: ClassVar[bool] = False  # the benchmark measures latency anew every time

    @property
    def label(self) -> str:
        return Benchmark.label_for(self.int8 is not None)

    @property
    def seeded(self) -> bool:
        """The benchmark reads no seed: it evaluates in order, calibrates INT8 on fixed images and
        times fixed-seed inputs."""
        return False

    def build(self) -> Stage:
        return Benchmark(self.config, nominal_sparsity=self.nominal_sparsity, int8=self.int8)


StepSpec = Annotated[Union[DenseStep, TransferStep, PruneStep, EPruneStep, ShareStep, BenchmarkStep],
                    Field(discriminator="kind")]


def numbered(names: Sequence[str]) -> list[str]:
    """``names`` with each repeat numbered: the second ``P1`` is ``P1.2``, the third ``P1.3``.

    The one naming of a pipeline's timing and metric keys (``seconds.<name>``, ``stage.<name>.*``):
    plans number their slots with it, :func:`~trainables.pipeline.run.run_stages` its stages' labels.

    Example:
        >>> numbered(["D", "P1", "P1", "T", "B"])
        ['D', 'P1', 'P1.2', 'T', 'B']
    """
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}.{seen[name]}")
    return out


class Plan(BaseModel):
    """Everything one trial runs: the data of both domains, the seed and the stages in order.

    ``repeats``: how many times the trial runs the steps, with seeds ``seed``, ``seed + 1``, ...
    (:meth:`repeat`); it reports their mean (:mod:`trainables.pipeline.repeats`). Dumped only when
    above 1, so a plan of one run hashes, and reads back, as before the field existed.
    """

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    repeats: int = Field(1, ge=1)
    source: DataSpec | None = None
    target: DataSpec
    steps: list[StepSpec]

    @model_serializer(mode="wrap")
    def _without_one_repeat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if data.get("repeats") == 1:
            data.pop("repeats")
        return data

    def repeat(self, index: int) -> Plan:
        """Run ``index`` (0 to ``repeats - 1``) of the plan, as a plan of one run: seed ``seed + index``.

        Example:
            >>> plan = Plan(seed=7, repeats=3, target=DataSpec(name="digits"), steps=[])
            >>> [plan.repeat(i).seed for i in range(3)], plan.repeat(2).repeats
            ([7, 8, 9], 1)
        """
        if not 0 <= index < self.repeats:
            raise ValueError(f"repeat {index} of a plan of {self.repeats} repeat(s)")
        return self.model_copy(update={"seed": self.seed + index, "repeats": 1})

    def stages(self) -> list[Stage]:
        """The stage objects, in order."""
        return [step.build() for step in self.steps]

    @property
    def architecture(self) -> DenseConfig:
        """The dense step's config: the model every stage's output is (``model``, ``model_path``,
        what :func:`~trainables.models.rebuild` needs)."""
        return next(step.config for step in self.steps if isinstance(step, DenseStep))

    @property
    def benchmark(self) -> BenchmarkStep:
        """The benchmark step, the plan's last (its config, ``int8`` and ``nominal_sparsity``)."""
        return next(step for step in reversed(self.steps) if isinstance(step, BenchmarkStep))

    @property
    def pipeline(self) -> str:
        """The pipeline string, e.g. ``D|50|T|80|B``."""
        return "|".join(step.label for step in self.steps)

    def slots(self) -> list[str]:
        """A stable name per step: D, P1 (prune on source), T, P2 (prune on target), Q, B.

        A side's later milestones get ``.2``, ``.3``, ...: ``D|50|70|T|80|B`` has slots D, P1,
        P1.2, T, P2, B (the ``seconds.<slot>`` and ``stage.<slot>.*`` columns of ``trials.csv``).
        """
        return numbered([step.slot for step in self.steps])

    def slot(self, index: int) -> str:
        """The slot of step ``index`` (see :meth:`slots`)."""
        return self.slots()[index]

    def bundles(self) -> list[Bundle]:
        """The Ray bundles the plan's stages need beyond the trial's own; the stages run one at a
        time, so the step needing the most CPUs decides (the first of equals)."""
        return max((step.bundles() for step in self.steps), key=lambda b: sum(x.get("CPU", 0.0) for x in b),
                   default=[])

    def domain_after(self, done: int) -> Domain:
        """The domain the model is trained on after the first ``done`` steps: the target once a
        transfer ran, or from the start for a dense model of the target; else the source."""
        transferred = any(isinstance(step, TransferStep) for step in self.steps[:done])
        return "target" if transferred or self.architecture.domain == "target" else "source"

    def data_key(self) -> dict:
        """The data every stage may read, as the cache key includes it."""
        return {"source": self.source.model_dump(mode="json") if self.source else None,
                "target": self.target.model_dump(mode="json")}


def _prune_step(budget: PruneBudget, domain: Domain, target: float | LatencyTarget, initial: float,
                benchmark: BenchmarkConfig) -> PruneStep | EPruneStep:
    """The pruning step of ``budget``'s method on ``domain`` to ``target``: a sparsity (from ``initial``) or
    a latency target measured on ``benchmark``'s engine."""
    schedule = budget.schedule(domain)
    latency = target if isinstance(target, LatencyTarget) else None
    engine = {"latency": latency, "benchmark": benchmark} if latency is not None else {}
    if budget.method == "epruning":
        fields = EPruneSchedule(**{name: getattr(schedule, name) for name in EPruneSchedule.model_fields})
        return EPruneStep(domain=domain, sparsity=None if latency else target, config=budget.epruning,
                          schedule=fields, **engine)
    return PruneStep(domain=domain, config=GradualConfig(**dict(with_unit_recipe(schedule)),
                                                         final=None if latency else target,
                                                         initial=0.0 if latency else initial, **engine))


Milestones = Union[float, Sequence[float], Mapping[str, float], LatencyTarget]


def targets(name: str, value: Milestones) -> list[float] | list[LatencyTarget]:
    """``value`` as a side's stage targets: :func:`milestones`, or one latency target (``{"latency": 0.4}``,
    ``{"latency_ms": 2.0}``); raises ValueError naming ``name``.

    Example:
        >>> targets("s2", {"latency": 0.4})
        [LatencyTarget(latency=0.4, latency_ms=None)]
    """
    if is_latency_target(value):
        try:
            return [value if isinstance(value, LatencyTarget) else LatencyTarget(**value)]
        except ValueError as exc:
            raise ValueError(f"{name}: {_first_error(exc)}") from None
    return milestones(name, value)


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors) and errors():
        return str(errors()[0]["msg"]).removeprefix("Value error, ")
    return str(exc)


def milestones(name: str, value: Milestones) -> list[float]:
    """``value`` (one sparsity or a list) as a list of milestones; raises ValueError naming ``name``.

    Example:
        >>> milestones("s2", 0.8), milestones("s2", [0.7, 0.8])
        ([0.8], [0.7, 0.8])
    """
    values = [value] if isinstance(value, (int, float)) else list(value)
    if not values:
        raise ValueError(f"{name} needs at least one sparsity")
    if (problem := milestones_problem(values)) is not None:
        raise ValueError(f"{name}: {problem}")
    return [float(v) for v in values]


def _check_pba(before: list, after: list, s1: object, s2: object) -> None:
    """PBA prunes further after the transfer: sparsities s2 > s1, latency shares (or ms) s2 < s1 when
    both sides give the same kind; a sparsity against a latency is not compared."""
    if all(isinstance(t, float) for t in before + after):
        if not min(after) > max(before):
            raise ValueError(f"order PBA needs s2 > s1 but got s1={s1}, s2={s2}")
        return
    if len(before) == len(after) == 1 and all(isinstance(t, LatencyTarget) for t in before + after):
        first, second = before[0], after[0]
        for unit in ("latency", "latency_ms"):
            a, b = getattr(first, unit), getattr(second, unit)
            if a is not None and b is not None and not b < a:
                raise ValueError(f"order PBA needs s2's {unit} below s1's but got s1={s1}, s2={s2}")


def make_plan(
    *,
    order: str,
    dense: DenseConfig,
    transfer: TransferConfig | None,
    benchmark: BenchmarkConfig,
    prune: PruneBudget | None = None,
    target: DataSpec,
    source: DataSpec | None = None,
    s1: Milestones | None = None,
    s2: Milestones | None = None,
    seed: int = 0,
    quantize: str = "none",
    share: ShareConfig | None = None,
    retrain: RetrainConfig | None = None,
    int8: Int8Config | None = None,
    repeats: int = 1,
) -> Plan:
    """The plan of ``order`` with sparsities ``s1`` (before transfer) and ``s2`` (after), then
    weight sharing (``quantize`` ``Q``) and retraining (``QR``) before the benchmark, which deploys
    the model in INT8 (settings ``int8``) for the codes ending in ``I8``.

    ``s1`` and ``s2`` are one sparsity or a list of milestones (see the module doc). ``transfer``
    None: no transfer stage, for a dense model of the target (``dense.domain == "target"``), whose
    orders are :data:`TARGET_ORDERS`.

    ``prune`` is the :class:`PruneBudget` (a :class:`~trainables.stages.gradual.PruneSchedule`
    shared by every pruning stage, with ``method``, ``epruning`` and the per-side overrides
    ``before`` and ``after``; default ``PruneBudget()``). ``repeats``: runs of the plan, seeds
    ``seed``, ``seed + 1``, ... (:attr:`Plan.repeats`).
    """
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)} but got {quantize!r}")
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)} but got {order!r}")
    if (transfer is None) != (dense.domain == "target"):
        raise ValueError("a plan without transfer needs a dense model of the target (dense.domain 'target'), "
                         f"and one with a transfer a dense model of the source; got domain {dense.domain!r} "
                         f"and transfer {'None' if transfer is None else 'given'}")
    allowed = TARGET_ORDERS if transfer is None else ("none", *TRANSFER_ORDERS)
    if order not in allowed:
        raise ValueError(f"order {order} {'needs a transfer' if transfer is None else 'runs without transfer'}; "
                         f"this plan's orders are {', '.join(allowed)}")
    needs = ORDER_SPARSITIES[order]
    given = {"s1": s1, "s2": s2}
    for name in needs:
        if given[name] is None:
            raise ValueError(f"order {order} needs {name}")
    before = targets("s1", s1) if "s1" in needs else []
    after = targets("s2", s2) if "s2" in needs else []
    if order == "PBA":
        _check_pba(before, after, s1, s2)
    budget = prune if prune is not None else PruneBudget()
    steps: list = [DenseStep(config=dense)]
    reached = 0.0  # each milestone's stage starts from the sparsity the one before reached
    for goal in before:
        steps.append(_prune_step(budget, "source", goal, reached, benchmark))
        reached = goal if isinstance(goal, float) else 0.0
    if transfer is not None:
        steps.append(TransferStep(config=transfer))
    for goal in after:
        steps.append(_prune_step(budget, "target", goal, reached, benchmark))
        reached = goal if isinstance(goal, float) else 0.0
    sharing = quantize.removesuffix("I8")
    if sharing not in ("", "none"):
        steps.append(ShareStep(config=share or ShareConfig(), retrain=(retrain or RetrainConfig()) if sharing == "QR" else None))
    nominal = reached
    deploy = (int8 or Int8Config()) if quantize.endswith("I8") else None
    steps.append(BenchmarkStep(config=benchmark, nominal_sparsity=nominal, int8=deploy))
    return Plan(seed=seed, repeats=repeats, source=source, target=target, steps=steps)
