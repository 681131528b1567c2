"""``what="mask"``: an instance's mask logits summed over its own pixels (Mask R-CNN, YOLO-seg).

Real torchvision and ultralytics models with random weights; each mask score is checked
against the library's own mask branch, and its maps against the class score's.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torchvision.models.detection as tvd
from PIL import Image

import taskcam
from taskcam.adapters.torchvision_detection import TorchvisionDetectionAdapter
from taskcam.adapters.yolo import YoloAdapter, YoloInstanceTarget, detect, load_yolo
from taskcam.cli import main
from taskcam.errors import TaskcamError

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="module")
def maskrcnn():
    torch.manual_seed(0)
    return tvd.maskrcnn_resnet50_fpn(
        weights=None,
        weights_backbone=None,
        num_classes=3,
        min_size=128,
        max_size=128,
        box_detections_per_img=3,
        box_score_thresh=0.0,
        rpn_post_nms_top_n_test=200,
    ).eval()


@pytest.fixture(scope="module")
def yolo_seg():
    torch.manual_seed(0)
    return load_yolo("yolov8n-seg.yaml", nc=3)


def _x(size=(128, 128), seed=0):
    return torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(seed))


def test_mask_rcnn_mask_scores_are_its_own_mask_logits_over_its_mask(maskrcnn):
    adapter = TorchvisionDetectionAdapter(maskrcnn)
    x = _x()
    dets = adapter.detect(x)[0]
    assert len(dets) == 3
    # torchvision's own forward: the mask predictor's logits of its detections
    seen = []
    handle = maskrcnn.roi_heads.mask_predictor.register_forward_hook(
        lambda _m, _i, out: seen.append(out.detach())
    )
    try:
        with torch.no_grad():
            ref = maskrcnn(list(x))[0]
    finally:
        handle.remove()
    assert torch.equal(ref["labels"], dets.classes)
    logits = seen[0][torch.arange(len(dets)), ref["labels"]]  # [n, 28, 28]
    expected = (logits * (logits > 0)).sum(dim=(1, 2))
    with torch.no_grad():
        out = adapter.model(x)
    targets = adapter.targets(dets, "mask")
    got = torch.cat([t(out) for t in targets])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert maskrcnn.roi_heads.mask_predictor._forward_hooks == {}


def test_mask_rcnn_mask_maps_differ_from_score_maps(maskrcnn):
    adapter = TorchvisionDetectionAdapter(maskrcnn)
    x = _x()
    dets = adapter.detect(x)[0]
    layers = adapter.default_layers()
    mask = taskcam.explain(adapter.model, x, [adapter.targets(dets, "mask")], layers)
    score = taskcam.explain(adapter.model, x, [adapter.targets(dets)], layers)
    assert mask.maps.shape == score.maps.shape == (1, 3, 128, 128)
    assert torch.isfinite(mask.maps).all() and not bool(mask.empty.all())
    assert not torch.allclose(mask.maps, score.maps, atol=1e-3)
    assert maskrcnn.training is False and all(p.requires_grad for p in maskrcnn.parameters())


def test_a_detector_without_masks_refuses_mask_targets():
    det = tvd.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128
    )
    adapter = TorchvisionDetectionAdapter(det)
    dets = adapter.detect(_x())[0]
    with pytest.raises(TaskcamError, match=r"what='mask': a FasterRCNN \(rcnn\) has no masks"):
        adapter.targets(dets, "mask")
    yolo = YoloAdapter(load_yolo("yolov8n.yaml", nc=3), size=128)
    with pytest.raises(TaskcamError, match="what='mask': this YOLO DetectionModel .* without"):
        yolo.targets(detect(yolo.model, _x(), conf=0.0, max_det=1)[0], "mask")


def test_yolo_seg_mask_scores_are_prototype_mixes_over_the_mask(yolo_seg):
    from ultralytics.utils import ops

    x = _x()
    dets = detect(yolo_seg, x, conf=0.0, max_det=3)[0]
    targets = YoloAdapter(yolo_seg, size=128).targets(dets, "mask")
    assert all(type(t) is YoloInstanceTarget and t.what == "mask" for t in targets)
    with torch.no_grad():
        out = yolo_seg(x)
    preds, protos = out[0]  # ultralytics 8.3+: ((preds, protos), raw head outputs)
    nc = 3
    for t, target in enumerate(targets):
        coeffs = preds[0, 4 + nc :, target.candidate]  # [32]
        # ultralytics' own mask of this instance covers the pixels summed over
        theirs = ops.process_mask(protos[0], coeffs[None], dets.boxes[t : t + 1], (128, 128), True)
        theirs = theirs[0] > 0.5
        ours = target.region
        iou = (theirs & ours).sum() / (theirs | ours).sum().clamp(min=1)
        assert iou > 0.9
        up = torch.nn.functional.interpolate(
            (coeffs @ protos[0].flatten(1)).view(1, 1, *protos.shape[-2:]),
            size=(128, 128),
            mode="bilinear",
            align_corners=False,
        )[0, 0]
        torch.testing.assert_close(target(out), up[ours].sum()[None], rtol=1e-4, atol=1e-3)


def test_yolo_seg_mask_targets_explain_every_instance_in_one_call(yolo_seg):
    adapter = YoloAdapter(yolo_seg, size=128)
    x = _x()
    dets = detect(yolo_seg, x, conf=0.0, max_det=3)[0]
    exp = taskcam.explain(adapter.model, x, [adapter.targets(dets, "mask")], "model.22.proto")
    assert exp.maps.shape == (1, 3, 128, 128) and torch.isfinite(exp.maps).all()
    assert not bool(exp.empty.all())


def test_the_command_line_writes_mask_records(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((96, 128, 3)) * 255).astype(np.uint8)).save(
        image
    )
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "yolo:yolov8n-seg.yaml", "--weights", "none"]
    args += ["--conf", "0.0", "--targets", "0,1", "--what", "mask", "--size", "128"]
    assert main([*args, "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert [(r["kind"], r["explains"]) for r in records] == [("region", "mask")] * 2
    assert all(r["pixels"] >= 0 for r in records)
    heat = np.load(out / records[0]["heatmap"])
    assert heat.shape == (96, 128)


def test_the_command_line_refuses_mask_on_a_box_detector(tmp_path, capsys):
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(image)
    args = ["explain", str(image), "--model", "yolo:yolov8n.yaml", "--weights", "none"]
    assert main([*args, "--what", "mask", "--out", str(tmp_path / "out")]) != 0
    assert "--what mask: yolo:yolov8n.yaml detects boxes without masks" in capsys.readouterr().err
