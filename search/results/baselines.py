"""Baselines beside the front: ``RUN/baselines.json``, read, checked, and each point's dominators.

``bench/baselines.py`` writes the file: what a user would script by hand from the run's reference
model (Torch-Pruning's uniform channel pruning, fine-tuning, ONNX Runtime's static INT8), measured
on the run's test split and engine. ``frontier front`` prints the points below the front table and
its HTML report plots them on every projection of the front; both say, for each point, how many
front trials dominate it under the front's own noise rule (:func:`dominated_by`).

The file (``version`` 1)::

    {"version": 1, "run": "<name>", "reference_trial": "<id>",
     "size": "<what size_bytes counts>", "cached_stages": "D,T", "accuracy": "<where accuracy was measured>",
     "latency": {"backend": "onnxruntime-cpu", "batch_size": 1, "threads": 1, "warmup": 5, "runs": 30},
     "versions": {"torch_pruning": "1.6.0", "onnxruntime": "1.22.0", ...},
     "points": [{"label": "tp-uniform-50+int8", "how": "...", "accuracy": 0.91, "size_bytes": 512000,
                 "latency_ms": 0.21, "top5": 1.0, "sparsity": 0.5, "accuracy_se": 0.004,
                 "accuracy_n": 5000, "latency_iqr_ms": 0.003, "onnx_bytes": 560000,
                 "onnx_gzip_bytes": 515000}, ...]}

``size_bytes`` is measured as a trial's is (the weights as a frontier artifact, HDF5 with gzip), so
the front and the baselines compare bytes in one unit; ``onnx_bytes`` and ``onnx_gzip_bytes`` are
the deployable ONNX file's own.

``label``, ``how``, ``accuracy``, ``size_bytes`` and ``latency_ms`` are required in every point;
the others are optional (a missing spread is exact). A file that cannot be read or breaks this is
a :class:`BaselinesError` naming the file and what is wrong; the reports then go on without it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from trainables.errors import FrontierError
from trainables.layout import RunFolder

from .front import dominators
from .summary import spread_rules, spreads

REQUIRED_TEXT = ("label", "how")
REQUIRED_NUMBERS = ("accuracy", "size_bytes", "latency_ms")
OPTIONAL_NUMBERS = ("top5", "sparsity", "accuracy_se", "accuracy_n", "latency_iqr_ms", "onnx_bytes", "onnx_gzip_bytes")
DOMINATED_BY = "dominated_by"  # the column :func:`dominated_by` adds: front trials dominating the point


class BaselinesError(FrontierError):
    """``baselines.json`` exists but cannot be used; the message names the file and the problem."""


def read_baselines(run_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The baseline points of ``run_dir`` (one row each, in the file's order) and the file's other
    fields (``versions``, ``latency``, ...); None when the run has no ``baselines.json``.

    Raises:
        BaselinesError: the file is not JSON, not an object with a ``points`` list, or a point lacks
            a required field or holds a value of the wrong kind (the message names which).
    """
    path = RunFolder(Path(run_dir)).baselines
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BaselinesError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("points"), list):
        raise BaselinesError(f"{path}: must be an object with a 'points' list, got {type(raw).__name__}"
                             + ("" if not isinstance(raw, dict) else f" with keys {sorted(raw)}"))
    points = [_checked(point, i, path) for i, point in enumerate(raw["points"])]
    frame = pd.DataFrame(points, columns=[*REQUIRED_TEXT, *REQUIRED_NUMBERS, *OPTIONAL_NUMBERS])
    return frame, {k: v for k, v in raw.items() if k != "points"}


def _checked(point: Any, index: int, path: Path) -> dict[str, Any]:
    """Point ``index`` of the file, its fields checked; raises :class:`BaselinesError` naming the first problem."""
    where = f"{path}: points[{index}]"
    if not isinstance(point, dict):
        raise BaselinesError(f"{where} must be an object, got {type(point).__name__}")
    for key in REQUIRED_TEXT:
        if not isinstance(point.get(key), str) or not point[key]:
            raise BaselinesError(f"{where}.{key} must be a non-empty string, got {point.get(key)!r}")
    for key in (*REQUIRED_NUMBERS, *OPTIONAL_NUMBERS):
        value = point.get(key)
        if value is None and key in OPTIONAL_NUMBERS:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BaselinesError(f"{where}.{key} must be a finite number, got {value!r}")
    return {k: point.get(k) for k in (*REQUIRED_TEXT, *REQUIRED_NUMBERS, *OPTIONAL_NUMBERS)}


def read_or_warn(run_dir: str | Path, warn: Callable[[str], None]) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """:func:`read_baselines`, but a malformed file is one line given to ``warn`` (then None), so a
    report goes on without the overlay and nothing computed is lost."""
    try:
        return read_baselines(run_dir)
    except BaselinesError as exc:
        warn(f"{exc}; shown without baselines")
        return None


def dominated_by(points: pd.DataFrame, frame: pd.DataFrame, summary: dict) -> pd.DataFrame:
    """``points`` with :data:`DOMINATED_BY`: how many of the summary's front trials (rows of
    ``frame``) dominate each point in the run's objectives, under the front's rule
    (:func:`search.results.front.dominators`): values within their combined spread (latency's IQR,
    at least 2%; accuracy's standard error, 1.96 of the difference) are equal, so no point counts as
    beaten by noise. An objective the points do not have (``top5`` in a hand-written file) is left
    out of the comparison.

    Example:
        >>> front = pd.DataFrame({"trial_id": ["a", "b"], "accuracy": [0.9, 0.8], "size_bytes": [10, 5]})
        >>> summary = {"objectives": [{"name": "accuracy", "direction": "max"}, {"name": "size_bytes", "direction": "min"}],
        ...            "trials": [{"trial_id": "a"}, {"trial_id": "b"}]}
        >>> dominated_by(pd.DataFrame({"accuracy": [0.85, 0.95], "size_bytes": [12, 12]}), front, summary)["dominated_by"].tolist()
        [1, 0]
    """
    pairs = [(o["name"], o["direction"]) for o in summary["objectives"]
             if o["name"] in points and points[o["name"]].notna().all()]
    names, directions = [n for n, _ in pairs], [d for _, d in pairs]
    ids = [t["trial_id"] for t in summary["trials"]]
    front = frame[frame["trial_id"].isin(ids)]
    if not len(front) or not names:
        return points.assign(**{DOMINATED_BY: 0})
    values = front[names].astype(float).to_numpy()
    spread, own = spreads(front, names), spreads(points, names)
    counts = [len(dominators(values, directions, points[names].astype(float).to_numpy()[i], spread, own[i],
                             spread_rules(names)))
              for i in range(len(points))]
    return points.assign(**{DOMINATED_BY: counts})
