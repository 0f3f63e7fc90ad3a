"""timm's CNN families by name: half of every unit group removed, the shrunk model equal to the gated
one within 1e-4 (and through surgery's own equivalence check) and run in ONNX Runtime, or a group
refused with the reason named here; grouped convolutions are units (ResNeXt and RegNet keep at most
0.35 of their parameters); a slow trace and a slow equivalence check are refused with one line (a
fake clock, no wall-clock assert), and so is a shrunk network that a wrong unit table breaks; bad
names are one line."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
from torch import nn

from trainables.compress.surgery import checked_shrink, gated
from trainables.compress.units import excluded, unit_groups
from trainables.errors import FrontierError
from trainables.models import architecture, build_model

pytest.importorskip("timm", reason="timm is in the test extra; install frontier[test]")

SIZE = 32  # every family below runs at 32x32

# family -> (smallest variant, the reasons its left-out groups may give: "" = every group is a unit)
FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "resnet": ("resnet10t", ()),
    "resnext": ("resnext26ts", ()),  # grouped 3x3 convs: units are one position of every group
    "regnet": ("regnetx_002", ()),  # grouped convs too
    "ghostnet": ("ghostnet_050", ()),
    "mixnet": ("mixnet_s", ("split", "same number of channels")),  # mixed kernels split at fixed sizes: crashed after surgery
    "cspnet": ("cspresnet50", ("split", "slice")),  # CSP stages split in halves: a wrong unit table
    "rexnet": ("rexnet_100", ("slice",)),  # residuals add into a slice: the trace hung
    "mobilenetv2": ("mobilenetv2_050", ()),
    "mobilenetv3": ("mobilenetv3_small_050", ()),
    "efficientnet": ("tinynet_e", ()),
    "mnasnet": ("mnasnet_small", ()),
    "lcnet": ("lcnet_050", ()),
    "dla": ("dla46_c", ()),
    "convnext": ("convnext_atto", ("normalised together", "nn.Parameter")),  # LayerNorm across channels
    "repvgg": ("repvgg_a0", ()),
    "vovnet": ("ese_vovnet19b_slim_dw", ()),
    "hardcorenas": ("hardcorenas_a", ()),
    "resnest": ("resnest14d", ("5-d tensor",)),  # split attention over radix 2, viewed as (radix, channels)
    "mobilenetv4": ("mobilenetv4_conv_small", ()),
    "nfnet": ("nf_regnet_b0", ("own forward",)),  # weight-standardized convs
    "gernet": ("gernet_s", ()),
    "efficientvit": ("efficientvit_b0", ("split", "slice", "normalised together", "own forward")),
    "res2net": ("res2net50_14w_8s", ("split",)),  # its scales split a block's channels at fixed widths
    "dpn": ("dpn48b", ("sliced ([",)),  # dual paths slice the residual part off a fixed width
    # ECA reshapes the channels onto one axis for a Conv1d across them: its streams are left out (the
    # walk stops once every channel is coupled to every other; it took over 120 s before)
    "ecaresnet": ("ecaresnet26t", ("(Conv1d), which surgery cannot slice", "mixed there")),
    # selective kernels stack their paths (a 5-d tensor) and weight them by an attention viewed as (paths,
    # channels): left out (the shrunk network differed by 8e-4 before); 8 groups, 1% of the parameters, remain
    "skresnet": ("skresnet18", ("5-d tensor", "split")),
}

# family -> (variant, why the whole model is refused, in one line)
REFUSED: dict[str, tuple[str, str]] = {
    "cs3darknet": ("cs3darknet_s", "unit pruning: cannot trace CspNet's graph"),  # Torch-Pruning's tracer fails
}


def _randomized(name: str) -> nn.Module:
    """timm's ``name`` with 10 classes, random BatchNorm statistics and affine terms (constants would
    hide a wrong slice), outputs scaled to about 1 so that 1e-4 means something."""
    torch.manual_seed(0)
    model = build_model(f"timm:{name}", 10).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                module.weight.uniform_(0.2, 0.5)
                module.bias.normal_(0, 0.1)
                module.running_mean.normal_(0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        head = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][-1]
        scale = float(model(_image()).abs().max())
        head.weight /= scale
        if head.bias is not None:
            head.bias /= scale
    return model


def _image() -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def halved():
    """Per family, built once: (model, its half-pruned shrunk copy, the gated reference output)."""
    made = {}

    def get(family: str):
        if family not in made:
            model = _randomized(FAMILIES[family][0])
            keep = {g.name: torch.arange(g.size) % 2 == 0 for g in unit_groups(model)}
            with torch.no_grad(), gated(model, keep):
                reference = model(_image())
            made[family] = (model, checked_shrink(model, keep, (3, SIZE, SIZE)), reference)
        return made[family]

    return get


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_timm_family_shrinks_exactly_and_runs_in_onnx_runtime(family: str, halved, tmp_path) -> None:
    import onnxruntime as ort

    model, small, reference = halved(family)
    allowed = FAMILIES[family][1]
    for first, why in excluded(model).items():
        assert any(a in why for a in allowed), f"{family}: group '{first}' left out: {why}"
    assert unit_groups(model), f"{family}: no unit group"
    x = _image()
    with torch.no_grad():
        diff = float((small(x) - reference).abs().max())
    assert diff < 1e-4, (family, diff)
    assert _params(small) < _params(model)
    # TorchScript's exporter: the same graph for ONNX Runtime, in a fifth of the dynamo exporter's time
    path = tmp_path / f"{family}.onnx"
    torch.onnx.export(small, (x,), str(path), dynamo=False, input_names=["input"], output_names=["logits"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    assert np.abs(got - reference.numpy()).max() < 1e-4, family


@pytest.mark.parametrize("family", list(REFUSED))
def test_a_timm_family_that_cannot_be_traced_is_refused_with_one_line(family: str) -> None:
    name, why = REFUSED[family]
    with pytest.raises(FrontierError, match=why) as caught:
        unit_groups(build_model(f"timm:{name}", 10))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("family", ["resnext", "regnet"])
def test_grouped_convolutions_let_half_the_units_reach_the_parameters(family: str, halved) -> None:
    model, small, _ = halved(family)
    assert _params(small) <= 0.35 * _params(model), _params(small) / _params(model)
    grouped = [m for g in unit_groups(model) for m in g.members
               if isinstance(model.get_submodule(m.name), nn.Conv2d) and model.get_submodule(m.name).groups > 1
               and m.spread > 1]
    assert grouped, "a grouped conv's unit is one channel in each of its groups"


def test_a_slow_trace_is_refused_with_one_line_naming_the_model_and_the_limit() -> None:
    class Slow(nn.Module):  # its own class: a refused structure stays refused in the trace cache
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.Sequential(*[nn.Conv2d(4 if i else 3, 4, 3, padding=1) for i in range(8)])
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.convs(x).mean((2, 3)))

    ticks = iter(range(10**6))  # a clock one second further at every reading: the deadline passes in the forward
    with pytest.raises(FrontierError, match=r"tracing Slow's graph took longer than the limit of 5 s") as caught:
        unit_groups(Slow(), limit=5, clock=lambda: float(next(ticks)))
    assert "\n" not in str(caught.value)
    with pytest.raises(FrontierError, match="took longer"):  # refused again, without tracing
        unit_groups(Slow())


def test_a_slow_equivalence_check_is_refused_with_one_line_naming_the_model_and_the_limit(halved) -> None:
    model = halved("resnet")[0]
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in unit_groups(model)}
    ticks = iter(range(10**6))  # one second further at every reading: the limit passes in the surgery or a forward
    with pytest.raises(FrontierError, match=r"surgery: checking ResNet's shrunk network against the gated one "
                                            r"took longer than the limit of 5 s \(surgery.CHECK_LIMIT_S\)") as caught:
        checked_shrink(model, keep, (3, SIZE, SIZE), limit=5, clock=lambda: float(next(ticks)))
    assert "\n" not in str(caught.value)
    stopped = checked_shrink(model, keep, (3, SIZE, SIZE), limit=5, clock=lambda: 0.0)  # the clock alone refused it
    assert _params(stopped) < _params(model)


def _wrong(model: nn.Module, change, *, every: bool) -> list:
    """``model``'s unit groups, those with a BatchNorm member (``every``, else the first) changed by
    ``change(group, index of that member)``."""
    groups, changed = unit_groups(model), 0
    for i, group in enumerate(groups):
        norm = next((j for j, m in enumerate(group.members)
                     if isinstance(model.get_submodule(m.name), nn.BatchNorm2d)), None)
        if norm is not None and (every or not changed):
            groups[i], changed = change(group, norm), changed + 1
    assert changed, "no group with a BatchNorm"
    return groups


def test_a_unit_table_that_changes_the_function_is_refused_before_it_is_timed(halved) -> None:
    """A table whose BatchNorms' channels are reversed runs, gated and shrunk, but computes two things."""
    model = halved("resnet")[0]

    def reversed_norm(group, j):
        members = list(group.members)
        members[j] = dataclasses.replace(members[j], channels=members[j].channels[::-1])
        return dataclasses.replace(group, members=tuple(members))

    groups = _wrong(model, reversed_norm, every=True)
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in groups}
    with pytest.raises(FrontierError, match=r"surgery: ResNet's shrunk network differs from the gated one by "
                                            r".*its unit table is wrong for this model") as caught:
        checked_shrink(model, keep, (3, SIZE, SIZE), groups)
    assert "\n" not in str(caught.value)


def test_a_unit_table_that_breaks_the_shrunk_network_is_one_line_not_a_crash(halved) -> None:
    """A table that forgets a reader of its channels: the shrunk network's next layer gets too few."""
    model = halved("resnet")[0]

    def without_readers(group, _j):
        return dataclasses.replace(group, members=tuple(m for m in group.members if m.role == "out"))

    groups = _wrong(model, without_readers, every=False)
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in groups}
    with pytest.raises(FrontierError, match=r"surgery: ResNet's shrunk network fails on a 2x3x32x32 image, where "
                                            r"the gated one runs \(RuntimeError: .*unit table is wrong") as caught:
        checked_shrink(model, keep, (3, SIZE, SIZE), groups)
    assert "\n" not in str(caught.value)


def test_an_image_the_model_does_not_take_is_one_line(halved) -> None:
    model = halved("resnet")[0]
    keep = {g.name: torch.arange(g.size) % 2 == 0 for g in unit_groups(model)}
    with pytest.raises(FrontierError, match=r"surgery: ResNet does not run on a 2x1x32x32 image \(RuntimeError: "
                                            r".*input_shape must be an image it takes") as caught:
        checked_shrink(model, keep, (1, SIZE, SIZE))
    assert "\n" not in str(caught.value)


def test_an_unknown_timm_name_says_how_to_list_names_and_a_missing_timm_how_to_install_it(monkeypatch) -> None:
    with pytest.raises(FrontierError, match=r"'resnet9000' is not a timm model; list them with .*list_models"):
        architecture("timm:resnet9000")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm raises ImportError
    with pytest.raises(FrontierError, match=r"pip install 'frontier\[timm\]'"):
        architecture("timm:resnet10t")
