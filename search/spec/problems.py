"""What a spec's schema cannot see: the semantic problems of a spec, each one line with its key path.

:func:`space_problems` runs after the schema (:mod:`search.spec.schema`): keys the space may not set,
values the budgets reject, a user model that does not import or build or whose head cannot be
found, orders without the sparsities (or latency targets) they need (or PBA without s2 > s1, or
with two latency targets of one kind and s2's not below s1's), a side given two targets in one
trial, a latency target where weights are pruned one by one (it needs unit pruning), the ``latency``
allocation where a side prunes to a sparsity,
share groups and EPruning layers the model lacks, sparsities a pruning granularity cannot
reach, INT8 settings no trial could run (a backend without INT8, a calibration domain or float
layers that do not exist), sharing that would leave retraining (``QR``) nothing to train, and
TensorRT on a GPU that trials share (``0 < resources.gpu < 1``).
:func:`reachable_values` answers which values a budget field can take in some trial.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

from trainables.errors import FrontierError
from trainables.models import head_name, structure
from trainables.pipeline.plan import ORDER_SPARSITIES, ORDERS, QUANTIZE, TARGET_ORDERS, TRANSFER_ORDERS
from trainables.stages.schedule import milestones_problem

from .space import LATENCY_KEYS, LATENCY_KINDS, MILESTONE_KEYS, Choice, Const, Node, Range, latency_key, walk
from .schema import Budgets, Spec, SpecError
from .to_plan import PBA_MIN_GAP, SHAPE_KEYS, SPECIAL_KEYS, apply_overrides, field_problem

UNIT_FREE_GRANULARITIES = ("unstructured", "2:4")  # masks of single weights: no unit goes, no engine runs faster


def space_problems(spec: Spec) -> Iterable[str]:
    """Keys the space may not set, values the budgets reject, and impossible orders."""
    for path, node in walk(spec.nodes):
        if node.name in LATENCY_KEYS:
            continue  # its values were checked as the space was parsed (search.spec.space.latency_problem)
        if node.name in SPECIAL_KEYS:
            yield from _special_problems(path, node)
        else:
            yield from _override_problems(spec, path, node)
    yield from _model_problems(spec)
    yield from _dense_problems(spec)
    yield from _order_problems(spec)
    yield from _share_problems(spec)
    yield from _retrain_problems(spec)
    yield from _prune_problems(spec)
    yield from _latency_problems(spec)
    yield from _int8_problems(spec)
    yield from _shared_gpu_problems(spec)


def _values(node: Node) -> list[Any]:
    if isinstance(node, Const):
        return [node.value]
    if isinstance(node, Range):
        return [node.low, node.high]
    return list(node.options)


def _special_problems(path: str, node: Node) -> Iterable[str]:
    for name, allowed in (("order", ORDERS), ("quantize", QUANTIZE)):
        if node.name == name:
            bad = [v for v in _values(node) if v not in allowed]
            if bad or isinstance(node, Range):
                yield f"{path}: {name} must be one of {', '.join(allowed)}, got {bad[0] if bad else 'a range'!r}"
            return
    for value in _values(node):
        problem = milestones_problem(value if isinstance(value, list) else [value])
        if problem is not None:
            yield f"{path}: {node.name}'s {problem}" if problem.startswith("milestones") else f"{path}: {problem}"
            return


def _override_problems(spec: Spec, path: str, node: Node) -> Iterable[str]:
    parts = node.name.split(".")
    if parts[0] not in Budgets.model_fields:
        known = ", ".join([*SHAPE_KEYS, *(f"{k}.<field>" for k in Budgets.model_fields)])
        yield f"{path}: unknown parameter '{node.name}'; the space can set {known}"
        return
    problem = field_problem(spec.budgets.model_dump(), node.name)
    if problem is not None:
        yield f"{path}: {problem}"
        return
    for value in _values(node):
        try:
            apply_overrides(spec.budgets, {node.name: value})
        except SpecError as exc:
            yield f"{path}: {value!r} is not valid for {exc.problems[0]}"
            return


def _model_problems(spec: Spec) -> Iterable[str]:
    """The model imports, builds and has a head frontier can find (a user model is imported here,
    not in the schema; a torchvision name needs no check)."""
    if ":" not in spec.model.name:
        return
    try:
        head_name(structure(spec.model.name))
    except FrontierError as exc:
        yield f"model.name: {str(exc).removeprefix('model: ')}"


def _dense_problems(spec: Spec) -> Iterable[str]:
    """A model without weights is trained by ``D`` from scratch: on data that is given, for epochs."""
    if spec.model.weights is not None:
        return
    if spec.budgets.dense.epochs == 0:
        yield "budgets.dense.epochs: model.weights is not given, so D trains the model from scratch; epochs must be > 0"
    if spec.model.trained_on == "source" and spec.data.source is None:
        yield ("data.source: model.weights is not given, so D trains the model on the source; give data.source, "
               "or model.trained_on: target to train it on the target (no transfer)")


Scope = dict[str, tuple[str, Node]]  # the nodes a trial of one order sees, by name: (key path, node)


def _orders(spec: Spec) -> list[tuple[str, str, Scope]]:
    """Each order a trial can have: ``(order, its key path, the nodes its trials see)`` (the top level's,
    then its branch's, which win by name); empty when ``order`` is a range (:func:`_special_problems` says so)."""
    top: Scope = {n.name: (f"space.{n.name}", n) for n in spec.nodes}
    order = top.get("order", (None, None))[1]
    if order is None:
        return [("none", "space", top)]
    if isinstance(order, Const):
        return [(str(order.value), "space.order", top)]
    if isinstance(order, Choice):
        return [(str(o), f"space.order.choice.{o}",
                 {**top, **{n.name: (f"space.order.choice.{o}.{n.name}", n) for n in order.branches.get(o, ())}})
                for o in order.options]
    return []


def _targets(scope: Scope, side: str) -> list[str]:
    """The names under which ``scope`` gives ``side`` a target: ``s2`` (a sparsity or milestones),
    ``s2.latency``, ``s2.latency_ms``; more than one is a problem (:func:`_order_problems`)."""
    return [k for k in (side, *(latency_key(side, kind) for kind in LATENCY_KINDS)) if k in scope]


def _order_problems(spec: Spec) -> Iterable[str]:
    """Each reachable order has the sparsities (or latency targets) it needs, one per side; PBA can
    have s2 > s1 (every s2 milestone above every s1 milestone), and with two latency targets of one
    kind s2's is below s1's for every value each can take (no sampling bound keeps them apart:
    :func:`search.spec.to_plan.pba_lower_bound` is for sparsities). A sparsity on one side and a
    latency target on the other, or a share and milliseconds, are not compared."""
    trained_on = spec.model.trained_on
    said: set[str] = set()  # a side given twice at the top level is said once, not once per order
    for name, path, paths in _orders(spec):
        scope = {key: node for key, (_, node) in paths.items()}
        if trained_on == "target" and name in TRANSFER_ORDERS:
            yield (f"{path}: order {name} places pruning around a transfer, but model.trained_on is target "
                   f"(no transfer): use {' or '.join(TARGET_ORDERS)}")
        elif trained_on == "source" and name not in ("none", *TRANSFER_ORDERS):
            yield f"{path}: order {name} prunes without a transfer; it needs model.trained_on: target"
        elif name in ("PB", "PBA") and spec.data.source is None:
            yield f"{path}: order {name} prunes on the source, but data.source is not given"
        for key in ORDER_SPARSITIES.get(name, ()):
            if not _targets(scope, key):
                yield (f"{path}: order {name} needs '{key}' in the space (a sparsity, milestones, or a latency "
                       f"target {key}: {{latency: ...}})")
        for side in MILESTONE_KEYS:
            if len(given := _targets(scope, side)) > 1 and (where := paths[given[-1]][0]) not in said:
                said.add(where)
                yield (f"{where}: {side} has more than one target in one trial "
                       f"({', '.join(paths[k][0] for k in given)}); give {side} a sparsity or a latency target, not both")
        if name == "PBA":
            yield from _pba_latency_problems(path, scope)
        if name == "PBA" and _targets(scope, "s1") == ["s1"] and _targets(scope, "s2") == ["s2"]:
            high1, high2 = max(_numbers(scope["s1"]), default=0), max(_numbers(scope["s2"]), default=1)
            if not isinstance(scope["s2"], Range) and min(_numbers(scope["s2"]), default=1) <= high1:
                # only a range can be sampled above the s1 drawn; fixed values must all clear it
                yield (f"{path}: PBA needs s2 > s1, but s2 can be {min(_numbers(scope['s2']))} "
                       f"and s1 can be {high1}; make every s2 milestone larger than every s1 milestone, or s2 a range")
            elif high2 < high1 + PBA_MIN_GAP:
                yield (f"{path}: PBA needs s2 > s1 for every s1, so s2's highest value ({high2}) must be "
                       f"at least s1's highest ({high1}) + {PBA_MIN_GAP}")


def _pba_latency_problems(path: str, scope: dict[str, Node]) -> Iterable[str]:
    """PBA with a latency target of one kind on both sides (``latency`` shares of the dense latency, or
    ``latency_ms``): every s2 target below every s1 target (the second stage prunes further). Targets
    of two kinds are not compared."""
    first, second = _targets(scope, "s1"), _targets(scope, "s2")
    if len(first) != 1 or len(second) != 1 or "s1" in first or "s2" in second:
        return  # a sparsity on a side (compared as sparsities, or not at all), or a side given twice
    if first[0].split(".")[1] != second[0].split(".")[1]:
        return  # a share of the dense latency against milliseconds: not compared (as make_plan does not)
    low1, high2 = min(_numbers(scope[first[0]])), max(_numbers(scope[second[0]]))
    if not high2 < low1:
        yield (f"{path}: PBA needs s2's latency target below s1's (the pruning after transfer goes further), but "
               f"{second[0]} can be {high2} and {first[0]} can be {low1}; make every s2 target smaller than every s1 target")


def _share_problems(spec: Spec) -> Iterable[str]:
    """Share groups the model has; a source dataset when retraining reads its images."""
    names = {n.name for _, n in walk(spec.nodes)}
    quantize = {v for _, n in walk(spec.nodes) if n.name == "quantize" for v in _values(n)}
    if spec.budgets.share.groups and (model := _structure(spec)) is not None:
        from trainables.stages.share import group_choices, group_layers

        for group in spec.budgets.share.groups:
            if group_layers(model, group) is None:
                yield (f"budgets.share.groups.{group}: {spec.model.name} has no layer group '{group}'; "
                       f"it has {group_choices(model)}")
    retrain = spec.budgets.retrain
    if "QR" in quantize and "retrain.mode" not in names and retrain.mode == "unlabeled" \
            and retrain.unlabeled == "source" and spec.data.source is None:
        yield ("budgets.retrain.unlabeled: retraining reads the source's images but data.source is not given "
               "(unlabeled: target retrains on the target's images)")


def _retrain_problems(spec: Spec) -> Iterable[str]:
    """No trial retrains a model whose every parameter sharing froze: every layer's weight shared
    (and batch norm too, where the model has it) leaves retraining an empty parameter list
    (:func:`trainables.stages.share.nothing_to_retrain`). A value counts where it can meet a
    ``QR``/``QRI8`` trial (not in another branch of a choice), and only values that can meet each
    other add up to such a trial."""
    contexts = [(f"{path}.choice.{value}", path, value) for path, node in walk(spec.nodes)
                if node.name == "quantize" for value in _values(node) if str(value).startswith("QR")]
    if not contexts or (model := _structure(spec)) is None:
        return
    from trainables.stages.share import ShareConfig, layer_groups, nothing_to_retrain, shared_tensors

    groups = dict.fromkeys(layer_groups(model), 256)
    if nothing_to_retrain(model, shared_tensors(model, ShareConfig(groups=groups, batchnorm=256))) is None:
        return  # something trains however much is shared (e.g. a LayerNorm)
    keys = [f"share.groups.{g}" for g in groups]  # what must all be shared for nothing to train
    if nothing_to_retrain(model, shared_tensors(model, ShareConfig(groups=groups))) is None:
        keys.append("share.batchnorm")
    defaults = {**{f"share.groups.{g}": k for g, k in spec.budgets.share.groups.items()},
                "share.batchnorm": spec.budgets.share.batchnorm}
    for context, path, value in contexts:
        sharing: list[list[tuple[str, Any]]] = []  # per key: the (path, centroids) that share it in this context
        for key in keys:
            nodes = [(p, n) for p, n in walk(spec.nodes) if n.name == key and not _exclusive(p, context)]
            always = any(p in (f"space.{key}", f"{context}.{key}") for p, _ in nodes)  # the default never applies
            values = [] if always else [(f"budgets.{key}", defaults.get(key, "keep"))]
            values += [(p, v) for p, n in nodes for v in _values(n)]
            sharing.append([(p, v) for p, v in values if v != "keep"])
        if all(sharing) and _together(sharing) is not None:
            yield (f"budgets.share.groups: a trial can share the weight of every layer of {spec.model.name}"
                   f"{' and its batch norm' if 'share.batchnorm' in keys else ''}, which leaves nothing to retrain, "
                   f"but {path} can be {value}; leave a group at 'keep' there or drop {value}")
            return


def _together(options: list[list[tuple[str, Any]]]) -> list[tuple[str, Any]] | None:
    """One ``(path, value)`` from each list such that no two paths exclude each other (different
    branches of one choice), or None when there is none."""
    if not options:
        return []
    for option in options[0]:
        rest = [[o for o in later if not _exclusive(o[0], option[0])] for later in options[1:]]
        found = _together(rest) if all(rest) else None
        if found is not None:
            return [option, *found]
    return None


def _prune_problems(spec: Spec) -> Iterable[str]:
    """EPruning layer patterns the model has; no sparsity above what a granularity can reach."""
    from trainables.stages.pruners import granularity_problem

    yield from _unit_problems(spec)
    methods = {value for _, value in reachable_values(spec, "prune.method")}
    granularities = reachable_values(spec, "prune.granularity") if "gradual" in methods else []
    # sparsities only: a latency target (s2.latency) is no share of weights (see _latency_problems)
    sparsities = [(path, node) for path, node in walk(spec.nodes) if node.name in MILESTONE_KEYS]
    for g_path, granularity in granularities:
        for s_path, node in sparsities:
            if not _exclusive(g_path, s_path):
                for value in _numbers(node):
                    problem = granularity_problem(str(granularity), float(value))
                    if problem:
                        yield f"{s_path}: {problem} ({g_path} can be '{granularity}')"
                        break


def _latency_problems(spec: Spec) -> Iterable[str]:
    """A latency target only where whole units go (``prune.granularity: channel`` or ``prune.method:
    epruning``): masking single weights (``unstructured``, ``2:4``) removes no unit, so no engine runs
    faster; and the ``latency`` allocation of gradual pruning only where each side an order prunes has
    a latency target (it answers a latency target, not a sparsity; EPruning does not read it)."""
    methods = [(at, v) for at, _, v in _reach(spec, "prune.method") if v == "gradual"]
    granularities = [(at, shown, v) for at, shown, v in _reach(spec, "prune.granularity") if v in UNIT_FREE_GRANULARITIES]
    for t_path, _ in [(p, n) for p, n in walk(spec.nodes) if n.name in LATENCY_KEYS]:
        for (m_at, _), (g_at, g_shown, granularity) in ((m, g) for m in methods for g in granularities):
            if _meet(spec, [(t_path, ""), (m_at, "prune.method"), (g_at, "prune.granularity")]):
                yield (f"{t_path}: a latency target needs unit pruning: {g_shown} can be '{granularity}' with "
                       f"prune.method gradual there, which masks single weights and removes no unit; set "
                       f"prune.granularity: channel or prune.method: epruning")
                break
    allocations = [(at, shown) for at, shown, v in _reach(spec, "prune.allocation") if v == "latency"]
    for name, path, scope in _orders(spec):
        for side in ORDER_SPARSITIES.get(name, ()):
            if _targets({k: n for k, (_, n) in scope.items()}, side) != [side]:
                continue  # a latency target (or no target at all: _order_problems says so)
            s_path = scope[side][0]
            for (a_at, a_shown), (m_at, _) in ((a, m) for a in allocations for m in methods):
                if _meet(spec, [(s_path, ""), (a_at, "prune.allocation"), (m_at, "prune.method")]):
                    yield (f"{a_shown}: allocation 'latency' needs a latency target, but order {name} prunes {side} to "
                           f"a sparsity ({s_path}); give {side} a latency target ({side}: {{latency: ...}}) there or "
                           f"another allocation")
                    return


def _reach(spec: Spec, name: str) -> list[tuple[str, str, Any]]:
    """:func:`reachable_values` with each value's own place: ``(where, key path, value)``, where
    ``where`` is ``<path>.choice.<value>`` for an option that carries a sub-space (so that a node in
    another option's branch never meets it) and the key path otherwise."""
    out = []
    nodes = {path: node for path, node in walk(spec.nodes) if node.name == name}
    for path, value in reachable_values(spec, name):
        node = nodes.get(path)
        branched = isinstance(node, Choice) and bool(node.branches)
        out.append((f"{path}.choice.{value}" if branched else path, path, value))
    return out


def _meet(spec: Spec, entries: list[tuple[str, str]]) -> bool:
    """Whether one trial can hold every ``(where, budget field)`` of ``entries`` at once: no two space
    paths in different branches of one choice, and a budget's own value (``where`` ``budgets.<field>``)
    only where no space node of that field always sets it (one whose level holds a path of ``entries``)."""
    spaces = [where for where, _ in entries if not where.startswith("budgets.")]
    if any(_exclusive(a, b) for a, b in itertools.combinations(spaces, 2)):
        return False
    for where, name in entries:
        if where.startswith("budgets."):
            levels = [path[: -len(name) - 1] for path, node in walk(spec.nodes) if node.name == name]
            if any(p == level or p.startswith(f"{level}.") for level in levels for p in spaces):
                return False
    return True


def _unit_problems(spec: Spec) -> Iterable[str]:
    """Where a trial can prune units (EPruning, channel granularity): the model's graph traces, it
    has unit groups, and the EPruning layer patterns match one."""
    methods = reachable_values(spec, "prune.method")
    channel = any(g == "channel" for _, g in reachable_values(spec, "prune.granularity"))
    users = [path for path, m in methods if m == "epruning"] + (
        [path for path, m in methods if m == "gradual"] if channel else [])
    if not users or (model := _structure(spec)) is None:
        return
    from trainables.compress.units import excluded, unit_groups

    try:
        groups = unit_groups(model)
    except FrontierError as exc:
        yield f"{users[0]}: {exc}"
        return
    if not groups:
        why = next(iter(excluded(model).values()), "no layer produces prunable channels")
        yield f"{users[0]}: {spec.model.name} has no unit group that can be removed exactly (e.g. {why})"
        return
    patterns = spec.budgets.prune.epruning.layers
    if patterns:
        try:
            unit_groups(model, patterns)
        except FrontierError as exc:
            yield f"budgets.prune.epruning.{exc} of {spec.model.name}"


def _int8_problems(spec: Spec) -> Iterable[str]:
    """When a trial can deploy in INT8: a backend and precision that run it, a source to calibrate
    on when asked for, and float-layer patterns that match a Conv/Linear of the model."""
    if not any(str(v).endswith("I8") for _, n in walk(spec.nodes) if n.name == "quantize" for v in _values(n)):
        return
    for path, backend in reachable_values(spec, "benchmark.backend"):
        if backend == "torch":
            yield (f"{path}: torch times the float torch model and cannot run the INT8 trials the space asks for "
                   f"(quantize I8); use onnxruntime, tensorrt or auto")
    for path, precision in reachable_values(spec, "benchmark.precision"):
        if precision != "fp32":
            yield f"{path}: INT8 trials are built from the float32 export; precision must be fp32, not {precision}"
    for path, domain in reachable_values(spec, "int8.calibration"):
        if domain == "source" and spec.data.source is None:
            yield f"{path}: INT8 calibration reads the source's images but data.source is not given"
    patterns = [(path, p) for path, value in reachable_values(spec, "int8.keep_float")
                for p in (value if isinstance(value, list) else [value])]
    if patterns and (model := _structure(spec)) is not None:
        import fnmatch

        from torch import nn

        layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        for path, pattern in patterns:
            if not any(fnmatch.fnmatchcase(layer, str(pattern)) for layer in layers):
                yield (f"{path}: '{pattern}' matches no layer of {spec.model.name}; "
                       f"layers are e.g. {', '.join(layers[:4])}")


def _shared_gpu_problems(spec: Spec) -> Iterable[str]:
    """TensorRT asked for while trials share a GPU (``0 < resources.gpu < 1``): a trial's kernel
    timings (and the tactics it saves into the run's timing cache) would include another trial's
    training on the same GPU."""
    gpu = spec.resources.gpu
    if not 0 < gpu < 1:
        return
    for path, backend in reachable_values(spec, "benchmark.backend"):
        if backend == "tensorrt":
            yield (f"{path}: tensorrt times kernels on a whole GPU, but resources.gpu is {gpu:g} and lets trials "
                   f"share one (their training would time into each other's engines); set resources.gpu to 1 or more")


def _structure(spec: Spec) -> Any:
    """The model's structure, without its weights where possible (meta device), or None when it
    does not build (:func:`_model_problems` says why)."""
    try:
        return structure(spec.model.name)
    except FrontierError:
        return None


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
