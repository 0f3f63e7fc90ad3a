"""The papers' protocols as shipped specs pass ``frontier check`` once their data and weights exist
(made stand-ins here: the real ones are what the user brings), and plan the papers' pipelines."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml
from torchvision.models import resnet50

from search.cli import main
from search.spec.load import load_spec
from search.spec.to_plan import plan_for
from tests.test_data import write_cifar10, write_tree

SPACES = Path(__file__).resolve().parent.parent / "spaces"


def with_stand_ins(name: str, tmp_path: Path) -> Path:
    """``spaces/<name>`` with its CIFAR-10 root, ImageFolder root and weights file made in ``tmp_path``."""
    raw = yaml.safe_load((SPACES / name).read_text())
    for domain in ("source", "target"):
        data = raw["data"].get(domain)
        if data is None:
            continue
        root = tmp_path / domain
        if data["name"] == "cifar10":
            write_cifar10(root)
        else:
            write_tree(root, {f"n{k:08d}": 2 for k in range(3)})
        data["root"] = str(root)
    if "weights" in raw["model"]:
        raw["model"]["weights"] = str(tmp_path / "weights.pth")
        torch.save(resnet50().state_dict(), raw["model"]["weights"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_epruning_table_1_spec_checks_and_trains_on_cifar_itself(tmp_path: Path, capsys) -> None:
    path = with_stand_ins("cifar10_resnet18_epruning.yaml", tmp_path)
    assert main(["check", str(path), "--address", "auto"]) == 0, capsys.readouterr().err  # a GPU cluster's spec
    spec = load_spec(path)
    assert spec.data.source is None and spec.model.trained_on == "target" and spec.model.weights is None
    assert spec.budgets.prune.epruning.constrain is False  # the rate is the search's
    pipelines = {plan_for(spec, {"order": "P", "s2": 0.5, "prune.method": method}).pipeline
                 for method in ("epruning", "gradual")}
    assert pipelines == {"D|E|B", "D|50|B"}
    header = (SPACES / "cifar10_resnet18_epruning.yaml").read_text().split("\nname:")[0]
    for deviation in ("random initialisation", "(F) rows", "five runs"):
        assert deviation in header, deviation


def test_the_quantization_paper_spec_shares_resnet50_layers_13_to_49(tmp_path: Path, capsys) -> None:
    path = with_stand_ins("imagenet_resnet50_quantization.yaml", tmp_path)
    assert main(["check", str(path), "--address", "auto"]) == 0, capsys.readouterr().err
    spec = load_spec(path)
    assert spec.model.name == "resnet50" and spec.model.trained_on == "target"
    plan = plan_for(spec, {"order": "none", "quantize": "QR", "share.groups.layers13-49": 256})
    assert plan.pipeline == "D|Q|R|B" and plan.source is not None  # CIFAR-10: the unlabeled images
    share = plan.steps[1]
    assert share.config.groups == {"layers13-49": 256} and share.config.bias == "one"
    assert share.retrain is not None and share.retrain.unlabeled == "source"
    header = (SPACES / "imagenet_resnet50_quantization.yaml").read_text().split("\nname:")[0]
    for bring in ("ImageFolder", "CIFAR-10", "resnet50-0676ba61.pth", "not all 50,000"):
        assert bring in header, bring
