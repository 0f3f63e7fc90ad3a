"""The torch and torchvision that pyproject.toml allows have every torch API frontier's code uses.

pip installs the oldest torch the floor allows wherever something else pins it there; on a torch
without an API the code names, the name fails only when its line runs: ``except
torch.OutOfMemoryError`` (torch 2.5) on torch 2.4 turned any error of an EPruning evaluator into an
AttributeError. The table below lists the APIs newer than torch 2.4 that the code uses, each with
the release that brought it; the test reads every module of ``trainables/``, ``search/`` and
``bench/`` and fails when the declared floor is older than an API found there.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CODE = ("trainables", "search", "bench")

# API -> the torch release that introduced it. ``name(keyword=)``: a call of ``name`` with that keyword.
NEW_IN = {
    "torch.OutOfMemoryError": Version("2.5"),  # device-generic alias of torch.cuda.OutOfMemoryError
    "torch.onnx.export(dynamo=)": Version("2.5"),  # the torch.export-based exporter
    # the exporter rewritten on torch.export, with ONNXProgram.optimize/apply_weights (measure/export.py)
    "torch.onnx.export(optimize=)": Version("2.6"),
}


def _dotted(node: ast.expr) -> str | None:
    """``torch.onnx.export`` for the expression ``torch.onnx.export``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def apis_used(source: str) -> set[str]:
    """The keys of ``NEW_IN`` that ``source`` uses."""
    used = set()
    for node in ast.walk(ast.parse(source)):
        name = _dotted(node) if isinstance(node, ast.Attribute) else None
        if name in NEW_IN:
            used.add(name)
        if isinstance(node, ast.Call) and (func := _dotted(node.func)) is not None:
            used |= {f"{func}({k.arg}=)" for k in node.keywords} & NEW_IN.keys()
    return used


def floor(package: str) -> Version:
    """The lowest version of ``package`` that pyproject.toml's dependencies allow (its ``>=``)."""
    for line in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        if requirement.name == package:
            lows = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
            assert lows, f"{package} has no lower bound in pyproject.toml: {line!r}"
            return max(lows)
    raise AssertionError(f"{package} is not among pyproject.toml's dependencies")


def test_the_table_finds_what_it_looks_for() -> None:
    assert apis_used("import torch\ntry:\n    pass\nexcept torch.OutOfMemoryError:\n    pass\n") == {
        "torch.OutOfMemoryError"}
    assert apis_used("torch.onnx.export(m, (x,), dynamo=True)") == {"torch.onnx.export(dynamo=)"}
    assert apis_used("torch.onnx.export(m, (x,), dynamo=True, optimize=False)") == {
        "torch.onnx.export(dynamo=)", "torch.onnx.export(optimize=)"}
    assert apis_used("torch.cuda.OutOfMemoryError\ntorch.onnx.export(m, (x,))") == set()


def test_the_declared_torch_floor_has_every_torch_api_the_code_uses() -> None:
    used: dict[str, list[str]] = {}
    for package in CODE:
        for path in sorted((ROOT / package).rglob("*.py")):
            for api in apis_used(path.read_text()):
                used.setdefault(api, []).append(str(path.relative_to(ROOT)))
    assert "torch.OutOfMemoryError" in used, "the table is checked against real uses (stages/population.py)"
    lowest = floor("torch")
    too_new = {api: f"torch {NEW_IN[api]} ({', '.join(files)})" for api, files in used.items() if NEW_IN[api] > lowest}
    assert not too_new, f"pyproject.toml allows torch {lowest}, older than these APIs: {too_new}"


def test_torchvisions_floor_is_the_release_built_for_torchs_floor() -> None:
    """torchvision 0.N pairs with torch 2.(N - 15) (0.21 with 2.6): an older torchvision's compiled ops
    do not load on the newer torch."""
    torch_floor, vision_floor = floor("torch"), floor("torchvision")
    assert (vision_floor.major, vision_floor.minor) == (0, torch_floor.minor + 15), (torch_floor, vision_floor)
