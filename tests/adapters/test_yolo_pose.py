"""YOLO pose models through ``yolo:``: detections with keypoints, and ``--what kptK.x|y|v``.

Real ultralytics ``PoseModel``s built from their yamls with random weights; detections are
checked against ultralytics' own NMS (what its ``PosePredictor`` runs).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import taskcam
from taskcam.adapters.ultralytics import YoloAdapter, YoloPoseTarget, detect, load_yolo
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.options import RunOptions

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def pose():
    torch.manual_seed(0)
    return load_yolo("yolov8n-pose.yaml")


def _x(seed=0):
    return torch.rand(1, 3, 128, 160, generator=torch.Generator().manual_seed(seed))


def test_detections_and_keypoints_equal_ultralytics_nms(pose):
    from ultralytics.utils.nms import non_max_suppression

    x = _x()
    ours = detect(pose, x, conf=0.001, iou=0.7, max_det=10)[0]
    with torch.no_grad():
        preds = pose(x)[0]  # [1, 4 + 1 + 51, A]
    (theirs,) = non_max_suppression(preds, 0.001, 0.7, nc=1, max_det=10)  # [n, 6 + 51]
    assert len(ours) == len(theirs) > 0
    torch.testing.assert_close(ours.boxes, theirs[:, :4])
    torch.testing.assert_close(ours.scores, theirs[:, 4])
    assert torch.equal(ours.classes, theirs[:, 5].long())
    assert ours.keypoints.shape == (len(ours), 17, 3)
    torch.testing.assert_close(ours.keypoints, theirs[:, 6:].reshape(-1, 17, 3))


@pytest.mark.parametrize("what", ["kpt0.x", "kpt5.y", "kpt16.v"])
def test_a_keypoint_target_is_that_keypoint_of_its_own_anchor(pose, what):
    x = _x()
    dets = detect(pose, x, conf=0.0, max_det=3)[0]
    targets = YoloAdapter(pose, size=160).targets(dets, what)
    assert all(type(t) is YoloPoseTarget for t in targets)
    k, j = int(what[3:].split(".")[0]), "xyv".index(what[-1])
    with torch.no_grad():
        out = pose(x)
    got = torch.cat([t(out) for t in targets])
    torch.testing.assert_close(got, dets.keypoints[:, k, j])


def test_keypoint_maps_differ_from_score_maps(pose):
    adapter = YoloAdapter(pose, size=160)
    x = _x()
    dets = detect(pose, x, conf=0.0, max_det=2)[0]
    layers = adapter.default_layers()
    kpt = taskcam.explain(pose, x, [adapter.targets(dets, "kpt9.y")], layers)
    score = taskcam.explain(pose, x, [adapter.targets(dets)], layers)
    assert kpt.maps.shape == (1, 2, 128, 160) and torch.isfinite(kpt.maps).all()
    assert not bool(kpt.empty.all())
    assert not torch.allclose(kpt.maps, score.maps, atol=1e-3)


def test_bad_keypoints_are_refused_naming_the_count(pose):
    dets = detect(pose, _x(), conf=0.0, max_det=1)[0]
    adapter = YoloAdapter(pose, size=160)
    with pytest.raises(TaskcamError, match=r"keypoint 17 does not exist: the model has 17"):
        adapter.targets(dets, "kpt17.x")
    detector = YoloAdapter(load_yolo("yolov8n.yaml", nc=2), size=160)
    with pytest.raises(
        TaskcamError, match=r"what='kpt0.x': a DetectionModel \(ultralytics detect\) has no keyp"
    ):
        detector.targets(detect(detector.model, _x(), conf=0.0, max_det=1)[0], "kpt0.x")
    with pytest.raises(TaskcamError, match=r"--what: expected one of .* kptK\.x, .* got 'kpt3.z'"):
        RunOptions(what="kpt3.z")


def test_the_command_line_writes_keypoints_in_image_pixels(tmp_path):
    image = tmp_path / "people.png"
    Image.fromarray((np.random.default_rng(0).random((90, 200, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "yolo:yolov8n-pose.yaml", "--weights", "none"]
    args += ["--conf", "0.0", "--targets", "0,1", "--what", "kpt3.y", "--size", "160"]
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["task"] == "detect"
    records = result["items"][0]["targets"]
    assert [(r["kind"], r["explains"]) for r in records] == [("detection", "kpt3.y")] * 2
    for record in records:
        points = np.array(record["keypoints"])
        assert points.shape == (17, 3)
        assert (points[:, 0] >= 0).all() and (points[:, 0] <= 200).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] <= 90).all()
        assert np.load(out / record["heatmap"]).shape == (90, 200)


def test_the_command_line_refuses_a_keypoint_the_model_lacks(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    args = ["explain", str(image), "--model", "yolo:yolov8n-pose.yaml", "--weights", "none"]
    assert main([*args, "--what", "kpt20.x", "--out", str(tmp_path / "out")]) != 0
    err = capsys.readouterr().err
    assert "keypoint 20 does not exist: yolo:yolov8n-pose.yaml has 17 (kpt0..kpt16)" in err


def test_a_keypoint_is_refused_with_the_options_before_a_run(tmp_path):
    from taskcam.models import load_model

    detector = load_model("yolo:yolov8n.yaml", weights="none")
    with pytest.raises(TaskcamError, match=r"--what kpt0.x: .*yolov8n.yaml has no keypoints"):
        RunOptions(what="kpt0.x").check(detector)
    RunOptions(what="kpt16.v").check(load_model("yolo:yolov8n-pose.yaml", weights="none"))
