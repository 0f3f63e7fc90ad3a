"""``frontier check``: the spec validates, the files it names are there, and on the local machine
a trial's resources fit (Ray would otherwise wait forever for a CPU or GPU that never comes)."""

from __future__ import annotations

import os
from pathlib import Path

from trainables.data import check_root
from trainables.errors import FrontierError

from .spec import Spec, SpecError, load_spec


def check_spec(path: str | Path, address: str | None = None) -> Spec:
    """Load ``path`` and check its data roots, weights file and, for a local run (no ``address``),
    that one trial's resources fit this machine; raises :class:`SpecError` listing problems."""
    spec = load_spec(path)
    problems = [] if address else local_resource_problems(spec)
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
    return problems
