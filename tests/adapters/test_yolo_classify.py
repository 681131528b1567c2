"""YOLO classifiers (``-cls``) through ``yolo:``: classifiers explaining their logits.

Real ultralytics ``ClassificationModel``s from their yamls with random weights, and a checkpoint
saved as ultralytics saves one.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.adapters.ultralytics import YoloAdapter, YoloClassifier, load_yolo
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A yolo11n-cls with 5 named classes, saved as ultralytics' trainer saves one (half
    precision, its training arguments beside it)."""
    import copy

    torch.manual_seed(0)
    net = load_yolo("yolo11n-cls.yaml", nc=5)
    net.names = {i: n for i, n in enumerate(("ant", "bee", "cat", "dog", "eel"))}
    path = tmp_path_factory.mktemp("cls") / "best.pt"
    train_args = {"task": "classify", "imgsz": 224, "data": "imagenet5"}
    torch.save({"model": copy.deepcopy(net).half(), "ema": None, "train_args": train_args}, path)
    return path


def test_the_logits_are_the_library_prediction_before_its_softmax(checkpoint):
    loaded = load_model(f"yolo:{checkpoint}")
    assert loaded.task == "classify" and isinstance(loaded.model, YoloClassifier)
    assert loaded.class_names == ["ant", "bee", "cat", "dog", "eel"]
    assert loaded.preprocess.size == (224, 224) and loaded.preprocess.std == (1.0, 1.0, 1.0)
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        logits = loaded.model(x)
        probs, _ = loaded.model.wrapped(x)  # ultralytics' own output: (softmax, logits)
    torch.testing.assert_close(logits.softmax(1), probs)
    assert torch.equal(logits.topk(3).indices, probs.topk(3).indices)


def test_every_class_is_explained_at_a_default_layer(checkpoint):
    loaded = load_model(f"yolo:{checkpoint}")
    x = torch.rand(1, 3, 224, 224)
    exp = taskcam.explain(loaded.model, x, [ClassTarget(0), ClassTarget(3)])
    assert exp.layers == ["model.10.conv"] and exp.maps.shape == (1, 2, 224, 224)
    assert torch.isfinite(exp.maps).all() and not bool(exp.empty.all())


def test_the_command_line_gives_the_top_classes(checkpoint, tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", f"yolo:{checkpoint}", "--targets", "top3"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "classify"
    records = result["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["class"] * 3
    assert {r["class_name"] for r in records} <= {"ant", "bee", "cat", "dog", "eel"}
    probs = [r["probability"] for r in records]
    assert probs == sorted(probs, reverse=True)
    assert np.load(out / records[0]["heatmap"]).shape == (80, 120)


def test_a_classifier_is_not_a_detector():
    with pytest.raises(TaskcamError, match="'classify' model; taskcam explains ultralytics detect"):
        YoloAdapter(load_yolo("yolov8n-cls.yaml", nc=3), size=64)
