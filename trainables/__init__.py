"""Worker-side library: what runs inside a trial (data, models, stages, measurement).

The names most users need, from one place::

    from trainables import Context, DataSpec, Dense, DenseConfig, Transfer, TransferConfig
    from trainables import GradualPrune, GradualConfig, EPrune, EPruningConfig, Benchmark, run_stages
"""

from .benchmark import Benchmark, BenchmarkConfig
from .data import DataSpec, Splits, load_data
from .dense import Dense, DenseConfig
from .epruning import EPrune, EPruningConfig, energy_loss
from .errors import DataError, FrontierError, WeightsError
from .gradual import GradualConfig, GradualPrune, agp_sparsity
from .models import ARCHITECTURES, build_model
from .pipeline import run_plan, run_stages
from .plan import Plan, make_plan
from .stage import Context
from .transfer import Transfer, TransferConfig

__all__ = [
    "ARCHITECTURES", "Benchmark", "BenchmarkConfig", "Context", "DataError", "DataSpec", "Dense", "DenseConfig",
    "EPrune", "EPruningConfig", "FrontierError", "GradualConfig", "GradualPrune", "Plan", "Splits", "Transfer",
    "TransferConfig", "WeightsError", "agp_sparsity", "build_model", "energy_loss", "load_data", "make_plan",
    "run_plan", "run_stages",
]
