"""The package's layers, read from the source: a lower layer never imports a higher one.

    base      trainables/*.py (errors, files, data, models, train, stage, augment, curriculum)
    compress  trainables/compress/   masks, units, surgery, clustering, artifact
    measure   trainables/measure/    export, metrics, backends/
    stages    trainables/stages/     dense, transfer, gradual, epruning, population, quantize, benchmark
    pipeline  trainables/pipeline/   plan, cache, run
    search    search/                the driver

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
