"""A trial's INT8 model, built and measured: which layers stay float, the INT8 file, its artifact
and its accuracy in ONNX Runtime (ARCHITECTURE.md: measured, never estimated).

:func:`build_int8` takes the float ONNX file the benchmark exported (the *shrunk* network: surgery
has removed the dead units) and an :class:`Int8Request`, and

1. resolves the layers kept in float: the request's patterns (shell-style, over torch layer names
   such as ``layer4.*`` or ``fc``), plus, with ``fallback`` > 0, the automatic choice: a per-layer
   sensitivity pass on the *validation* split (:func:`layer_sensitivity`: quantize one layer at a
   time, as the weight-sharing sweep shares one group at a time) keeps back the ``fallback`` layers
   whose quantization alone costs the most validation accuracy (ties: the larger change of the
   logits); a layer whose quantization costs nothing stays quantized;
2. quantizes the rest (:func:`trainables.measure.int8.quantize_onnx`, calibrated on the request's
   unlabeled images in the engine's format);
3. writes the INT8 artifact ``model.int8.h5``: the INT8 file's initializers (int8 weights with
   their per-channel scales, ...) in the ``frontier-artifact`` format, whose byte count is the
   trial's ``size_bytes``;
4. measures the INT8 model's top-1/top-5 on the *test* split by running it in ONNX Runtime.

The test split is never used to choose: the fallback reads the validation split only.
"""

from __future__ import annotations

import fnmatch
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from ..compress.artifact import save_artifact
from ..errors import FrontierError
from ..layout import ModelFiles
from .int8 import int8_state, integer_layers, layer_nodes, onnx_logits, quantize_onnx, scores

__all__ = ["Int8Model", "Int8Request", "build_int8", "keep_back", "layer_sensitivity", "match_layers"]


@dataclass
class Int8Request:
    """What an INT8 model is built from.

    Args:
        calibration: unlabeled images (image tensors only) that calibrate the activation ranges.
        test: labeled (image, label) items the INT8 model's accuracy is measured on.
        method: ``minmax``, ``entropy`` or ``percentile``.
        count: calibration images used.
        keep_float: shell-style patterns of torch layer names that stay float32.
        fallback: at most this many more layers kept in float, the most sensitive on ``validation``.
        validation: labeled items of the validation split (needed when ``fallback`` > 0).
        threads: ONNX Runtime threads for evaluation.
    """

    calibration: Dataset
    test: Dataset
    method: str = "minmax"
    count: int = 64
    keep_float: Sequence[str] = ()
    fallback: int = 0
    validation: Dataset | None = None
    threads: int = 1


@dataclass
class Int8Model:
    """An INT8 model on disk and what was measured of it."""

    onnx: Path
    artifact: Path
    size_bytes: int
    metrics: dict[str, float | int | str] = field(default_factory=dict)


def match_layers(layers: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """The layers matching any of ``patterns`` (shell-style), in ``layers``' order; a pattern that
    matches none is a :class:`FrontierError` naming it.

    Example:
        >>> match_layers(["conv1", "layer1.0.conv1", "fc"], ["layer1.*", "fc"])
        ['layer1.0.conv1', 'fc']
    """
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(layer, pattern) for layer in layers):
            raise FrontierError(f"int8.keep_float: '{pattern}' matches no layer; layers are e.g. "
                                f"{', '.join(list(layers)[:4])}")
    return [layer for layer in layers if any(fnmatch.fnmatchcase(layer, p) for p in patterns)]


def layer_sensitivity(float_onnx: str | Path, request: Int8Request, *, engine: str = "onnxruntime",
                      layers: Sequence[str] | None = None) -> list[dict[str, float | str]]:
    """One row per layer: validation accuracy with that layer alone quantized, its drop from the
    float model's, and the mean squared change of the logits. Reads ``request.validation`` only."""
    if request.validation is None:
        raise FrontierError("int8.fallback: the sensitivity pass needs the validation split")
    base_logits, labels = onnx_logits(float_onnx, request.validation, threads=request.threads)
    base = scores(base_logits, labels)["accuracy"]
    rows: list[dict[str, float | str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for layer in layers if layers is not None else layer_nodes(float_onnx):
            one = quantize_onnx(float_onnx, Path(tmp) / "one.onnx", request.calibration, engine=engine,
                                method=request.method, count=request.count, only=[layer])
            logits, _ = onnx_logits(one, request.validation, threads=request.threads)
            accuracy = scores(logits, labels)["accuracy"]
            rows.append({"layer": layer, "val_accuracy": accuracy, "drop": base - accuracy,
                         "logit_mse": float(np.mean((logits - base_logits) ** 2))})
    return rows


def keep_back(rows: Sequence[dict], budget: int) -> list[str]:
    """The at most ``budget`` layers of a :func:`layer_sensitivity` table whose quantization costs
    the most validation accuracy (ties: the larger logit change); layers that cost none are not kept back.

    Example:
        >>> keep_back([{"layer": "a", "drop": 0.0, "logit_mse": 1.0}, {"layer": "b", "drop": 0.2, "logit_mse": 0.5}], 2)
        ['b']
    """
    ranked = sorted(rows, key=lambda r: (-float(r["drop"]), -float(r["logit_mse"])))
    return [str(r["layer"]) for r in ranked[:budget] if float(r["drop"]) > 0]


def build_int8(float_onnx: str | Path, out_dir: str | Path, request: Int8Request, *, engine: str = "onnxruntime",
               attrs: dict | None = None) -> Int8Model:
    """Build, store and score the INT8 model of ``float_onnx`` (see the module doc).

    Writes ``out_dir/model.int8.onnx`` and ``out_dir/model.int8.h5``. Metrics: ``accuracy`` and
    ``top5`` of the INT8 model in ONNX Runtime on ``request.test``; ``int8_layers`` (layers
    quantized), ``int8_float_layers`` (kept in float, ``;``-joined), ``int8_fallback_layers`` (the
    ones the automatic fallback chose), ``int8_seconds``, and on ONNX Runtime ``int8_integer_ops``
    (nodes its optimized graph runs in integers; 0: the model ran in float).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    layers = list(layer_nodes(float_onnx))
    if not layers:
        raise FrontierError(f"int8: '{float_onnx}' has no Conv/Gemm layer with a named weight to quantize")
    kept = match_layers(layers, request.keep_float)
    chosen: list[str] = []
    if request.fallback > 0:
        candidates = [layer for layer in layers if layer not in kept]
        rows = layer_sensitivity(float_onnx, request, engine=engine, layers=candidates)
        chosen = keep_back(rows, request.fallback)
    float_layers = [layer for layer in layers if layer in kept or layer in chosen]
    onnx_path = quantize_onnx(float_onnx, ModelFiles(out_dir).int8_onnx, request.calibration, engine=engine,
                              method=request.method, count=request.count, keep_float=float_layers)
    artifact = ModelFiles(out_dir).int8_artifact
    size = save_artifact(int8_state(onnx_path), artifact, attrs={**(attrs or {}), "precision": "int8"})
    metrics: dict[str, float | int | str] = dict(onnx_scores_of(onnx_path, request))
    metrics.update(int8_layers=len(layers) - len(float_layers), int8_float_layers=";".join(float_layers),
                   int8_fallback_layers=";".join(chosen))
    if engine == "onnxruntime":
        metrics["int8_integer_ops"] = integer_layers(onnx_path, request.threads)
    metrics["int8_seconds"] = time.perf_counter() - start
    return Int8Model(onnx=onnx_path, artifact=artifact, size_bytes=size, metrics=metrics)


def onnx_scores_of(path: Path, request: Int8Request) -> dict[str, float]:
    """Top-1/top-5 of the INT8 file on the request's test split, in ONNX Runtime."""
    return scores(*onnx_logits(path, request.test, threads=request.threads))
