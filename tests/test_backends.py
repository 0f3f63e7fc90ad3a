"""Latency backends: which one is chosen, the clear error when TensorRT is asked for and missing
(worker side and `frontier check`), and honest records from the CPU backends. TensorRT and CUDA
tests are marked `gpu` and skipped, with the reason, where there is no GPU or no TensorRT."""

from __future__ import annotations

import importlib
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
from search.results.rows import trial_row
from search.spec.schema import Budgets
from search.spec.to_plan import apply_overrides
from tests.conftest import TARGET
from trainables.errors import FrontierError
from trainables.measure import backends
from trainables.measure.backends import (
    EncodedImages,
    Latency,
    batch_profiles,
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
NOT_INSTALLED = f"tensorrt is not installed ({backends.INSTALL_HINT})"
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
    assert str(err.value) == f"backend: 'tensorrt' was asked for, but {NOT_INSTALLED}"


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



def test_every_backend_record_is_built_from_its_timed_runs() -> None:
    times = [4.0, 1.0, 3.0, 2.0, 10.0]
    latency = Latency.from_times(times, batch_size=2, threads=1, warmup=3, backend="torch-cpu", e2e=(7.0, 8.0),
                                 providers=())
    assert (latency.median_ms, latency.iqr_ms, latency.runs, latency.warmup) == (3.0, 2.0, 5, 3)
    assert latency.p90_ms == pytest.approx(7.6)  # numpy's linear interpolation between 4 and 10
    assert latency.throughput_batch == 2 and latency.throughput_ips == pytest.approx(2 * 1000 / 3.0)
    assert (latency.e2e_median_ms, latency.e2e_p90_ms, latency.providers) == (7.0, 8.0, ())
    measured = Latency.from_times(times, batch_size=1, threads=1, warmup=0, backend="tensorrt",
                                  throughput_ips=900.0, throughput_batch=16)
    assert (measured.throughput_ips, measured.throughput_batch, measured.e2e_median_ms) == (900.0, 16, None)

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


# --- TensorRT installed but unusable: an error, for auto too -------------------------------------

BROKEN_IMPORT = "libnvinfer.so.10: cannot open shared object file: No such file or directory"


@pytest.fixture()
def fake_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A folder first on sys.path where a test puts a fake ``tensorrt`` package and wheel metadata;
    no ``tensorrt`` module loaded before or after, and tensorrt_available's cache cleared."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    backends.tensorrt_available.cache_clear()
    yield folder
    sys.modules.pop("tensorrt", None)
    backends.tensorrt_available.cache_clear()


def fake_tensorrt(site: Path, body: str, wheels: tuple[str, ...] = ()) -> None:
    """A ``tensorrt`` package in ``site`` whose ``__init__`` runs ``body``, and a dist-info per wheel name."""
    (site / "tensorrt").mkdir()
    (site / "tensorrt" / "__init__.py").write_text(body)
    for name in wheels:
        info = site / f"{name.replace('-', '_')}-10.13.0.dist-info"
        info.mkdir()
        info.joinpath("METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 10.13.0\n")
    importlib.invalidate_caches()


def test_tensorrt_that_is_not_installed_is_not_available(fake_site: Path) -> None:
    assert backends.check_tensorrt("12.8") is False and backends.tensorrt_available() is False


def test_tensorrt_that_does_not_import_is_an_error_naming_the_import_error(fake_site: Path, tmp_path: Path) -> None:
    fake_tensorrt(fake_site, f"raise ImportError({BROKEN_IMPORT!r})\n")
    for check in (lambda: backends.check_tensorrt("13.0"), backends.tensorrt_available,
                  lambda: resolve_backend("tensorrt", "fp32", "cpu"),
                  lambda: measure(small_model(), SHAPE, tmp_path / "trial", backend="tensorrt", **FAST)):
        with pytest.raises(FrontierError) as err:
            check()
        message = str(err.value)
        assert message.startswith(f"backend: tensorrt is installed but does not import (ImportError: {BROKEN_IMPORT})")
        assert "\n" not in message and "not installed" not in message
    assert not (tmp_path / "trial").exists()
    # auto consults TensorRT only where the trial has a GPU: a CPU trial still times on ONNX Runtime
    assert resolve_backend("auto", "fp32", "cpu") == ("onnxruntime", "cpu")


def test_tensorrt_for_another_cuda_than_torch_is_refused_before_it_is_imported(fake_site: Path) -> None:
    fake_tensorrt(fake_site, "raise AssertionError('imported')\n", wheels=("tensorrt-cu13", "tensorrt_cu13_libs"))
    with pytest.raises(FrontierError) as err:
        backends.check_tensorrt("12.8")
    assert str(err.value) == (
        "backend: tensorrt is installed for CUDA 13 (tensorrt-cu13) but torch is built for CUDA 12.8; "
        "uninstall it and pip install 'frontier[tensorrt-cu12]'")


def test_tensorrt_for_torch_cuda_is_available(fake_site: Path) -> None:
    fake_tensorrt(fake_site, "__version__ = '10.13.0'\n", wheels=("tensorrt-cu12", "tensorrt-cu12-bindings"))
    assert backends.check_tensorrt("12.8") is True
    assert backends.check_tensorrt(None) is True  # a CPU torch: no CUDA to compare (no GPU to run on either)


@pytest.mark.parametrize(("names", "majors"), [
    (["tensorrt-cu12", "tensorrt_cu12_libs", "tensorrt-cu12-bindings", "numpy"], {12}),
    (["TensorRT_cu13", "tensorrt-lean-cu13", "tensorrt-dispatch-cu13-libs"], {13}),
    (["tensorrt", "tensorrt-cu11", "tensorrt-cu13"], {11, 13}),
    (["tensorrt", "tensorrt-llm", "tensorrt-cu12-extra", "onnxruntime-gpu"], set()),
])  # fmt: skip
def test_the_cuda_of_tensorrt_is_read_from_its_wheel_names(names: list[str], majors: set[int]) -> None:
    assert backends.tensorrt_cuda_majors(names) == majors


def test_cuda_mismatch_only_when_both_are_known_and_differ() -> None:
    assert backends.cuda_mismatch({13}, "12.4") is not None
    assert backends.cuda_mismatch({12}, "12.4") is None
    assert backends.cuda_mismatch({12, 13}, "13.0") is None
    assert backends.cuda_mismatch(set(), "12.4") is None  # no TensorRT wheel named by its CUDA
    assert backends.cuda_mismatch({13}, None) is None  # a CPU build of torch


# --- the extras: one per CUDA major of torch --------------------------------------------------------

@pytest.mark.parametrize(("cuda", "hint"), [
    ("12.8", "pip install 'frontier[tensorrt-cu12]'"),
    ("12.1", "pip install 'frontier[tensorrt-cu12]'"),
    ("13.0", "pip install 'frontier[tensorrt-cu13]'"),
    ("11.8", "pip install 'tensorrt-cu11>=10' (frontier's extras, 'frontier[tensorrt-cu12]' or "
             "'frontier[tensorrt-cu13]', cover CUDA 12 and 13)"),
    (None, "this torch is a CPU build: install a CUDA build of torch, then pip install "
           "'frontier[tensorrt-cu12]' or 'frontier[tensorrt-cu13]' to match its CUDA"),
])  # fmt: skip
def test_install_hint_names_the_extra_of_torch_cuda(cuda: str | None, hint: str) -> None:
    assert backends.install_hint(cuda) == hint
    assert backends.INSTALL_HINT == backends.install_hint(torch.version.cuda)


def test_install_hint_refuses_a_version_that_is_not_one() -> None:
    with pytest.raises(FrontierError, match="cuda version must look like '12.8' but got 'cpu'"):
        backends.install_hint("cpu")


def test_the_extras_the_hint_names_are_in_pyproject_and_pin_tensorrt_by_cuda() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert "tensorrt" not in extras  # the bare package resolves to TensorRT 11's CUDA 13 wheel for every torch
    for major in (12, 13):
        assert f"frontier[tensorrt-cu{major}]" in backends.install_hint(f"{major}.0")
        assert extras[f"tensorrt-cu{major}"] == [f"tensorrt-cu{major}>=10,<12"]


# --- TensorRT's optimisation profiles and precision label: the rules, on the CPU --------------------

@pytest.mark.parametrize(("batch", "throughput", "profiles"), [
    (1, None, (1,)), (1, 1, (1,)), (1, 64, (1, 64)), (8, 4, (8, 4)), (32, 32, (32,)),
])  # fmt: skip
def test_the_throughput_batch_gets_its_own_profile(batch: int, throughput: int | None, profiles) -> None:
    assert batch_profiles(batch, throughput) == profiles


@pytest.mark.parametrize(("batch", "throughput", "message"), [
    (0, None, "batch_size must be an integer >= 1 but got 0"),
    (1, 0, "throughput_batch must be an integer >= 1 but got 0"),
    (1, 2.5, "throughput_batch must be an integer >= 1 but got 2.5"),
])  # fmt: skip
def test_batch_profiles_refuse_a_bad_batch(batch, throughput, message: str) -> None:
    with pytest.raises(FrontierError, match=message):
        batch_profiles(batch, throughput)


@pytest.mark.parametrize(("precision", "cleared", "capability", "recorded"), [
    ("fp32", True, (9, 0), "fp32"),  # TF32 cleared on a Hopper GPU
    ("fp32", False, (8, 0), "tf32"),  # a TensorRT without the flag on an Ampere GPU: TF32 by default
    ("fp32", False, (7, 5), "fp32"),  # Turing has no TF32
    ("fp16", False, (9, 0), "fp16"),
    ("fp16", True, (8, 6), "fp16"),
])  # fmt: skip
def test_an_fp32_engine_is_recorded_as_the_math_it_ran(precision: str, cleared: bool, capability, recorded) -> None:
    assert backends.recorded_precision(precision, cleared, capability) == recorded


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
    pytest.importorskip("tensorrt", reason=f"needs the tensorrt extra: {backends.INSTALL_HINT}")
    backends.tensorrt_available.cache_clear()
    metrics = measure(small_model(), SHAPE, tmp_path / "trials" / "t1", backend="auto", precision=precision,
                      device="cuda", throughput_batch=16, cache_dir=tmp_path / "tensorrt", **FAST)
    assert metrics["latency_backend"] == "tensorrt"
    assert metrics["latency_precision"] == precision  # fp32 built with TF32 cleared: fp32, not tf32
    assert metrics["latency_clock"] == "cuda-events" and metrics["throughput_batch"] == 16
    assert 0 < metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert 0 < metrics["latency_e2e_ms"] <= metrics["latency_e2e_p90_ms"]
    assert len(list((tmp_path / "tensorrt").glob("*.timing-cache"))) == 1


@pytest.mark.gpu
@needs_cuda
def test_tensorrt_runs_each_batch_on_its_own_profile_and_matches_onnxruntime(tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason=f"needs the tensorrt extra: {backends.INSTALL_HINT}")
    import onnxruntime as ort

    from trainables.measure.backends import EngineRunner, build_engine

    backends.tensorrt_available.cache_clear()
    path = export_onnx(small_model(), tmp_path / "m.onnx", SHAPE)
    built = build_engine(path, batches=batch_profiles(2, 5), sparse_weights=False, cache_file=None)
    assert built.engine.num_optimization_profiles == 2 and built.batches == (2, 5) and built.tf32_cleared
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for profile, batch in enumerate(built.batches):
        runner = EngineRunner(built.engine, "cuda", profile=profile)
        runner.bind(batch, seed=profile)
        with torch.cuda.stream(runner.stream):
            got = runner.execute().cpu().numpy()
        expected = session.run(None, {"input": runner.x.cpu().numpy()})[0]
        assert got.shape == (batch, 5)
        np.testing.assert_allclose(got, expected, atol=1e-3, rtol=1e-3)  # TF32 cleared: fp32 closeness
    with pytest.raises(FrontierError, match="the engine refuses input shape"):
        EngineRunner(built.engine, "cuda", profile=0).bind(5, seed=0)  # profile 0 runs batch 2 only


@pytest.mark.gpu
@needs_cuda
def test_the_gpu_lock_is_named_by_the_physical_gpu() -> None:
    from trainables.measure.backends._gpu_lock import cuda_identity

    identity = cuda_identity("cuda")
    assert identity.startswith(("GPU-", "MIG-", "pci-")), identity
    assert identity == cuda_identity("cuda:0")
