"""Shared fixtures: tiny seeded models built on the CPU, never downloaded."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def resnet18() -> nn.Module:
    """A torchvision ResNet-18 with seeded random weights, in eval mode (shared, read-only)."""
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None).eval()


def small_cnn(inplace: bool = False, seed: int = 0) -> nn.Sequential:
    """``[B, 3, 16, 16] -> [B, 5]``: conv, relu, conv ("2", 6 channels at 8×8), relu, GAP, fc."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()


@pytest.fixture
def make_cnn():
    """The :func:`small_cnn` factory: ``make_cnn(inplace=False, seed=0)``."""
    return small_cnn


@pytest.fixture
def cnn() -> nn.Sequential:
    """A fresh :func:`small_cnn` per test."""
    return small_cnn()


@pytest.fixture(scope="session")
def chelsea_png(tmp_path_factory):
    """scikit-image's cat photo (451 x 300 RGB) written as a PNG file, for command-line runs."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path
