"""The torch backend: the model itself, eager on the CPU, eager on a GPU, or as a CUDA-graph replay.

This is the baseline the transfer paper compares TensorRT against (PyTorch on the GPU and on the
CPU). On a GPU each inference runs on a non-default stream and is timed with CUDA events on it;
with ``cuda_graphs`` the forward pass is captured once in a ``torch.cuda.CUDAGraph`` and replayed,
which removes the per-kernel launch cost of eager mode. On the CPU each call is timed on the wall
clock with torch limited to ``threads`` threads.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ._choice import check_precision
from ._images import EncodedImages
from ._timing import CUDA_EVENTS, WALL, Latency, check_counts, cuda_times, summarize, torch_threads, wall_times

Call = Callable[[], torch.Tensor]


def torch_latency(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    *,
    device: str = "cpu",
    precision: str = "fp32",
    batch_size: int = 1,
    threads: int = 1,
    warmup: int = 10,
    runs: int = 50,
    cuda_graphs: bool = False,
    throughput_batch: int | None = None,
    end_to_end: bool = False,
    seed: int = 0,
) -> Latency:
    """Latency of ``model`` run by torch on ``device``; a copy is timed, ``model`` is untouched.

    Example:
        >>> from trainables.models import SmallResNet
        >>> torch_latency(SmallResNet(10), (3, 32, 32), runs=5).backend
        'torch-cpu'

    Args:
        model: the classifier (plain: pruning masks made permanent).
        input_shape: (channels, height, width) of one image.
        device: ``cpu`` or a CUDA device (``cuda``, ``cuda:1``).
        precision: ``fp32``, or ``fp16`` (a GPU only): the copy is cast with ``.half()``.
        batch_size: images per timed inference.
        threads: torch's CPU threads while timing (inference on the CPU, preprocessing on either).
        warmup, runs: untimed and timed runs.
        cuda_graphs: on a GPU, replay a captured CUDA graph instead of running eagerly.
        throughput_batch: batch of separate throughput runs; None: throughput from the latency runs.
        end_to_end: also time PNG decode + preprocessing + copy to the device + inference + logits
            back on the host, on the wall clock.
        seed: seed of the random input and image.

    Raises:
        FrontierError: a bad count, an unknown precision, or fp16 on the CPU.
    """
    check_counts(batch_size=batch_size, threads=threads, warmup=warmup, runs=runs)
    if throughput_batch is not None:
        check_counts(throughput_batch=throughput_batch)
    check_precision(precision, device)
    gpu = device.startswith("cuda")
    dtype = torch.float16 if precision == "fp16" else torch.float32
    net = copy.deepcopy(model).eval().to(device=device, dtype=dtype)
    graphs = cuda_graphs and gpu
    stream = torch.cuda.Stream(device) if gpu else None
    with torch.no_grad(), torch_threads(threads):
        call, x = _prepare(net, (batch_size, *input_shape), dtype, stream, graphs, seed)
        times = _time(call, stream, warmup, runs)
        throughput = float("nan")
        if throughput_batch not in (None, batch_size):
            big, _ = _prepare(net, (throughput_batch, *input_shape), dtype, stream, graphs, seed)
            throughput = throughput_batch * 1000.0 / summarize(_time(big, stream, warmup, runs))[0]
        e2e = _end_to_end(call, x, input_shape, stream, seed, warmup, runs) if end_to_end else (None, None)
    return Latency.from_times(
        times, batch_size=batch_size, threads=threads, warmup=warmup,
        backend="torch-cuda-graph" if graphs else ("torch-cuda" if gpu else "torch-cpu"),
        throughput_ips=throughput, throughput_batch=throughput_batch, e2e=e2e, providers=(), precision=precision,
        device=torch.cuda.get_device_name(device) if gpu else "cpu", clock=CUDA_EVENTS if gpu else WALL,
    )


def _prepare(net: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, stream: torch.cuda.Stream | None,
             graphs: bool, seed: int) -> tuple[Call, torch.Tensor]:
    """One inference on a fixed random input, as a call, and that input (refilled end-to-end)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    if stream is None:
        return (lambda: net(x)), x
    # net's weights were copied and cast on the device's current stream: order ``stream`` after them
    stream.wait_stream(torch.cuda.current_stream(stream.device))
    with torch.cuda.stream(stream):
        x = x.to(stream.device)
        stream.synchronize()
        return (_capture(net, x, stream) if graphs else (lambda: net(x))), x


def _capture(net: nn.Module, x: torch.Tensor, stream: torch.cuda.Stream) -> Call:
    """``net(x)`` captured as a CUDA graph on ``stream``; the call replays it and returns its output."""
    with torch.cuda.stream(stream):
        for _ in range(3):  # torch asks for warm-up on the capturing stream before a capture
            net(x)
    stream.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        out = net(x)

    def replay() -> torch.Tensor:
        graph.replay()
        return out

    return replay


def _time(call: Call, stream: torch.cuda.Stream | None, warmup: int, runs: int) -> np.ndarray:
    return wall_times(call, warmup, runs) if stream is None else cuda_times(call, stream, warmup, runs)


def _end_to_end(call: Call, x: torch.Tensor, input_shape: tuple[int, int, int], stream: torch.cuda.Stream | None,
                seed: int, warmup: int, runs: int) -> tuple[float, float]:
    """Wall time of decode + preprocess + copy into ``x`` + ``call`` + logits to the host."""
    images = EncodedImages(input_shape, seed=seed)

    def request() -> torch.Tensor:
        x.copy_(images(x.shape[0]))
        return call().cpu()

    if stream is None:
        return summarize(wall_times(request, warmup, runs))
    with torch.cuda.stream(stream):
        return summarize(wall_times(request, warmup, runs))
