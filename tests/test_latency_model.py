"""The per-layer latency model (trainables/measure/latency_model.py): real ONNX Runtime sessions, no mocks.

The key property: the widths the model predicts each layer at, for any kept counts, are the
shapes surgery produces. Then what the built model promises: the dense prediction is the dense
measurement, a big cut predicts clearly less, the JSON round trip, the cache (a hit runs no probe;
a corrupt file is rebuilt; the key follows threads and the input shape) and the real measurement.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torchvision
from torch import nn

from trainables.compress.surgery import shrink
from trainables.compress.units import unit_groups
from trainables.errors import FrontierError
from trainables.layout import RunFolder
from trainables.measure import latency_model as lm
from trainables.measure.backends import cuda_available, tensorrt_available
from trainables.measure.latency_model import (
    LatencyModel,
    latency_model,
    network_latency,
    preferred_multiple,
)
from trainables.models import SmallResNet

SETTINGS = {"backend": "onnxruntime", "threads": 1, "batch_size": 1, "warmup": 1, "runs": 5}


class Mixed(nn.Module):
    """A plain conv, a grouped conv, a depthwise conv, a 1x1 and a Linear after a flatten (spread = H*W)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, groups=4, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 24, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(24 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def skeleton(model: nn.Module, groups, shape) -> LatencyModel:
    """A latency model with every layer's table one point (no timing): its coupling arithmetic only."""
    layers = lm._layers(model, shape)
    a_in, a_out = lm._coupling(layers, groups)
    entries = [{"name": x.name, "cin": x.cin, "cout": x.cout, "grid_in": [x.cin], "grid_out": [x.cout],
                "table": [[1.0]]} for x in layers]
    return LatencyModel(dense_ms=1.0, build_seconds=0.0, multiple=16, sizes={g.name: g.size for g in groups},
                        layers=entries, a_in=a_in.tolist(), a_out=a_out.tolist(), scale=1.0, engine={})


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "mixed"])
def test_widths_are_the_shapes_surgery_makes(name):
    torch.manual_seed(0)
    model = Mixed() if name == "mixed" else getattr(torchvision.models, name)(num_classes=10)
    model.eval()
    groups = unit_groups(model)
    shape = (3, 32, 32)
    latency = skeleton(model, groups, shape)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        kept = {g.name: int(torch.randint(1, g.size + 1, (1,), generator=gen)) for g in groups}
        keep = {g.name: torch.randperm(g.size, generator=gen) < kept[g.name] for g in groups}
        small = shrink(model, keep, groups)
        widths = latency.widths(kept)
        assert widths, name
        for layer, (cin, cout) in widths.items():
            module = small.get_submodule(layer)
            if isinstance(module, nn.Conv2d):
                assert (cin, cout) == (module.in_channels, module.out_channels), layer
            else:
                assert (cin, cout) == (module.in_features, module.out_features), layer
    if name == "mixed":  # the grouped conv keeps its 4 groups; the depthwise one follows its channels
        assert small.features[3].groups == 4 and small.features[6].groups == small.features[6].in_channels


def test_preferred_multiple():
    flags = lm._cpu_flags()
    assert preferred_multiple("onnxruntime") == (16 if "avx512f" in flags else 8 if "avx2" in flags else 1)
    assert preferred_multiple("tensorrt", "fp16") == 8
    with pytest.raises(FrontierError, match="'tvm'"):
        preferred_multiple("tvm")


def test_grid():
    assert lm._grid(64, True, 16) == [16, 32, 48, 64]
    assert lm._grid(3, False, 16) == [3]
    assert lm._grid(512, True, 16) == [64, 128, 256, 384, 512]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """SmallResNet at 32x32, built into a cache folder (the probes counted)."""
    torch.manual_seed(0)
    model = SmallResNet(10).eval()
    groups = unit_groups(model)
    run = RunFolder(tmp_path_factory.mktemp("run"))
    built = latency_model(model, groups, (3, 32, 32), SETTINGS, cache_dir=run.root)
    return model, groups, run, built


@pytest.mark.slow
def test_build_round_trip_and_cache(small_model, monkeypatch):
    model, groups, run, built = small_model
    assert not built.cached and built.build_seconds > 0 and built.dense_ms > 0
    assert built.multiple == preferred_multiple("onnxruntime")
    assert built.sizes == {g.name: g.size for g in groups}
    assert built.predict({}) == built.dense_ms
    assert built.predict({g.name: g.size for g in groups}) == pytest.approx(built.dense_ms, rel=1e-12)
    assert 0 <= built.predict({g.name: 1 for g in groups}) < built.dense_ms
    with pytest.raises(FrontierError, match="'nope'"):
        built.predict({"nope": 1})
    with pytest.raises(FrontierError, match=groups[0].name):
        built.predict({groups[0].name: groups[0].size + 1})

    again = LatencyModel.from_json(json.loads(json.dumps(built.to_json())))
    kept = {g.name: max(1, g.size // 3) for g in groups}
    assert again.predict(kept) == built.predict(kept) and again.dense_ms == built.dense_ms

    probes = []
    timed = lm._Prober._time
    monkeypatch.setattr(lm._Prober, "_time", lambda self, *a: probes.append(a) or timed(self, *a))
    (path,) = run.latency.iterdir()  # the model's JSON, nothing else
    assert path.name == f"{built.key}.json"
    hit = latency_model(model, groups, (3, 32, 32), SETTINGS, cache_dir=run.root)
    assert hit.cached and probes == [] and hit.predict(kept) == built.predict(kept)
    assert hit.build_seconds == built.build_seconds

    path.write_text('{"format": 2, "dense_ms": ')  # a torn file
    rebuilt = latency_model(model, groups, (3, 32, 32), SETTINGS, cache_dir=run.root)
    assert not rebuilt.cached and len(probes) > 0
    assert LatencyModel.from_json(json.loads(path.read_text())).key == rebuilt.key


def test_key_follows_threads_and_input_shape():
    model = SmallResNet(10).eval()
    groups = unit_groups(model)

    def key(shape, threads):
        engine = lm._Engine.of({**SETTINGS, "threads": threads}, "cpu")
        return lm._key(lm._layers(model, shape), groups, shape, engine.identity())

    base = key((3, 32, 32), 1)
    assert base == key((3, 32, 32), 1)
    assert len({base, key((3, 32, 32), 2), key((3, 48, 48), 1)}) == 3


@pytest.mark.slow
def test_network_latency_runs(small_model, tmp_path):
    model, groups, _, built = small_model
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in groups}
    ms = network_latency(model, keep, groups, (3, 32, 32), SETTINGS, workdir=tmp_path)
    assert math.isfinite(ms) and ms > 0
    assert list(tmp_path.iterdir()) == []  # its export is temporary


@pytest.mark.slow
def test_a_big_cut_predicts_clearly_less(tmp_path):
    """ResNet-18 at 64x64: its widest stream (layer4's, 512 units) or every group cut to 1/8 of its
    units predicts clearly less than the dense network (the cut removes most of those layers' work)."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    groups = unit_groups(model)
    built = latency_model(model, groups, (3, 64, 64), {**SETTINGS, "threads": 2}, cache_dir=tmp_path)
    widest = max(groups, key=lambda g: g.size * len(g.members))
    assert built.predict({widest.name: widest.size // 8}) < 0.95 * built.predict({})
    assert built.predict({g.name: max(1, g.size // 8) for g in groups}) < 0.5 * built.dense_ms
    assert built.build_seconds < 120


def test_bad_input_shape():
    model = SmallResNet(10).eval()
    with pytest.raises(FrontierError, match="input_shape"):
        latency_model(model, unit_groups(model), (3, 32), SETTINGS)


@pytest.mark.skipif(not (cuda_available() and tensorrt_available()),
                    reason="TensorRT probes need a CUDA GPU and the tensorrt package (neither is here)")
def test_tensorrt_probes(tmp_path):
    model = SmallResNet(10).eval()
    groups = unit_groups(model)
    built = latency_model(model, groups, (3, 32, 32), {"backend": "tensorrt", "warmup": 2, "runs": 5},
                          device="cuda", cache_dir=tmp_path)
    assert built.dense_ms > 0 and built.multiple == 8
    assert built.predict({g.name: max(1, g.size // 8) for g in groups}) <= built.dense_ms * 1.05
