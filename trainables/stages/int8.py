"""INT8 deployment (``I8`` in a pipeline): the settings, and the request the benchmark measures with.

INT8 exists only in the engine that runs it, so it is a precision the benchmark deploys at, as
``fp16`` is, not a stage that hands a torch model on: the benchmark stage ``B`` with an
:class:`Int8Config` (pipeline label ``I8|B``, one stage, like ``Q|R``) exports the final model
after surgery removed its dead units (the *shrunk* network), quantizes that ONNX file statically
(:mod:`trainables.measure.int8`), and measures the INT8 model itself: its accuracy in ONNX Runtime
on the test split, its INT8 artifact's bytes, its latency on the trial's engine
(:mod:`trainables.measure.int8_model`). Being the last step, it comes after pruning and surgery,
and after weight sharing when both are chosen (``Q|I8|B``).

Sharing then INT8: each shared layer's weights take at most k values; per-channel symmetric int8
quantization maps them onto its channel's grid, so each output channel of the INT8 weight holds
at most k distinct int8 codes (centroids closer than one step merge) and pruned zeros stay exactly
zero. The float codebook is not kept: the INT8 artifact stores 8-bit codes and their scales, and
gzip recovers part of the redundancy of k < 256 codes (``tests/test_int8.py`` checks both).

Calibration reads images only: the target's training split by default (``calibration: source``
takes the source's), through ``Splits.unlabeled``, never a label.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..measure.int8 import CALIBRATION_METHODS
from ..measure.int8_model import Int8Request
from ..stage import Context, Domain

__all__ = ["Int8Config", "int8_request", "LABEL", "CALIBRATION_METHODS"]

LABEL = "I8"


class Int8Config(BaseModel):
    """How an INT8 model is calibrated and which layers stay in float (``budgets.int8``; each field
    searchable as ``int8.<field>``).

    Example:
        >>> Int8Config(method="entropy", images=32, keep_float=["fc"]).fallback
        0

    Args:
        method: activation calibration: ``minmax``, ``entropy`` or ``percentile``
            (ONNX Runtime's ``CalibrationMethod``).
        images: calibration images (unlabeled).
        calibration: whose training images calibrate: ``target`` (the default) or ``source``.
        keep_float: shell-style patterns of layer names kept in float32 (``fc``, ``layer4.*``).
        fallback: automatic float fallback: keep back up to this many more layers, those whose
            quantization costs the most validation accuracy (a per-layer sensitivity pass); 0: off.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["minmax", "entropy", "percentile"] = "minmax"  # CALIBRATION_METHODS
    images: int = Field(64, ge=1, le=100_000)
    calibration: Domain = "target"
    keep_float: list[str] = Field(default_factory=list)
    fallback: int = Field(0, ge=0, le=1000)


def int8_request(cfg: Int8Config, ctx: Context, threads: int = 1) -> Int8Request:
    """The :class:`~trainables.measure.int8_model.Int8Request` of ``cfg`` in ``ctx``: calibration on
    the unlabeled training images of ``cfg.calibration``, accuracy on the target's test split, the
    fallback's sensitivity pass on the target's validation split."""
    target = ctx.data("target")
    return Int8Request(
        calibration=ctx.data(cfg.calibration).unlabeled("train"),
        test=target.test,
        method=cfg.method,
        count=cfg.images,
        keep_float=tuple(cfg.keep_float),
        fallback=cfg.fallback,
        validation=target.val if cfg.fallback else None,
        threads=threads,
    )
