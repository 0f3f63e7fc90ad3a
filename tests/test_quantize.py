"""Weight sharing: groups, sharing per tensor, the artifact it makes, retraining, and the sweep."""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision.models import resnet18, vgg16

from search.final.sensitivity import propose_groups, sensitivity, write_sensitivity
from tests.conftest import SOURCE, TARGET
from trainables.compress.artifact import load_artifact, save_artifact
from trainables.errors import FrontierError
from trainables.models import build_model
from trainables.stage import Context
from trainables.stages.share import (
    RetrainConfig,
    Share,
    ShareConfig,
    frozen_parameters,
    layer_groups,
    nothing_to_retrain,
    retrain,
    share,
    shared_tensors,
)
from trainables.stages.transfer import TransferConfig, transfer
from trainables.train import EVAL_BATCH_SIZE, OptimConfig, evaluate, fit, loader, seed_everything


def distinct_nonzero(t: torch.Tensor) -> int:
    return int(torch.unique(t[t != 0]).numel())


def test_groups_follow_resnet_stages_and_the_papers_vgg_numbering() -> None:
    r18 = layer_groups(build_model("resnet18", 3))
    assert list(r18) == ["stem", "layer1", "layer2", "layer3", "layer4", "fc"]
    assert "layer2.0.downsample.0" in r18["layer2"] and r18["stem"] == ["conv1"]
    with torch.device("meta"):
        vgg = layer_groups(build_model("vgg16", 3))
    assert len(vgg) == 16 and vgg["layer14"] == ["classifier.0"] and vgg["layer15"] == ["classifier.3"]


def test_share_leaves_k_values_per_tensor_in_the_chosen_group_only() -> None:
    model = build_model("small_resnet", 5)
    before = copy.deepcopy(model.state_dict())
    shared = share(model, ShareConfig(groups={"layer3": 8, "layer1": "keep"}, bias="one"))
    assert set(shared) == {f"{n}.weight" for n in layer_groups(model)["layer3"]} | {"fc.bias"}
    state = model.state_dict()
    for name in layer_groups(model)["layer3"]:
        assert distinct_nonzero(state[f"{name}.weight"]) <= 8
    assert torch.equal(state["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    assert distinct_nonzero(state["fc.bias"]) == 1
    assert state["fc.bias"][0] == pytest.approx(before["fc.bias"].mean().item(), abs=1e-6)


def test_batchnorm_tensors_are_shared_each_on_its_own_when_asked() -> None:
    model = build_model("small_resnet", 5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    shared = share(model, ShareConfig(batchnorm=2))
    assert "bn1.running_var" in shared and "layer1.0.bn2.weight" in shared and "fc.weight" not in shared
    assert distinct_nonzero(model.bn1.running_var) == 2 and distinct_nonzero(model.layer1[0].bn2.weight) == 2
    assert not set(shared) & {n for n, _ in model.named_parameters() if n.endswith("conv1.weight")}


def test_pruned_zeros_stay_zero_and_are_not_a_centroid() -> None:
    model = build_model("small_resnet", 5)
    w = model.layer3[0].conv2.weight
    with torch.no_grad():
        w[w.abs() < w.abs().median()] = 0
    zeros = w == 0
    share(model, ShareConfig(groups={"layer3": 4}))
    assert torch.equal(model.layer3[0].conv2.weight == 0, zeros)
    assert distinct_nonzero(model.layer3[0].conv2.weight) == 4


def test_shared_model_makes_a_smaller_artifact_that_loads_back_exactly(tmp_path: Path) -> None:
    model = build_model("resnet18", 5)
    dense = save_artifact(model.state_dict(), tmp_path / "dense.h5")
    share(model, ShareConfig(groups={"layer3": 16, "layer4": 16}, bias="one"))
    size = save_artifact(model.state_dict(), tmp_path / "shared.h5")
    assert size == os.path.getsize(tmp_path / "shared.h5") and size < 0.6 * dense
    loaded, _ = load_artifact(tmp_path / "shared.h5")
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_bad_configs_are_named() -> None:
    with pytest.raises(ValueError, match="layer3: centroids must be a power of two from 1 to 256 or 'keep', got 3"):
        ShareConfig(groups={"layer3": 3})
    with pytest.raises(ValueError, match="got 512"):
        ShareConfig(groups={"layer3": 512})
    with pytest.raises(FrontierError, match="share.groups.layer9: no such layer group; this model has stem"):
        share(build_model("small_resnet", 2), ShareConfig(groups={"layer9": 4}))


@pytest.fixture(scope="module")
def transferred(source_splits, target_splits):
    """small_resnet trained on digits 0-4, fine-tuned on 5-9."""
    seed_everything(0)
    model = build_model("small_resnet", 5)
    fit(model, loader(source_splits.train, 32, shuffle=True), loader(source_splits.val, EVAL_BATCH_SIZE, shuffle=False),
        OptimConfig(), 6, restore_best=True)
    model, metrics = transfer(model, target_splits, TransferConfig(epochs=6, batch_size=32))
    return model, metrics["accuracy"]


AGGRESSIVE = ShareConfig(groups={"layer2": 4, "layer3": 2}, bias="one")  # lost ~0.6 of 1.0, not down to chance


@pytest.mark.slow  # 32 s with its fixture: off the 5-minute loop
def test_unlabeled_retraining_recovers_half_the_loss_and_is_timed_beside_labeled(
        transferred, source_splits, target_splits) -> None:
    dense_model, dense_acc = transferred
    test = loader(target_splits.test, EVAL_BATCH_SIZE, shuffle=False)
    results = {}
    for mode in ("unlabeled", "labeled"):
        seed_everything(0)  # the shuffles below, whatever ran before in this module
        model = copy.deepcopy(dense_model)
        shared = share(model, AGGRESSIVE)
        shared_acc = evaluate(model, test)["accuracy"]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        cfg = RetrainConfig(mode=mode, epochs=4, batch_size=32)
        data = ({"unlabeled": loader(source_splits.unlabeled("train"), 32, shuffle=True)} if mode == "unlabeled"
                else {"labeled": loader(target_splits.train, 32, shuffle=True)})
        info = retrain(model, dense_model, shared, cfg, **data)
        after = model.state_dict()
        for name in shared:
            assert torch.equal(after[name], before[name]), f"shared tensor {name} moved"
        assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"]), "BN statistics stay fixed"
        assert not torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
        results[mode] = (shared_acc, evaluate(model, test)["accuracy"], info["retrain_seconds"])
    print({"dense": dense_acc, **results})
    shared_acc, recovered, _ = results["unlabeled"]
    lost = dense_acc - shared_acc
    assert lost > 0.1, f"sharing at 2 centroids should hurt ({dense_acc} -> {shared_acc})"
    assert recovered - shared_acc >= lost / 2, f"unlabeled retraining recovered {recovered - shared_acc} of {lost}"
    assert results["labeled"][2] > 0 and results["unlabeled"][2] > 0


def test_retraining_keeps_a_pruned_model_pruned(transferred, source_splits, tmp_path: Path) -> None:
    """R trains the unshared layers; the zeros of pruning (and a dead unit) must stay zero there,
    or the artifact grows back (it did: 20.6 kB -> 34.6 kB for D|T|90|Q|R on digits)."""
    model = copy.deepcopy(transferred[0])
    teacher = copy.deepcopy(model)
    conv, bn = model.layer1[0].conv1, model.layer1[0].bn1
    with torch.no_grad():
        conv.weight[conv.weight.abs() < conv.weight.abs().quantile(0.7)] = 0
        conv.weight[3] = 0
        bn.weight[3] = bn.bias[3] = 0
    zeros = conv.weight == 0
    shared = share(model, ShareConfig(groups={"layer3": 4}))
    before = save_artifact(model.state_dict(), tmp_path / "before.h5")
    retrain(model, teacher, shared, RetrainConfig(epochs=1, batch_size=64),
            unlabeled=loader(source_splits.unlabeled("train"), 64, shuffle=True))
    assert set(model.state_dict()) == set(teacher.state_dict()), "no pruning reparametrization is left behind"
    assert torch.equal(model.layer1[0].conv1.weight == 0, zeros)
    assert model.layer1[0].bn1.weight[3] == 0 and model.layer1[0].bn1.bias[3] == 0
    assert not torch.equal(model.layer1[0].conv1.weight, teacher.layer1[0].conv1.weight * ~zeros), "it trained"
    assert save_artifact(model.state_dict(), tmp_path / "after.h5") < 1.1 * before


def test_retraining_freezes_every_parameter_of_a_shared_layer_not_only_its_shared_tensors(source_splits) -> None:
    """Sec. III-B: "We keep the quantized layers as non-trainable". With ``bias: keep`` only fc's
    weight is shared, yet fc is a quantized layer: its bias must not train either."""
    seed_everything(0)
    model = build_model("small_resnet", 5)
    teacher = copy.deepcopy(model)
    shared = share(model, ShareConfig(groups={"fc": 4}, bias="keep"))
    assert set(shared) == {"fc.weight"}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    retrain(model, teacher, shared, RetrainConfig(epochs=1, batch_size=64),
            unlabeled=loader(Subset(source_splits.unlabeled("train"), range(128)), 64, shuffle=True))
    after = model.state_dict()
    assert torch.equal(after["fc.weight"], before["fc.weight"])
    assert torch.equal(after["fc.bias"], before["fc.bias"]), "the shared layer's unshared bias trained"
    for name in ("layer1.0.conv1.weight", "bn1.weight", "layer3.0.bn2.bias"):
        assert not torch.equal(after[name], before[name]), f"unshared {name} did not train"


def test_shared_layers_map_tensors_to_every_parameter_of_their_module() -> None:
    model = build_model("small_resnet", 5)
    # a layer is quantized when its weight is shared: fc's shared bias stays fixed, its weight trains
    assert frozen_parameters(model, {"fc.bias"}) == {"fc.bias"}
    assert frozen_parameters(model, {"fc.weight"}) == {"fc.weight", "fc.bias"}
    # batch-norm layers are layers of their own: sharing a conv leaves its batch norm trainable ...
    assert frozen_parameters(model, {"layer1.0.conv1.weight"}) == {"layer1.0.conv1.weight"}
    # ... and sharing batch norm (batchnorm: k) freezes each one's gamma and beta
    shared = share(copy.deepcopy(model), ShareConfig(batchnorm=16))
    assert {"bn1.weight", "bn1.bias", "layer2.0.bn1.bias"} <= frozen_parameters(model, shared)
    assert not any(name.endswith("conv1.weight") for name in frozen_parameters(model, shared))


def _digests(model: torch.nn.Module) -> dict[str, str]:
    """A SHA-256 of each tensor's bytes: whether it changed, exactly, without a second copy of VGG-16."""
    return {k: hashlib.sha256(v.detach().contiguous().numpy().tobytes()).hexdigest() for k, v in model.state_dict().items()}


def _retrain_on_noise(model: torch.nn.Module, cfg: ShareConfig, size: int = 32) -> tuple[dict, dict, dict]:
    """Share ``model`` as ``cfg`` says and retrain it one step on 4 random images of ``size`` px
    (SGD without momentum: no optimizer state beside a 138M-parameter VGG-16); returns the
    tensors' digests before and after retraining and what was shared."""
    torch.manual_seed(0)
    teacher = copy.deepcopy(model).eval()
    shared = share(model, cfg)
    before = _digests(model)
    images = DataLoader([torch.randn(3, size, size) for _ in range(4)], batch_size=4)
    retrain(model, teacher, shared, RetrainConfig(epochs=1, optim=OptimConfig(name="sgd", lr=0.01, momentum=0.0)),
            unlabeled=images)
    return before, _digests(model), shared


def _random_biases(model: torch.nn.Module) -> None:
    """torchvision initialises biases at 0; random ones make sharing them at one centroid visible."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None:
                m.bias.uniform_(-0.1, 0.1)


def test_vgg16_with_every_bias_shared_retrains_its_unshared_layers_and_the_classifier() -> None:
    """The paper's VGG-16 configuration, cheaply: every bias at one centroid (``bias: one``), the
    weights of two small layers shared. VGG-16 has no batch norm, so freezing every layer with a
    shared bias left the optimizer an empty parameter list (issue 23). The weight-shared layers
    stay as shared; every other layer's weight trains, the classifier's (layer16) included; every
    bias keeps its one shared value, so the artifact still stores it as one centroid."""
    torch.manual_seed(0)
    model = vgg16(num_classes=5)
    _random_biases(model)
    groups = layer_groups(model)
    before, after, shared = _retrain_on_noise(model, ShareConfig(groups={"layer1": 4, "layer2": 4}, bias="one"))
    frozen_layers = groups["layer1"] + groups["layer2"]
    assert groups["layer16"] == ["classifier.6"]
    state = model.state_dict()
    for layer in (name for names in groups.values() for name in names):
        weight, bias = f"{layer}.weight", f"{layer}.bias"
        if layer in frozen_layers:
            assert after[weight] == before[weight], f"weight-shared {layer} trained"
        else:
            assert after[weight] != before[weight], f"unshared {layer} did not train"
        assert after[bias] == before[bias], f"{layer}'s shared bias moved"
        assert distinct_nonzero(state[bias]) == 1 and shared[bias] == 1


def test_a_resnets_classifier_retrains_when_its_bias_is_shared() -> None:
    """ResNet-18 with ``bias: one`` (only fc has a bias) and stem and layer1 shared: fc was frozen
    whole although the paper retrains the last layer. Now fc's weight and the unshared convs train,
    batch norm (``batchnorm: keep``) trains, the shared convs and fc's shared bias stay."""
    torch.manual_seed(0)
    model = resnet18(num_classes=5)
    _random_biases(model)
    before, after, shared = _retrain_on_noise(model, ShareConfig(groups={"stem": 4, "layer1": 4}, bias="one"))
    assert set(shared) == {"conv1.weight", "fc.bias"} | {f"{n}.weight" for n in layer_groups(model)["layer1"]}
    assert after["fc.weight"] != before["fc.weight"], "the classifier did not train"
    assert after["fc.bias"] == before["fc.bias"] and distinct_nonzero(model.fc.bias) == 1
    for name in shared:
        assert after[name] == before[name], f"shared {name} moved"
    for name in ("layer2.0.conv1.weight", "layer4.1.conv2.weight", "layer2.0.downsample.0.weight",
                 "layer1.0.bn1.weight", "bn1.bias"):
        assert after[name] != before[name], f"unshared {name} did not train"


def test_retraining_with_nothing_left_to_train_is_one_clear_error(tmp_path: Path) -> None:
    """Every layer's weight shared and no batch norm to train: retrain refuses with a FrontierError
    naming what was shared, not torch's "optimizer got an empty parameter list"; the stage refuses
    before it clusters anything."""
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    cfg = ShareConfig(groups={"layer1": 2, "layer2": 2}, bias="one")
    assert nothing_to_retrain(model, shared_tensors(model, cfg)) is not None
    assert nothing_to_retrain(model, shared_tensors(model, ShareConfig(groups={"layer1": 2}, bias="one"))) is None
    state = copy.deepcopy(model.state_dict())
    images = DataLoader([torch.randn(3, 8, 8) for _ in range(4)], batch_size=2)
    with pytest.raises(FrontierError, match=r"retrain: shared \(4 tensors\): retraining would train nothing: "
                                            r"all 4 parameters are frozen \(the weights of 2 layers are shared"):
        retrain(model, copy.deepcopy(model), shared_tensors(model, cfg), RetrainConfig(), unlabeled=images)
    with pytest.raises(FrontierError, match="share.groups: retraining would train nothing"):
        Share(cfg, RetrainConfig()).run(model, Context(SOURCE, TARGET, tmp_path))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), "nothing was shared"
    with torch.device("meta"):  # the check reads names only: it runs on a structure
        vgg = vgg16(num_classes=5)
    every = ShareConfig(groups=dict.fromkeys(layer_groups(vgg), 256), bias="keep")
    assert nothing_to_retrain(vgg, shared_tensors(vgg, every)) is not None


def test_share_stage_reports_before_and_after_retraining(transferred, tmp_path: Path) -> None:
    model, _ = transferred
    ctx = Context(SOURCE, TARGET, tmp_path)
    stage = Share(AGGRESSIVE, RetrainConfig(epochs=2, batch_size=32))
    assert stage.label == "Q|R"
    _, metrics = stage.run(copy.deepcopy(model), ctx)
    assert metrics["accuracy"] > metrics["shared_accuracy"]
    assert metrics["shared_tensors"] == len(layer_groups(model)["layer2"]) + len(layer_groups(model)["layer3"]) + 1
    assert metrics["retrain_seconds"] > 0


def test_sensitivity_sweep_table_plot_and_proposal(transferred, target_splits, tmp_path: Path) -> None:
    model, _ = transferred
    table = sensitivity(model, loader(target_splits.val, EVAL_BATCH_SIZE, shuffle=False),
                        loader(target_splits.test, EVAL_BATCH_SIZE, shuffle=False), ks=(1, 4, 64), groups=["layer1", "layer3"])
    assert list(table.columns) == ["group", "k", "val_accuracy", "test_accuracy", "size_bytes"]
    assert len(table) == 1 + 2 * 3
    base = table.iloc[0]
    rows = table.set_index(["group", "k"])
    for split in ("val_accuracy", "test_accuracy"):
        assert rows.loc[("layer3", 64), split] >= base[split] - 0.05, "64 centroids barely hurt"
        assert rows.loc[("layer3", 1), split] < base[split] - 0.2, "one centroid wrecks a stage"
    assert rows.loc[("layer3", 4), "size_bytes"] < rows.loc[("layer3", 64), "size_bytes"] < base["size_bytes"]
    proposal = propose_groups(table, max_drop=0.02)
    assert set(proposal) == {"layer1", "layer3"} and proposal["layer3"] in (4, 64)
    csv, html = write_sensitivity(table, tmp_path, "small_resnet on digits 5-9")
    assert csv.read_text().startswith("group,k,val_accuracy,test_accuracy,size_bytes")
    page = html.read_text()
    assert "plotly" in page.lower() and "validation accuracy" in page and "test accuracy" in page


def test_the_proposal_chooses_centroids_on_validation_accuracy_not_test_accuracy() -> None:
    """Test accuracy would choose 1 centroid (no drop) and 8 would look bad; validation says the
    opposite. The proposal follows validation: the test split stays held out."""
    table = pd.DataFrame([
        {"group": "none", "k": 0, "val_accuracy": 0.90, "test_accuracy": 0.90, "size_bytes": 100},
        {"group": "layer3", "k": 1, "val_accuracy": 0.50, "test_accuracy": 0.90, "size_bytes": 10},
        {"group": "layer3", "k": 8, "val_accuracy": 0.90, "test_accuracy": 0.50, "size_bytes": 30},
        {"group": "layer1", "k": 1, "val_accuracy": 0.40, "test_accuracy": 0.95, "size_bytes": 10},
    ])
    assert propose_groups(table, max_drop=0.01) == {"layer3": 8, "layer1": "keep"}


def test_the_share_stage_imports_neither_pandas_nor_plotly() -> None:
    """The sensitivity analysis (pandas, plotly) is frontier sweep's (search/final/sensitivity.py), not the stage's."""
    import subprocess
    import sys

    code = ("import sys, trainables.stages.share; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'pandas', 'plotly'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_range_of_numbered_layers_is_a_share_group() -> None:
    """The paper's best ResNet-50 configuration shares its 13rd-49th layers, numbered as the paper
    numbers ResNet-50's 50 layers: 49 convolutions and the classifier, shortcut projections not counted."""
    from trainables.stages.share import group_layers

    model = build_model("resnet50", 3)
    main_path = [name for name, m in model.named_modules()
                 if isinstance(m, (nn.Conv2d, nn.Linear)) and "downsample" not in name]
    assert len(main_path) == 50 and main_path[-1] == "fc"
    assert main_path[12] == "layer2.0.conv3" and main_path[48] == "layer4.2.conv3"  # the paper's 13th and 49th
    assert group_layers(model, "layers13-49") == main_path[12:49]
    assert group_layers(model, "layer3") == layer_groups(model)["layer3"]
    for bad in ("layers0-3", "layers5-4", "layers50-55", "layers1-x"):
        assert group_layers(model, bad) is None, bad
    shared = shared_tensors(model, ShareConfig(groups={"layers13-49": 256}))
    assert set(shared) == {f"{name}.weight" for name in main_path[12:49]}
    with pytest.raises(FrontierError, match=r"share.groups.layers50-60: no such layer group; .*layers<a>-<b> of its layers 1-50"):
        shared_tensors(model, ShareConfig(groups={"layers50-60": 4}))
