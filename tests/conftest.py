"""Shared fixtures: tiny seeded models built on the CPU, never downloaded."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread while a module's tests run (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``), the count before put back after. Models of
    many small ops (effdet's separable convolutions on five levels, YOLOX, tiny SAM and OWL-ViT
    configs) ran 5-50× slower in CPU time with two threads on a shared 2-core machine, the
    threads spinning while they wait for each other (effdet's file: 93 s against 16 s; YOLOX
    tiny at 320: 3.8 s against 0.06 s per forward)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
