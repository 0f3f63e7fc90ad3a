"""The search spec: a YAML file, validated on load, every problem named by its key path.

A spec names the data (source and target), the model and its weights, the objectives, the
sampler, the trial count and concurrency, resources per trial, the stage budgets and the search
space (see :mod:`search.space` for the tree's grammar). ``frontier check SPEC`` prints one line
per problem (``budgets.transfer.epochs: Input should be greater than or equal to 1``) and exits 2.

Keys the space may set: ``order`` (none, PB, PA, PBA), ``s1`` (sparsity before transfer),
``s2`` (after), each a sparsity or a list of increasing milestones (``{choice: [0.5, [0.3, 0.5]]}``,
one pruning stage per milestone), ``quantize`` (none, Q: weight sharing, QR: sharing then retraining), and any
budget field by its dotted path (``transfer.optim.lr``, ``transfer.mode``, ``prune.frequency.every``,
``prune.after.epochs`` (the pruning stages after transfer only), ``share.groups.layer3`` for a
group listed under ``budgets.share.groups``, ``retrain.mode``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from trainables.data import DataSpec
from trainables.errors import FrontierError
from trainables.models import ARCHITECTURES
from trainables.objectives import OBJECTIVE_NAMES, OBJECTIVES
from trainables.pipeline.plan import ORDERS, QUANTIZE, Plan, PruneBudget, make_plan
from trainables.stages.benchmark import BenchmarkConfig
from trainables.stages.dense import DenseBudget, DenseConfig
from trainables.stages.quantize import RetrainConfig, ShareConfig
from trainables.stages.transfer import TransferConfig

from .space import Choice, Const, Node, Range, SpaceError, parse_space, walk

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
    direction: Literal["max", "min"] | None = None

    @property
    def mode(self) -> str:
        return self.direction or OBJECTIVES[self.name].direction


class DataPair(_Strict):
    source: DataSpec | None = None
    target: DataSpec


class ModelSpec(_Strict):
    name: str
    weights: str | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown architecture '{name}'; known: {', '.join(ARCHITECTURES)}")
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
    benchmark: BenchmarkConfig = BenchmarkConfig()


class Select(_Strict):
    """Constraints for ``frontier rerun --trial best``."""

    max_size_bytes: float | None = Field(None, gt=0)
    max_latency_ms: float | None = Field(None, gt=0)
    min_accuracy: float | None = Field(None, ge=0, le=1)


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
    trials: int = Field(12, ge=1)
    concurrency: int = Field(1, ge=1)
    resources: Resources = Resources()
    budgets: Budgets = Budgets()
    space: dict[str, Any] = Field(default_factory=dict)
    select: Select = Select()
    cache: bool = True
    _nodes: tuple[Node, ...] = PrivateAttr(default=())

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
    def metric_names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def modes(self) -> list[str]:
        return [o.mode for o in self.objectives]


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate the spec at ``path``; raises :class:`SpecError` listing every problem."""
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"spec: file '{path}' does not exist"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:  # a binary file passed by mistake
        raise SpecError([f"spec: '{path}' is not UTF-8 text (byte {exc.start} is "
                         f"0x{exc.object[exc.start]:02x})"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([f"spec: '{path}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}"]) from None
    return parse_spec(raw)


def parse_spec(raw: Any) -> Spec:
    """Validate a spec given as a mapping (what the YAML file holds)."""
    if not isinstance(raw, dict):
        raise SpecError([f"spec: the top level must be a mapping of keys, got {type(raw).__name__}"])
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_pydantic_lines(exc)) from None
    try:
        spec._nodes = parse_space(spec.space)
    except SpaceError as exc:
        raise SpecError([str(exc)]) from None
    problems = list(_space_problems(spec))
    if problems:
        raise SpecError(problems)
    return spec


def _pydantic_lines(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-")) or "spec"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{path}: {message}")
    return lines


def _space_problems(spec: Spec) -> Iterable[str]:
    """Keys the space may not set, values the budgets reject, and impossible orders."""
    for path, node in walk(spec.nodes):
        if node.name in SPECIAL_KEYS:
            yield from _special_problems(path, node)
        else:
            yield from _override_problems(spec, path, node)
    yield from _order_problems(spec)
    yield from _share_problems(spec)
    yield from _prune_problems(spec)


def _values(node: Node) -> list[Any]:
    if isinstance(node, Const):
        return [node.value]
    if isinstance(node, Range):
        return [node.low, node.high]
    return list(node.options)


SPECIAL_KEYS = ("order", "s1", "s2", "quantize")


def _special_problems(path: str, node: Node) -> Iterable[str]:
    for name, allowed in (("order", ORDERS), ("quantize", QUANTIZE)):
        if node.name == name:
            bad = [v for v in _values(node) if v not in allowed]
            if bad or isinstance(node, Range):
                yield f"{path}: {name} must be one of {', '.join(allowed)}, got {bad[0] if bad else 'a range'!r}"
            return
    for value in _values(node):
        for sparsity in value if isinstance(value, list) else [value]:
            if not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool) or not 0 <= sparsity < 1:
                yield f"{path}: a sparsity must be a number in [0, 1), got {sparsity!r}"
                return
        if isinstance(value, list) and any(b <= a for a, b in zip(value, value[1:])):
            yield f"{path}: {node.name}'s milestones must increase strictly, got {value}"
            return


def _override_problems(spec: Spec, path: str, node: Node) -> Iterable[str]:
    parts = node.name.split(".")
    if parts[0] not in Budgets.model_fields:
        known = ", ".join([*SPECIAL_KEYS, *(f"{k}.<field>" for k in Budgets.model_fields)])
        yield f"{path}: unknown parameter '{node.name}'; the space can set {known}"
        return
    problem = _field_problem(spec.budgets.model_dump(), node.name)
    if problem is not None:
        yield f"{path}: {problem}"
        return
    for value in _values(node):
        try:
            apply_overrides(spec.budgets, {node.name: value})
        except SpecError as exc:
            yield f"{path}: {value!r} is not valid for {exc.problems[0]}"
            return


def _field_problem(data: dict[str, Any], dotted: str) -> str | None:
    """Why ``dotted`` names no field of the budgets dumped as ``data``, in one line; None when it does."""
    node: Any = data
    walked: list[str] = []
    *parents, leaf = dotted.split(".")
    for part in parents:
        if isinstance(node, dict) and part in node and node[part] is None:
            unset = "budgets." + ".".join([*walked, part])
            return f"'{dotted}' is not a budget field while {unset} is unset; set {unset} to search its fields"
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return f"'{dotted}' is not a budget field"
        node, walked = node[part], [*walked, part]
    if leaf in node:
        return None
    if walked == ["share", "groups"]:
        return f"'{dotted}' is not a budget field; list {leaf} under budgets.share.groups to search it"
    return f"'{dotted}' is not a budget field"


def apply_overrides(budgets: Budgets, overrides: dict[str, Any]) -> Budgets:
    """``budgets`` with dotted-path fields replaced (``{"transfer.optim.lr": 0.01}``), revalidated.

    A side of the pruning budget is set the same way: ``{"prune.after.epochs": 25}``.
    """
    data = budgets.model_dump()
    for dotted, value in overrides.items():
        problem = _field_problem(data, dotted)
        if problem is not None:
            raise SpecError([problem])
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    try:
        return Budgets.model_validate(data)
    except ValidationError as exc:
        raise SpecError([f"budgets.{line}" for line in _pydantic_lines(exc)]) from None


def _order_problems(spec: Spec) -> Iterable[str]:
    """Each reachable order has the sparsities it needs; PBA can have s2 > s1 (every s2 milestone
    above every s1 milestone)."""
    top = {n.name: n for n in spec.nodes}
    order = top.get("order")
    if order is None:
        orders: list[tuple[str, str, dict[str, Node]]] = [("none", "space", top)]
    elif isinstance(order, Const):
        orders = [(str(order.value), "space.order", top)]
    elif isinstance(order, Choice):
        orders = [
            (str(o), f"space.order.choice.{o}", {**top, **{n.name: n for n in order.branches.get(o, ())}})
            for o in order.options
        ]
    else:
        return
    needs = {"none": (), "PB": ("s1",), "PA": ("s2",), "PBA": ("s1", "s2")}
    for name, path, scope in orders:
        for key in needs.get(name, ()):
            if key not in scope:
                yield f"{path}: order {name} needs '{key}' in the space"
        if name == "PBA" and "s1" in scope and "s2" in scope:
            high1, high2 = max(_numbers(scope["s1"]), default=0), max(_numbers(scope["s2"]), default=1)
            if not isinstance(scope["s2"], Range) and min(_numbers(scope["s2"]), default=1) <= high1:
                # only a range can be sampled above the s1 drawn; fixed values must all clear it
                yield (f"{path}: PBA needs s2 > s1, but s2 can be {min(_numbers(scope['s2']))} "
                       f"and s1 can be {high1}; make every s2 milestone larger than every s1 milestone, or s2 a range")
            elif high2 < high1 + PBA_MIN_GAP:
                yield (f"{path}: PBA needs s2 > s1 for every s1, so s2's highest value ({high2}) must be "
                       f"at least s1's highest ({high1}) + {PBA_MIN_GAP}")


def _share_problems(spec: Spec) -> Iterable[str]:
    """Share groups the model has; a source dataset when retraining reads its images."""
    names = {n.name for _, n in walk(spec.nodes)}
    quantize = {v for _, n in walk(spec.nodes) if n.name == "quantize" for v in _values(n)}
    if spec.budgets.share.groups:
        import torch

        with torch.device("meta"):  # the architecture's structure without allocating its weights
            model = ARCHITECTURES[spec.model.name](num_classes=2)
        from trainables.stages.quantize import layer_groups

        known = layer_groups(model)
        for group in spec.budgets.share.groups:
            if group not in known:
                yield (f"budgets.share.groups.{group}: {spec.model.name} has no layer group '{group}'; "
                       f"it has {', '.join(known)}")
    retrain = spec.budgets.retrain
    if "QR" in quantize and "retrain.mode" not in names and retrain.mode == "unlabeled" \
            and retrain.unlabeled == "source" and spec.data.source is None:
        yield "budgets.retrain.unlabeled: retraining reads the source's images but data.source is not given"


def _prune_problems(spec: Spec) -> Iterable[str]:
    """EPruning layer patterns the model has; no sparsity above what a granularity can reach."""
    from trainables.stages.gradual import granularity_problem

    patterns = spec.budgets.prune.epruning.layers
    if patterns:
        import torch

        from trainables.compress.units import unit_layers
        from trainables.errors import FrontierError

        with torch.device("meta"):
            model = ARCHITECTURES[spec.model.name](num_classes=2)
        try:
            unit_layers(model, patterns)
        except FrontierError as exc:
            yield f"budgets.prune.epruning.{exc} of {spec.model.name}"
    methods = {value for _, value in reachable_values(spec, "prune.method")}
    granularities = reachable_values(spec, "prune.granularity") if "gradual" in methods else []
    sparsities = [(path, node) for path, node in walk(spec.nodes) if node.name in ("s1", "s2")]
    for g_path, granularity in granularities:
        for s_path, node in sparsities:
            if not _exclusive(g_path, s_path):
                for value in _numbers(node):
                    problem = granularity_problem(str(granularity), float(value))
                    if problem:
                        yield f"{s_path}: {problem} ({g_path} can be '{granularity}')"
                        break


def reachable_values(spec: Spec, name: str) -> list[tuple[str, Any]]:
    """``(key path, value)`` for each value budget field ``name`` (dotted, ``prune.method``) can take
    in a trial: the budget's own unless a top-level space node always sets it, and every value the
    space gives it."""
    nodes = [(path, node) for path, node in walk(spec.nodes) if node.name == name]
    values: list[tuple[str, Any]] = []
    if not any(path == f"space.{name}" for path, _ in nodes):
        default: Any = spec.budgets
        for part in name.split("."):
            default = getattr(default, part)
        values.append((f"budgets.{name}", default))
    return values + [(path, value) for path, node in nodes for value in _values(node)]


def _exclusive(path_a: str, path_b: str) -> bool:
    """True when two space paths sit in different branches of one choice (never in the same trial)."""
    a, b = path_a.split("."), path_b.split(".")
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return 0 < common < min(len(a), len(b)) and a[common - 1] == "choice"


def _numbers(node: Node) -> list[float]:
    """The numbers ``node`` can give, a list option's milestones included."""
    flat = [v for value in _values(node) for v in (value if isinstance(value, list) else [value])]
    return [v for v in flat if isinstance(v, (int, float)) and not isinstance(v, bool)]


PBA_MIN_GAP = 0.01  # s2 is sampled in [s1 + gap, high] for PBA


def plan_for(spec: Spec, assignment: dict[str, Any]) -> Plan:
    """The trial plan of one sampled ``assignment`` (``{"order": "PBA", "s1": 0.5, ...}``)."""
    overrides = {k: v for k, v in assignment.items() if k not in SPECIAL_KEYS}
    budgets = apply_overrides(spec.budgets, overrides)
    return make_plan(
        order=str(assignment.get("order", "none")),
        dense=DenseConfig(model=spec.model.name, weights=spec.model.weights, **budgets.dense.model_dump()),
        transfer=budgets.transfer,
        prune=budgets.prune.model_dump(),
        benchmark=budgets.benchmark,
        source=spec.data.source,
        target=spec.data.target,
        s1=assignment.get("s1"),
        s2=assignment.get("s2"),
        seed=spec.seed,
        quantize=str(assignment.get("quantize", "none")),
        share=budgets.share,
        retrain=budgets.retrain,
    )


def pba_lower_bound(name: str, sampled: dict[str, Any]) -> float | None:
    """For PBA, s2's range starts above the s1 already sampled (its last milestone, for a list)."""
    if name == "s2" and sampled.get("order") == "PBA" and "s1" in sampled:
        s1 = sampled["s1"]
        return float(max(s1) if isinstance(s1, list) else s1) + PBA_MIN_GAP
    return None
