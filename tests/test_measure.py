"""ONNX export and measured latency: valid graphs, outputs that match torch, honest numbers."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

from trainables.compress.masks import is_masked
from trainables.errors import FrontierError
from trainables.measure.metrics import BACKEND, Latency, export_onnx, measure, onnx_latency

SHAPE = (3, 32, 32)


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def randomise_batchnorm(model: nn.Module) -> nn.Module:
    """Non-trivial running statistics, so that eval-mode export is really checked."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def ort_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x.numpy()})[0]


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    model = randomise_batchnorm(small_net())
    model.train()  # the export must switch a copy to eval, not the caller's model
    path = export_onnx(model, tmp_path_factory.mktemp("onnx") / "small.onnx", SHAPE)
    assert model.training
    return model.eval(), path


@pytest.mark.parametrize("kind", ["small", "resnet18"])
def test_export_is_valid_and_matches_torch_at_any_batch(kind: str, small_onnx: tuple, tmp_path: Path) -> None:
    if kind == "small":
        model, path = small_onnx
    else:
        torch.manual_seed(0)
        model = randomise_batchnorm(torchvision.models.resnet18(num_classes=10)).eval()
        path = export_onnx(model, tmp_path / "r18.onnx", SHAPE)
        assert [p.name for p in tmp_path.iterdir()] == ["r18.onnx"]  # no temp file left
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    assert not any(init.data_location == onnx.TensorProto.EXTERNAL for init in proto.graph.initializer)
    for batch in (1, 3):
        x = torch.randn(batch, *SHAPE)
        with torch.no_grad():
            expected = model(x).numpy()
        np.testing.assert_allclose(ort_outputs(path, x), expected, atol=1e-4, rtol=1e-4)


def test_masked_model_exports_plain_weights_and_keeps_its_hooks(tmp_path: Path) -> None:
    model = small_net().eval()
    prune.l1_unstructured(model[0], "weight", 0.5)
    prune.l1_unstructured(model[7], "weight", 0.5)
    path = export_onnx(model, tmp_path / "masked.onnx", SHAPE)
    assert is_masked(model) and hasattr(model[0], "weight_orig")  # the caller's model is untouched

    names = [init.name for init in onnx.load(str(path)).graph.initializer]
    assert not any("weight_orig" in n or "weight_mask" in n for n in names), names
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        np.testing.assert_allclose(ort_outputs(path, x), model(x).numpy(), atol=1e-4, rtol=1e-4)


def test_second_model_of_an_architecture_reuses_the_graph_with_its_own_weights(tmp_path: Path, monkeypatch) -> None:
    """One trace per architecture: later models get their weights into a copy of the kept graph,
    and their file matches torch and a fresh export; a new shape or a forward hook traces again."""
    from trainables.measure import export as onnx_export

    onnx_export.clear_templates()
    traces = []
    real_export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: traces.append(1) or real_export(*a, **k))

    first = randomise_batchnorm(small_net()).eval()
    export_onnx(first, tmp_path / "first.onnx", SHAPE)
    torch.manual_seed(1)
    second = randomise_batchnorm(small_net()).eval()
    for p in second.parameters():
        p.data.normal_()
    reused = export_onnx(second, tmp_path / "second.onnx", SHAPE)
    assert len(traces) == 1
    onnx_export.clear_templates()
    fresh = export_onnx(second, tmp_path / "fresh.onnx", SHAPE)
    assert len(traces) == 2

    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        expected = second(x).numpy()
    np.testing.assert_allclose(ort_outputs(reused, x), expected, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(ort_outputs(reused, x), ort_outputs(fresh, x))
    assert not np.allclose(ort_outputs(reused, x), ort_outputs(tmp_path / "first.onnx", x), atol=1e-3)

    wider = nn.Sequential(*[nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.BatchNorm2d(12), nn.ReLU(),
                            nn.Conv2d(12, 16, 3, stride=2, padding=1), *list(small_net())[4:]]).eval()
    export_onnx(wider, tmp_path / "wider.onnx", SHAPE)
    assert len(traces) == 3
    hooked = small_net().eval()
    hooked[7].register_forward_hook(lambda _m, _a, out: out * 0 + 7.0)
    path = export_onnx(hooked, tmp_path / "hooked.onnx", SHAPE)
    assert len(traces) == 4
    np.testing.assert_allclose(ort_outputs(path, x), np.full((3, 10), 7.0, dtype=np.float32))


def test_fixed_batch_export(tmp_path: Path) -> None:
    path = export_onnx(small_net(), tmp_path / "fixed.onnx", SHAPE, dynamic_batch=False)
    dim = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_value == 1
    with pytest.raises(FrontierError, match="fixed batch of 1"):
        onnx_latency(path, batch_size=2, warmup=0, runs=1)


def test_onnx_latency_reports_what_it_measured(small_onnx: tuple) -> None:
    _, path = small_onnx
    latency = onnx_latency(path, batch_size=4, threads=1, warmup=2, runs=15)
    assert isinstance(latency, Latency)
    assert math.isfinite(latency.median_ms) and 0 < latency.median_ms <= latency.p90_ms
    assert (latency.batch_size, latency.threads, latency.runs, latency.warmup) == (4, 1, 15, 2)
    assert latency.backend == BACKEND == "onnxruntime-cpu"
    assert latency.providers == ("CPUExecutionProvider",)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"batch_size": 0}, "batch_size must be an integer >= 1 but got 0"), ({"runs": 0}, "runs must be"),
     ({"threads": 0}, "threads must be"), ({"warmup": -1}, "warmup must be")],
)  # fmt: skip
def test_onnx_latency_checks_its_arguments(small_onnx: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(FrontierError, match=message):
        onnx_latency(small_onnx[1], **kwargs)


def test_bad_export_arguments_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FrontierError, match="input_shape"):
        export_onnx(small_net(), tmp_path / "m.onnx", (32, 32))  # type: ignore[arg-type]
    with pytest.raises(FrontierError, match="opset must be >= 18 .* got 13"):
        export_onnx(small_net(), tmp_path / "m.onnx", SHAPE, opset=13)
    with pytest.raises(FrontierError, match="nothing.onnx"):
        onnx_latency(tmp_path / "nothing.onnx")
    assert list(tmp_path.iterdir()) == []


def test_measure_writes_both_files_and_reports_them(tmp_path: Path) -> None:
    model = small_net()
    prune.l1_unstructured(model[3], "weight", 0.8)
    out = tmp_path / "trial" / "B"
    metrics = measure(model, SHAPE, out, batch_size=2, threads=1, warmup=1, runs=5, attrs={"trial": "t1"})
    assert set(metrics) == {
        "size_bytes", "latency_ms", "latency_p90_ms", "latency_batch", "latency_threads",
        "latency_backend", "artifact", "onnx",
        # the backend's full record (trainables.measure.backends.Latency.metrics), end-to-end time included
        "latency_precision", "latency_device", "latency_clock", "latency_sparse_weights", "throughput_ips",
        "throughput_batch", "latency_e2e_ms", "latency_e2e_p90_ms", "latency_iqr_ms", "precision",
        "units_removed", "params_timed",  # what surgery removed before timing
    }  # fmt: skip
    assert metrics["artifact"] == str(out / "model.h5") and metrics["onnx"] == str(out / "model.onnx")
    assert metrics["size_bytes"] == os.path.getsize(out / "model.h5")
    assert 0 < metrics["latency_ms"] <= metrics["latency_p90_ms"]
    assert (metrics["latency_batch"], metrics["latency_threads"]) == (2, 1)
    assert metrics["latency_backend"] == "onnxruntime-cpu"  # the default on a CPU: ONNX Runtime
    assert (metrics["latency_precision"], metrics["latency_device"], metrics["throughput_batch"]) == ("fp32", "cpu", 2)
    assert sorted(p.name for p in out.iterdir()) == ["model.h5", "model.onnx"]
    assert is_masked(model)

    from trainables.compress.artifact import load_artifact

    state, attrs = load_artifact(out / "model.h5")
    assert attrs == {"trial": "t1"}
    assert "3.weight" in state and "3.weight_orig" not in state
    assert float((state["3.weight"] == 0).float().mean()) == pytest.approx(0.8, abs=0.01)


def test_measure_times_the_network_without_its_dead_units(tmp_path) -> None:
    """Unit-pruned weights are exported and timed physically smaller; the artifact keeps its shapes."""
    import onnx

    from trainables.compress.surgery import zero_units
    from trainables.models import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(num_classes=5).eval()
    keep = {"layer3.0.conv1": torch.arange(64) < 16}
    zero_units(model, keep)
    full = sum(p.numel() for p in model.parameters())
    shrunk = measure(model, (3, 32, 32), tmp_path / "s", warmup=0, runs=2, end_to_end=False)
    whole = measure(model, (3, 32, 32), tmp_path / "w", warmup=0, runs=2, end_to_end=False, surgery=False)
    from trainables.compress.units import unit_count, unit_groups

    assert shrunk["units_removed"] == pytest.approx(48 / unit_count(unit_groups(model)))
    assert whole["units_removed"] == 0.0
    assert shrunk["params_timed"] == full - 48 * (32 * 9 + 2 + 64 * 9) and whole["params_timed"] == full
    conv = next(i for i in onnx.load(shrunk["onnx"]).graph.initializer if list(i.dims) == [16, 32, 3, 3])
    assert conv is not None  # the ONNX file holds the 16-channel conv
    assert shrunk["size_bytes"] == whole["size_bytes"]  # the same artifact either way
