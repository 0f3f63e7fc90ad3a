"""Early-stopping boundary measurements time a model as the plan's benchmark step would: every
field of its BenchmarkConfig reaches measure() (only warm-up, runs and end-to-end are shortened),
with the run's TensorRT timing cache; each comes with its rung and its noise."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from tests.conftest import SOURCE, TARGET
from trainables import BenchmarkConfig, Context, DenseConfig, TransferConfig, make_plan
from trainables.errors import FrontierError
from trainables.measure.metrics import measure
from trainables.models import SmallResNet
from trainables.pipeline.boundary import PREFIX, measure_boundary
from trainables.stages.benchmark import Benchmark

SHORTENED = {"warmup": 1, "runs": 3, "end_to_end": False}
# a value other than the default for every field: a field dropped on the way would come back as its default
NOT_DEFAULT = {
    "batch_size": 2, "threads": 2, "warmup": 7, "runs": 9, "backend": "torch", "precision": "fp16",
    "throughput_batch": 4, "cuda_graphs": True, "end_to_end": False, "workspace_mb": 64, "surgery": False,
}  # fmt: skip


def test_every_benchmark_field_reaches_measure_with_only_the_measurement_shortened() -> None:
    assert set(NOT_DEFAULT) == set(BenchmarkConfig.model_fields), "a new BenchmarkConfig field needs a value here"
    bench = BenchmarkConfig(**NOT_DEFAULT)
    for field, value in NOT_DEFAULT.items():
        assert value != BenchmarkConfig.model_fields[field].default, field
    kwargs = bench.measurement(Path("/runs/r1/trials/t7"), runs=3)
    # the run's timing cache, the one the trial's B stage uses: no full kernel search per boundary
    assert kwargs == {**NOT_DEFAULT, **SHORTENED, "cache_dir": Path("/runs/r1/tensorrt")}
    parameters = inspect.signature(measure).parameters
    assert set(kwargs) <= set(parameters), set(kwargs) - set(parameters)  # every one is a measure() argument
    # B measures with the same mapping, nothing shortened
    assert bench.measurement(Path("/runs/r1/trials/t7")) == {**NOT_DEFAULT, "cache_dir": Path("/runs/r1/tensorrt")}


@pytest.mark.parametrize("runs", [0, -1, 2.0, True])
def test_boundary_runs_must_be_a_positive_integer(runs) -> None:
    with pytest.raises(FrontierError, match=f"runs must be an integer >= 1 but got {runs!r}"):
        BenchmarkConfig().measurement(Path("out"), runs=runs)


def test_a_boundary_is_measured_on_the_cpu_with_the_plan_benchmark(source_splits, tmp_path: Path) -> None:
    bench = BenchmarkConfig(backend="torch", batch_size=2, throughput_batch=3, surgery=False)
    plan = make_plan(order="none", seed=0, source=SOURCE, target=TARGET, benchmark=bench,
                     dense=DenseConfig(model="small_resnet", epochs=1, batch_size=64),
                     transfer=TransferConfig(epochs=1, batch_size=64))
    assert isinstance(plan.benchmark.build(), Benchmark)
    workdir = tmp_path / "run" / "trials" / "t1"
    ctx = Context(SOURCE, TARGET, workdir)
    ctx._loaded["source"] = source_splits
    model = SmallResNet(num_classes=5, widths=(8, 16, 16))
    result = measure_boundary(model, plan, 1, ctx, runs=3)
    assert result["boundary"] == "D" and result["boundary_rung"] == "source:none"
    assert result[PREFIX + "latency_ms"] > 0 and result[PREFIX + "size_bytes"] > 0
    n = len(source_splits.val)  # the noise comes with the measurement: accuracy's binomial error, latency's IQR
    p = result[PREFIX + "accuracy"]
    assert result[PREFIX + "accuracy_n"] == n and result[PREFIX + "accuracy_se"] == pytest.approx((p * (1 - p) / n) ** 0.5)
    assert result[PREFIX + "latency_iqr_ms"] >= 0 and result[PREFIX + "seconds"] > 0
    assert (workdir / "boundary" / "model.onnx").is_file()
    assert not (tmp_path / "run" / "tensorrt").exists()  # torch keeps no timing cache
