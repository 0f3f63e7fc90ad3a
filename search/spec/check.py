"""``frontier check``: the spec validates, the files it names are there, the latency backend it
asks for can run, and on the local machine a trial's resources fit (Ray would otherwise wait forever
for a CPU or GPU that never comes) and TensorRT is there when the spec asks for it."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.data import check_root
from trainables.errors import FrontierError
from trainables.measure.backends import tensorrt_available, tensorrt_problem

from .load import load_spec
from .problems import reachable_values
from .schema import Spec, SpecError


def check_spec(path: str | Path, address: str | None = None) -> Spec:
    """Load ``path`` and check its data roots, weights file, that its latency backend has a GPU
    where it needs one and, for a local run (no ``address``: cluster workers may differ from this
    machine), that one trial's resources fit this machine and TensorRT runs here if asked for;
    raises :class:`SpecError` listing problems."""
    spec = load_spec(path)
    problems = backend_problems(spec)
    if not address:
        problems += local_resource_problems(spec) + local_backend_problems(spec)
    for domain in ("source", "target"):
        data = getattr(spec.data, domain)
        if data is None:
            continue
        try:
            check_root(data)
        except FrontierError as exc:  # its message starts "data.<field>:"; say which dataset
            message = str(exc)
            problems.append(f"data.{domain}.{message[5:]}" if message.startswith("data.") else f"data.{domain}: {message}")
    weights = spec.model.weights
    if weights and not weights.startswith("torchvision:") and not Path(weights).expanduser().is_file():
        problems.append(f"model.weights: file '{weights}' does not exist")
    if problems:
        raise SpecError(problems)
    return spec


def local_resource_problems(spec: Spec) -> list[str]:
    """Resources one trial asks for that this machine does not have."""
    import torch

    problems = []
    cpus, gpus = os.cpu_count() or 1, torch.cuda.device_count()
    if spec.resources.cpu > cpus:
        problems.append(f"resources.cpu: each trial asks for {spec.resources.cpu:g} CPUs but this machine has "
                        f"{cpus}; lower it, or run on a cluster with --address")
    if spec.resources.gpu > gpus:
        problems.append(f"resources.gpu: each trial asks for {spec.resources.gpu:g} GPUs but this machine has "
                        f"{gpus}; lower it, or run on a cluster with --address")
    if not problems:
        problems += _actor_pool_problems(spec, cpus, gpus)
    return problems


def _actor_pool_problems(spec: Spec, cpus: int, gpus: int) -> list[str]:
    """An EPruning actor pool whose bundles, with the trial's own, exceed this machine."""
    if "actors" not in {value for _, value in reachable_values(spec, "prune.epruning.evaluator")}:
        return []
    pool = spec.budgets.prune.epruning
    need_cpu = spec.resources.cpu + pool.actors * pool.actor_cpus
    need_gpu = spec.resources.gpu + pool.actors * pool.actor_gpus
    if need_cpu > cpus or need_gpu > gpus:
        return [f"budgets.prune.epruning.actors: a trial with its {pool.actors} EPruning actors asks for "
                f"{need_cpu:g} CPUs and {need_gpu:g} GPUs but this machine has {cpus} and {gpus}; "
                "use fewer actors, evaluator batched, or a cluster with --address"]
    return []


def benchmark_values(spec: Spec, name: str) -> list[tuple[str, object]]:
    """``(key path, value)`` for each value ``budgets.benchmark.<name>`` can take in a trial."""
    return reachable_values(spec, f"benchmark.{name}")


def backend_problems(spec: Spec) -> list[str]:
    """TensorRT or FP16 asked for while a trial gets no GPU (``resources.gpu: 0``): every such
    trial would fail, on any machine."""
    if spec.resources.gpu > 0:
        return []
    problems = [f"{path}: tensorrt needs a GPU per trial but resources.gpu is 0"
                for path, value in benchmark_values(spec, "backend") if value == "tensorrt"]
    problems += [f"{path}: fp16 is timed on a GPU only but resources.gpu is 0"
                 for path, value in benchmark_values(spec, "precision") if value == "fp16"]
    return problems


def local_backend_problems(spec: Spec) -> list[str]:
    """TensorRT asked for while this machine cannot run it (not installed, or no CUDA GPU)."""
    paths = [path for path, value in benchmark_values(spec, "backend") if value == "tensorrt"]
    if not paths:
        return []
    import torch

    problem = tensorrt_problem(torch.cuda.is_available(), tensorrt_available())
    return [f"{path}: {problem}" for path in paths] if problem else []
