"""The objectives a trial reports: their names, directions and ``trials.csv`` columns, in one place.

Every objective is a key of a trial's final result, measured (never estimated) by the stages; the
search optimises the ones a spec lists, and ``trials.csv`` has a column for each, named as the
key. The benchmark stage also reports a record of how latency was measured (:data:`LATENCY_FIELDS`),
which rides along into ``trials.csv`` next to the objectives.

No torch here: the driver's light commands (``frontier front``) read these names too.

Example:
    >>> OBJECTIVES["size_bytes"].direction
    'min'
    >>> [o.column for o in OBJECTIVES.values()][:2]
    ['accuracy', 'top5']
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveInfo:
    """One objective a trial can be optimised for.

    Args:
        name: the key in a trial's result, and the name a spec gives it (``objectives: [{name: ...}]``).
        direction: ``max`` or ``min``, the natural direction (a spec may override it).
        meaning: what is measured, with its unit.
        spread: the ``trials.csv`` column holding the objective's measurement noise in its own unit
            (latency: the interquartile range over the timed runs; accuracy: its binomial standard
            error on the test split); None for an exact objective. The front treats two values within
            their combined spread as equal (:mod:`search.results.front`); a row without the column
            (a ``trials.csv`` from before it existed) is exact.
        repeatability: the least spread of a measured value, as a share of the value: what two
            measurements of one model in separate sessions may differ by even where each session's
            own runs are tight (latency: 0.02; the README's figures say where it comes from).
        z: how spreads combine. None: the spread is a range (latency's IQR) and two values are equal
            when they differ by at most the *sum* of their spreads. A number: the spread is a standard
            error and two values are equal when they differ by at most ``z`` standard errors of their
            difference, ``z * sqrt(se_a**2 + se_b**2)``: accuracy's 1.96 is the two-sided test at 5%
            of two independent proportions (the unpooled two-proportion z-test), so only a difference
            that test calls significant can decide the front.
    """

    name: str
    direction: str
    meaning: str
    spread: str | None = None
    repeatability: float = 0.0
    z: float | None = None

    @property
    def column(self) -> str:
        """The objective's ``trials.csv`` column (its name)."""
        return self.name


OBJECTIVES: dict[str, ObjectiveInfo] = {o.name: o for o in (
    ObjectiveInfo("accuracy", "max", "top-1 accuracy on the target's held-out test split, in [0, 1]",
                  spread="accuracy_se", z=1.96),
    ObjectiveInfo("top5", "max", "top-5 accuracy on the same split, in [0, 1]"),
    ObjectiveInfo("size_bytes", "min", "bytes of the exported compressed artifact file"),
    ObjectiveInfo("latency_ms", "min", "median latency of one inference on the latency backend, in ms",
                  spread="latency_iqr_ms", repeatability=0.02),
    ObjectiveInfo("sparsity", "max", "the sparsity the pipeline pruned to (its last milestone), in [0, 1)"),
)}
OBJECTIVE_NAMES: tuple[str, ...] = tuple(OBJECTIVES)
DIRECTIONS = ("max", "min")

# What the latency backend measured besides ``latency_ms`` (trainables.measure.backends.Latency.metrics);
# the e2e pair only when end-to-end latency was measured.
LATENCY_FIELDS = ("latency_backend", "latency_precision", "latency_device", "latency_batch", "latency_threads",
                  "latency_clock", "latency_p90_ms", "latency_iqr_ms", "latency_e2e_ms", "latency_e2e_p90_ms", "throughput_ips",
                  "throughput_batch", "latency_sparse_weights")
# What an INT8 deployment reports beside them (trainables.measure.int8_model.build_int8), and the float
# model it came from; ``precision`` is fp32, fp16 or int8 for every trial.
INT8_FIELDS = ("precision", "float_accuracy", "float_top5", "float_size_bytes", "int8_layers", "int8_float_layers",
               "int8_fallback_layers", "int8_integer_ops", "int8_seconds")
# What the benchmark reports beside ``accuracy`` (:func:`accuracy_error`): its binomial standard error on
# the test split and the number of test images it was measured on.
ACCURACY_FIELDS = ("accuracy_se", "accuracy_n")
Z95 = 1.96  # the normal quantile of a two-sided 95% interval


def accuracy_error(accuracy: float, n: int) -> dict[str, float | int]:
    """``accuracy_se`` and ``accuracy_n`` of an accuracy measured on ``n`` test images.

    ``accuracy_se = sqrt(p (1 - p) / n)``, the standard error of a binomial proportion (each test
    image a Bernoulli trial); NaN without test images. It is 0 at p = 0 or 1, where
    :func:`wilson_interval` still gives an honest interval.

    Example:
        >>> round(accuracy_error(0.95, 600)["accuracy_se"], 4)
        0.0089
    """
    se = math.sqrt(max(accuracy * (1.0 - accuracy), 0.0) / n) if n > 0 else math.nan
    return {"accuracy_se": se, "accuracy_n": int(n)}


def wilson_interval(accuracy: float, n: float, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``accuracy`` over ``n`` trials (95% by default).

    Unlike ``p +- z se`` it stays inside [0, 1] and is not empty at p = 0 or 1 (100 of 100 right:
    [0.963, 1]). (NaN, NaN) when ``n`` is unknown or below 1.

    Example:
        >>> [round(v, 3) for v in wilson_interval(1.0, 100)]
        [0.963, 1.0]
    """
    if not (isinstance(n, (int, float)) and math.isfinite(n) and n >= 1 and math.isfinite(accuracy)):
        return math.nan, math.nan
    p = min(max(float(accuracy), 0.0), 1.0)
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)
