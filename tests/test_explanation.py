"""Explanation as a picture: a grid of maps for notebooks (``_repr_png_``) and ``show()``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.errors import TaskcamError


@pytest.fixture
def exp(make_cnn):
    x = torch.rand(2, 3, 16, 16)
    return taskcam.explain(make_cnn(), x, [ClassTarget(1), ClassTarget(3), ClassTarget(4)], "2"), x


def test_a_notebook_shows_an_explanation_as_its_maps(exp):
    explanation, _ = exp
    png = explanation._repr_png_()
    picture = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert np.array_equal(picture, explanation.picture())
    # two rows (images) of three cells (targets), each at least 96 px
    assert picture.shape[0] >= 2 * 96 and picture.shape[1] >= 3 * 96


def test_the_maps_go_over_the_images_given_with_labels(exp):
    explanation, x = exp
    plain = explanation.picture()
    over = explanation.picture(x, labels=["one", "three", "four"], alpha=0.3)
    assert over.shape[1] == plain.shape[1] and over.shape[0] > plain.shape[0]  # a label strip
    uint8 = [np.rint(img.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for img in x]
    a, b = explanation.picture(uint8, alpha=0.3), explanation.picture(x, alpha=0.3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # the same images, either form
    with pytest.raises(TaskcamError, match=r"picture: 1 image\(s\) for maps of 2 image\(s\)"):
        explanation.picture(x[:1])


def test_show_opens_the_picture_outside_notebooks(exp, monkeypatch):
    shown = []
    monkeypatch.setattr(Image.Image, "show", lambda self, *a, **k: shown.append(self.size))
    picture = exp[0].show()
    assert isinstance(picture, Image.Image) and shown == [picture.size]
