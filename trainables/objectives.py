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

from dataclasses import dataclass


@dataclass(frozen=True)
class ObjectiveInfo:
    """One objective a trial can be optimised for.

    Args:
        name: the key in a trial's result, and the name a spec gives it (``objectives: [{name: ...}]``).
        direction: ``max`` or ``min``, the natural direction (a spec may override it).
        meaning: what is measured, with its unit.
        spread: the ``trials.csv`` column holding the objective's measurement noise in its own unit
            (latency: the interquartile range over the timed runs); None for an exact objective. The
            front treats two values within their combined spread as equal (:mod:`search.results.front`).
        repeatability: the least spread of a measured value, as a share of the value: what two
            measurements of one model in separate sessions may differ by even where each session's
            own runs are tight (latency: 0.02; the README's figures say where it comes from).
    """

    name: str
    direction: str
    meaning: str
    spread: str | None = None
    repeatability: float = 0.0

    @property
    def column(self) -> str:
        """The objective's ``trials.csv`` column (its name)."""
        return self.name


OBJECTIVES: dict[str, ObjectiveInfo] = {o.name: o for o in (
    ObjectiveInfo("accuracy", "max", "top-1 accuracy on the target's held-out test split, in [0, 1]"),
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
