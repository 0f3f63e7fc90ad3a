"""INT8 models: static post-training quantization of an exported ONNX file, and what it holds.

:func:`quantize_onnx` is ONNX Runtime's ``quantize_static`` (``onnxruntime.quantization``) with
frontier's settings: QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized
layer, the explicit quantization TensorRT builds engines from too), per-channel symmetric int8
weights, and per-tensor activations whose ranges a calibration pass over unlabeled images
measures (``minmax``, ``entropy`` or ``percentile``: ``CalibrationMethod``). Layers named in
``keep_float`` stay float32 (``nodes_to_exclude``): no QDQ pair on their weights or inputs.

The activation type depends on the engine that runs the file (:data:`FORMATS`, chosen by
measurement, ``bench/quantize_latency.py``): uint8 activations with int8 weights (U8S8) for ONNX
Runtime, whose CPU integer kernels are fast for them and not for ``quantize_static``'s default
int8 activations (S8S8; the README's figures give both ratios). TensorRT takes
symmetric int8 activations only (zero point 0), so its files are S8S8 with symmetric
activations; its INT8 engine is built from the file as a strongly typed network, without a
precision flag (TensorRT 11 removed ``BuilderFlag.INT8``; see ``backends/_tensorrt.py``).

Biases differ too. ``quantize_static`` quantizes them by default (``QuantizeBias``, read by
``QDQQuantizer`` in onnxruntime/quantization/qdq_quantizer.py) to int32 codes behind a
DequantizeLinear, which is what ONNX Runtime's integer kernels take (QLinearConv reads an int32
bias); TensorRT's ONNX parser dequantizes INT8, FP8 and INT4 tensors only and rejects an INT32
DequantizeLinear input (NVIDIA/TensorRT#3360, onnx-tensorrt#850), so its files keep biases in
float32 (``QuantizeBias: False``) and TensorRT fuses them into its int8 kernels itself. Every
DequantizeLinear of a TensorRT file reads an int8 tensor.

Reading an INT8 file: :func:`layer_nodes` maps torch layer names (the exporter names each weight
initializer ``<layer>.weight``) to their ONNX nodes, :func:`qdq_layers` says which layers'
weights come from a DequantizeLinear, :func:`int8_state` holds its initializers (int8 weights
with their scales: the INT8 artifact, ``trainables/compress/artifact.py``), :func:`onnx_scores`
measures its accuracy in ONNX Runtime, and :func:`integer_layers` counts the layers ONNX
Runtime's optimized graph runs with integer kernels (0 means the engine ran it in float).

Example:
    >>> q = quantize_onnx("out/model.onnx", "out/model.int8.onnx", images, engine="onnxruntime")  # doctest: +SKIP
    >>> sorted(qdq_layers(q))[:2]  # doctest: +SKIP
    ['conv1', 'fc']
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import FrontierError
from ..files import atomic_path

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
LAYER_OPS = ("Conv", "Gemm", "MatMul")  # the ops whose weights are quantized, one per torch layer


class Format(NamedTuple):
    """How :func:`quantize_onnx` writes the INT8 file an engine runs (see the module doc).

    Args:
        activation: ``uint8`` or ``int8``: the type of quantized activations.
        weight: ``int8``: the type of the per-channel weight codes.
        symmetric: activations quantized symmetrically (zero point 0).
        bias: ``int32`` (codes behind a DequantizeLinear, scale = input scale * weight scale) or
            ``float32`` (left unquantized).
    """

    activation: str
    weight: str
    symmetric: bool
    bias: str


# engine -> its INT8 file format, chosen by measurement (ONNX Runtime) and by what the parser takes (TensorRT)
FORMATS: dict[str, Format] = {
    "onnxruntime": Format(activation="uint8", weight="int8", symmetric=False, bias="int32"),
    "tensorrt": Format(activation="int8", weight="int8", symmetric=True, bias="float32"),
}
# ops of ONNX Runtime's optimized CPU graph that compute in integers
INTEGER_OPS = ("QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
               "DynamicQuantizeMatMul", "QAttention")
CALIBRATION_BATCH = 8
# single-input ops between layers: a float layer's input is float back through them to the last layer
_PASS_THROUGH = ("Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "Reshape", "Flatten",
                 "Squeeze", "Unsqueeze", "Transpose", "Identity")
__all__ = ["CALIBRATION_METHODS", "FORMATS", "Format", "ImageReader", "int8_state", "integer_layers", "layer_nodes",
           "onnx_scores", "qdq_layers", "quantize_onnx"]


def _reader_base() -> type:
    from onnxruntime.quantization import CalibrationDataReader

    return CalibrationDataReader


class ImageReader:
    """Calibration batches of the first ``count`` images of ``images``, as ``quantize_static`` reads them.

    ``images`` yields image tensors only (``Splits.unlabeled(...)``): an item that is a tuple or a
    list (an image with its label) is refused, so calibration never reads a label.

    Args:
        images: a dataset of (channels, height, width) float tensors.
        count: how many images calibrate (all of them if fewer).
        input_name: the ONNX input the batches feed.
        batch: images per calibration batch.
    """

    def __init__(self, images: Dataset, count: int, input_name: str = "input", batch: int = CALIBRATION_BATCH) -> None:
        n = min(int(count), len(images))
        if n < 1:
            raise FrontierError("int8: calibration needs at least one image, but the dataset is empty")
        self.images, self.n, self.input_name, self.batch = images, n, input_name, batch
        self._it: Iterator[dict[str, np.ndarray]] | None = None

    def _batches(self) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.n, self.batch):
            items = [self.images[i] for i in range(start, min(start + self.batch, self.n))]
            if any(isinstance(x, (tuple, list)) for x in items):
                raise FrontierError("int8: calibration images must come without labels (use Splits.unlabeled)")
            yield {self.input_name: torch.stack(items).numpy().astype(np.float32)}

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._it is None:
            self._it = self._batches()
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = None


def _reader(images: Dataset, count: int, input_name: str):
    """An :class:`ImageReader` that is also a ``CalibrationDataReader`` (imported lazily)."""
    cls = type("CalibrationImages", (ImageReader, _reader_base()), {})
    return cls(images, count, input_name)


def layer_nodes(model) -> dict[str, str]:
    """torch layer name -> ONNX node name, for every Conv/Gemm/MatMul whose weight is an initializer
    named ``<layer>.weight`` (the exporter's names). ``model`` is an ``onnx.ModelProto`` or a path."""
    import onnx

    graph = (onnx.load(str(model)) if isinstance(model, (str, Path)) else model).graph
    weights = {init.name for init in graph.initializer}
    out: dict[str, str] = {}
    for node in graph.node:
        if node.op_type in LAYER_OPS and len(node.input) > 1:
            weight = node.input[1]
            if weight in weights and weight.endswith(".weight"):
                out[weight.removesuffix(".weight")] = node.name
    return out


def qdq_layers(path: str | Path, nodes: Mapping[str, str] | None = None) -> set[str]:
    """The layers of the INT8 file ``path`` whose weight input comes from a DequantizeLinear node.

    ``nodes`` is :func:`layer_nodes` of the float file it was quantized from (quantization keeps
    node names); None reads the weight names of the INT8 file (``<layer>.weight_quantized``).
    """
    import onnx

    graph = onnx.load(str(path)).graph
    producers = {out: node for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    layers: set[str] = set()
    if nodes is None:
        for node in graph.node:
            if node.op_type == "DequantizeLinear" and node.input[0].endswith(".weight_quantized"):
                layers.add(node.input[0].removesuffix(".weight_quantized"))
        return layers
    for layer, name in nodes.items():
        node = by_name.get(name)
        if node is None:
            continue
        producer = producers.get(node.input[1])
        if producer is not None and producer.op_type == "DequantizeLinear":
            layers.add(layer)
    return layers


def quantize_onnx(
    float_onnx: str | Path,
    out: str | Path,
    images: Dataset,
    *,
    engine: str = "onnxruntime",
    method: str = "minmax",
    count: int = 64,
    keep_float: Sequence[str] = (),
    only: Sequence[str] | None = None,
) -> Path:
    """Write the INT8 (QDQ) model of ``float_onnx`` to ``out``; returns ``out``.

    Args:
        float_onnx: a float32 model from :func:`trainables.measure.metrics.export_onnx`.
        out: the ``.onnx`` file to write (atomically).
        images: unlabeled calibration images (see :class:`ImageReader`).
        engine: ``onnxruntime`` or ``tensorrt``: picks the activation and bias format
            (:data:`FORMATS`); a TensorRT file dequantizes int8 tensors only (float32 biases).
        method: ``minmax``, ``entropy`` or ``percentile``.
        count: calibration images.
        keep_float: torch layer names that stay float32, their inputs too (:func:`_float_inputs`).
        only: quantize these layers (weights and inputs) and no other: every other layer reads its
            inputs in float, so the error measured is these layers' own (the sensitivity pass);
            None: all.

    Raises:
        FrontierError: an unknown engine, method or layer name.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if engine not in FORMATS:
        raise FrontierError(f"int8: no INT8 format for engine {engine!r}; known: {', '.join(FORMATS)}")
    if method not in CALIBRATION_METHODS:
        raise FrontierError(f"int8.method must be one of {', '.join(CALIBRATION_METHODS)} but got {method!r}")
    fmt = FORMATS[engine]
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    nodes = layer_nodes(float_onnx)
    unknown = [name for name in [*keep_float, *(only or ())] if name not in nodes]
    if unknown:
        raise FrontierError(f"int8: no quantizable layer '{unknown[0]}' in '{float_onnx}'")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A Relu after a quantized layer is dropped when the uint8 range clamps for it; a layer whose
    # input becomes float again (_float_inputs) needs it back, so it stays where layers stay float.
    options = {"ActivationSymmetric": fmt.symmetric, "WeightSymmetric": True, "QuantizeBias": fmt.bias == "int32",
               "QDQKeepRemovableActivations": bool(keep_float) or only is not None}
    with _quiet(), atomic_path(out, suffix=".tmp.onnx") as target:
        quantize_static(
            str(float_onnx), str(target), _reader(images, count, "input"), quant_format=QuantFormat.QDQ,
            per_channel=True, activation_type=types[fmt.activation], weight_type=types[fmt.weight],
            calibrate_method=methods[method], nodes_to_exclude=[nodes[n] for n in keep_float],
            nodes_to_quantize=None if only is None else [nodes[n] for n in only], extra_options=options,
            calibration_providers=["CPUExecutionProvider"],
        )
        if only is not None:
            _float_inputs(target, lambda name: name not in {nodes[n] for n in only})
        elif keep_float:
            _float_inputs(target, lambda name: name in {nodes[n] for n in keep_float})
    return out


def _float_inputs(path: Path, chosen: Callable[[str], bool]) -> None:
    """Let the nodes whose name is ``chosen`` read their inputs unquantized, in place.

    ``quantize_static`` quantizes the output of every quantized node, so a layer kept in float
    still reads its input through the QuantizeLinear/DequantizeLinear pair its producer left; an
    outlier in that tensor then costs accuracy however the layer itself runs. Each such input is
    rewired to the float tensor before the pair, and pairs (and their scales) nobody reads any
    more are removed. ONNX Runtime then runs the producer's convolution in float as well, as no
    QuantizeLinear follows it: keeping a layer in float costs its neighbours' integer kernels.
    The sensitivity pass chooses every node but the layer measured, so that only the layer's own
    weights and inputs are quantized (not its output, which its readers would see).
    """
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}

    def unquantize(node, inputs: int) -> None:
        for i in range(min(inputs, len(node.input))):
            dq = producers.get(node.input[i])
            q = producers.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
            source = producers.get(node.input[i])
            if source is not None and source.op_type in _PASS_THROUGH:  # Relu, MaxPool ... between layers
                unquantize(source, 1)

    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and chosen(node.name):
            unquantize(node, len(node.input))
    outputs = {o.name for o in graph.output}
    while True:  # drop Q/DQ nodes whose outputs nobody reads
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [node for node in graph.node if node.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(out in read for out in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    read = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)
    onnx.save(model, str(path))


def session(path: str | Path, threads: int = 1, optimized: Path | None = None):
    """An ONNX Runtime CPU session of ``path`` (``optimized``: also write the optimized graph there)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def onnx_logits(path: str | Path, dataset: Dataset, *, threads: int = 1, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """The logits of ``path`` in ONNX Runtime over a labeled ``dataset`` of (image, label) items, and the labels."""
    sess = session(path, threads)
    logits, labels = [], []
    for start in range(0, len(dataset), batch):
        items = [dataset[i] for i in range(start, min(start + batch, len(dataset)))]
        x = torch.stack([item[0] for item in items]).numpy().astype(np.float32)
        logits.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
        labels.append(np.asarray([int(item[1]) for item in items]))
    if not logits:
        raise FrontierError("int8: the evaluation dataset is empty")
    return np.concatenate(logits), np.concatenate(labels)


def scores(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Top-1 and top-5 accuracy (k clipped to the class count) of ``logits`` against ``labels``."""
    k = min(5, logits.shape[1])
    ranked = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return {"accuracy": float((ranked[:, 0] == labels).mean()), "top5": float((ranked == labels[:, None]).any(1).mean())}


def onnx_scores(path: str | Path, dataset: Dataset, *, threads: int = 1) -> dict[str, float]:
    """Top-1 and top-5 accuracy of the ONNX model ``path`` over ``dataset``, run in ONNX Runtime."""
    return scores(*onnx_logits(path, dataset, threads=threads))


def int8_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The parameters of the ONNX file ``path`` by name, as CPU tensors in their stored types: for
    an INT8 file the int8 weights (``<layer>.weight_quantized``) with their per-channel scales and
    zero points, the biases (int32 codes and their scales in an ONNX Runtime file, float32 in a
    TensorRT file: :data:`FORMATS`), activation scales and zero points, and the float32 tensors of the
    layers kept in float. What ``trainables/compress/artifact.py`` stores as the INT8 artifact.

    int64 initializers are left out: they are the graph's shape and axis constants, not weights,
    and the exporter names them differently from one export to the next (``val_7``, ``val_110``),
    which would make the same model's artifact differ by the length of a name."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    return {init.name: torch.from_numpy(np.array(numpy_helper.to_array(init))) for init in graph.initializer
            if init.data_type != onnx.TensorProto.INT64}


def integer_layers(path: str | Path, threads: int = 1) -> int:
    """How many nodes of ONNX Runtime's optimized CPU graph of ``path`` compute in integers
    (:data:`INTEGER_OPS`): ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into
    QLinearConv where it has the kernel; 0 for an INT8 file means every layer ran in float."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, threads, optimized)
        graph = onnx.load(str(optimized)).graph
    return sum(node.op_type in INTEGER_OPS for node in graph.node)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Mute ``quantize_static``'s advice to pre-process (the exporter's graph is already optimized)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)
