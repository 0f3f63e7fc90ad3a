"""A per-layer latency model of a CNN, measured on the trial's engine: predicts a pruned network's latency.

Pruning to a latency (not to a ratio) needs, for any number of units kept per unit group
(:mod:`trainables.compress.units`), the latency of the network those counts leave, thousands of
times per allocation. This is HALP's lookup table (Shen et al., "Structural Pruning via
Latency-Saliency Knapsack", NeurIPS 2022): every ``Conv2d`` and ``Linear`` of the model is timed
*alone* on the engine the benchmark uses, at a grid of (input channels, output channels) widths,
and a pruned network is predicted as the sum over its layers of each layer's table, bilinearly
interpolated at the layer's pruned widths, calibrated to the whole dense network measured on the
same engine:

    predict(kept) = dense_ms + slope * (sum_l T_l(c_in', c_out') - sum_l T_l(c_in, c_out))

``slope`` is fitted through two whole-network measurements: the dense network and the network at
one uniform share of units kept (:data:`CALIBRATION_SHARE`); where that fit is not sound the
multiplicative calibration ``dense_ms / sum_l T_l(c_in, c_out)`` is used (the lone-layer probes
include costs a network amortizes: the session call and, in ONNX Runtime, the NCHWc reorders
around a lone conv, so the multiplicative one over-predicts small networks: ResNet-18 at 224 px,
ONNX Runtime CPU, 2 threads, uniform 30% of units kept measured 1.58 ms, predicted 2.22 ms by the
multiplicative calibration and 1.55 ms by the fitted slope).

A layer's pruned widths follow from the kept counts: ``c_out' = c_out - sum_g (size_g - kept_g) *
spread`` over the groups where the layer is an ``out`` member, ``c_in'`` likewise over its ``in``
memberships; a depthwise conv's input, output and groups are one width, counted once per group;
a grouped conv keeps its groups (``spread`` handles them). BatchNorms cost nothing (folded at
export). Identical layer signatures share their probes; a width grid is ``GRID`` fractions of the
width rounded to the engine's :func:`preferred_multiple`, one point where the width is fixed
(a first conv's image channels, the head's outputs) and one axis for a depthwise conv.

The model is plain data (JSON), cached as ``cache_dir/latency/<key>.json`` (``RunFolder.latency``) where the key hashes
the layer signatures, the group coupling, the input shape, the engine (backend, precision,
batch, threads, device name) and the engine's version; a corrupt file is rebuilt.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..compress.units import UnitGroup, is_depthwise
from ..errors import FrontierError
from ..files import atomic_write

GRID = (1 / 8, 1 / 4, 1 / 2, 3 / 4, 1.0)  # fractions of a layer's width its table is measured at
CALIBRATION_SHARE = 0.5  # share of every group's units kept in the second whole-network measurement
FORMAT = 2  # the JSON's format; a cached file of another format is rebuilt
PROBE_BUDGET_S = 0.03  # seconds of timed runs per probe on the CPU (at least PROBE_MIN_RUNS runs)
PROBE_MIN_RUNS, PROBE_MAX_RUNS = 7, 60
PROBE_PASSES = 2  # passes over the probes on a CPU; a probe's time is its least median
NETWORK_ROUNDS = 3  # rounds of the whole-network measurements, interleaved; the least median counts
_OPSET = 18
LATENCY_FOLDER = "latency"  # cache_dir/latency/<key>.json: RunFolder.latency for a run folder

__all__ = ["LatencyModel", "latency_model", "network_latency", "preferred_multiple"]


# --------------------------------------------------------------------------- preferred multiples

def preferred_multiple(engine: str, precision: str = "fp32") -> int:
    """The channel multiple ``engine``'s kernels prefer: widths that are multiples of it waste no lanes.

    - ``onnxruntime`` (CPU): MLAS's NCHWc block size: 16 floats with AVX-512F, 8 with AVX2 (else
      1: no NCHWc layout). Read from this machine's CPU flags (``/proc/cpuinfo``); measured on an
      AVX-512 EPYC by ``bench/latency_multiples.py`` (16-channel blocks were the faster per channel).
    - ``tensorrt``: 8, NVIDIA's alignment for tensor-core kernels in FP16/TF32 (NVIDIA's Deep
      Learning Performance Guide; not measured here).
    - ``torch``: 8 on a GPU precision (``fp16``) and the CPU's NCHWc block otherwise (oneDNN
      blocks channels as MLAS does).

    Raises:
        FrontierError: an unknown engine.
    """
    if engine == "tensorrt":
        return 8  # NVIDIA's performance guide: channel counts in multiples of 8 for FP16/TF32 tensor cores
    if engine in ("onnxruntime", "torch"):
        if engine == "torch" and precision == "fp16":
            return 8
        flags = _cpu_flags()
        if "avx512f" in flags:
            return 16
        return 8 if "avx2" in flags else 1
    raise FrontierError(f"engine: '{engine}' is not one of onnxruntime, tensorrt, torch")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------- layers and their coupling

@dataclass(frozen=True)
class _Layer:
    """One timed layer: a Conv2d or Linear as the model runs it (``hw``: its input's spatial size;
    for a Linear, its rows per image)."""

    name: str
    kind: str  # "conv" | "linear"
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    hw: tuple[int, int] = (1, 1)
    bias: bool = True
    depthwise: bool = False

    def signature(self) -> list:
        return [self.kind, self.cin, self.cout, list(self.kernel), list(self.stride), list(self.padding),
                list(self.dilation), self.groups, list(self.hw), self.bias, self.depthwise]


def _pads(module: nn.Conv2d, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """ONNX pads (top, left, bottom, right) of ``module``."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return (0, 0, 0, 0)
        total = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size)]  # 'same' (stride 1)
        return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)
    ph, pw = module.padding
    return (ph, pw, ph, pw)


def _layers(model: nn.Module, input_shape: tuple[int, int, int]) -> list[_Layer]:
    """Every Conv2d and Linear that runs in one forward of ``model`` at ``input_shape``, in forward order."""
    seen: dict[str, _Layer] = {}
    hooks = []

    def hook(name: str, module: nn.Module) -> Callable:
        def record(_module: nn.Module, inputs: tuple, _output: Any) -> None:
            if name in seen or not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            shape = tuple(inputs[0].shape)
            if isinstance(module, nn.Conv2d):
                hw = (int(shape[-2]), int(shape[-1]))
                seen[name] = _Layer(name, "conv", module.in_channels, module.out_channels,
                                    tuple(module.kernel_size), tuple(module.stride), _pads(module, hw),
                                    tuple(module.dilation), module.groups, hw, module.bias is not None,
                                    is_depthwise(module))
            else:
                rows = int(np.prod(shape[1:-1])) if len(shape) > 2 else 1
                seen[name] = _Layer(name, "linear", module.in_features, module.out_features, hw=(rows, 1),
                                    bias=module.bias is not None)
        return record

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(hook(name, module)))
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        was = {m: m.training for m in model.modules()}
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        for m, training in was.items():
            m.train(training)
    if not seen:
        raise FrontierError(f"latency model: {type(model).__name__} runs no Conv2d or Linear")
    return list(seen.values())


def _coupling(layers: Sequence[_Layer], groups: Sequence[UnitGroup]) -> tuple[np.ndarray, np.ndarray]:
    """Per layer and group, the channels one removed unit takes from the layer's input and output
    (``A_in``, ``A_out``: layers x groups); a depthwise conv's one width counts once per group."""
    index = {layer.name: i for i, layer in enumerate(layers)}
    a_in = np.zeros((len(layers), len(groups)))
    a_out = np.zeros((len(layers), len(groups)))
    for g, group in enumerate(groups):
        for member in group.members:
            i = index.get(member.name)
            if i is None:
                continue  # a BatchNorm (folded at export) or a layer that did not run
            if layers[i].depthwise:
                width = max(a_out[i, g], member.spread)  # its out and in membership are the same channels
                a_out[i, g] = a_in[i, g] = width
            elif member.role == "out":
                a_out[i, g] += member.spread
            else:
                a_in[i, g] += member.spread
    return a_in, a_out


def _grid(width: int, variable: bool, step: int) -> list[int]:
    """The widths a layer's axis is measured at: ``GRID`` fractions rounded to ``step`` (each >= step)."""
    if not variable or width <= step:
        return [width]
    points = {width}
    for f in GRID:
        points.add(min(width, max(step, int(round(width * f / step)) * step)))
    return sorted(points)


# --------------------------------------------------------------------------- the model

@dataclass
class LatencyModel:
    """A network's latency as a function of the units kept per group (see the module doc; HALP's
    lookup table, Shen et al., NeurIPS 2022).

    Attributes:
        dense_ms: the dense network measured on the engine.
        build_seconds: what building took (as recorded when built).
        cached: loaded from the cache folder.
        multiple: :func:`preferred_multiple` of its engine.
        sizes: units per group it knows (group name -> size), in the groups' order.
    """

    dense_ms: float
    build_seconds: float
    multiple: int
    sizes: dict[str, int]
    layers: list[dict]  # name, cin, cout, grid_in, grid_out, table (ms, grid_in x grid_out)
    a_in: list[list[float]]
    a_out: list[list[float]]
    scale: float  # ms of network per ms of summed table (the calibration's slope)
    engine: dict[str, Any]
    key: str = ""
    cached: bool = False
    calibration: dict[str, float] | None = None

    def __post_init__(self) -> None:
        self._index = {name: i for i, name in enumerate(self.sizes)}
        self._size = np.array(list(self.sizes.values()), dtype=np.float64)
        n = len(self.layers)
        self._ain = np.asarray(self.a_in, dtype=np.float64).reshape(n, len(self.sizes))
        self._aout = np.asarray(self.a_out, dtype=np.float64).reshape(n, len(self.sizes))
        self._cin = np.array([layer["cin"] for layer in self.layers], dtype=np.float64)
        self._cout = np.array([layer["cout"] for layer in self.layers], dtype=np.float64)
        gi = max(2, *(len(layer["grid_in"]) for layer in self.layers))  # >= 2 points: one segment at least
        go = max(2, *(len(layer["grid_out"]) for layer in self.layers))
        self._gin, self._gout = np.zeros((n, gi)), np.zeros((n, go))
        self._table = np.zeros((n, gi, go))
        for i, layer in enumerate(self.layers):
            xin, xout = _padded(layer["grid_in"], gi), _padded(layer["grid_out"], go)
            table = np.asarray(layer["table"], dtype=np.float64).reshape(len(layer["grid_in"]), len(layer["grid_out"]))
            table = np.pad(table, ((0, gi - table.shape[0]), (0, go - table.shape[1])), mode="edge")
            self._gin[i], self._gout[i], self._table[i] = xin, xout, table
        self._rows = np.arange(n)
        self._flat = self._table.ravel()  # row l, point (i, j) at l * gi * go + i * go + j
        self._base = self._rows * gi * go
        self._go = go
        self._full = self._sum(self._cin, self._cout)

    def _sum(self, cin: np.ndarray, cout: np.ndarray) -> float:
        """Sum over layers of each table, bilinear at (cin, cout) (clamped to the grid)."""
        i, ti = _locate(self._gin, cin, self._rows)
        j, tj = _locate(self._gout, cout, self._rows)
        at = self._base + i * self._go + j
        flat = self._flat
        top = flat[at] + (flat[at + 1] - flat[at]) * tj
        below = at + self._go
        bottom = flat[below] + (flat[below + 1] - flat[below]) * tj
        return float((top + (bottom - top) * ti).sum())

    def widths(self, kept: Mapping[str, int]) -> dict[str, tuple[int, int]]:
        """Each timed layer's (input, output) channels with ``kept`` units per group (missing: full)."""
        cin, cout = self._widths(kept)
        return {layer["name"]: (int(a), int(b)) for layer, a, b in zip(self.layers, cin, cout)}

    def _widths(self, kept: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
        removed = np.zeros(len(self._size))
        for name, count in kept.items():
            g = self._index.get(name)
            if g is None:
                raise FrontierError(f"kept: '{name}' is not a unit group of this model "
                                    f"(e.g. {', '.join(list(self.sizes)[:3])})")
            removed[g] = self._size[g] - count
        if ((removed < 0) | (removed > self._size)).any():
            bad = next(n for n, g in self._index.items() if not 0 <= removed[g] <= self._size[g])
            raise FrontierError(f"kept['{bad}']: {kept[bad]} is not between 0 and the group's {self.sizes[bad]} units")
        return self._cin - self._ain @ removed, self._cout - self._aout @ removed

    def predict(self, kept: Mapping[str, int]) -> float:
        """Predicted latency in ms with ``kept`` units of each named group (groups left out: full).

        ``predict({}) == dense_ms``. Fast (numpy over precomputed per-layer coupling arrays): the
        allocation calls it thousands of times.

        Raises:
            FrontierError: an unknown group or a count outside 0..size.
        """
        if not kept:
            return self.dense_ms
        cin, cout = self._widths(kept)
        return max(0.0, self.dense_ms + self.scale * (self._sum(cin, cout) - self._full))

    def to_json(self) -> dict:
        """Plain data: every field (not ``cached``)."""
        return {"format": FORMAT, "key": self.key, "dense_ms": self.dense_ms, "build_seconds": self.build_seconds,
                "multiple": self.multiple, "sizes": dict(self.sizes), "scale": self.scale, "engine": dict(self.engine),
                "calibration": self.calibration, "layers": self.layers, "a_in": self.a_in, "a_out": self.a_out}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LatencyModel:
        """The model :meth:`to_json` wrote.

        Raises:
            FrontierError: data of another format or missing fields.
        """
        try:
            if data["format"] != FORMAT:
                raise FrontierError(f"latency model: format {data['format']!r} is not {FORMAT}")
            return cls(dense_ms=float(data["dense_ms"]), build_seconds=float(data["build_seconds"]),
                       multiple=int(data["multiple"]), sizes={str(k): int(v) for k, v in data["sizes"].items()},
                       layers=list(data["layers"]), a_in=data["a_in"], a_out=data["a_out"],
                       scale=float(data["scale"]), engine=dict(data["engine"]), key=str(data.get("key", "")),
                       calibration=data.get("calibration"))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise FrontierError(f"latency model: not a latency model's JSON ({type(exc).__name__}: {exc})") from None


def _padded(grid: Sequence[int], n: int) -> np.ndarray:
    """``grid`` extended to ``n`` strictly increasing points (the table's last column is repeated)."""
    out = [float(x) for x in grid]
    while len(out) < n:
        out.append(out[-1] + 1.0)
    return np.array(out)


def _locate(grid: np.ndarray, x: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the segment of ``grid`` holding ``x`` and the position inside it (clamped to the grid:
    below the first point the first point's time, since the engine pads a width to its block).
    ``rows``: each row's offset in ``grid.ravel()``."""
    points = grid.shape[1]
    i = np.minimum(np.maximum((grid <= x[:, None]).sum(axis=1) - 1, 0), points - 2)
    flat = grid.ravel()
    at = rows * points + i
    lo = flat[at]
    t = (x - lo) / (flat[at + 1] - lo)
    return i, np.minimum(np.maximum(t, 0.0), 1.0)


# --------------------------------------------------------------------------- the engine

@dataclass(frozen=True)
class _Engine:
    """What the probes and the network run on, from the benchmark's settings."""

    engine: str
    device: str
    precision: str
    batch: int
    threads: int
    warmup: int
    runs: int
    workspace_mb: int
    cuda_graphs: bool
    cache_dir: str | None

    @classmethod
    def of(cls, settings: Mapping[str, Any], device: str) -> _Engine:
        from .backends import resolve_backend

        precision = str(settings.get("precision", "fp32"))
        engine, chosen = resolve_backend(str(settings.get("backend", "auto")), precision, device)
        cache = settings.get("cache_dir")
        return cls(engine, chosen, precision, int(settings.get("batch_size", 1)), int(settings.get("threads", 1)),
                   int(settings.get("warmup", 10)), int(settings.get("runs", 50)),
                   int(settings.get("workspace_mb", 1024)), bool(settings.get("cuda_graphs", False)),
                   None if cache is None else str(cache))

    def identity(self) -> dict[str, Any]:
        """What the key hashes: backend, precision, batch, threads, device name, engine version."""
        if self.engine == "onnxruntime":
            import onnxruntime as ort
            version, device = ort.__version__, _cpu_name()
        elif self.engine == "tensorrt":
            import tensorrt as trt  # only reached where resolve_backend found it
            version, device = trt.__version__, torch.cuda.get_device_name(self.device)
        else:
            version = torch.__version__
            device = torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else _cpu_name()
        return {"backend": self.engine, "precision": self.precision, "batch": self.batch, "threads": self.threads,
                "device": device, "version": version, "cuda_graphs": self.cuda_graphs and self.engine == "torch"}


class _Prober:
    """Times lone layers on the engine; identical probes are timed once (``count``: probes timed)."""

    def __init__(self, engine: _Engine) -> None:
        self.engine, self.count, self._memo, self._todo = engine, 0, {}, []
        self._tmp = tempfile.TemporaryDirectory(prefix="frontier-latency-") if engine.engine == "tensorrt" else None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()

    def __call__(self, layer: _Layer, cin: int, cout: int) -> float:
        """The probe's time: the least of its passes' medians (another process's load only adds time)."""
        return min(self._memo[self.plan(layer, cin, cout)])

    def plan(self, layer: _Layer, cin: int, cout: int) -> tuple:
        """Register the probe (timed by :meth:`run`); its key."""
        groups = cin if layer.depthwise else layer.groups
        key = (layer.kind, cin, cout, layer.kernel, layer.stride, layer.padding, layer.dilation, groups, layer.hw)
        if key not in self._memo:
            self._memo[key] = []
            self._todo.append((key, layer, cin, cout, groups))
        return key

    def run(self, passes: int) -> None:
        """Time every registered probe ``passes`` times, pass after pass (so a burst of load hits one pass)."""
        for _ in range(passes):
            for key, layer, cin, cout, groups in self._todo:
                self.count += 1
                self._memo[key].append(self._time(layer, cin, cout, groups))

    def _time(self, layer: _Layer, cin: int, cout: int, groups: int) -> float:
        e = self.engine
        if e.engine == "onnxruntime":
            return _ort_ms(_probe_onnx(layer, cin, cout, groups, e.batch, half=False, dynamic=False), e.threads)
        if e.engine == "tensorrt":
            from .backends import tensorrt_latency

            path = Path(self._tmp.name) / f"probe{self.count}.onnx"
            path.write_bytes(_probe_onnx(layer, cin, cout, groups, e.batch, half=e.precision == "fp16",
                                         dynamic=True).SerializeToString())
            latency = tensorrt_latency(path, precision=e.precision, batch_size=e.batch, warmup=min(e.warmup, 5),
                                       runs=min(e.runs, 20), cache_dir=e.cache_dir, workspace_mb=e.workspace_mb,
                                       device=e.device)
            return latency.median_ms
        return _torch_probe_ms(layer, cin, cout, groups, e)


def _probe_onnx(layer: _Layer, cin: int, cout: int, groups: int, batch: int, *, half: bool, dynamic: bool):
    """A hand-built ONNX graph of the lone layer at (cin, cout): Conv + Relu, or Gemm (random weights)."""
    from onnx import TensorProto, helper, numpy_helper

    dtype = np.float16 if half else np.float32
    elem = TensorProto.FLOAT16 if half else TensorProto.FLOAT
    rng = np.random.default_rng(0)
    n = "batch" if dynamic else batch
    if layer.kind == "conv":
        h, w = layer.hw
        kh, kw = layer.kernel
        weight = (rng.standard_normal((cout, cin // groups, kh, kw)) * 0.05).astype(dtype)
        bias = np.zeros(cout, dtype)
        inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[kh, kw], strides=list(layer.stride),
                                  pads=list(layer.padding), dilations=list(layer.dilation), group=groups),
                 helper.make_node("Relu", ["c"], ["y"])]
        x = helper.make_tensor_value_info("x", elem, [n, cin, h, w])
        y = helper.make_tensor_value_info("y", elem, None)
    else:
        rows = layer.hw[0]
        weight = (rng.standard_normal((cout, cin)) * 0.05).astype(dtype)
        inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(np.zeros(cout, dtype), "b")]
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)]
        x = helper.make_tensor_value_info("x", elem, [n if rows == 1 or dynamic else batch * rows, cin])
        y = helper.make_tensor_value_info("y", elem, None)
    graph = helper.make_graph(nodes, "probe", [x], [y], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    model.ir_version = 8
    return model


def _ort_session(model_bytes: bytes, threads: int):
    """An ONNX Runtime CPU session with the benchmark's options (:func:`~trainables.measure.backends.cpu_session`)."""
    from .backends import cpu_session

    return cpu_session(model_bytes, threads)


def _ort_ms(model, threads: int) -> float:
    """Median ms of the probe ``model`` in a session: runs fill :data:`PROBE_BUDGET_S` (within bounds)."""
    session = _ort_session(model.SerializeToString(), threads)
    (spec,) = session.get_inputs()
    feed = {spec.name: np.random.default_rng(0).standard_normal(spec.shape).astype(np.float32)}
    return _timed(lambda: session.run(None, feed))


def _timed(call: Callable[[], Any]) -> float:
    """Median ms of ``call``: 2 warm-up calls, then as many as fill the probe budget."""
    start = time.perf_counter()
    call()
    call()
    each = max((time.perf_counter() - start) / 2, 1e-6)
    runs = int(min(PROBE_MAX_RUNS, max(PROBE_MIN_RUNS, PROBE_BUDGET_S / each)))
    times = np.empty(runs)
    for r in range(runs):
        t0 = time.perf_counter_ns()
        call()
        times[r] = time.perf_counter_ns() - t0
    return float(np.median(times)) / 1e6


def _torch_probe_ms(layer: _Layer, cin: int, cout: int, groups: int, e: _Engine) -> float:
    """The lone layer + ReLU timed by :func:`~trainables.measure.backends.torch_latency`. A Linear is
    given its input as ``(rows, in_features)`` directly (no flatten module), so the probe is the layer alone."""
    from .backends import torch_latency

    if layer.kind == "conv":
        module = nn.Conv2d(cin, cout, layer.kernel, layer.stride, 0, layer.dilation, groups)
        pads = layer.padding
        pad = nn.ZeroPad2d((pads[1], pads[3], pads[0], pads[2])) if any(pads) else nn.Identity()
        if pads[0] == pads[2] and pads[1] == pads[3]:
            module.padding, pad = (pads[0], pads[1]), nn.Identity()
        net: nn.Module = nn.Sequential(pad, module, nn.ReLU())
        shape: tuple = (cin, *layer.hw)
    else:
        net, shape = nn.Sequential(nn.Linear(cin, cout), nn.ReLU()), ((layer.hw[0], cin) if layer.hw[0] > 1 else (cin,))
    latency = torch_latency(net.eval(), shape, device=e.device, precision=e.precision, batch_size=e.batch,
                            threads=e.threads, warmup=min(e.warmup, 5), runs=min(e.runs, 20),
                            cuda_graphs=e.cuda_graphs)
    return latency.median_ms


def _network_timer(model: nn.Module, input_shape: tuple[int, int, int], engine: _Engine,
                   folder: Path) -> Callable[[], float]:
    """A call timing ``model`` on the engine as :func:`~trainables.measure.metrics.measure` times it
    (no artifact, no surgery, no end-to-end): exported once, each call one measurement's median ms."""
    from .backends import onnx_latency, tensorrt_latency, torch_latency
    from .metrics import export_onnx

    common = dict(batch_size=engine.batch, threads=engine.threads, warmup=engine.warmup, runs=engine.runs,
                  end_to_end=False)
    if engine.engine == "torch":
        return lambda: torch_latency(model, input_shape, device=engine.device, precision=engine.precision,
                                     cuda_graphs=engine.cuda_graphs, **common).median_ms
    half = engine.engine == "tensorrt" and engine.precision == "fp16"
    path = export_onnx(model, folder / ("model.fp16.onnx" if half else "model.onnx"), input_shape, half=half)
    if engine.engine == "onnxruntime":
        return lambda: onnx_latency(path, **common).median_ms
    return lambda: tensorrt_latency(path, precision=engine.precision, cache_dir=engine.cache_dir,
                                    workspace_mb=engine.workspace_mb, device=engine.device, **common).median_ms


def _networks_ms(models: Sequence[nn.Module], input_shape: tuple[int, int, int], engine: _Engine,
                 folder: Path) -> list[float]:
    """Each of ``models`` measured on the engine: on a CPU the least median of :data:`NETWORK_ROUNDS`
    rounds taken in turn (another process's load only adds time); on a GPU one measurement."""
    timers = [_network_timer(m, input_shape, engine, folder / f"net{i}") for i, m in enumerate(models)]
    rounds = NETWORK_ROUNDS if engine.device == "cpu" else 1
    best = [math.inf] * len(timers)
    for _ in range(rounds):
        for i, timer in enumerate(timers):
            best[i] = min(best[i], timer())
    return best


@contextlib.contextmanager
def _folder(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="latency-", dir=workdir) as tmp:
        yield Path(tmp)


# --------------------------------------------------------------------------- public functions

def network_latency(model: nn.Module, keep: Mapping[str, torch.Tensor], groups: Sequence[UnitGroup],
                    input_shape: tuple[int, int, int], settings: Mapping[str, Any], *, device: str = "cpu",
                    workdir: Path) -> float:
    """The real latency (ms, the median on the engine) of ``model`` shrunk to ``keep``: the
    allocation's verification of a prediction.

    Args:
        model: the dense (or any) model; untouched.
        keep: group name -> bool vector of its units, True = kept (groups left out: full);
            :func:`trainables.compress.surgery.shrink` removes the rest.
        groups: the unit groups ``keep`` refers to.
        input_shape: (channels, height, width) of one image.
        settings: the benchmark's measurement settings (``BenchmarkConfig.measurement``'s dict).
        device: the trial's device.
        workdir: where the temporary ONNX file is written (removed after).

    Raises:
        FrontierError: an engine this machine cannot run, or a ``keep`` surgery refuses.
    """
    from ..compress.surgery import shrink
    from .metrics import _check_input_shape

    input_shape = _check_input_shape(input_shape)
    engine = _Engine.of(settings, device)
    small = shrink(model, dict(keep), groups) if keep else model
    with _folder(Path(workdir)) as folder:
        return _networks_ms([small], input_shape, engine, folder)[0]


def relative_latency(model: nn.Module, keep: Mapping[str, torch.Tensor], groups: Sequence[UnitGroup],
                     input_shape: tuple[int, int, int], settings: Mapping[str, Any], *, device: str = "cpu",
                     workdir: Path) -> tuple[float, float]:
    """``(pruned ms, dense ms)``: :func:`network_latency` of ``model`` shrunk to ``keep`` and of ``model``
    itself, measured in the same interleaved rounds, so that their ratio holds while the machine's
    speed drifts (on the 2-core CI machine whole processes read every model 2x slower than the next
    one did): what a latency target given as a share of the dense latency is checked against."""
    from ..compress.surgery import shrink
    from .metrics import _check_input_shape

    input_shape = _check_input_shape(input_shape)
    engine = _Engine.of(settings, device)
    small = shrink(model, dict(keep), groups) if keep else model
    with _folder(Path(workdir)) as folder:
        pruned, dense = _networks_ms([small, model], input_shape, engine, folder)
    return pruned, dense


def latency_model(model: nn.Module, groups: Sequence[UnitGroup], input_shape: tuple[int, int, int],
                  settings: Mapping[str, Any], *, device: str = "cpu", cache_dir: Path | None = None) -> LatencyModel:
    """The latency model of ``model`` pruned over ``groups`` at ``input_shape`` on the benchmark's
    engine (HALP's per-layer lookup table, Shen et al., NeurIPS 2022; see the module doc).

    Built once per architecture, groups, input shape and engine: with ``cache_dir`` (the run
    folder, so every trial shares it) it is saved atomically as ``cache_dir/latency/<key>.json``
    (``RunFolder.latency``) and loaded from there the next time (``cached`` True; no probe runs).
    A corrupt or foreign file is rebuilt.

    Args:
        model: the dense model (untouched; run once on the CPU or its device for the layers' input sizes).
        groups: its unit groups (:func:`trainables.compress.units.unit_groups`).
        input_shape: (channels, height, width) of one image.
        settings: the benchmark's measurement settings (``BenchmarkConfig.measurement(workdir)``:
            ``backend``, ``precision``, ``batch_size``, ``threads``, ``warmup``, ``runs``,
            ``workspace_mb``, ``cuda_graphs``, ``cache_dir``; others are ignored).
        device: the trial's device (``cpu``, ``cuda``).
        cache_dir: the run folder (``RunFolder.root``; a workdir outside a run: that folder); None: no cache.

    Raises:
        FrontierError: a bad input shape, an engine this machine cannot run, or a model without layers.
    """
    from .metrics import _check_input_shape

    start = time.perf_counter()
    input_shape = _check_input_shape(input_shape)
    engine = _Engine.of(settings, device)
    layers = _layers(model, input_shape)
    groups = list(groups)
    a_in, a_out = _coupling(layers, groups)
    identity = engine.identity()
    key = _key(layers, groups, input_shape, identity)
    folder = None if cache_dir is None else Path(cache_dir) / LATENCY_FOLDER
    path = None if folder is None else folder / f"{key}.json"
    if path is not None and path.is_file():
        with contextlib.suppress(FrontierError, ValueError, OSError):
            loaded = LatencyModel.from_json(json.loads(path.read_text()))
            if loaded.key == key:
                loaded.cached = True
                return loaded
    built = _build(model, groups, layers, a_in, a_out, input_shape, engine, identity, key, start,
                   folder)
    if path is not None:
        atomic_write(path, json.dumps(built.to_json()))
    return built


_LAST_PROBES = [0]  # probes the last build timed (tests count them)


def _build(model: nn.Module, groups: list[UnitGroup], layers: list[_Layer], a_in: np.ndarray, a_out: np.ndarray,
           input_shape: tuple[int, int, int], engine: _Engine, identity: dict, key: str, start: float,
           cache_dir: Path | None) -> LatencyModel:
    multiple = preferred_multiple(engine.engine, engine.precision)
    prober = _Prober(engine)
    entries = []
    try:
        shapes = []
        for layer, ain, aout in zip(layers, a_in, a_out):
            step = max(1, multiple)
            if layer.groups > 1 and not layer.depthwise:
                step = math.lcm(step, layer.groups)
            grid_out = _grid(layer.cout, bool(aout.any()), step)
            # a depthwise conv has one axis: its input, output and groups move together (read on the output)
            grid_in = [layer.cin] if layer.depthwise else _grid(layer.cin, bool(ain.any()), step)
            for cin in grid_in:
                for cout in grid_out:
                    prober.plan(layer, cout if layer.depthwise else cin, cout)
            shapes.append((layer, grid_in, grid_out))
        prober.run(PROBE_PASSES if engine.engine != "tensorrt" else 1)
        for layer, grid_in, grid_out in shapes:
            table = [[prober(layer, cout if layer.depthwise else cin, cout) for cout in grid_out] for cin in grid_in]
            entries.append({"name": layer.name, "cin": layer.cin, "cout": layer.cout, "grid_in": grid_in,
                            "grid_out": grid_out, "table": table})
    finally:
        prober.close()
    _LAST_PROBES[0] = prober.count
    sizes = {g.name: g.size for g in groups}
    share = {g.name: max(1, int(round(g.size * CALIBRATION_SHARE))) for g in groups}
    with _folder(cache_dir) as folder:
        models = [model]
        if groups:
            from ..compress.surgery import shrink

            models.append(shrink(model, {g.name: torch.arange(g.size) < share[g.name] for g in groups}, groups))
        dense_ms, *rest = _networks_ms(models, input_shape, engine, folder)
    probe = LatencyModel(dense_ms=dense_ms, build_seconds=0.0, multiple=multiple, sizes=sizes, layers=entries,
                         a_in=a_in.tolist(), a_out=a_out.tolist(), scale=1.0, engine=identity, key=key)
    full = probe._full
    scale, calibration = dense_ms / full, None
    if rest:
        summed = probe._sum(*probe._widths(share))
        slope = (dense_ms - rest[0]) / (full - summed) if full > summed else 0.0
        calibration = {"share": CALIBRATION_SHARE, "share_ms": rest[0], "multiplicative": dense_ms / full,
                       "slope": slope}
        if slope > 0:
            scale = slope
    return LatencyModel(dense_ms=dense_ms, build_seconds=time.perf_counter() - start, multiple=multiple, sizes=sizes,
                        layers=entries, a_in=a_in.tolist(), a_out=a_out.tolist(), scale=scale, engine=identity,
                        key=key, calibration=calibration)


def _key(layers: Sequence[_Layer], groups: Sequence[UnitGroup], input_shape: tuple[int, int, int],
         identity: Mapping[str, Any]) -> str:
    coupling = [[g.name, g.size, [[m.name, m.role, m.spread, len(m.channels)] for m in g.members]] for g in groups]
    data = {"format": FORMAT, "layers": [[layer.name, *layer.signature()] for layer in layers], "groups": coupling,
            "input_shape": list(input_shape), "engine": dict(identity), "grid": list(GRID),
            "calibration": CALIBRATION_SHARE}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:20]
