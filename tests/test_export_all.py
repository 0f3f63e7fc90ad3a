"""Dense models build with a new head, export to ONNX, run in ONNX Runtime as in torch, and get a latency.

Every checked architecture (``CHECKED_ARCHITECTURES``) is exported and run in ONNX Runtime by
``tests/test_surgery.py`` already, with half its units removed (the harder case: sliced groups,
depthwise convs with fewer groups); here one of each kind of head: a ResNet's Linear after pooling,
AlexNet's classifier after a flatten, SqueezeNet's 1x1 conv head.
"""

from __future__ import annotations

import math

import numpy as np
import onnxruntime as ort
import pytest
import torch

from trainables.measure.metrics import export_onnx, onnx_latency
from trainables.models import CHECKED_ARCHITECTURES, MIN_INPUT_SIZE, build_model

HEADS = ("small_resnet", "alexnet", "squeezenet1_1")
assert set(HEADS) <= set(CHECKED_ARCHITECTURES)


@pytest.mark.parametrize("name", HEADS)
def test_architecture_exports_and_runs_in_onnxruntime(name: str, tmp_path) -> None:
    size = max(32, MIN_INPUT_SIZE.get(name, 32))
    model = build_model(name, 5).eval()
    path = export_onnx(model, tmp_path / f"{name}.onnx", (3, size, size))
    x = torch.randn(2, 3, size, size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-3, atol=1e-4)
    latency = onnx_latency(path, batch_size=1, threads=1, warmup=1, runs=3)
    assert math.isfinite(latency.median_ms) and 0 < latency.median_ms <= latency.p90_ms
