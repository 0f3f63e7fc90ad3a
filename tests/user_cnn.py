"""A user's own CNN, as a user would write it: no torchvision block, every kind of channel join.

``build()`` is what a spec names as ``model: {name: "tests.user_cnn:build"}``. The network has a
residual add (the stem's channels and a block's output), a concatenation of two branches, a
depthwise convolution and a squeeze-excitation product, so its unit groups exercise every
coupling that :mod:`trainables.compress.units` must find on its own.
"""

from __future__ import annotations

import torch
from torch import nn


class UserNet(nn.Module):
    """Stem -> residual block -> two concatenated branches -> depthwise block with SE -> head."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.res_a = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.res_b = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.left = nn.Sequential(nn.Conv2d(width, width, 1), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU())
        joined = width + width // 2
        self.expand = nn.Sequential(nn.Conv2d(joined, 2 * joined, 1, bias=False), nn.BatchNorm2d(2 * joined), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(2 * joined, 2 * joined, 3, stride=2, padding=1, groups=2 * joined, bias=False),
            nn.BatchNorm2d(2 * joined), nn.Hardswish(),
        )
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(2 * joined, 8, 1), nn.ReLU(),
                                     nn.Conv2d(8, 2 * joined, 1), nn.Sigmoid())
        self.project = nn.Sequential(nn.Conv2d(2 * joined, 32, 1, bias=False), nn.BatchNorm2d(32))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.hidden = nn.Linear(32, 24)
        self.classifier = nn.Linear(24, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.res_b(self.res_a(x)))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        x = self.depthwise(self.expand(x))
        x = self.project(x * self.squeeze(x))
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(torch.relu(self.hidden(x)))


def build() -> nn.Module:
    """The user's builder: no arguments, returns the model with its own 10-class head."""
    return UserNet()


class GroupNormNet(nn.Module):
    """A CNN whose only hidden channels are normalised together by a GroupNorm: no exact unit group."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.norm = nn.GroupNorm(2, 8)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3)))


def build_no_units() -> nn.Module:
    """A model unit pruning cannot touch (``tests/specs/bad/no_unit_groups.yaml``)."""
    return GroupNormNet()
