"""What a spec's schema cannot see: the semantic problems of a spec, each one line with its key path.

:func:`space_problems` runs after the schema (:mod:`search.spec.schema`): keys the space may not set,
values the budgets reject, a user model that does not import or build or whose head cannot be
found, orders without the sparsities they need (or PBA without s2 > s1),
share groups and EPruning layers the model lacks, sparsities a pruning granularity cannot
reach, INT8 settings no trial could run (a backend without INT8, a calibration domain or float
layers that do not exist), sharing that would leave retraining (``QR``) nothing to train, and
TensorRT on a GPU that trials share (``0 < resources.gpu < 1``).
:func:`reachable_values` answers which values a budget field can take in some trial.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trainables.errors import FrontierError
from trainables.models import head_name, structure
from trainables.pipeline.plan import ORDER_SPARSITIES, ORDERS, QUANTIZE, TARGET_ORDERS, TRANSFER_ORDERS
from trainables.stages.schedule import milestones_problem

from .space import Choice, Const, Node, Range, walk
from .schema import Budgets, Spec, SpecError
from .to_plan import PBA_MIN_GAP, SPECIAL_KEYS, apply_overrides, field_problem


def space_problems(spec: Spec) -> Iterable[str]:
    """Keys the space may not set, values the budgets reject, and impossible orders."""
    for path, node in walk(spec.nodes):
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
        known = ", ".join([*SPECIAL_KEYS, *(f"{k}.<field>" for k in Budgets.model_fields)])
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
    trained_on = spec.model.trained_on
    for name, path, scope in orders:
        if trained_on == "target" and name in TRANSFER_ORDERS:
            yield (f"{path}: order {name} places pruning around a transfer, but model.trained_on is target "
                   f"(no transfer): use {' or '.join(TARGET_ORDERS)}")
        elif trained_on == "source" and name not in ("none", *TRANSFER_ORDERS):
            yield f"{path}: order {name} prunes without a transfer; it needs model.trained_on: target"
        elif name in ("PB", "PBA") and spec.data.source is None:
            yield f"{path}: order {name} prunes on the source, but data.source is not given"
        for key in ORDER_SPARSITIES.get(name, ()):
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
    sparsities = [(path, node) for path, node in walk(spec.nodes) if node.name in ("s1", "s2")]
    for g_path, granularity in granularities:
        for s_path, node in sparsities:
            if not _exclusive(g_path, s_path):
                for value in _numbers(node):
                    problem = granularity_problem(str(granularity), float(value))
                    if problem:
                        yield f"{s_path}: {problem} ({g_path} can be '{granularity}')"
                        break


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
