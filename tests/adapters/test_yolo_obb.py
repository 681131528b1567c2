"""YOLO oriented-box (OBB) models through ``yolo:``: each rotated box's score, drawn rotated.

Real ultralytics ``OBBModel``s from their yamls with random weights (their head's weights
perturbed so that boxes are not all alike); detections are ultralytics' own rotated NMS.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
from PIL import Image

import taskcam
from taskcam.adapters.ultralytics import (
    YoloAdapter,
    YoloObbTarget,
    detect,
    load_yolo,
    rotated_corners,
)
from taskcam.cli import main
from taskcam.errors import TaskcamError

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def obb():
    torch.manual_seed(0)
    net = load_yolo("yolov8n-obb.yaml", nc=3)
    with torch.no_grad():
        for p in net.model[-1].parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def _x(seed=0):
    return torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(seed))


def test_detections_are_rows_of_their_own_candidates(obb):
    from ultralytics.utils.nms import non_max_suppression

    x = _x()
    dets = detect(obb, x, conf=1e-4, max_det=20)[0]
    with torch.no_grad():
        preds = obb(x)[0]  # [1, 4 + 3 + 1, A]: x, y, w, h, classes, angle
    (theirs,) = non_max_suppression(preds, 1e-4, 0.7, nc=3, max_det=20, rotated=True)
    assert len(dets) == len(theirs) > 0
    torch.testing.assert_close(dets.scores, theirs[:, 4])
    torch.testing.assert_close(dets.rboxes, torch.cat([theirs[:, :4], theirs[:, -1:]], 1))
    columns = preds[0][:, dets.candidates]  # each detection's own anchor
    torch.testing.assert_close(columns[:4].T, dets.rboxes[:, :4])
    torch.testing.assert_close(columns[4 + dets.classes, torch.arange(len(dets))], dets.scores)
    corners = rotated_corners(dets.rboxes)  # the axis-aligned boxes bound the corners
    assert torch.allclose(dets.boxes[:, :2], corners.amin(1)) and torch.allclose(
        dets.boxes[:, 2:], corners.amax(1)
    )


def test_a_rotated_box_has_the_corners_of_its_angle():
    quarter = rotated_corners(torch.tensor([10.0, 10.0, 8.0, 2.0, math.pi / 2]))
    assert torch.allclose(quarter.amin(0), torch.tensor([9.0, 6.0]), atol=1e-5)
    assert torch.allclose(quarter.amax(0), torch.tensor([11.0, 14.0]), atol=1e-5)


def test_each_box_score_is_explained_in_one_call(obb):
    adapter = YoloAdapter(obb, size=160)
    x = _x()
    dets = detect(obb, x, conf=0.0, max_det=3)[0]
    targets = adapter.targets(dets)
    assert all(type(t) is YoloObbTarget for t in targets)
    with torch.no_grad():
        out = obb(x)
    torch.testing.assert_close(torch.cat([t(out) for t in targets]), dets.scores)
    exp = taskcam.explain(obb, x, [targets], adapter.default_layers())
    assert exp.maps.shape == (1, 3, 128, 160) and torch.isfinite(exp.maps).all()
    with pytest.raises(
        TaskcamError,
        match=r"\(ultralytics obb\) does not explain 'x1'; explain one of \('score',\)",
    ):
        adapter.targets(dets, "x1")


def test_the_command_line_writes_polygons_in_image_pixels(tmp_path):
    image = tmp_path / "aerial.png"
    Image.fromarray((np.random.default_rng(0).random((90, 200, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "yolo:yolov8n-obb.yaml", "--weights", "none"]
    args += ["--conf", "0.0", "--targets", "0,1", "--size", "160"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "detect"
    for record in result["items"][0]["targets"]:
        polygon = np.array(record["polygon"])
        assert polygon.shape == (4, 2)
        assert (polygon[:, 0] >= 0).all() and (polygon[:, 0] <= 200).all()
        assert (polygon[:, 1] >= 0).all() and (polygon[:, 1] <= 90).all()
        assert np.load(out / record["heatmap"]).shape == (90, 200)
