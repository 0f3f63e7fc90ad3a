"""Weight sharing as the quantization-retraining paper sets it (sec. IV), measured as real files.

For VGG-16 and ResNet-50 (torchvision architectures) this writes, side by side:

- the baseline: the state dict as plain HDF5, one gzip dataset per tensor in its own dtype
  (float32), no shuffle, no sparse or shared tricks, at h5py's default gzip level 4 (the paper
  stores its models with "HDF5 with its transparent gzip compression"; level 9 is far slower on
  shared float32 values and no better on random ones);
- frontier's artifact (``trainables.compress.artifact``: gzip 9 + shuffle, dense/sparse/shared per tensor)
  of the unshared model;
- the paper's chosen setting, made with ``trainables.compress.clustering.cluster(w, k, "kmeans")``:
  VGG-16: weights of layers 14 and 15 (``classifier.0``, ``classifier.3``; layers numbered 1-16
  over the 13 convs and 3 linears) at 32 centroids, every conv/linear bias at 1 centroid.
  ResNet-50: weights of layers 13-49 at 256 centroids, the only bias (``fc.bias``) at 1, BatchNorm
  left alone. Layers numbered conv1 = 1, then conv1/conv2/conv3 of each bottleneck in order
  (2-49), fc = 50. A downsample conv is not numbered: it goes with its block's conv3 (its output is
  added to conv3's), so it is shared when conv3 is (here layer2.0.downsample.0 with layer 13);
- that shared model in frontier's artifact, and as the plain float32+gzip baseline writes it (how
  the paper measured its sizes).

No pretrained weights are on this machine: the models are randomly initialised
(``torch.manual_seed(0)``). Random weights barely compress and trained weights have other value
distributions, so the absolute reductions differ from the paper's 81.10% (VGG-16) and 52.45%
(ResNet-50). torchvision initialises VGG-16's biases to 0, so sharing them at one centroid changes
nothing here.

Bits per shared weight: the file bytes the shared weight tensors cost, measured as the size of
the shared model's artifact minus the size of the same artifact without those tensors, times 8,
over their number of values. Goal (issue "the HDF5 artifact stores a shared layer as its codebook
plus packed indices"): at most log2(k) + 0.1 bits for both models, and the artifact loads back
bit for bit.

    python bench/storage.py [--smoke]

``--smoke``: the same steps on slim stand-ins with the same layer names and numbering: VGG-16 with
an eighth of the conv channels and 256-wide linears, ResNet-50 with 8 channels per group (1.1 M
and 4.2 M parameters, 10 classes). Their sizes are not the paper's models'.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import h5py  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from _common import add_smoke_flag, finish  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models.vgg import VGG, cfgs, make_layers  # noqa: E402

from trainables.compress.artifact import load_artifact, save_artifact  # noqa: E402
from trainables.compress.clustering import cluster  # noqa: E402

BASELINE_GZIP = 4  # h5py's default level
SEED = 0
PAPER = {"VGG-16": 81.10, "ResNet-50": 52.45}  # size reduction (%) the paper reports


def slim_vgg16(weights: None = None) -> nn.Module:
    """VGG-16's 13 convs and 3 linears, named as torchvision names them, an eighth as wide (smoke)."""
    model = VGG(make_layers([c if c == "M" else c // 8 for c in cfgs["D"]]), num_classes=10)
    model.classifier[0] = nn.Linear(cfgs["D"][-2] // 8 * 7 * 7, 256)
    model.classifier[3] = nn.Linear(256, 256)
    model.classifier[6] = nn.Linear(256, 10)
    return model


def slim_resnet50(weights: None = None) -> nn.Module:
    """ResNet-50's blocks and names with 8 channels per group instead of 64 (smoke)."""
    return torchvision.models.resnet50(weights=weights, width_per_group=8, num_classes=10)


def vgg16_plan(model: nn.Module) -> tuple[dict[str, int], list[str]]:
    """Weight name -> k for the paper's VGG-16 setting, and the conv/linear biases (1 centroid)."""
    layers = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 16 and layers[13] == "classifier.0" and layers[14] == "classifier.3"
    weights = {f"{name}.weight": 32 for number, name in enumerate(layers, start=1) if number in (14, 15)}
    return weights, [f"{name}.bias" for name in layers]


def resnet50_numbers(model: torchvision.models.ResNet) -> dict[str, int]:
    """Conv/linear module name -> the paper's layer number (downsample convs take their conv3's)."""
    numbers, number = {"conv1": 1}, 2
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        for i, block in enumerate(getattr(model, stage)):
            for conv in ("conv1", "conv2", "conv3"):
                numbers[f"{stage}.{i}.{conv}"] = number
                number += 1
            if block.downsample is not None:
                numbers[f"{stage}.{i}.downsample.0"] = number - 1
    numbers["fc"] = number
    assert number == 50
    return numbers


def resnet50_plan(model: nn.Module) -> tuple[dict[str, int], list[str]]:
    numbers = resnet50_numbers(model)
    weights = {f"{name}.weight": 256 for name, number in numbers.items() if 13 <= number <= 49}
    biases = [f"{name}.bias" for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))
              and m.bias is not None]  # fmt: skip
    assert biases == ["fc.bias"]
    return weights, biases


def shared_state(state: dict[str, torch.Tensor], weights: dict[str, int], biases: list[str]) -> dict[str, torch.Tensor]:
    """The state dict with each listed tensor replaced by its k-means centroids (sec. III-A)."""
    out = dict(state)
    for name, k in [*weights.items(), *((b, 1) for b in biases)]:
        centroids, labels = cluster(state[name], k, "kmeans")
        out[name] = torch.from_numpy(centroids[labels].reshape(tuple(state[name].shape)))
    return out


def save_plain(state: dict[str, torch.Tensor], path: Path) -> int:
    """The baseline: one plain gzip dataset per tensor, in its own dtype."""
    with h5py.File(path, "w") as f:
        for name, tensor in state.items():
            array = tensor.detach().cpu().numpy()
            if array.ndim == 0:  # HDF5 cannot filter a scalar
                f.create_dataset(name, data=array)
            else:
                f.create_dataset(name, data=array, compression="gzip", compression_opts=BASELINE_GZIP)
    return path.stat().st_size


def measure(label: str, model: nn.Module, plan: tuple[dict[str, int], list[str]], folder: Path) -> dict:
    weights, biases = plan
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    timer, seconds = time.perf_counter(), {}

    def lap(step: str) -> None:
        nonlocal timer
        now = time.perf_counter()
        seconds[step] = round(now - timer, 1)
        timer = now

    figures: dict = {"params": sum(t.numel() for t in state.values())}
    figures["baseline_bytes"] = save_plain(state, folder / "baseline.h5")
    lap("baseline")
    figures["unshared_bytes"] = save_artifact(state, folder / "unshared.h5")
    lap("artifact unshared")
    shared = shared_state(state, weights, biases)
    lap("k-means")
    figures["shared_bytes"] = save_artifact(shared, folder / "shared.h5")
    lap("artifact shared")
    loaded, _ = load_artifact(folder / "shared.h5")
    figures["exact"] = list(loaded) == list(shared) and all(torch.equal(loaded[k], v) for k, v in shared.items())
    with h5py.File(folder / "shared.h5") as f:
        rows = {row["name"].decode(): row for row in f["index"][()]}
    figures["encodings_shared"] = all(rows[name]["encoding"] == b"shared" for name in weights)
    index_bytes = sum(int(rows[name]["count"]) * 4 + int(rows[name]["aux_count"]) for name in weights)
    del loaded
    lap("load + compare")
    without = save_artifact({k: v for k, v in shared.items() if k not in weights}, folder / "without.h5")
    lap("artifact without shared weights")
    figures["plain_shared_bytes"] = save_plain(shared, folder / "plain_shared.h5")
    lap("baseline of shared model")
    for path in folder.iterdir():
        path.unlink()

    n_shared = sum(state[name].numel() for name in weights)
    (k,) = set(weights.values())
    figures.update(
        shared_tensors=len(weights), shared_weights=n_shared, k=k, biases_at_1=len(biases),
        bits_per_shared_weight=round((figures["shared_bytes"] - without) * 8 / n_shared, 4),
        index_bits_per_shared_weight=round(index_bytes * 8 / n_shared, 4),
        reduction_pct=round(100 * (1 - figures["shared_bytes"] / figures["baseline_bytes"]), 2),
        reduction_unshared_pct=round(100 * (1 - figures["unshared_bytes"] / figures["baseline_bytes"]), 2),
        reduction_plain_shared_pct=round(100 * (1 - figures["plain_shared_bytes"] / figures["baseline_bytes"]), 2),
        paper_reduction_pct=PAPER[label], seconds=seconds,
    )  # fmt: skip
    return figures


def mb(n: int) -> str:
    return f"{n / 1e6:,.2f} MB"


def main() -> None:
    parser = argparse.ArgumentParser()
    add_smoke_flag(parser)
    args = parser.parse_args()
    builders = {"VGG-16": slim_vgg16, "ResNet-50": slim_resnet50} if args.smoke else \
        {"VGG-16": torchvision.models.vgg16, "ResNet-50": torchvision.models.resnet50}
    print(f"storage: the paper's weight-sharing settings as real files; torchvision architectures with random init "
          f"(torch.manual_seed({SEED})): no pretrained weights on this machine, so absolute reductions differ from "
          f"the paper's. Baseline: plain HDF5, one gzip (level {BASELINE_GZIP}, no shuffle) float32 dataset per "
          f"tensor. ResNet-50 numbering: conv1 = 1, bottleneck conv1/conv2/conv3 = 2-49, fc = 50; a downsample "
          f"conv goes with its block's conv3.\n")  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory(prefix="frontier-storage-") as tmp:
        for label, plan in (("VGG-16", vgg16_plan), ("ResNet-50", resnet50_plan)):
            torch.manual_seed(SEED)
            model = builders[label](weights=None).eval()
            results[label] = measure(label, model, plan(model), Path(tmp))
            del model

    table = []
    for label, r in results.items():
        table += [
            (f"{label}: parameters", f"{r['params']:,}"),
            (f"{label}: shared", f"{r['shared_weights']:,} weights in {r['shared_tensors']} tensors at k = {r['k']}, "
                                 f"{r['biases_at_1']} biases at k = 1"),
            (f"{label}: baseline float32 + gzip {BASELINE_GZIP}", mb(r["baseline_bytes"])),
            (f"{label}: frontier artifact, unshared", f"{mb(r['unshared_bytes'])}  ({r['reduction_unshared_pct']:.2f}% "
                                                      f"below baseline)"),
            (f"{label}: frontier artifact, shared", f"{mb(r['shared_bytes'])}  ({r['reduction_pct']:.2f}% below "
                                                    f"baseline; paper: {r['paper_reduction_pct']:.2f}%)"),
            (f"{label}: shared model as float32 + gzip {BASELINE_GZIP}", f"{mb(r['plain_shared_bytes'])}  "
                                                              f"({r['reduction_plain_shared_pct']:.2f}% below baseline)"),
            (f"{label}: bits per shared weight (file)", f"{r['bits_per_shared_weight']:.4f}  (log2 k = "
                                                        f"{math.log2(r['k']):g}; raw codebook + index: "
                                                        f"{r['index_bits_per_shared_weight']:.4f})"),
            (f"{label}: loads back bit for bit", str(r["exact"] and r["encodings_shared"])),
            (f"{label}: seconds", ", ".join(f"{step} {s}" for step, s in r["seconds"].items())),
        ]  # fmt: skip
    met = all(
        r["bits_per_shared_weight"] <= math.log2(r["k"]) + 0.1 and r["exact"] and r["encodings_shared"]
        for r in results.values()
    )
    figures = {
        label.lower().replace("-", ""): {key: value for key, value in r.items() if key != "seconds"}
        for label, r in results.items()
    }
    finish(
        table, figures,
        "bits per shared weight in the file <= log2(k) + 0.1 for VGG-16 (k=32) and ResNet-50 (k=256), and the "
        "shared artifacts load back bit for bit", met, smoke=args.smoke,
    )  # fmt: skip


if __name__ == "__main__":
    main()
