"""`frontier check` refuses a spec whose sharing can leave retraining nothing to train (issue 23):
every layer's weight shared (and batch norm, where the model has it) in a trial that retrains.
Values count only where they can meet such a trial, and only together when no choice keeps them apart.
The bad-spec corpus holds the CLI case (tests/specs/bad/retrain_nothing_left.yaml)."""

from __future__ import annotations

from typing import Any

import pytest

from search.spec.load import parse_spec
from search.spec.schema import SpecError

VGG_GROUPS = [f"layer{i}" for i in range(1, 17)]
RESNET_GROUPS = ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]


def spec(model: str, groups: dict[str, Any], space: dict[str, Any], **share: Any) -> dict[str, Any]:
    return {
        "name": "retrain",
        "data": {"source": {"name": "digits", "classes": [0, 1, 2, 3, 4]},
                 "target": {"name": "digits", "classes": [5, 6, 7, 8, 9]}},
        "model": {"name": model},
        "trials": 2,
        "budgets": {"dense": {"epochs": 1}, "share": {"groups": groups, "bias": "one", **share}},
        "space": space,
    }


def problems(raw: dict[str, Any]) -> list[str]:
    try:
        parse_spec(raw)
    except SpecError as exc:
        return exc.problems
    return []


def test_every_vgg16_layer_shared_with_qr_is_one_line_naming_the_key() -> None:
    raw = spec("vgg16", dict.fromkeys(VGG_GROUPS, 32), {"quantize": {"choice": ["Q", "QRI8"]}})
    assert problems(raw) == [
        "budgets.share.groups: a trial can share the weight of every layer of vgg16, which leaves nothing to "
        "retrain, but space.quantize can be QRI8; leave a group at 'keep' there or drop QRI8"]


def test_one_vgg16_layer_kept_or_no_retraining_is_fine() -> None:
    kept = {**dict.fromkeys(VGG_GROUPS, 32), "layer16": "keep"}
    assert problems(spec("vgg16", kept, {"quantize": "QR"})) == []
    assert problems(spec("vgg16", dict.fromkeys(VGG_GROUPS, 32), {"quantize": {"choice": ["Q", "QI8"]}})) == []


def test_a_value_in_a_branch_without_retraining_does_not_count() -> None:
    kept = {**dict.fromkeys(VGG_GROUPS, 32), "layer16": "keep"}
    space = {"quantize": {"choice": {"Q": {"share.groups.layer16": 32}, "QR": {}}}}
    assert problems(spec("vgg16", kept, space)) == []
    space = {"quantize": {"choice": {"Q": {}, "QR": {"share.groups.layer16": {"choice": ["keep", 32]}}}}}
    assert problems(spec("vgg16", kept, space)) == [
        "budgets.share.groups: a trial can share the weight of every layer of vgg16, which leaves nothing to "
        "retrain, but space.quantize can be QR; leave a group at 'keep' there or drop QR"]


def test_a_branch_value_that_always_keeps_a_group_overrides_the_budget() -> None:
    space = {"quantize": {"choice": {"QR": {"share.groups.layer16": "keep"}}}}
    assert problems(spec("vgg16", dict.fromkeys(VGG_GROUPS, 32), space)) == []


def test_values_in_different_branches_of_one_choice_never_add_up() -> None:
    """layer15 is shared only under order PB, layer16 only under PA: no trial shares both."""
    kept = {**dict.fromkeys(VGG_GROUPS, 32), "layer15": "keep", "layer16": "keep"}
    space = {"quantize": "QR", "order": {"choice": {"PB": {"s1": 0.5, "share.groups.layer15": 32},
                                                     "PA": {"s2": 0.5, "share.groups.layer16": 32}}}}
    assert problems(spec("vgg16", kept, space)) == []


@pytest.mark.parametrize(("batchnorm", "refused"), [("keep", False), (16, True)])
def test_a_resnets_batch_norm_trains_unless_it_is_shared_too(batchnorm: Any, refused: bool) -> None:
    raw = spec("resnet18", dict.fromkeys(RESNET_GROUPS, 64), {"quantize": "QR"}, batchnorm=batchnorm)
    expected = ("budgets.share.groups: a trial can share the weight of every layer of resnet18 and its batch norm, "
                "which leaves nothing to retrain, but space.quantize can be QR; leave a group at 'keep' there or drop QR")
    assert problems(raw) == ([expected] if refused else [])
