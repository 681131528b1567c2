"""RT-DETR through ``yolo:``: one target per kept query, equal to ultralytics' own prediction.

A real ultralytics ``RTDETRDetectionModel`` from ``rtdetr-l.yaml`` with random weights, at a
small input size; its detections are compared with ``RTDETR(...).predict`` on the same photo.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import taskcam
from taskcam.adapters.ultralytics import load_yolo
from taskcam.adapters.ultralytics.rtdetr import RTDETRAdapter, RTDETRTarget
from taskcam.cli import main
from taskcam.models import load_model

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def rtdetr():
    torch.manual_seed(0)
    return load_yolo("rtdetr-l.yaml", nc=3)


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.chelsea()  # 300 x 451 RGB


def _rows(boxes, scores, classes):
    """Detections as sorted rows (random weights tie scores, so order is compared as a set)."""
    rows = torch.cat([boxes, scores[:, None], classes[:, None].float()], dim=1)
    return sorted(tuple(round(float(v), 3) for v in row) for row in rows)


def test_detections_equal_ultralytics_own_prediction(rtdetr, photo):
    from ultralytics import RTDETR

    wrapper = RTDETR("rtdetr-l.yaml")
    wrapper.model = rtdetr
    bgr = np.ascontiguousarray(photo[..., ::-1])  # ultralytics reads arrays as BGR
    (theirs,) = wrapper.predict(bgr, imgsz=160, conf=0.03, verbose=False, save=False)
    adapter = RTDETRAdapter(rtdetr, size=160, conf=0.03)
    x, placement = adapter.prepare(photo)
    ours = adapter.detect(x)[0]
    assert len(ours) == len(theirs.boxes) > 0
    expected = _rows(theirs.boxes.xyxy, theirs.boxes.conf, theirs.boxes.cls)
    assert _rows(placement.boxes_to_image(ours.boxes), ours.scores, ours.classes) == expected
    assert rtdetr.training is False


def test_each_target_is_its_query_score_or_box_side(rtdetr):
    adapter = RTDETRAdapter(rtdetr, size=128, conf=0.0, max_det=4)
    x = torch.rand(1, 3, 128, 128)
    dets = adapter.detect(x)[0]
    with torch.no_grad():
        out = rtdetr(x)
    scores = torch.cat([t(out) for t in adapter.targets(dets)])
    torch.testing.assert_close(scores, dets.scores)
    for i, side in enumerate(("x1", "y1", "x2", "y2")):
        values = torch.cat([t(out) for t in adapter.targets(dets, side)])
        torch.testing.assert_close(values, dets.boxes[:, i], atol=1e-4, rtol=0)
    assert all(type(t) is RTDETRTarget for t in adapter.targets(dets))


def test_all_queries_of_an_image_in_one_call(rtdetr):
    adapter = RTDETRAdapter(rtdetr, size=128, conf=0.0, max_det=3)
    x = torch.rand(1, 3, 128, 128)
    dets = adapter.detect(x)[0]
    exp = taskcam.explain(rtdetr, x, [adapter.targets(dets)], adapter.default_layers())
    assert exp.layers == ["model.21", "model.24", "model.27"]
    assert exp.maps.shape == (1, 3, 128, 128) and torch.isfinite(exp.maps).all()
    assert not bool(exp.empty.all())


def test_the_command_line_explains_rtdetr_detections(tmp_path, photo):
    image = tmp_path / "chelsea.png"
    Image.fromarray(photo).save(image)
    assert load_model("yolo:rtdetr-l.yaml", weights="none").task == "detect"
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "yolo:rtdetr-l.yaml", "--weights", "none"]
    args += ["--conf", "0.0", "--targets", "0,1", "--size", "128"]
    assert main([*args, "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["detection"] * 2
    for record in records:
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300
        assert np.load(out / record["heatmap"]).shape == (300, 451)
