"""The TensorRT backend: an engine built from the ONNX file, run on torch CUDA tensors.

Build (``tensorrt`` is imported here, lazily: it exists only on GPU workers with the
``tensorrt-cu12``/``tensorrt-cu13`` extra): ``trt.Builder`` -> a network (strongly typed where the
flag exists; TensorRT 11 always is) -> ``OnnxParser.parse_from_file`` on a self-contained ONNX file
(weights inside, pruning hooks already made permanent) -> one optimisation profile per batch that
is timed (:func:`batch_profiles`: the latency batch, and the throughput batch when it differs, each
with min = opt = max, so each batch runs kernels chosen for it) -> a workspace limit -> ``TF32``
cleared -> ``SPARSE_WEIGHTS`` when the weights have 2:4 structured sparsity -> a timing cache
loaded from and saved to ``cache_dir`` (the run's storage), so later trials on the same GPU model
and TensorRT version skip tactic timing they share.

Precision follows the ONNX file: TensorRT 11 removed the FP16 builder flag, so FP16 means an ONNX
file exported in half precision (``export_onnx(..., half=True)``), built as a strongly typed network.
TF32 is not a type but a math mode of FP32 convolutions and matrix products on Ampere and later
GPUs, which TensorRT allows by default (``BuilderFlag.TF32``, kept in TensorRT 11, strongly typed
networks included): an FP32 engine is built with it cleared, and where a TensorRT lacks the flag
an FP32 engine on such a GPU is recorded as ``tf32`` (:func:`recorded_precision`).

Run: each profile has its own execution context (profile 1's selected with
``set_optimization_profile_async``); ``set_input_shape`` and ``set_tensor_address`` bind torch CUDA
tensors (no pycuda), and ``execute_async_v3`` enqueues on a non-default torch stream. GPU-only
latency is timed with CUDA events on that stream; end-to-end latency adds PNG decode and
preprocessing on the CPU, the copy to the GPU and the logits' copy back, on the wall clock (the
paper's "GPU only" and "Total"). Building and timing hold the GPU's node-local lock
(:mod:`._gpu_lock`), so two trials sharing a GPU never time at the same moment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import FrontierError
from ...files import atomic_write
from ._choice import check_precision, cuda_available, tensorrt_available, tensorrt_problem
from ._gpu_lock import gpu_lock
from ._images import EncodedImages
from ._timing import CUDA_EVENTS, Latency, check_counts, cuda_times, summarize, torch_threads, wall_times

WORKSPACE_MB = 1024


def has_2to4_sparsity(model: nn.Module) -> bool:
    """Some convolution or linear layer has 2:4 structured sparsity, the pattern of TensorRT's
    ``SPARSE_WEIGHTS`` kernels: for every output channel and kernel position, each run of 4
    consecutive input channels holds at most 2 nonzero weights. Layers whose input channels are
    not a multiple of 4, and grouped convolutions, cannot qualify."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            continue
        if isinstance(module, (nn.Conv2d, nn.Linear)) and _is_2to4(module.weight.detach()):
            return True
    return False


def _is_2to4(weight: torch.Tensor) -> bool:
    channels = weight.shape[1]
    if channels % 4:
        return False
    runs = weight.movedim(1, -1).reshape(-1, channels // 4, 4)
    return bool(((runs != 0).sum(-1) <= 2).all())


def batch_profiles(batch_size: int, throughput_batch: int | None) -> tuple[int, ...]:
    """The batch of each optimisation profile an engine is built with, in profile order.

    Profile 0 is the latency batch; a throughput batch that differs gets profile 1. Each profile
    is fixed (min = opt = max = its batch): TensorRT then picks every kernel for the batch it will
    time, as an engine deployed at that batch would, instead of timing the throughput batch on
    kernels tuned for batch 1.

    Example:
        >>> batch_profiles(1, 64)
        (1, 64)
        >>> batch_profiles(8, None)
        (8,)

    Raises:
        FrontierError: a batch that is not an integer >= 1 (named).
    """
    check_counts(batch_size=batch_size)
    if throughput_batch is None or throughput_batch == batch_size:
        return (batch_size,)
    check_counts(throughput_batch=throughput_batch)
    return (batch_size, throughput_batch)


def recorded_precision(precision: str, tf32_cleared: bool, capability: tuple[int, int]) -> str:
    """The precision an engine really computes in, as ``latency_precision`` records it.

    ``fp16`` stays ``fp16``. ``fp32`` is ``fp32`` when the build cleared TF32 or the GPU has no
    TF32 (compute capability below 8.0, before Ampere); else ``tf32``, TensorRT's default math
    for FP32 convolutions and matrix products there.

    Example:
        >>> recorded_precision("fp32", tf32_cleared=False, capability=(9, 0))
        'tf32'

    Args:
        precision: what was asked for: ``fp32`` or ``fp16``.
        tf32_cleared: the build cleared ``BuilderFlag.TF32``.
        capability: the GPU's CUDA compute capability ``(major, minor)``.
    """
    if precision != "fp32":
        return precision
    return "fp32" if tf32_cleared or tuple(capability) < (8, 0) else "tf32"


def tensorrt_latency(
    onnx_path: str | Path,
    *,
    precision: str = "fp32",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    throughput_batch: int | None = None,
    end_to_end: bool = False,
    sparse_weights: bool = False,
    cache_dir: str | Path | None = None,
    workspace_mb: int = WORKSPACE_MB,
    device: str = "cuda",
    seed: int = 0,
) -> Latency:
    """Build a TensorRT engine from ``onnx_path`` and time it on ``device`` (see the module doc).

    The build and every timed run hold the GPU's node-local lock, so another process timing on
    the same physical GPU waits. The record's ``precision`` is what the engine computed in
    (:func:`recorded_precision`): ``fp32`` with TF32 cleared, ``tf32`` where it could not be.

    Example:
        >>> tensorrt_latency("out/model.onnx", cache_dir="runs/r1/tensorrt").backend  # doctest: +SKIP
        'tensorrt'

    Args:
        onnx_path: a self-contained ONNX file with a dynamic batch, from ``export_onnx``; its
            input type must match ``precision`` (float16 for ``fp16``).
        precision: ``fp32`` or ``fp16``, checked against the file.
        batch_size: images per timed inference (the latency batch, profile 0).
        threads: torch's CPU threads for end-to-end preprocessing.
        warmup, runs: untimed and timed runs.
        throughput_batch: batch of separate throughput runs, timed on its own profile (profile 1);
            None: throughput from the latency runs.
        end_to_end: also time decode + preprocessing + copies + inference on the wall clock.
        sparse_weights: set ``BuilderFlag.SPARSE_WEIGHTS`` (where the TensorRT version has it).
        cache_dir: folder of the timing cache file (None: no timing cache).
        workspace_mb: the builder's workspace memory pool limit, in MiB.
        device: the CUDA device.
        seed: seed of the random input and image.

    Raises:
        FrontierError: TensorRT or a GPU is missing, a bad argument, a file TensorRT cannot parse,
            or a build that fails.
    """
    check_counts(batch_size=batch_size, threads=threads, warmup=warmup, runs=runs, workspace_mb=workspace_mb)
    batches = batch_profiles(batch_size, throughput_batch)
    check_precision(precision, device)
    trt = _tensorrt()
    if not cuda_available(device):
        raise FrontierError(f"device: TensorRT needs a CUDA device but got {device!r} "
                            f"(torch sees {torch.cuda.device_count()} GPUs)")
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FrontierError(f"latency: ONNX file '{onnx_path}' does not exist")
    with torch.cuda.device(device), torch.no_grad(), torch_threads(threads), gpu_lock(device):
        built = build_engine(onnx_path, batches=batches, sparse_weights=sparse_weights,
                             cache_file=_cache_file(trt, cache_dir, device), workspace_mb=workspace_mb)
        runner = EngineRunner(built.engine, device, profile=0)
        runner.check_precision(precision, onnx_path)
        call = runner.bind(batch_size, seed)
        times = cuda_times(call, runner.stream, warmup, runs)
        e2e = _end_to_end(runner, batch_size, seed, warmup, runs) if end_to_end else (None, None)
        throughput = float("nan")
        if len(batches) > 1:
            big = EngineRunner(built.engine, device, profile=1)
            call = big.bind(batches[1], seed)
            throughput = batches[1] * 1000.0 / summarize(cuda_times(call, big.stream, warmup, runs))[0]
    return Latency.from_times(
        times, batch_size=batch_size, threads=threads, warmup=warmup, backend="tensorrt",
        throughput_ips=throughput, throughput_batch=batches[-1], e2e=e2e, providers=(),
        precision=recorded_precision(precision, built.tf32_cleared, torch.cuda.get_device_capability(device)),
        device=torch.cuda.get_device_name(device), clock=CUDA_EVENTS, sparse_weights=built.sparse_weights,
    )


@dataclass(frozen=True)
class BuiltEngine:
    """What :func:`build_engine` built.

    Args:
        engine: the deserialized ``ICudaEngine``.
        batches: the batch of each optimisation profile, in profile order.
        sparse_weights: ``BuilderFlag.SPARSE_WEIGHTS`` was set.
        tf32_cleared: ``BuilderFlag.TF32`` was cleared (False: this TensorRT has no such flag).
    """

    engine: Any
    batches: tuple[int, ...]
    sparse_weights: bool
    tf32_cleared: bool


def build_engine(onnx_path: Path, *, batches: Sequence[int], sparse_weights: bool,
                 cache_file: Path | None, workspace_mb: int = WORKSPACE_MB) -> BuiltEngine:
    """Build an engine for ``onnx_path`` with one fixed optimisation profile per batch of
    ``batches`` (profile ``i`` runs batch ``batches[i]`` only; see :func:`batch_profiles`), TF32
    cleared where the flag exists, ``SPARSE_WEIGHTS`` when asked for and available.

    The timing cache is read from ``cache_file`` when it exists and written back (atomically,
    merged with what another build wrote meanwhile) after the build; None: no timing cache.

    Raises:
        FrontierError: no batch, a file TensorRT cannot parse or with a fixed batch, or a build
            that fails.
    """
    if not batches:
        raise FrontierError("batches must name at least one batch but got none")
    trt = _tensorrt()
    builder = trt.Builder(_logger())
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, _logger())
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise FrontierError(f"tensorrt: cannot parse '{onnx_path}': {errors or 'no parser error recorded'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None:
        config.clear_flag(tf32)
    flag = getattr(trt.BuilderFlag, "SPARSE_WEIGHTS", None)
    sparse = bool(sparse_weights and flag is not None)
    if sparse:
        config.set_flag(flag)
    for batch in batches:
        config.add_optimization_profile(_profile(builder, network, batch, onnx_path))
    _load_timing_cache(config, cache_file)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise FrontierError(f"tensorrt: building an engine from '{onnx_path}' failed (TensorRT logged why)")
    if cache_file is not None:
        _save_timing_cache(config, cache_file)
    engine = trt.Runtime(_logger()).deserialize_cuda_engine(plan)
    if engine is None:
        raise FrontierError(f"tensorrt: the engine built from '{onnx_path}' does not deserialize")
    return BuiltEngine(engine=engine, batches=tuple(batches), sparse_weights=sparse, tf32_cleared=tf32 is not None)


class EngineRunner:
    """An execution context of ``engine`` on its own torch stream, on optimisation profile
    ``profile``, bound to torch CUDA tensors.

    Args:
        engine: an ``ICudaEngine`` with one input and one output.
        device: the CUDA device the tensors live on.
        profile: the optimisation profile the context runs (a new context starts on profile 0;
            another is selected with ``set_optimization_profile_async`` on the runner's stream).
    """

    def __init__(self, engine: Any, device: str, profile: int = 0) -> None:
        trt = _tensorrt()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise FrontierError(f"tensorrt: expected one input and one output but the engine has {names}")
        if not 0 <= profile < engine.num_optimization_profiles:
            raise FrontierError(f"profile must be in 0..{engine.num_optimization_profiles - 1} but got {profile!r}")
        self.engine, self.device = engine, device
        self.input, self.output = inputs[0], outputs[0]
        self.context = engine.create_execution_context()
        if self.context is None:
            raise FrontierError("tensorrt: cannot create an execution context (TensorRT logged why)")
        self.stream = torch.cuda.Stream(device)
        if profile != 0:
            if not self.context.set_optimization_profile_async(profile, self.stream.cuda_stream):
                raise FrontierError(f"tensorrt: the engine refuses optimisation profile {profile}")
            self.stream.synchronize()
        self.profile = profile
        self.x: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def dtype(self, name: str) -> torch.dtype:
        """The torch type of I/O tensor ``name``."""
        trt = _tensorrt()
        types = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16}
        kind = self.engine.get_tensor_dtype(name)
        if kind not in types:
            raise FrontierError(f"tensorrt: tensor '{name}' has type {kind}; only float32 and float16 are timed")
        return types[kind]

    def check_precision(self, precision: str, onnx_path: Path) -> None:
        """Raise :class:`FrontierError` unless the engine's input type is ``precision``'s."""
        expected = torch.float16 if precision == "fp16" else torch.float32
        if self.dtype(self.input) != expected:
            raise FrontierError(f"precision: {precision} asked for, but '{onnx_path}' takes {self.dtype(self.input)} "
                                f"(export FP16 with export_onnx(..., half=True))")

    def bind(self, batch: int, seed: int) -> Any:
        """Bind a seeded random input of ``batch`` images and an output; returns the call that
        enqueues one inference on :attr:`stream`."""
        shape = (batch, *tuple(self.engine.get_tensor_shape(self.input))[1:])
        if not self.context.set_input_shape(self.input, shape):
            raise FrontierError(f"tensorrt: the engine refuses input shape {shape}")
        with torch.cuda.stream(self.stream):
            noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
            self.x = noise.to(device=self.device, dtype=self.dtype(self.input))
            out_shape = tuple(self.context.get_tensor_shape(self.output))
            self.y = torch.empty(out_shape, device=self.device, dtype=self.dtype(self.output))
        self.stream.synchronize()
        if not (self.context.set_tensor_address(self.input, self.x.data_ptr())
                and self.context.set_tensor_address(self.output, self.y.data_ptr())):
            raise FrontierError("tensorrt: the engine refuses the addresses of its input and output tensors")
        return self.execute

    def execute(self) -> torch.Tensor:
        """Enqueue one inference on :attr:`stream`; returns the (not yet ready) output tensor."""
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise FrontierError("tensorrt: execute_async_v3 failed (TensorRT logged why)")
        return self.y


def _end_to_end(runner: EngineRunner, batch: int, seed: int, warmup: int, runs: int) -> tuple[float, float]:
    images = EncodedImages(tuple(runner.x.shape[1:]), seed=seed)

    def request() -> torch.Tensor:
        runner.x.copy_(images(batch))
        return runner.execute().cpu()

    with torch.cuda.stream(runner.stream):
        return summarize(wall_times(request, warmup, runs))


def _profile(builder: Any, network: Any, batch: int, onnx_path: Path) -> Any:
    """A fixed optimisation profile: the input's batch dimension is ``batch`` (min = opt = max)."""
    tensor = network.get_input(0)
    dims = tuple(tensor.shape)
    if dims[0] != -1:
        raise FrontierError(f"tensorrt: '{onnx_path}' has a fixed batch of {dims[0]}; export it with a dynamic batch")
    shape = (batch, *dims[1:])
    profile = builder.create_optimization_profile()
    profile.set_shape(tensor.name, shape, shape, shape)
    return profile


def _network_flags(trt: Any) -> int:
    """Strongly typed where the flag exists (TensorRT 10; TensorRT 11 ignores it and always is)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _cache_file(trt: Any, cache_dir: str | Path | None, device: str) -> Path | None:
    """One timing cache per TensorRT version and GPU model: caches do not carry across either."""
    if cache_dir is None:
        return None
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", torch.cuda.get_device_name(device)).strip("-")
    return Path(cache_dir) / f"tensorrt-{trt.__version__}-{gpu}.timing-cache"


def _load_timing_cache(config: Any, cache_file: Path | None) -> None:
    """Attach the cache in ``cache_file`` (or an empty one); a cache TensorRT refuses starts empty."""
    if cache_file is None:
        return
    data = cache_file.read_bytes() if cache_file.is_file() else b""
    try:
        cache = config.create_timing_cache(data)
        if config.set_timing_cache(cache, ignore_mismatch=False):
            return
    except Exception:  # a truncated or foreign cache file: rebuild it
        pass
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: Any, cache_file: Path) -> None:
    """Write the build's timing cache to ``cache_file``, merged with what another trial's build
    wrote there meanwhile (the write replaces the file, so without the merge the last build to
    finish would drop the other's entries); a file that does not merge is overwritten."""
    cache = config.get_timing_cache()
    if cache_file.is_file():
        try:
            cache.combine(config.create_timing_cache(cache_file.read_bytes()), False)
        except Exception:  # a truncated or foreign cache file
            pass
    atomic_write(cache_file, bytes(memoryview(cache.serialize())))


def _tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`FrontierError` saying how to install it (not installed)
    or why the installed one cannot be used (:func:`~._choice.check_tensorrt`)."""
    if not tensorrt_available():
        raise FrontierError(f"backend: 'tensorrt' was asked for, but {tensorrt_problem(True, False)}")
    import tensorrt

    return tensorrt


@functools.cache
def _logger() -> Any:
    trt = _tensorrt()
    return trt.Logger(trt.Logger.ERROR)
