"""How the front's numbers read, in the terminal table and the HTML report alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from trainables.objectives import Z95, wilson_interval
from trainables.pipeline.repeats import REPEATS, std_column

from .summary import TARGET_METRIC, deployment, latency_target

MET, MISSED = "✓", "✗"  # a latency target met (within LATENCY_TARGET_TOLERANCE) or missed


def significant(value: float) -> str:
    """Three significant digits, no exponent below 1000 (``12.3``, ``0.617``, ``1,234``)."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:#.3g}".rstrip(".")


def byte_size(value: float) -> str:
    """Bytes in decimal units at three significant digits (``44.8 MB``, ``512 kB``, ``900 B``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{significant(value / scale)} {unit}"
    return f"{value:.0f} B"


def hypervolume_text(summary: dict) -> str:
    """``hypervolume 0.412 of the reference box (raw 2.55e+04)``: the normalised value a reader can
    compare across runs, the raw one (objectives' units multiplied) for scripts."""
    raw = f"raw {summary['hypervolume']:.4g}"
    if summary.get("hypervolume_normalized") is None:
        return f"hypervolume {raw}"
    return f"hypervolume {summary['hypervolume_normalized']:.3f} of the reference box ({raw})"


def precision_label(row: pd.Series) -> str:
    """The precision a trial was deployed at (``fp32``, ``fp16``, ``int8``), and ``int8 (ran in float)``
    where the engine ran none of an INT8 model's layers with integer kernels; ``-`` for older runs."""
    if not (present(row, "precision") or present(row, "latency_precision")):
        return "-"
    info = deployment(row)
    return f"{info['precision']} (ran in float)" if info.get("ran_in_float") else str(info["precision"])


def present(row: pd.Series, column: str) -> bool:
    """Whether ``row`` has ``column`` with a value (not NaN)."""
    return column in row.index and not pd.isna(row[column])


def repeats(row: pd.Series) -> int:
    """How many seeds ``row``'s values are the mean of (spec ``repeats``); 1 for a run without the column."""
    return int(row[REPEATS]) if present(row, REPEATS) else 1


def accuracy_interval(row: pd.Series) -> tuple[float, float] | None:
    """The 95% interval of ``row``'s accuracy: the Wilson score interval over its ``accuracy_n`` test
    images; for a mean over several seeds (``repeats`` > 1), the mean +- 1.96 ``accuracy_se`` (the
    standard error of the mean, test split and seeds: :func:`trainables.pipeline.repeats.mean_accuracy_se`),
    within [0, 1]. None where what it needs is missing (a run from before ``accuracy_n``)."""
    if repeats(row) > 1 and present(row, "accuracy") and present(row, "accuracy_se"):
        mean, se = float(row["accuracy"]), float(row["accuracy_se"])
        return max(0.0, mean - Z95 * se), min(1.0, mean + Z95 * se)
    if not (present(row, "accuracy") and present(row, "accuracy_n")):
        return None
    low, high = wilson_interval(float(row["accuracy"]), float(row["accuracy_n"]))
    return None if pd.isna(low) else (low, high)


def with_spread(row: pd.Series, name: str, format: Callable[[Any], str]) -> str:
    """``row``'s ``name`` read by ``format``, and for a mean over several seeds its standard deviation
    over them beside it (``0.9120 ± 0.0042``); ``-`` without a value.

    Example:
        >>> with_spread(pd.Series({"accuracy": 0.912, "accuracy_std": 0.0042, "repeats": 3}), "accuracy", "{:.4f}".format)
        '0.9120 ± 0.0042'
        >>> with_spread(pd.Series({"accuracy": 0.912}), "accuracy", "{:.4f}".format)
        '0.9120'
    """
    if not present(row, name):
        return "-"
    text = format(row[name])
    spread = std_column(name)
    return f"{text} ± {format(row[spread])}" if repeats(row) > 1 and present(row, spread) else text


def interval_text(row: pd.Series) -> str:
    """``0.912-0.948``: the accuracy's 95% interval at three decimals; ``-`` without one."""
    bounds = accuracy_interval(row)
    return "-" if bounds is None else f"{bounds[0]:.3f}-{bounds[1]:.3f}"


def is_reference(row: pd.Series) -> bool:
    """Whether ``row`` is the search's reference trial (the dense model as it is; ``reference`` in
    ``trials.csv``, which pandas may read back as a bool or as text; False for a run from before it)."""
    return present(row, "reference") and str(row["reference"]).lower() == "true"


def target_text(row: pd.Series) -> str:
    """A trial's latency target beside its measured latency: ``3.10 ms ✓`` (met: the measured latency at
    most :data:`~search.results.summary.LATENCY_TARGET_TOLERANCE` times it) or ``3.10 ms ✗``; empty for a
    trial without a target (:func:`~search.results.summary.latency_target`).

    Example:
        >>> target_text(pd.Series({"latency_ms": 3.5, "stage.P2.latency_target_ms": 3.1}))
        '3.10 ms ✗'
        >>> target_text(pd.Series({"latency_ms": 3.5}))
        ''
    """
    info = latency_target(row)
    if not info:
        return ""
    met = info["latency_met"]
    mark = "" if met is None else f" {MET if met else MISSED}"
    return f"{significant(info[TARGET_METRIC])} ms{mark}"
