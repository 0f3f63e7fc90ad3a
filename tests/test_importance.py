"""Unit importance: the ABC's contract is enforced, implementations are found by name, L1 is bit-identical."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from trainables.compress.importance import Importance, importance, importance_names
from trainables.compress.importance.l1 import L1Importance
from trainables.compress.units import UnitGroup, is_depthwise, unit_groups
from trainables.models import build_model


def old_l1_importance(model: nn.Module, group: UnitGroup) -> torch.Tensor:
    """``trainables.compress.units.l1_importance`` as it was before the Importance ABC (verbatim)."""
    total = torch.zeros(group.size)
    for gate in group.gates:
        module = model.get_submodule(gate.name)
        if isinstance(module, (nn.Conv2d, nn.Linear)) and not is_depthwise(module):
            rows = module.weight.detach().flatten(1).abs().sum(dim=1).cpu()
            total += rows[torch.tensor(gate.channels)]
    return total


@pytest.mark.parametrize("name", ["small_resnet", "mobilenet_v2"])
def test_l1_gives_the_old_scores_bit_for_bit(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, 4)
    l1 = importance("l1")
    assert isinstance(l1, L1Importance) and l1.name == "l1"
    for group in unit_groups(model):
        scores = l1(model, group)
        assert scores.dtype == torch.float32 and scores.shape == (group.size,) and scores.device.type == "cpu"
        assert torch.equal(scores, old_l1_importance(model, group)), group.name


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
