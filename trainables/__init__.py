"""Worker-side library: what runs inside a trial (data, models, stages, measurement).

The names most users need, from one place::

    from trainables import Context, DataSpec, Dense, DenseConfig, Transfer, TransferConfig
    from trainables import GradualPrune, GradualConfig, EPrune, EPruningConfig, Benchmark, run_stages

Each name is imported from its submodule on first use (PEP 562), so ``import trainables.errors``
or ``import trainables.files`` loads neither torch nor the rest of the package: the ``frontier``
CLI answers ``--help`` and shows a front without paying torch's start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the submodule that defines it
_SOURCES: dict[str, str] = {
    "CHECKED_ARCHITECTURES": "models", "architecture": "models", "build_model": "models",
    "Benchmark": "stages.benchmark", "BenchmarkConfig": "stages.benchmark",
    "Context": "stage",
    "cluster": "compress.clustering",
    "DataError": "errors", "FrontierError": "errors", "WeightsError": "errors",
    "DataSpec": "data", "Splits": "data", "load_data": "data",
    "Dense": "stages.dense", "DenseConfig": "stages.dense",
    "EPrune": "stages.epruning", "EPruningConfig": "stages.epruning", "energy_loss": "stages.epruning",
    "GradualConfig": "stages.gradual", "GradualPrune": "stages.gradual", "agp_sparsity": "stages.schedule",
    "Plan": "pipeline.plan", "make_plan": "pipeline.plan",
    "Transfer": "stages.transfer", "TransferConfig": "stages.transfer",
    "run_plan": "pipeline.run", "run_stages": "pipeline.run",
}

__all__ = sorted(_SOURCES)

if TYPE_CHECKING:  # what type checkers and editors see; at run time __getattr__ imports on demand
    from .compress.clustering import cluster
    from .data import DataSpec, Splits, load_data
    from .errors import DataError, FrontierError, WeightsError
    from .models import CHECKED_ARCHITECTURES, architecture, build_model
    from .pipeline.plan import Plan, make_plan
    from .pipeline.run import run_plan, run_stages
    from .stage import Context
    from .stages.benchmark import Benchmark, BenchmarkConfig
    from .stages.dense import Dense, DenseConfig
    from .stages.epruning import EPrune, EPruningConfig, energy_loss
    from .stages.gradual import GradualConfig, GradualPrune
    from .stages.schedule import agp_sparsity
    from .stages.transfer import Transfer, TransferConfig


def __getattr__(name: str) -> Any:
    """Import a public name's submodule on first use and keep the name here."""
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{source}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
