"""A user's own models, written into a folder that is not installed (the tests' ``tmp_path``).

:func:`write_user_package` writes ``<root>/<package>/nets.py`` (and two broken modules), so a spec
can name ``<package>.nets:build`` the way a user names ``my_pkg.models:build``. Nothing here is
importable until a test puts ``root`` on ``sys.path`` (or frontier does, from the plan).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

NETS = '''
"""A user's CNNs: each builder takes no arguments and returns an nn.Module."""

import torch
import torch.nn.functional as F
from torch import nn


class Net(nn.Module):
    """Conv body, global pooling, dropout and a Linear head ("classifier.1")."""

    def __init__(self, classes=6):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(32, classes))

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


class OutOfOrder(Net):
    """Net with its head ("logits") declared first and an unused Linear ("spare") last: only the order
    in which layers run, not the order they are declared in, tells which one makes the logits."""

    def __init__(self, classes=6):
        nn.Module.__init__(self)
        self.logits = nn.Linear(32, classes)
        self.body = Net().body
        self.spare = nn.Linear(32, 99)

    def forward(self, x):
        return self.logits(F.adaptive_avg_pool2d(self.body(x), 1).flatten(1))


class ConvHead(nn.Module):
    """SqueezeNet's kind of head: a 1x1 conv ("head"), then ReLU, pooling and flatten."""

    def __init__(self, classes=4):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, classes, 1)
        self.tail = nn.Sequential(nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.tail(self.head(self.body(x)))


class Pair(Net):
    def forward(self, x):
        return super().forward(x), x


class NormAfterHead(Net):
    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(6)

    def forward(self, x):
        return self.norm(super().forward(x))


class Summed(Net):
    def forward(self, x):
        return super().forward(x).sum(1, keepdim=True)


def build():
    return Net()


def build_out_of_order():
    return OutOfOrder()


def build_conv_head():
    return ConvHead()


def build_pair():
    return Pair()


def build_norm_after_head():
    return NormAfterHead()


def build_summed():
    return Summed()


def build_dict():
    return {"fc": nn.Linear(2, 2)}


def build_failing():
    raise RuntimeError("width must be even")


NOT_CALLABLE = 3
'''


def write_user_package(root: Path, package: str, module: str = "nets") -> str:
    """Write package ``package`` under ``root``; returns ``root`` as a string (its ``sys.path`` entry).

    Modules: ``module`` (the builders above: ``build`` is a small CNN with a 6-way Linear head),
    ``broken`` (a syntax error) and ``needs`` (imports a package that is not installed).
    """
    folder = root / package
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text("")
    (folder / f"{module}.py").write_text(textwrap.dedent(NETS))
    (folder / "broken.py").write_text("def build(:\n    pass\n")
    (folder / "needs.py").write_text("import frontier_missing_dependency\n\ndef build():\n    pass\n")
    return str(root)
