"""Load a spec: the schema, then the space, then what the schema cannot see, in that order.

:func:`load_spec` reads a YAML file, :func:`parse_spec` validates what it holds: the schema
(:mod:`search.spec.schema`) checks each key as it reads it, :func:`search.spec.space.parse_space`
parses the search space, :func:`search.spec.problems.space_problems` finds the rest. Any problem is a
:class:`~search.spec.schema.SpecError` listing one ``key.path: what is wrong`` line each. This
module sits on top of the three: none of them imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .problems import space_problems
from .schema import Spec, SpecError, validation_lines
from .space import SpaceError, parse_space


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
        raise SpecError(validation_lines(exc)) from None
    try:
        spec._nodes = parse_space(spec.space)
    except SpaceError as exc:
        raise SpecError([str(exc)]) from None
    problems = list(space_problems(spec))
    if problems:
        raise SpecError(problems)
    return spec
