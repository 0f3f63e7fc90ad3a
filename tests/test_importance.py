"""Unit importance: the ABC's contract is enforced, implementations are found by name, L1 is bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.compress.importance import Importance, importance, importance_names
from trainables.compress.importance.l1 import L1Importance
from trainables.compress.units import unit_groups
from trainables.models import build_model


def tiny(depthwise: bool) -> nn.Sequential:
    """conv(1->3) [depthwise 3x3] conv(3->2) pool linear, the first two convs' weights set by hand."""
    middle = [nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.ReLU()] if depthwise else []
    model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.ReLU(), *middle, nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(2, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, -2.0, 3.0]).view(3, 1, 1, 1))
        last = model[4] if depthwise else model[2]
        last.weight.copy_(torch.tensor([[0.5, -0.5, 1.0], [2.0, 0.0, -1.0]]).view(2, 3, 1, 1))
        if depthwise:
            model[2].weight.fill_(10.0)
    return model


def test_l1_scores_each_unit_by_the_absolute_sum_of_its_producing_weights() -> None:
    l1 = importance("l1")
    assert isinstance(l1, L1Importance) and l1.name == "l1"
    scores = {group.name: l1(tiny(False), group) for group in unit_groups(tiny(False))}
    assert torch.equal(scores["0"], torch.tensor([1.0, 2.0, 3.0]))  # |1|, |-2|, |3|
    assert torch.equal(scores["2"], torch.tensor([2.0, 3.0]))  # |.5|+|-.5|+|1|, |2|+|0|+|-1|


def test_a_depthwise_conv_in_the_group_adds_nothing_to_l1() -> None:
    model = tiny(True)
    (group,) = [g for g in unit_groups(model) if g.name == "0"]
    assert {gate.name for gate in group.gates} == {"0", "2"}  # the depthwise conv is coupled to the first
    assert torch.equal(importance("l1")(model, group), torch.tensor([1.0, 2.0, 3.0]))  # its 10s are not counted


@pytest.mark.parametrize("name", ["small_resnet", "mobilenet_v2"])
def test_l1_scores_are_cpu_floats_one_per_unit_of_every_group(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 4)
    for group in unit_groups(model):
        scores = importance("l1")(model, group)
        assert scores.dtype == torch.float32 and scores.shape == (group.size,) and scores.device.type == "cpu"
        assert bool((scores >= 0).all()), group.name


def test_the_contract_is_enforced() -> None:
    with pytest.raises(TypeError, match="abstract"):
        Importance()  # type: ignore[abstract]

    class NoCall(Importance):  # abstract: no __call__, so it may go without a name, and cannot be built
        pass

    with pytest.raises(TypeError, match="abstract"):
        NoCall()  # type: ignore[abstract]
    with pytest.raises(TypeError, match="needs a class attribute `name`"):
        class Nameless(Importance):
            def __call__(self, model, group):
                return torch.zeros(group.size)
    with pytest.raises(TypeError, match="name 'l1' is taken by L1Importance"):
        class Another(Importance):
            name = "l1"

            def __call__(self, model, group):
                return torch.zeros(group.size)


def test_an_importance_is_found_by_name_without_being_listed_anywhere() -> None:
    assert "l1" in importance_names()
    with pytest.raises(ValueError, match="importance must be one of .*l1.* but got 'taylor'"):
        importance("taylor")

    class Reversed(Importance):  # defined anywhere, it registers itself by its name
        name = "test_reversed"

        def __call__(self, model, group):
            return -L1Importance()(model, group)

    assert isinstance(importance("test_reversed"), Reversed)
