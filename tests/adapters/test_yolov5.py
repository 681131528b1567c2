"""The original, anchor-based YOLOv5 (the ``yolov5`` package's classes) through ``yolo:PATH.pt``.

Models are the package's own ``yolov5n.yaml`` with random weights, saved as its ``train.py``
saves them (``{"model": model.half(), ...}``, outside the project); detections are compared
with the package's own ``non_max_suppression``.
"""

from __future__ import annotations

import copy
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import taskcam
from taskcam.adapters.yolov5 import (
    Yolov5Adapter,
    Yolov5Target,
    detect,
    is_yolov5_checkpoint,
    package_module,
    yolov5_yaml,
)
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

# the yolov5 package is installed by the Makefile (see its comment): no skip when it is missing
v5 = package_module("models.yolo")
non_max_suppression = package_module("utils.general").non_max_suppression


@pytest.fixture(scope="module")
def yolov5n():
    """yolov5n.yaml with He-initialised convolutions: PyTorch's default init leaves its random
    features so flat that many candidates tie exactly and gradients vanish (1e-14)."""
    torch.manual_seed(0)
    net = v5.Model(yolov5_yaml("yolov5n.yaml"), nc=3).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    with torch.no_grad():
        for conv in net.model[-1].m:  # objectness up, so that detections pass conf
            conv.bias[4 :: 5 + 3] += 4.0
    return net


@pytest.fixture(scope="module")
def checkpoint(yolov5n, tmp_path_factory):
    path = tmp_path_factory.mktemp("v5") / "yolov5n.pt"
    torch.save({"epoch": -1, "model": copy.deepcopy(yolov5n).half(), "optimizer": None}, path)
    return path


@pytest.mark.parametrize("conf", [0.001, 0.05, 0.1])
def test_detections_equal_the_package_nms(yolov5n, conf):
    adapter = Yolov5Adapter(yolov5n, size=320)
    x, _ = adapter.prepare(data.astronaut())
    ours = detect(yolov5n, x, conf=conf, max_det=300)[0]
    with torch.no_grad():
        (theirs,) = non_max_suppression(yolov5n(x)[0], conf, 0.45, max_det=300)
    assert len(ours) == len(theirs) > 0
    torch.testing.assert_close(ours.boxes, theirs[:, :4])
    torch.testing.assert_close(ours.scores, theirs[:, 4])
    assert torch.equal(ours.classes, theirs[:, 5].long())


def test_a_non_square_photo_is_padded_as_detect_py_pads_it(yolov5n):
    """``detect.py`` letterboxes a ``.pt`` model's input to the minimal rectangle
    (``auto=pt``) and scales boxes back with ``scale_boxes``: so do we."""
    general = package_module("utils.general")
    letterbox = package_module("utils.augmentations").letterbox
    image = data.chelsea()  # 451 x 300
    adapter = Yolov5Adapter(yolov5n, size=320, conf=0.05)
    x, placement = adapter.prepare(image)
    theirs = letterbox(image, 320, stride=32, auto=True)[0]
    assert x.shape[-2:] == theirs.shape[:2] == (224, 320)
    assert np.array_equal((x[0].permute(1, 2, 0) * 255).round().byte().numpy(), theirs)
    ours = adapter.detect(x)[0]
    with torch.no_grad():
        (det,) = non_max_suppression(yolov5n(x)[0], 0.05, 0.45, max_det=1000)
    assert len(ours) == len(det) > 0
    back = general.scale_boxes(x.shape[2:], det[:, :4].clone(), image.shape)
    # it takes the top padding as 5.57 input pixels (unrounded) where the image lies 5 down:
    # 0.57 / 0.71 = 0.8 image pixels apart
    torch.testing.assert_close(placement.boxes_to_image(ours.boxes), back, atol=0.85, rtol=0)


def test_targets_read_their_own_candidate(yolov5n):
    adapter = Yolov5Adapter(yolov5n, size=256, conf=0.001)
    x, _ = adapter.prepare(data.astronaut())
    dets = adapter.detect(x)[0].select([0, 1, 2])
    with torch.no_grad():
        out = yolov5n(x)
    torch.testing.assert_close(torch.cat([t(out) for t in adapter.targets(dets)]), dets.scores)
    objectness = torch.cat([t(out) for t in adapter.targets(dets, "objectness")])
    torch.testing.assert_close(objectness, out[0][0, dets.candidates, 4])
    y2 = torch.cat([t(out) for t in adapter.targets(dets, "y2")])
    torch.testing.assert_close(y2, dets.boxes[:, 3])
    assert all(type(t) is Yolov5Target for t in adapter.targets(dets))
    exp = taskcam.explain(yolov5n, x, [adapter.targets(dets)], adapter.default_layers())
    assert exp.layers == ["model.4", "model.6", "model.9"]
    assert exp.maps.shape == (1, 3, 256, 256) and not bool(exp.empty.all())


def test_the_bar_two_detection_records_inside_the_image(checkpoint, tmp_path):
    assert is_yolov5_checkpoint(checkpoint)
    image = tmp_path / "chelsea.png"
    Image.fromarray(data.chelsea()).save(image)  # 451 x 300
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", f"yolo:{checkpoint}", "--conf", "0.001"]
    assert main([*args, "--targets", "0,1", "--size", "320", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["detection"] * 2
    for record in records:
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300
        assert np.load(out / record["heatmap"]).shape == (300, 451)


def test_an_ultralytics_checkpoint_is_not_read_as_yolov5(tmp_path):
    from taskcam.adapters.ultralytics import load_yolo

    path = tmp_path / "v8.pt"
    torch.save({"model": load_yolo("yolov8n.yaml", nc=2), "train_args": {}}, path)
    assert not is_yolov5_checkpoint(path)


def test_without_the_package_the_error_names_it(checkpoint, monkeypatch):
    for name in [m for m in sys.modules if m == "yolov5" or m.startswith("yolov5.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "yolov5", None)  # import yolov5 -> ImportError
    with pytest.raises(TaskcamError, match=r"original YOLOv5 checkpoint .* pip install yolov5"):
        load_model(f"yolo:{checkpoint}")


def test_importing_the_package_leaves_print_options_alone():
    assert torch._tensor_str.PRINT_OPTS.precision == 4  # yolov5 would have set 5
