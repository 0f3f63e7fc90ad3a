"""The search space: a tree in the spec, parsed into nodes, sampled define-by-run by Optuna.

Grammar of ``space:`` (each key a parameter name, each value a node)::

    lr:     0.01                         # a constant
    mode:   {choice: [finetune, freeze]} # a categorical of scalars
    s2:     {choice: [0.8, [0.7, 0.8]]}  # an option may be a list of scalars (sparsity milestones)
    s1:     [0.5, 0.7]                   # s1 and s2 take a plain list: fixed milestones
    s2:     {latency: 0.4}               # s1 and s2 take a latency target instead of a sparsity: a share
                                         # of the dense model's latency on the trial's engine, in (0, 1)
    s2:     {latency_ms: 2.0}            # or milliseconds (> 0)
    s2:     {latency: {choice: [0.3, 0.5]}}  # a latency target's value is any node (constant, choice, range)
    order:  {choice: {PB: {...}, PA: {...}}}  # a categorical whose options carry sub-spaces
    epochs: {int: [1, 4]}                # int range; optional increment, log
    s1:     {float: [0.3, 0.9], increment: 0.1}  # float range on a grid of 0.1 from 0.3; optional increment, log
    lr2:    {log: [1.0e-4, 1.0e-2]}      # float range on a log scale

A parameter inside a branch appears only when that branch is chosen; its Optuna name is prefixed
with the branch (``PBA:s1``), so each branch keeps its own distribution. :func:`suggest` walks the
tree on an ``optuna.Trial`` and returns the flat assignment ``{"order": "PBA", "s1": 0.5, ...}``.

A latency target parses to a node named ``s2.latency`` (``s1.latency_ms``, ...: :func:`latency_key`),
so Optuna's parameter is ``s2.latency`` (``trials.csv``'s ``param.s2.latency``) and :func:`suggest`
returns ``{"s2.latency": 0.3}``; :func:`search.spec.to_plan.plan_for` turns it into the plan's
``s2={"latency": 0.3}``. Its values are checked as it is parsed (:data:`LATENCY_KINDS`).

A range's ``increment`` was called ``step`` before; ``step`` still works, with a ``FrontierDeprecation``,
for one release (:data:`OLD_INCREMENT`).

Optuna's categorical choices must be scalars, so a list option goes to Optuna as its JSON text
(``"[0.7, 0.8]"``, what ``trials.csv`` shows as the parameter) and comes back from
:func:`suggest` as the list.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

from trainables.errors import FrontierDeprecation

Scalar = Union[str, int, float, bool, None]
MILESTONE_KEYS = ("s1", "s2")  # a plain list there is a fixed list of sparsity milestones
# s1/s2 may instead hold one latency target: {latency: share of the dense latency} or {latency_ms: ms}
LATENCY_KINDS = ("latency", "latency_ms")
LATENCY_KEYS = tuple(f"{side}.{kind}" for side in MILESTONE_KEYS for kind in LATENCY_KINDS)  # the nodes' names
BRANCH_SEP = ":"  # Ray unflattens '/' in parameter names: never use it here
INCREMENT = "increment"  # a range's grid spacing
OLD_INCREMENT = "step"  # its name before; accepted with a FrontierDeprecation for one release


@dataclass(frozen=True)
class Const:
    name: str
    value: Scalar | list[Scalar]


@dataclass(frozen=True)
class Range:
    name: str
    kind: str  # "int" or "float"
    low: float
    high: float
    log: bool = False
    increment: float | None = None  # the grid spacing from ``low`` (None: continuous; an int range: 1)


@dataclass(frozen=True)
class Choice:
    name: str
    options: tuple[Scalar | list[Scalar], ...]
    branches: Mapping[str, tuple[Node, ...]] = field(default_factory=dict)

    @property
    def encoded(self) -> list[Scalar]:
        """The options as Optuna sees them: a list option as its JSON text."""
        return [encode(option) for option in self.options]


def encode(option: Scalar | list[Scalar]) -> Scalar:
    """A choice option as an Optuna categorical value: scalars as they are, a list as JSON text.

    Example:
        >>> encode([0.7, 0.8]), encode(0.8)
        ('[0.7, 0.8]', 0.8)
    """
    return json.dumps(option) if isinstance(option, list) else option


Node = Union[Const, Range, Choice]


class SpaceError(ValueError):
    """A malformed space node; ``path`` is the key path, ``message`` what is wrong."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path, self.message = path, message


def parse_space(raw: Any, path: str = "space") -> tuple[Node, ...]:
    """Parse a ``space:`` mapping into nodes; raises :class:`SpaceError` naming the key path."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise SpaceError(path, f"must be a mapping of parameter names to nodes, got {type(raw).__name__}")
    for name in raw:
        if str(name) in LATENCY_KEYS:
            side, kind = str(name).split(".")
            raise SpaceError(f"{path}.{name}", f"write a latency target under {side}: {side}: {{{kind}: ...}}")
    return tuple(_parse_node(str(name), value, f"{path}.{name}") for name, value in raw.items())


def latency_key(side: str, kind: str) -> str:
    """The name of side ``side``'s latency target node of ``kind`` (``s2.latency``): its Optuna parameter.

    Example:
        >>> latency_key("s2", "latency"), latency_key("s1", "latency_ms")
        ('s2.latency', 's1.latency_ms')
    """
    return f"{side}.{kind}"


def latency_problem(kind: str, value: Any) -> str | None:
    """Why ``value`` is no latency target of ``kind`` (``latency``: a share in (0, 1) of the dense
    model's latency; ``latency_ms``: milliseconds > 0), in one line; None when it is one.

    Example:
        >>> latency_problem("latency", 1.2)
        "a latency target's share of the dense model's latency must be a number in (0, 1), got 1.2"
        >>> latency_problem("latency_ms", 2) is None
        True
    """
    if kind == "latency":
        if not (_is_number(value) and 0 < value < 1):
            return f"a latency target's share of the dense model's latency must be a number in (0, 1), got {value!r}"
    elif not (_is_number(value) and value > 0):
        return f"latency_ms must be a number of milliseconds > 0, got {value!r}"
    return None


def _parse_latency(side: str, raw: Mapping, path: str) -> Node:
    """``s2: {latency: <node>}`` (or ``latency_ms``): a node named ``s2.latency`` whose every value
    (a constant, each option of a choice, a range's bounds) is a latency target of its kind."""
    given = [k for k in LATENCY_KINDS if k in raw]
    if len(given) > 1:
        raise SpaceError(path, f"a latency target is one of latency (a share of the dense model's latency) or "
                               f"latency_ms, not both; got keys {sorted(map(str, raw))}")
    extra = sorted(str(k) for k in raw if k not in LATENCY_KINDS)
    if extra or not given:
        takes = (f"{side} takes a sparsity, a node (choice, int, float, log) or a latency target "
                 f"({{latency: <share of the dense latency>}} or {{latency_ms: <ms>}})")
        raise SpaceError(f"{path}.{extra[0]}", f"unknown key; {takes}") if extra else SpaceError(path, f"is empty; {takes}")
    kind = given[0]
    inner, raw_value = f"{path}.{kind}", raw[kind]
    if isinstance(raw_value, Mapping) and isinstance(raw_value.get("choice"), Mapping):
        raise SpaceError(f"{inner}.choice", "a latency target's choice is a list of values, not options with sub-spaces")
    node = _parse_node(latency_key(side, kind), raw_value, inner)
    if isinstance(node, Const):
        problems = [(inner, latency_problem(kind, node.value))]
    elif isinstance(node, Range):
        problems = [(f"{inner}.{_range_key(raw_value)}", latency_problem(kind, b)) for b in (node.low, node.high)]
    else:
        problems = [(f"{inner}.choice", latency_problem(kind, o)) for o in node.options]
    for where, problem in problems:
        if problem is not None:
            raise SpaceError(where, problem)
    return node


def _range_key(raw: Mapping) -> str:
    return next(k for k in ("int", "float", "log") if k in raw)


def _parse_node(name: str, raw: Any, path: str) -> Node:
    if BRANCH_SEP in name or "/" in name:
        raise SpaceError(path, f"parameter names cannot contain '{BRANCH_SEP}' or '/'")
    if isinstance(raw, Mapping) and name in MILESTONE_KEYS and (
            any(k in raw for k in LATENCY_KINDS) or not any(k in raw for k in ("choice", "int", "float", "log"))):
        return _parse_latency(name, raw, path)
    if not isinstance(raw, Mapping):
        if isinstance(raw, (list, tuple)) and name in MILESTONE_KEYS:
            return Const(name, list(raw))  # fixed sparsity milestones, checked with the plan's sparsities
        if isinstance(raw, (list, tuple)):
            raise SpaceError(path, "a list is not a node; write {choice: [...]} for a categorical "
                                   "(only s1 and s2 take a plain list: their sparsity milestones)")
        return Const(name, raw)
    kinds = [k for k in ("choice", "int", "float", "log") if k in raw]
    if len(kinds) != 1:
        raise SpaceError(path, f"a node has exactly one of choice, int, float, log; got keys {sorted(raw)}")
    kind = kinds[0]
    extra = set(raw) - {kind, INCREMENT, OLD_INCREMENT, "log"} if kind != "choice" else set(raw) - {"choice"}
    if extra:
        raise SpaceError(f"{path}.{sorted(extra)[0]}", "unknown key")
    if kind == "choice":
        return _parse_choice(name, raw["choice"], f"{path}.choice")
    return _parse_range(name, kind, raw, path)


def _parse_choice(name: str, options: Any, path: str) -> Choice:
    if isinstance(options, Mapping):
        if not options:
            raise SpaceError(path, "needs at least one option")
        branches = {str(k): parse_space(v, f"{path}.{k}") for k, v in options.items()}
        return Choice(name, tuple(branches), branches)
    if not isinstance(options, (list, tuple)) or not options:
        raise SpaceError(path, "must be a non-empty list of values or a mapping of options to sub-spaces")
    for option in options:
        if isinstance(option, Mapping):
            raise SpaceError(path, "list options must be plain values; use a mapping for options with sub-spaces")
        if isinstance(option, list) and (not option or any(isinstance(v, (Mapping, list)) for v in option)):
            raise SpaceError(path, f"a list option must be a non-empty list of plain values, got {option!r}")
    choice = Choice(name, tuple(list(o) if isinstance(o, list) else o for o in options))
    if len(set(map(repr, choice.encoded))) != len(options):
        raise SpaceError(path, f"options repeat: {list(options)}")
    return choice


def _parse_range(name: str, kind: str, raw: Mapping, path: str) -> Range:
    bounds = raw[kind]
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and all(_is_number(b) for b in bounds)):
        raise SpaceError(f"{path}.{kind}", f"must be [low, high] numbers, got {bounds!r}")
    low, high = bounds
    if not low < high:
        raise SpaceError(f"{path}.{kind}", f"low must be below high, got [{low}, {high}]")
    log = kind == "log" or raw.get("log") is True
    if log and low <= 0:
        raise SpaceError(f"{path}.{kind}", f"a log range needs low > 0, got {low}")
    if kind == "int" and not (float(low).is_integer() and float(high).is_integer()):
        raise SpaceError(f"{path}.int", f"int bounds must be whole numbers, got [{low}, {high}]")
    key = INCREMENT
    if OLD_INCREMENT in raw:
        if INCREMENT in raw:
            raise SpaceError(f"{path}.{OLD_INCREMENT}", f"is the old name of '{INCREMENT}'; give only '{INCREMENT}'")
        key = OLD_INCREMENT
        warnings.warn(f"{path}.{OLD_INCREMENT}: renamed '{INCREMENT}'; '{OLD_INCREMENT}' stops working in the next "
                      "release", FrontierDeprecation, stacklevel=2)
    increment = raw.get(key)
    if increment is not None and (not _is_number(increment) or increment <= 0 or log):
        raise SpaceError(f"{path}.{key}", f"must be a positive number on a linear range, got {increment!r}")
    return Range(name, "int" if kind == "int" else "float", low, high, log, increment)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


LowerBound = Callable[[str, dict[str, Any]], float | None]


def suggest(
    trial: Any, nodes: tuple[Node, ...], prefix: str = "", lower: LowerBound | None = None, outer: dict | None = None
) -> dict[str, Any]:
    """Sample ``nodes`` on an Optuna trial; returns the flat assignment (branch prefixes dropped).

    ``lower(name, sampled_so_far)`` may raise a float range's low bound from what was sampled
    before it (PBA's s2 above s1); a float range is sampled in ``[max(low, bound), high]``.
    ``outer`` holds what enclosing levels sampled (a branch sees its parents' values).
    """
    values: dict[str, Any] = {}
    # plain parameters before branching choices, so a branch's bounds can depend on them
    for node in sorted(nodes, key=lambda n: isinstance(n, Choice) and bool(n.branches)):
        optuna_name = f"{prefix}{node.name}"
        if isinstance(node, Const):
            values[node.name] = node.value
        elif isinstance(node, Range):
            bound = lower(node.name, {**(outer or {}), **values}) if lower else None
            values[node.name] = _suggest_range(trial, optuna_name, node, bound)
        else:
            encoded = node.encoded
            picked = trial.suggest_categorical(optuna_name, encoded)
            values[node.name] = next(o for o, e in zip(node.options, encoded)
                                     if e == picked and type(e) is type(picked))
            if node.branches:
                inner = f"{prefix}{picked}{BRANCH_SEP}"
                branch = suggest(trial, node.branches[picked], inner, lower, {**(outer or {}), **values})
                values.update(branch)
    return values


def _suggest_range(trial: Any, name: str, node: Range, bound: float | None) -> float | int:
    low = node.low if bound is None else max(node.low, bound)
    if node.kind == "int":
        return trial.suggest_int(name, int(low), int(node.high), step=int(node.increment or 1), log=node.log)
    if node.increment:
        # stay on the grid from the range's own low (rounded: 0.5 + 7 * 0.05 is 0.8500000000000001)
        low = round(node.low + math.ceil((low - node.low) / node.increment - 1e-9) * node.increment, 12)
        low = min(low, node.high)
    return trial.suggest_float(name, low, node.high, step=node.increment, log=node.log)


def walk(nodes: tuple[Node, ...], path: str = "space"):
    """Yield ``(path, node)`` for every node of the tree, depth first."""
    for node in nodes:
        node_path = f"{path}.{node.name}"
        yield node_path, node
        if isinstance(node, Choice):
            for option, sub in node.branches.items():
                yield from walk(sub, f"{node_path}.choice.{option}")
