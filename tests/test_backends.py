"""Latency backends: which one is chosen, the clear error when TensorRT is asked for and missing
(worker side and `frontier check`), and honest records from the CPU backends. TensorRT and CUDA
tests are marked `gpu` and skipped, with the reason, where there is no GPU or no TensorRT."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import yaml
from pydantic import ValidationError
from torch import nn

from search.cli import main
from search.results import trial_row
from search.spec import Budgets
from search.to_plan import apply_overrides
from tests.conftest import TARGET
from trainables.errors import FrontierError
from trainables.measure import backends
from trainables.measure.backends import (
    EncodedImages,
    Latency,
    choose_backend,
    has_2to4_sparsity,
    onnx_latency,
    resolve_backend,
    tensorrt_latency,
    torch_latency,
)
from trainables.measure.metrics import export_onnx, measure
from trainables.models import SmallResNet
from trainables.stage import Context
from trainables.stages.benchmark import Benchmark, BenchmarkConfig, timing_cache_dir

SHAPE = (3, 32, 32)
FAST = {"warmup": 1, "runs": 5}
QUICKSTART = Path(__file__).resolve().parent.parent / "spaces" / "quickstart.yaml"
NOT_INSTALLED = "tensorrt is not installed (pip install 'frontier[tensorrt]')"
RECORD_KEYS = {
    "latency_ms", "latency_p90_ms", "latency_batch", "latency_threads", "latency_backend", "latency_precision",
    "latency_device", "latency_clock", "latency_sparse_weights", "throughput_ips", "throughput_batch",
    "latency_iqr_ms",
}  # fmt: skip
E2E_KEYS = {"latency_e2e_ms", "latency_e2e_p90_ms"}


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNet(num_classes=5, widths=(8, 16, 16)).eval()


@pytest.fixture()
def no_tensorrt(monkeypatch: pytest.MonkeyPatch):
    """Make `import tensorrt` fail in this process, as on a machine without the extra."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    backends.tensorrt_available.cache_clear()
    yield
    backends.tensorrt_available.cache_clear()


# --- choice -------------------------------------------------------------------------------------

CASES = [  # requested, cuda, tensorrt -> (engine, device) or the error's text
    ("auto", False, False, ("onnxruntime", "cpu")),
    ("auto", False, True, ("onnxruntime", "cpu")),
    ("auto", True, False, ("torch", "cuda")),
    ("auto", True, True, ("tensorrt", "cuda")),
    ("tensorrt", False, False, f"{NOT_INSTALLED} and no CUDA GPU is visible"),
    ("tensorrt", False, True, "tensorrt needs a CUDA GPU but none is visible"),
    ("tensorrt", True, False, NOT_INSTALLED),
    ("tensorrt", True, True, ("tensorrt", "cuda")),
    ("torch", False, False, ("torch", "cpu")),
    ("torch", False, True, ("torch", "cpu")),
    ("torch", True, False, ("torch", "cuda")),
    ("torch", True, True, ("torch", "cuda")),
    ("onnxruntime", False, False, ("onnxruntime", "cpu")),
    ("onnxruntime", False, True, ("onnxruntime", "cpu")),
    ("onnxruntime", True, False, ("onnxruntime", "cpu")),
    ("onnxruntime", True, True, ("onnxruntime", "cpu")),
]


@pytest.mark.parametrize(("requested", "cuda", "trt", "expected"), CASES)
def test_choose_backend_every_case(requested: str, cuda: bool, trt: bool, expected) -> None:
    if isinstance(expected, tuple):
        assert choose_backend(requested, cuda_available=cuda, tensorrt_available=trt) == expected
    else:
        with pytest.raises(FrontierError) as err:
            choose_backend(requested, cuda_available=cuda, tensorrt_available=trt)
        assert str(err.value) == f"backend: 'tensorrt' was asked for, but {expected}"


def test_choose_backend_refuses_an_unknown_name() -> None:
    expected = "backend must be one of auto, tensorrt, torch, onnxruntime but got 'tflite'"
    with pytest.raises(FrontierError, match=expected):
        choose_backend("tflite", cuda_available=True, tensorrt_available=True)


def test_resolve_backend_uses_a_gpu_only_when_the_trial_has_one() -> None:
    assert resolve_backend("auto", "fp32", "cpu") == ("onnxruntime", "cpu")
    assert resolve_backend("torch", "fp32", "cpu") == ("torch", "cpu")
    expected = "precision: fp16 is timed on a CUDA GPU only, but this model is timed on 'cpu'"
    with pytest.raises(FrontierError, match=expected):
        resolve_backend("auto", "fp16", "cpu")
    with pytest.raises(FrontierError, match="precision must be one of fp32, fp16 but got 'int8'"):
        resolve_backend("torch", "int8", "cpu")


# --- TensorRT missing: the worker's error ---------------------------------------------------------

def test_measure_with_tensorrt_missing_is_a_clear_error_and_writes_nothing(no_tensorrt, tmp_path: Path) -> None:
    out = tmp_path / "trial"
    with pytest.raises(FrontierError) as err:
        measure(small_model(), SHAPE, out, backend="tensorrt", **FAST)
    assert str(err.value).startswith(f"backend: 'tensorrt' was asked for, but {NOT_INSTALLED}")
    assert "\n" not in str(err.value) and not out.exists()


def test_tensorrt_latency_with_tensorrt_missing_says_how_to_install(no_tensorrt, tmp_path: Path) -> None:
    with pytest.raises(FrontierError) as err:  # before it looks for the file
        tensorrt_latency(tmp_path / "m.onnx", device="cuda", **FAST)
    assert str(err.value).startswith(f"backend: 'tensorrt' was asked for, but {NOT_INSTALLED}: ModuleNotFoundError")


def test_benchmark_stage_with_tensorrt_missing_fails_the_trial_cleanly(no_tensorrt, target_splits,
                                                                        tmp_path: Path) -> None:
    ctx = Context(None, TARGET, tmp_path / "trials" / "t1")
    ctx._loaded["target"] = target_splits
    with pytest.raises(FrontierError) as err:
        Benchmark(BenchmarkConfig(backend="tensorrt", **FAST)).run(small_model(), ctx)
    assert str(err.value).startswith(f"backend: 'tensorrt' was asked for, but {NOT_INSTALLED}")
    assert not (tmp_path / "trials").exists()


# --- TensorRT missing: `frontier check` / `frontier run` -------------------------------------------

def write_spec(tmp_path: Path, benchmark: dict, gpu: float = 0, space: dict | None = None) -> Path:
    spec = yaml.safe_load(QUICKSTART.read_text())
    spec["budgets"]["benchmark"].update(benchmark)
    spec["resources"]["gpu"] = gpu
    spec["space"].update(space or {})
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def errors(capsys: pytest.CaptureFixture) -> list[str]:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return captured.err.strip().splitlines()


@pytest.mark.parametrize("command", ["check", "run"])
def test_check_names_the_key_when_tensorrt_is_not_here(command: str, no_tensorrt, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    spec = write_spec(tmp_path, {"backend": "tensorrt"}, gpu=0)
    runs = tmp_path / "runs"
    assert main([command, str(spec)] + (["--runs", str(runs)] if command == "run" else [])) == 2
    lines = errors(capsys)
    assert "frontier: budgets.benchmark.backend: tensorrt needs a GPU per trial but resources.gpu is 0" in lines
    local = [line for line in lines if line.startswith(f"frontier: budgets.benchmark.backend: {NOT_INSTALLED}")]
    assert len(local) == 1 and len(lines) == 2, lines
    assert not runs.exists()


def test_check_skips_the_local_tensorrt_check_with_an_address(no_tensorrt, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    spec = write_spec(tmp_path, {"backend": "tensorrt"}, gpu=1)
    assert main(["check", str(spec), "--address", "auto"]) == 0  # the cluster's GPU workers may have it
    assert "ok (12 trials" in capsys.readouterr().out
    assert main(["check", str(spec)]) == 2  # here, without TensorRT
    lines = errors(capsys)
    assert any(line.startswith(f"frontier: budgets.benchmark.backend: {NOT_INSTALLED}") for line in lines), lines
    gpu_lines = [line for line in lines if line.startswith("frontier: resources.gpu:")]
    assert len(gpu_lines) == (torch.cuda.device_count() < 1) and len(lines) == 1 + len(gpu_lines), lines


def test_check_finds_tensorrt_and_fp16_in_the_space(no_tensorrt, tmp_path: Path, capsys) -> None:
    space = {"benchmark.backend": {"choice": ["torch", "tensorrt"]},
             "benchmark.precision": {"choice": ["fp32", "fp16"]},
             "quantize": {"choice": ["none", "Q"]}}  # no INT8, whose own check would also refuse torch
    spec = write_spec(tmp_path, {}, gpu=0, space=space)
    assert main(["check", str(spec), "--address", "auto"]) == 2
    assert errors(capsys) == [
        "frontier: space.benchmark.backend: tensorrt needs a GPU per trial but resources.gpu is 0",
        "frontier: space.benchmark.precision: fp16 is timed on a GPU only but resources.gpu is 0",
    ]


def test_spec_refuses_fp16_on_onnxruntime(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, {"backend": "onnxruntime", "precision": "fp16"}, gpu=1)
    assert main(["check", str(spec), "--address", "auto"]) == 2
    (line,) = errors(capsys)
    assert line.startswith("frontier: budgets.benchmark") and "fp16 is timed on a GPU only" in line


def test_benchmark_config_defaults_keep_the_cpu_behaviour_and_are_searchable() -> None:
    cfg = BenchmarkConfig()
    assert (cfg.backend, cfg.precision, cfg.batch_size, cfg.threads) == ("auto", "fp32", 1, 1)
    assert cfg.throughput_batch is None
    assert cfg.cuda_graphs is False
    budgets = apply_overrides(Budgets(), {"benchmark.backend": "torch", "benchmark.throughput_batch": 32})
    assert (budgets.benchmark.backend, budgets.benchmark.throughput_batch) == ("torch", 32)
    with pytest.raises(ValidationError):
        BenchmarkConfig(backend="tflite")


# --- CPU backends: honest records ------------------------------------------------------------------

def check_record(metrics: dict, backend: str, batch: int, throughput_batch: int) -> None:
    assert RECORD_KEYS | E2E_KEYS <= set(metrics)
    for key in ("latency_ms", "latency_p90_ms", "throughput_ips", "latency_e2e_ms", "latency_e2e_p90_ms"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, (key, metrics[key])
    assert metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert 0 <= metrics["latency_iqr_ms"] <= metrics["latency_p90_ms"]  # the spread over the timed runs
    assert metrics["latency_e2e_ms"] <= metrics["latency_e2e_p90_ms"]
    assert metrics["latency_backend"] == backend
    assert metrics["latency_precision"] == "fp32"
    assert (metrics["latency_device"], metrics["latency_clock"]) == ("cpu", "wall")
    assert (metrics["latency_batch"], metrics["latency_threads"]) == (batch, 1)
    assert metrics["throughput_batch"] == throughput_batch and metrics["latency_sparse_weights"] == 0


def test_throughput_defaults_to_the_latency_batch() -> None:
    latency = torch_latency(small_model(), SHAPE, batch_size=2, **FAST)
    assert latency.throughput_batch == 2
    assert latency.throughput_ips == pytest.approx(2 * 1000 / latency.median_ms)
    assert latency.e2e_median_ms is None and "latency_e2e_ms" not in latency.metrics()


def test_onnx_latency_end_to_end_and_throughput(tmp_path: Path) -> None:
    path = export_onnx(small_model(), tmp_path / "m.fp16.onnx", SHAPE, half=True)
    graph = onnx.load(str(path)).graph  # the half-precision export TensorRT builds FP16 engines from
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    latency = onnx_latency(path, batch_size=2, throughput_batch=3, end_to_end=True, **FAST)
    assert latency.throughput_batch == 3 and latency.throughput_ips > 0
    assert 0 < latency.e2e_median_ms <= latency.e2e_p90_ms
    assert latency.providers == ("CPUExecutionProvider",)


def test_torch_cpu_records_what_it_measured() -> None:
    latency = torch_latency(small_model(), SHAPE, batch_size=2, throughput_batch=4, end_to_end=True, **FAST)
    check_record(latency.metrics(), "torch-cpu", batch=2, throughput_batch=4)
    assert latency.providers == () and (latency.runs, latency.warmup) == (5, 1)


def test_torch_cpu_restores_the_thread_count_and_leaves_the_model_alone() -> None:
    model = small_model()
    before = torch.get_num_threads()
    torch_latency(model, SHAPE, threads=1, end_to_end=True, **FAST)
    assert torch.get_num_threads() == before
    assert next(model.parameters()).dtype == torch.float32 and not model.training


@pytest.mark.parametrize(("backend", "name"), [("auto", "onnxruntime-cpu"), ("torch", "torch-cpu")])
def test_benchmark_stage_reports_the_record(backend: str, name: str, target_splits, tmp_path: Path) -> None:
    workdir = tmp_path / "run" / "trials" / "t1"
    ctx = Context(None, TARGET, workdir)
    ctx._loaded["target"] = target_splits
    cfg = BenchmarkConfig(backend=backend, throughput_batch=4, **FAST)
    _, metrics = Benchmark(cfg, nominal_sparsity=0.5).run(small_model(), ctx)
    check_record(metrics, name, batch=1, throughput_batch=4)
    assert metrics["sparsity"] == 0.5 and 0 <= metrics["real_sparsity"] < 0.5
    row = trial_row("t1", {"pipeline": "B"}, metrics, None)  # trials.csv has a column for every key
    assert {k: row[k] for k in RECORD_KEYS | E2E_KEYS} == {k: metrics[k] for k in RECORD_KEYS | E2E_KEYS}
    assert (workdir / "model.h5").is_file() and not (tmp_path / "run" / "tensorrt").exists()


def test_timing_cache_lives_in_the_run_folder(tmp_path: Path) -> None:
    assert timing_cache_dir(tmp_path / "run" / "trials" / "t1") == tmp_path / "run" / "tensorrt"
    assert timing_cache_dir(tmp_path / "run" / "final" / "t1") == tmp_path / "run" / "tensorrt"
    assert timing_cache_dir(tmp_path / "out") == tmp_path / "out" / "tensorrt"


def test_latency_metrics_flatten_the_record() -> None:
    latency = Latency(median_ms=2.0, p90_ms=3.0, batch_size=1, threads=4, runs=9, warmup=1, backend="tensorrt",
                      precision="fp16", device="GPU", clock="cuda-events", throughput_ips=800.0, throughput_batch=8,
                      e2e_median_ms=5.0, e2e_p90_ms=6.0, sparse_weights=True, iqr_ms=0.4)
    assert latency.metrics() == {
        "latency_ms": 2.0, "latency_p90_ms": 3.0, "latency_batch": 1, "latency_threads": 4,
        "latency_backend": "tensorrt", "latency_precision": "fp16", "latency_device": "GPU",
        "latency_clock": "cuda-events", "latency_sparse_weights": 1, "throughput_ips": 800.0,
        "throughput_batch": 8, "latency_e2e_ms": 5.0, "latency_e2e_p90_ms": 6.0, "latency_iqr_ms": 0.4,
    }  # fmt: skip


# --- pieces of the TensorRT path that need no GPU ------------------------------------------------

def test_2to4_sparsity_is_detected_per_run_of_four_input_channels() -> None:
    linear = nn.Linear(8, 3)
    assert not has_2to4_sparsity(nn.Sequential(linear))  # dense
    with torch.no_grad():
        linear.weight.mul_(torch.tensor([1.0, 0, 1, 0, 0, 0, 1, 1]))  # 2 of every 4 kept
    assert has_2to4_sparsity(nn.Sequential(linear))
    with torch.no_grad():
        linear.weight[1, 1] = 1.0  # one run of four with 3 nonzeros
    assert not has_2to4_sparsity(nn.Sequential(linear))
    conv = nn.Conv2d(4, 2, 3)
    with torch.no_grad():
        conv.weight[:, 2:] = 0  # input channels 2, 3 zero at every kernel position
    assert has_2to4_sparsity(nn.Sequential(conv))
    odd = nn.Linear(6, 2)
    with torch.no_grad():
        odd.weight.zero_()
    assert not has_2to4_sparsity(nn.Sequential(odd))  # 6 input features: not runs of four


def test_encoded_images_decode_to_normalised_batches() -> None:
    images = EncodedImages(SHAPE, seed=3)
    assert images.png.dtype == torch.uint8 and images.png[:4].tolist() == [0x89, ord("P"), ord("N"), ord("G")]
    batch = images(2)
    assert batch.shape == (2, *SHAPE) and batch.dtype == torch.float32
    assert torch.equal(batch[0], batch[1])  # the same image decoded twice
    assert -2.2 < float(batch.min()) and float(batch.max()) < 2.7  # ImageNet-normalised [0, 1]
    with pytest.raises(FrontierError, match="input_shape"):
        EncodedImages((4, 32, 32))


# --- on a GPU ------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize(("graphs", "precision"), [(False, "fp32"), (True, "fp32"), (True, "fp16")])
def test_torch_on_the_gpu_times_with_cuda_events(graphs: bool, precision: str) -> None:
    latency = torch_latency(small_model(), SHAPE, device="cuda", precision=precision, cuda_graphs=graphs,
                            throughput_batch=16, end_to_end=True, **FAST)
    assert latency.backend == ("torch-cuda-graph" if graphs else "torch-cuda")
    assert latency.clock == "cuda-events" and latency.device == torch.cuda.get_device_name()
    assert 0 < latency.median_ms <= latency.p90_ms and latency.precision == precision
    assert 0 < latency.e2e_median_ms <= latency.e2e_p90_ms and latency.throughput_ips > 0


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_builds_times_and_keeps_a_timing_cache(precision: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs the tensorrt extra: pip install 'frontier[tensorrt]'")
    backends.tensorrt_available.cache_clear()
    metrics = measure(small_model(), SHAPE, tmp_path / "trials" / "t1", backend="auto", precision=precision,
                      device="cuda", throughput_batch=16, cache_dir=tmp_path / "tensorrt", **FAST)
    assert metrics["latency_backend"] == "tensorrt" and metrics["latency_precision"] == precision
    assert metrics["latency_clock"] == "cuda-events" and metrics["throughput_batch"] == 16
    assert 0 < metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert 0 < metrics["latency_e2e_ms"] <= metrics["latency_e2e_p90_ms"]
    assert len(list((tmp_path / "tensorrt").glob("*.timing-cache"))) == 1


@pytest.mark.gpu
@needs_cuda
def test_tensorrt_engine_outputs_match_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs the tensorrt extra: pip install 'frontier[tensorrt]'")
    import onnxruntime as ort

    from trainables.measure.backends import EngineRunner, build_engine

    path = export_onnx(small_model(), tmp_path / "m.onnx", SHAPE)
    engine, _ = build_engine(path, opt_batch=2, max_batch=2, sparse_weights=False, cache_file=None)
    runner = EngineRunner(engine, "cuda")
    runner.bind(2, seed=0)
    with torch.cuda.stream(runner.stream):
        got = runner.execute().cpu().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"input": runner.x.cpu().numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-2, rtol=1e-2)
