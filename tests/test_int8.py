"""INT8 deployment (issue 16): real ONNX Runtime sessions on real exported models, no mocks.

The INT8 CPU model is faster than its float model (U8S8; the format choice is measured here);
its ONNX has QDQ pairs on every quantized layer and none on the layers kept in float; calibration
reads no labels; on digits INT8 loses at most a point of top-1 against the float model it came
from (both run in ONNX Runtime), and the automatic float fallback closes at least half of a loss
built to be large; sharing then INT8 keeps at most k codes per channel; the benchmark stage
reports the INT8 model's accuracy, artifact bytes and latency; a backend that cannot run INT8 is
one clear line.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torchvision.models import resnet18

from trainables.compress.artifact import load_artifact
from trainables.data import DataSpec, load_data
from trainables.errors import FrontierError
from trainables.measure.int8 import (ImageReader, int8_state, integer_layers, layer_nodes, onnx_scores, qdq_layers,
                                     quantize_onnx, session)
from trainables.measure.int8_model import Int8Request, build_int8, keep_back
from trainables.measure.metrics import export_onnx, measure
from trainables.pipeline.plan import make_plan
from trainables.stage import Context
from trainables.stages.benchmark import Benchmark, BenchmarkConfig
from trainables.stages.dense import Dense, DenseConfig
from trainables.stages.int8 import Int8Config
from trainables.stages.share import ShareConfig, share
from trainables.stages.transfer import TransferConfig

TARGET = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32)
MAX_LOSS = 0.01  # one point of top-1


def _trained(name: str, epochs: int, tmp: Path) -> torch.nn.Module:
    ctx = Context(source=TARGET, target=TARGET, workdir=tmp)
    model, _ = Dense(DenseConfig(model=name, epochs=epochs, batch_size=32)).run(None, ctx)
    return model.eval()


@pytest.fixture(scope="module")
def splits():
    return load_data(TARGET)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> torch.nn.Module:
    return _trained("small_resnet", 4, tmp_path_factory.mktemp("small"))


@pytest.fixture(scope="module")
def small_onnx(small, tmp_path_factory) -> Path:
    return export_onnx(small, tmp_path_factory.mktemp("export") / "model.onnx", (3, 32, 32))


def _request(splits, **kw) -> Int8Request:
    return Int8Request(calibration=splits.unlabeled("train"), test=splits.test, validation=splits.val, **kw)


def test_the_onnxruntime_file_is_u8s8_and_runs_every_layer_in_integer_kernels(tmp_path: Path) -> None:
    """The format ONNX Runtime gets is the one that buys latency there: uint8 activations and int8
    weights, fused into integer kernels for every convolution and the classifier (U8S8 ran at
    0.33x the float latency, S8S8 at 0.96x: ``bench/quantize_latency.py`` measures it; a test
    asserts no wall-clock time)."""
    import onnx

    torch.manual_seed(0)
    float_onnx = export_onnx(resnet18(num_classes=10).eval(), tmp_path / "r18.onnx", (3, 64, 64))
    images = [torch.randn(3, 64, 64) for _ in range(8)]
    int8 = quantize_onnx(float_onnx, tmp_path / "r18.int8.onnx", images, count=8)
    graph = onnx.load(str(int8)).graph
    types = {init.name: init.data_type for init in graph.initializer}
    activations = {types[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in types}
    weights = {types[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("weight_quantized")}
    assert activations == {onnx.TensorProto.UINT8} and weights == {onnx.TensorProto.INT8}
    layers = sum(n.op_type in ("Conv", "Gemm") for n in onnx.load(str(float_onnx)).graph.node)
    assert integer_layers(int8, threads=2) == layers == 21, "every conv and the classifier run in integers"


def test_qdq_pairs_on_every_quantized_layer_and_none_on_float_layers(small_onnx: Path, splits, tmp_path: Path) -> None:
    nodes = layer_nodes(small_onnx)
    kept = ["conv1", "layer2.0.conv2", "fc"]
    int8 = quantize_onnx(small_onnx, tmp_path / "q.onnx", splits.unlabeled("train"), count=16, keep_float=kept)
    assert qdq_layers(int8, nodes) == set(nodes) - set(kept)
    graph = onnx.load(str(int8)).graph
    producers = {out: node for node in graph.node for out in node.output}
    by_name = {node.name: node for node in graph.node}
    for layer, name in nodes.items():
        node = by_name[name]
        from_dq = [producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in node.input[:2]]
        if layer in kept:  # neither its input activation nor its weight goes through a QDQ pair
            assert not any(from_dq), layer
            assert node.input[1] == f"{layer}.weight"
        else:
            assert all(from_dq), layer
            assert f"{layer}.weight_quantized" in {i.name for i in graph.initializer}


def _dequantized_types(path: Path) -> dict[str, int]:
    """Every DequantizeLinear node of ``path`` -> the ONNX element type of its input 0, read from
    the initializers and from the value types of onnx's shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    types.update({v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]})
    return {node.name: types.get(node.input[0], onnx.TensorProto.UNDEFINED)
            for node in graph.node if node.op_type == "DequantizeLinear"}


def test_the_tensorrt_file_dequantizes_int8_tensors_only(tmp_path: Path) -> None:
    """TensorRT's ONNX parser takes INT8 (or FP8/INT4) DequantizeLinear inputs only
    (NVIDIA/TensorRT#3360, onnx-tensorrt#850): biases stay float32 in the TensorRT file. The ONNX
    Runtime file keeps its int32 biases, the input ONNX Runtime's integer kernels (QLinearConv) take."""
    torch.manual_seed(0)
    float_onnx = export_onnx(resnet18(num_classes=5).eval(), tmp_path / "r18.onnx", (3, 32, 32))
    images = [torch.randn(3, 32, 32) for _ in range(4)]
    trt = _dequantized_types(quantize_onnx(float_onnx, tmp_path / "trt.onnx", images, engine="tensorrt", count=4))
    assert len(trt) > 20, "every conv and fc has its weights and inputs dequantized"
    names = {onnx.TensorProto.DataType.Name(t) for t in trt.values()}
    assert names == {"INT8"}, {n: onnx.TensorProto.DataType.Name(t) for n, t in trt.items() if t != onnx.TensorProto.INT8}
    graph = onnx.load(str(tmp_path / "trt.onnx")).graph
    fc = next(node for node in graph.node if node.op_type == "Gemm")
    bias = next(i for i in graph.initializer if i.name == fc.input[2])
    assert bias.data_type == onnx.TensorProto.FLOAT, "the classifier's bias is read in float32, not dequantized"
    x = torch.stack(images).numpy()
    expected = session(float_onnx).run(None, {"input": x})[0]
    assert np.abs(session(tmp_path / "trt.onnx").run(None, {"input": x})[0] - expected).max() < 0.1 * np.abs(expected).max()
    ort = _dequantized_types(quantize_onnx(float_onnx, tmp_path / "ort.onnx", images, engine="onnxruntime", count=4))
    assert onnx.TensorProto.INT32 in ort.values(), "ONNX Runtime's file keeps int32 biases"


def test_calibration_reads_no_labels(splits, small, tmp_path: Path) -> None:
    """A labeled dataset is refused; and with the training labels scrambled the INT8 model (and
    its artifact) comes out byte for byte the same through the benchmark stage."""
    with pytest.raises(FrontierError, match="without labels"):
        ImageReader(splits.train, 4).get_next()

    def int8_bytes(ctx: Context, out: Path) -> tuple[bytes, bytes]:
        Benchmark(BenchmarkConfig(runs=2, warmup=0, end_to_end=False), int8=Int8Config(images=32),
                  export_dir=out).run(copy.deepcopy(small), ctx)
        return (out / "model.int8.onnx").read_bytes(), (out / "model.int8.h5").read_bytes()

    honest = Context(source=TARGET, target=TARGET, workdir=tmp_path)
    scrambled = Context(source=TARGET, target=TARGET, workdir=tmp_path)
    data = load_data(TARGET)
    data.train.labels = torch.full_like(data.train.labels, 3)  # every training label now lies
    scrambled._loaded["target"] = data
    assert int8_bytes(honest, tmp_path / "a") == int8_bytes(scrambled, tmp_path / "b")


@pytest.mark.parametrize("name, epochs", [("small_resnet", 4), pytest.param("resnet18", 3, marks=pytest.mark.slow)])
def test_int8_loses_at_most_a_point_on_digits(name: str, epochs: int, splits, tmp_path: Path) -> None:
    model = _trained(name, epochs, tmp_path)
    float_onnx = export_onnx(model, tmp_path / "model.onnx", (3, 32, 32))
    built = build_int8(float_onnx, tmp_path, _request(splits))
    before = onnx_scores(float_onnx, splits.test)["accuracy"]
    after = built.metrics["accuracy"]
    print(f"{name}: float {before:.4f} INT8 {after:.4f} in ONNX Runtime")
    assert before > 0.9, "the float model must have learned digits for the comparison to mean anything"
    assert before - after <= MAX_LOSS, f"{name}: INT8 {after:.4f} vs float {before:.4f}"


def _with_outliers(model: torch.nn.Module, blocks, images: torch.Tensor) -> torch.nn.Module:
    """The same function with one huge activation channel inside each block: the most active
    channel of bn1 is scaled by 2000 (ReLU commutes with it) and conv2's matching input weights by
    1/2000, in place. A per-tensor activation range then leaves the other channels a handful of levels."""
    model.eval()
    factor = 2000.0
    with torch.no_grad():
        for block in blocks:
            seen = {}
            hook = block.bn1.register_forward_hook(lambda m, i, o: seen.setdefault("x", o.relu()))
            model(images)
            hook.remove()
            c = int(seen["x"].mean((0, 2, 3)).argmax())
            block.bn1.weight[c] *= factor
            block.bn1.bias[c] *= factor
            block.conv2.weight[:, c] /= factor
    return model


def test_automatic_fallback_closes_at_least_half_of_a_large_loss(small, splits, tmp_path: Path) -> None:
    broken = copy.deepcopy(small)
    images = torch.stack([splits.val[i][0] for i in range(64)])
    _with_outliers(broken, _blocks(broken)[:2], images)
    float_onnx = export_onnx(broken, tmp_path / "model.onnx", (3, 32, 32))
    base = onnx_scores(float_onnx, splits.test)["accuracy"]
    plain = build_int8(float_onnx, tmp_path / "plain", _request(splits))
    helped = build_int8(float_onnx, tmp_path / "fallback", _request(splits, fallback=2))
    loss, rest = base - plain.metrics["accuracy"], base - helped.metrics["accuracy"]
    print(f"float {base:.4f}; INT8 loses {loss:.4f}; with fallback {rest:.4f} "
          f"(kept float: {helped.metrics['int8_fallback_layers']})")
    assert loss > 0.05, "the test model must lose more than a few points in INT8"
    assert rest <= loss / 2
    assert helped.metrics["int8_fallback_layers"]  # it kept something back ...
    assert qdq_layers(helped.onnx) == set(layer_nodes(float_onnx)) - set(helped.metrics["int8_float_layers"].split(";"))


def _blocks(model: torch.nn.Module) -> list:
    from torchvision.models.resnet import BasicBlock

    return [m for m in model.modules() if isinstance(m, BasicBlock)]


def test_keep_back_takes_the_costliest_layers_within_the_budget() -> None:
    rows = [{"layer": "a", "drop": 0.01, "logit_mse": 9.0}, {"layer": "b", "drop": 0.2, "logit_mse": 0.1},
            {"layer": "c", "drop": 0.01, "logit_mse": 10.0}, {"layer": "d", "drop": 0.0, "logit_mse": 50.0}]
    assert keep_back(rows, 2) == ["b", "c"]
    assert keep_back(rows, 10) == ["b", "c", "a"]
    assert keep_back(rows, 0) == []


def test_sharing_then_int8_keeps_at_most_k_codes_per_channel(small, splits, tmp_path: Path) -> None:
    """After sharing layer3 at k = 4, each output channel of its INT8 weights holds at most 4 int8
    codes, and pruned zeros stay exactly zero (symmetric weights: zero point 0)."""
    shared = copy.deepcopy(small)
    with torch.no_grad():
        weight = shared.layer3[0].conv1.weight
        weight[weight.abs() < weight.abs().median()] = 0  # half the weights pruned
    share(shared, ShareConfig(groups={"layer3": 4}))
    float_onnx = export_onnx(shared, tmp_path / "model.onnx", (3, 32, 32))
    built = build_int8(float_onnx, tmp_path, _request(splits))
    state, attrs = load_artifact(built.artifact)
    assert attrs["precision"] == "int8"
    layer3 = [k for k in state if k.startswith("layer3") and k.endswith(".weight_quantized")]
    assert layer3
    for key in layer3:
        codes = state[key].to(torch.int16)
        assert state[key].dtype == torch.int8
        for channel in codes.reshape(codes.shape[0], -1):
            assert len(torch.unique(channel[channel != 0])) <= 4, key
    pruned = shared.layer3[0].conv1.weight == 0
    assert bool((state["layer3.0.conv1.weight_quantized"][pruned] == 0).all())
    assert bool((state["layer3.0.conv1.weight_zero_point"] == 0).all())


def test_benchmark_stage_measures_the_int8_model(small, splits, tmp_path: Path) -> None:
    ctx = Context(source=TARGET, target=TARGET, workdir=tmp_path)
    stage = Benchmark(BenchmarkConfig(runs=5, warmup=1), int8=Int8Config(images=32, keep_float=["fc"]))
    assert stage.label == "I8|B"
    _, metrics = stage.run(copy.deepcopy(small), ctx)
    assert metrics["precision"] == metrics["latency_precision"] == "int8"
    assert metrics["size_bytes"] == (tmp_path / "model.int8.h5").stat().st_size < metrics["float_size_bytes"]
    assert metrics["accuracy"] == onnx_scores(tmp_path / "model.int8.onnx", splits.test)["accuracy"]
    assert abs(metrics["accuracy"] - metrics["float_accuracy"]) <= MAX_LOSS
    p, n = metrics["accuracy"], len(splits.test)  # the error bar is the INT8 accuracy's, on the same images
    assert metrics["accuracy_n"] == n and metrics["accuracy_se"] == pytest.approx((p * (1 - p) / n) ** 0.5)
    assert metrics["int8_float_layers"] == "fc" and metrics["int8_integer_ops"] > 0
    state, _ = load_artifact(tmp_path / "model.int8.h5")
    stored = int8_state(tmp_path / "model.int8.onnx")
    assert list(state) == list(stored) and all(torch.equal(state[k], v) for k, v in stored.items())


def test_the_shrunk_network_is_quantized(small, splits, tmp_path: Path) -> None:
    """Units dead in the weights are removed by surgery before INT8: the INT8 file holds the shrunk layer."""
    from trainables.compress.surgery import zero_units

    model = copy.deepcopy(small)
    width = model.layer2[0].conv1.out_channels
    half = width // 2
    zero_units(model, {"layer2.0.conv1": torch.arange(width) >= half})
    request = _request(splits, count=16)
    metrics = measure(model, (3, 32, 32), tmp_path, runs=2, warmup=0, end_to_end=False, int8=request)
    assert metrics["units_removed"] > 0
    state = int8_state(metrics["int8_onnx"])
    assert state["layer2.0.conv1.weight_quantized"].shape[0] == width - half


def test_torch_backend_cannot_run_int8_in_one_line(small, splits, tmp_path: Path) -> None:
    with pytest.raises(FrontierError, match="torch backend .* cannot run an INT8 model") as info:
        measure(small, (3, 32, 32), tmp_path, backend="torch", int8=_request(splits))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.onnx").exists(), "refused before anything is written"


@pytest.mark.parametrize("quantize, pipeline", [("I8", "D|T|50|I8|B"), ("QI8", "D|T|50|Q|I8|B"),
                                                ("QRI8", "D|T|50|Q|R|I8|B"), ("Q", "D|T|50|Q|B")])
def test_plan_places_int8_last_after_sharing(quantize: str, pipeline: str) -> None:
    from trainables.stages.dense import DenseConfig as DC

    plan = make_plan(order="PA", s2=0.5, dense=DC(model="small_resnet", epochs=1), transfer=TransferConfig(),
                     benchmark=BenchmarkConfig(), target=TARGET, source=TARGET, quantize=quantize,
                     int8=Int8Config(method="entropy"))
    assert plan.pipeline == pipeline
    assert plan.slots()[-1] == "B"
    step = plan.benchmark
    assert (step.int8 is not None) == quantize.endswith("I8")
    assert [s.label for s in plan.stages()] == [s.label for s in plan.steps]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; torch sees none")
def test_tensorrt_builds_an_int8_engine_from_the_qdq_file(small, splits, tmp_path: Path) -> None:
    pytest.importorskip("tensorrt", reason="needs the tensorrt extra of torch's CUDA "
                        "(pip install 'frontier[tensorrt-cu12]' or 'frontier[tensorrt-cu13]')")
    float_ms = measure(small, (3, 32, 32), tmp_path / "fp32", backend="tensorrt", device="cuda", runs=20)
    metrics = measure(small, (3, 32, 32), tmp_path / "int8", backend="tensorrt", device="cuda", runs=20,
                      int8=_request(splits))
    assert metrics["latency_backend"] == "tensorrt" and metrics["latency_precision"] == "int8"
    graph = onnx.load(metrics["int8_onnx"]).graph
    zero_points = [i for i in graph.initializer if i.name.endswith("_zero_point")]
    assert zero_points and all(i.data_type == onnx.TensorProto.INT8 for i in zero_points)  # symmetric S8S8
    assert all(not np.any(onnx.numpy_helper.to_array(i)) for i in zero_points)
    assert np.isfinite(metrics["latency_ms"]) and np.isfinite(float_ms["latency_ms"])
    assert abs(metrics["accuracy"] - onnx_scores(tmp_path / "fp32" / "model.onnx", splits.test)["accuracy"]) <= MAX_LOSS


def test_front_shows_the_precision_next_to_the_sparsity_and_int8_that_ran_in_float() -> None:
    import pandas as pd

    from search.results.format import precision_label
    from search.results.report import front_table
    from search.results.summary import front_summary

    frame = pd.DataFrame([
        {"trial_id": "a", "status": "ok", "pipeline": "D|T|50|B", "accuracy": 0.9, "size_bytes": 100.0,
         "latency_ms": 2.0, "sparsity": 0.5, "precision": "fp32", "latency_precision": "fp32"},
        {"trial_id": "b", "status": "ok", "pipeline": "D|T|50|I8|B", "accuracy": 0.89, "size_bytes": 30.0,
         "latency_ms": 1.0, "sparsity": 0.5, "precision": "int8", "latency_precision": "int8", "int8_integer_ops": 9},
        {"trial_id": "c", "status": "ok", "pipeline": "D|T|I8|B", "accuracy": 0.95, "size_bytes": 20.0,
         "latency_ms": 3.0, "sparsity": 0.0, "precision": "int8", "latency_precision": "int8", "int8_integer_ops": 0},
    ])
    summary = front_summary(frame, ["accuracy", "size_bytes", "latency_ms"], ["max", "min", "min"])
    by_id = {t["trial_id"]: t for t in summary["trials"]}
    assert by_id["a"]["precision"] == "fp32" and by_id["a"]["sparsity"] == 0.5 and "ran_in_float" not in by_id["a"]
    assert by_id["b"]["precision"] == "int8" and by_id["b"]["ran_in_float"] is False
    assert by_id["c"]["ran_in_float"] is True
    labels = {row["trial_id"]: precision_label(row) for _, row in frame.iterrows()}
    assert labels == {"a": "fp32", "b": "int8", "c": "int8 (ran in float)"}
    table = front_table(frame, summary)
    headers = [c.header for c in table.columns]
    assert headers.index("precision") == headers.index("sparsity") + 1
