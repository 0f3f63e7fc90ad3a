"""Shared fixtures: digits splits for the source (0-4) and target (5-9) domains, and one local Ray."""

from __future__ import annotations

import os

import pytest
import torch

from trainables.data import DataSpec, load_data

torch.set_num_threads(2)
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

SOURCE = DataSpec(name="digits", classes=[0, 1, 2, 3, 4], image_size=32)
TARGET = DataSpec(name="digits", classes=[5, 6, 7, 8, 9], image_size=32)


@pytest.fixture(scope="session")
def source_splits():
    return load_data(SOURCE)


@pytest.fixture(scope="session")
def target_splits():
    return load_data(TARGET)
