"""The package's layers, read from the source: a lower layer never imports a higher one.

    base      trainables/*.py (errors, files, data, models, train, stage, augment, curriculum,
                                     objectives, layout)
    compress  trainables/compress/   masks, units, gating, surgery, clustering, artifact, importance/
    measure   trainables/measure/    export, metrics, int8, int8_model, backends/
    stages    trainables/stages/     dense, transfer, schedule, pruners, gradual, evolution, epruning, population,
                                     share, int8, benchmark
    pipeline  trainables/pipeline/   plan, cache, result, boundary, run
    search    search/                the driver: cli, spec/, run/, results/, final/

Inside a layer the imports form no circle: a module never imports, through any chain of modules
of this project, one that imports it (:func:`circles`).

Every import counts, those inside functions too (a lazy import is still a dependency). The
package's own ``trainables/__init__.py`` re-exports names from every layer and is left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("base", "compress", "measure", "stages", "pipeline", "search")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The layer of a dotted module of this project, None for anything else (torch, ray, ...)."""
    parts = module.split(".")
    if parts[0] == "search":
        return "search"
    if parts[0] != "trainables":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "base"


def imported_modules(module: str, is_package: bool, source: str) -> set[str]:
    """Every module ``source`` (the text of ``module``) imports, relative imports resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # ``from . import x``: maybe a module
    return found


def violations(module: str, is_package: bool, source: str) -> list[str]:
    own = layer(module)
    bad = []
    for target in sorted(imported_modules(module, is_package, source)):
        theirs = layer(target)
        if theirs is not None and LAYERS.index(theirs) > LAYERS.index(own):
            bad.append(f"{module} ({own}) imports {target} ({theirs})")
    return bad


def import_graph(files: dict[str, tuple[bool, str]]) -> dict[str, set[str]]:
    """Module -> the modules of ``files`` it imports, for ``files`` ``{module: (is_package, source)}``."""
    return {module: {t for t in imported_modules(module, is_package, source) if t in files and t != module}
            for module, (is_package, source) in files.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles inside a layer of ``graph`` (:func:`import_graph`): each a sorted list of the
    modules that reach one another (a strongly connected component of the imports between modules of
    one layer, Tarjan's algorithm), biggest first."""
    edges = {m: {t for t in targets if layer(t) == layer(m)} for m, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(edges.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found, key=lambda c: (-len(c), c))


def sources() -> list[Path]:
    files = sorted((ROOT / "trainables").rglob("*.py")) + sorted((ROOT / "search").rglob("*.py"))
    return [p for p in files if p != ROOT / "trainables" / "__init__.py"]


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_a_higher_layer(path: Path) -> None:
    assert violations(module_name(path), path.name == "__init__.py", path.read_text()) == []


def test_the_check_sees_a_violation_even_in_a_lazy_import() -> None:
    source = "from ..stages import gradual\n\ndef f():\n    from trainables.pipeline.run import run_plan\n"
    assert violations("trainables.compress.probe", False, source) == [
        "trainables.compress.probe (compress) imports trainables.pipeline.run (pipeline)",
        "trainables.compress.probe (compress) imports trainables.pipeline.run.run_plan (pipeline)",
        "trainables.compress.probe (compress) imports trainables.stages (stages)",
        "trainables.compress.probe (compress) imports trainables.stages.gradual (stages)",
    ]
    assert violations("trainables.stages.probe", False, "from ..compress.masks import PRUNABLE\n") == []


def test_no_import_circle_inside_a_layer() -> None:
    files = {module_name(p): (p.name == "__init__.py", p.read_text()) for p in sources()}
    assert circles(import_graph(files)) == []


def test_the_check_sees_a_circle_even_through_a_lazy_import() -> None:
    files = {
        "search.spec.schema": (False, "from .space import Node\n"),
        "search.spec.space": (False, "def f():\n    from .checks import problems\n"),
        "search.spec.checks": (False, "from .schema import Spec\nfrom trainables.errors import FrontierError\n"),
        "search.spec.load": (False, "from .checks import problems\nfrom .schema import Spec\n"),
        "trainables.errors": (False, "import json\n"),
    }
    assert circles(import_graph(files)) == [["search.spec.checks", "search.spec.schema", "search.spec.space"]]
    files["search.spec.space"] = (False, "import json\n")  # the lazy import gone: no circle
    assert circles(import_graph(files)) == []
