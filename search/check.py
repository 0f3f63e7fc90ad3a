"""``frontier check``: the spec validates and the files it names are there."""

from __future__ import annotations

from pathlib import Path

from trainables.data import check_root
from trainables.errors import FrontierError

from .spec import Spec, SpecError, load_spec


def check_spec(path: str | Path) -> Spec:
    """Load ``path`` and check its data roots and weights file; raises :class:`SpecError` listing problems."""
    spec = load_spec(path)
    problems = []
    for domain in ("source", "target"):
        data = getattr(spec.data, domain)
        if data is None:
            continue
        try:
            check_root(data)
        except FrontierError as exc:  # its message starts "data.<field>:"; say which dataset
            message = str(exc)
            problems.append(f"data.{domain}.{message[5:]}" if message.startswith("data.") else f"data.{domain}: {message}")
    weights = spec.model.weights
    if weights and not weights.startswith("torchvision:") and not Path(weights).expanduser().is_file():
        problems.append(f"model.weights: file '{weights}' does not exist")
    if problems:
        raise SpecError(problems)
    return spec
