"""``what="mask"``: an instance's mask logits summed over its own pixels (Mask R-CNN, YOLO-seg).

Real torchvision and ultralytics models with random weights; each mask score is checked
against the library's own mask branch, and its maps against the class score's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import torchvision.models.detection as tvd
from PIL import Image

import taskcam
from taskcam.adapters.torchvision import TorchvisionDetectionAdapter
from taskcam.adapters.ultralytics import YoloAdapter, YoloInstanceTarget, detect, load_yolo
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


def test_mask_rcnn_explains_all_masks_with_one_forward_and_one_mask_branch_run(maskrcnn):
    adapter = TorchvisionDetectionAdapter(maskrcnn)
    x = _x()
    dets = adapter.detect(x)[0]
    calls = {"backbone": 0, "mask_predictor": 0}

    def count(name):
        def hook(_module, _inputs, _output):
            calls[name] += 1

        return hook

    handles = [
        maskrcnn.backbone.register_forward_hook(count("backbone")),
        maskrcnn.roi_heads.mask_predictor.register_forward_hook(count("mask_predictor")),
    ]
    try:
        exp = taskcam.explain(
            adapter.model, x, [adapter.targets(dets, "mask")], "backbone.body.layer3", "gradcam"
        )
    finally:
        for handle in handles:
            handle.remove()
    # the three masks' logits come from the forward's one run of the mask branch
    assert calls == {"backbone": 1, "mask_predictor": 1}
    assert exp.maps.shape == (1, 3, 128, 128) and not bool(exp.empty.any())
    assert all(not m._forward_hooks for m in maskrcnn.modules())  # taskcam's hooks are gone


def test_a_detector_without_masks_refuses_mask_targets():
    det = tvd.fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128
    )
    adapter = TorchvisionDetectionAdapter(det)
    dets = adapter.detect(_x())[0]
    with pytest.raises(TaskcamError, match=r"what='mask': a FasterRCNN \(rcnn\) has no masks"):
        adapter.targets(dets, "mask")
    yolo = YoloAdapter(load_yolo("yolov8n.yaml", nc=3), size=128)
    with pytest.raises(
        TaskcamError, match=r"what='mask': a DetectionModel \(ultralytics detect\) has no masks"
    ):
        yolo.targets(detect(yolo.model, _x(), conf=0.0, max_det=1)[0], "mask")


def test_yolo_seg_mask_scores_are_prototype_mixes_over_ultralytics_own_mask(yolo_seg):
    from ultralytics.utils import ops

    x = _x()
    dets = detect(yolo_seg, x, conf=0.0, max_det=3)[0]
    targets = YoloAdapter(yolo_seg, size=128).targets(dets, "mask")
    assert all(type(t) is YoloInstanceTarget and t.what == "mask" for t in targets)
    with torch.no_grad():
        out = yolo_seg(x)
    preds, protos = out[0]  # ultralytics 8.3+: ((preds, protos), raw head outputs)
    nc = 3
    coeffs = preds[0, 4 + nc :, dets.candidates].T  # [n, 32]
    # the mask ultralytics' predict draws: upsampled, > 0, cropped to the box
    theirs = ops.process_mask(protos[0], coeffs, dets.boxes, (128, 128), upsample=True).bool()
    assert torch.equal(torch.stack([t.region for t in targets]), theirs)
    assert bool(theirs.any(dim=(1, 2)).all())  # no instance sums over nothing
    logits = torch.nn.functional.interpolate(
        (coeffs @ protos[0].flatten(1)).view(1, -1, *protos.shape[-2:]),
        size=(128, 128),
        mode="bilinear",
        align_corners=False,
    )[0]  # [n, 128, 128]
    expected = (logits * theirs).sum(dim=(1, 2))
    got = torch.cat([t(out) for t in targets])
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


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


_FACTORIES = """
import torch
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn, maskrcnn_resnet50_fpn


def maskrcnn():
    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128,
        box_detections_per_img=2, box_score_thresh=0.0,
    )


def fasterrcnn():
    return fasterrcnn_mobilenet_v3_large_fpn(
        weights=None, weights_backbone=None, num_classes=3, min_size=128, max_size=128
    )
"""


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module of factory specs: ``mask_factories:maskrcnn`` and ``mask_factories:fasterrcnn``."""
    (tmp_path / "mask_factories.py").write_text(_FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    return importlib.import_module("mask_factories")


def test_the_command_line_explains_mask_rcnn_masks_with_outlined_overlays(tmp_path, factories):
    from taskcam.render import draw_box, outline, overlay

    pixels = (np.random.default_rng(1).random((128, 128, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    args = ["explain", str(tmp_path / "photo.png"), "--model", "mask_factories:maskrcnn"]
    args += ["--conf", "0.0", "--what", "mask", "--method", "gradcam", "--no-labels"]
    args += ["--layer", "backbone.body.layer4", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    schema = Path(__file__).parents[2] / "docs" / "results.schema.json"
    jsonschema.Draft202012Validator(json.loads(schema.read_text())).validate(document)
    records = document["items"][0]["targets"]
    assert [(r["kind"], r["explains"]) for r in records] == [("detection", "mask")] * 2
    # torchvision's own masks of the same model on the same image (128 px: no resize, no pad)
    with torch.no_grad():
        ref = factories.maskrcnn().eval()([torch.from_numpy(pixels).permute(2, 0, 1) / 255.0])[0]
    masks = (ref["masks"][:, 0] > 0.5).numpy()  # [2, 128, 128]
    assert [r["pixels"] for r in records] == [int(m.sum()) for m in masks]
    visible = []
    for record, mask in zip(records, masks):
        heat = np.load(tmp_path / "out" / record["heatmap"])
        assert heat.shape == (128, 128) and np.isfinite(heat).all()
        shown = np.asarray(Image.open(tmp_path / "out" / record["overlay"]).convert("RGB"))
        # the overlay is the map over the image, outlined with the mask, then boxed
        base = overlay(pixels, heat, colormap="jet", alpha=0.5)
        assert np.array_equal(shown, draw_box(outline(base, mask), record["box"]))
        visible.append(not np.array_equal(shown, draw_box(base, record["box"])))
    assert any(visible)  # a box a few pixels tall hides its mask's outline under its edges


def test_options_refuse_mask_before_anything_is_explained(factories):
    from taskcam.models import load_model
    from taskcam.options import RunOptions

    boxes = load_model("mask_factories:fasterrcnn")
    with pytest.raises(
        TaskcamError, match="--what mask: mask_factories:fasterrcnn detects boxes without masks"
    ):
        RunOptions(what="mask").settings(boxes)  # what a run (and a Ray driver) checks first
    classifier = load_model("torchvision:resnet18", weights="none", size=[64])
    with pytest.raises(TaskcamError, match="torchvision:resnet18 is a classify model without"):
        RunOptions(what="mask").check(classifier)
    # instance segmenters pass, as does every model explaining its score
    RunOptions(what="mask", methods=("gradcam",)).check(load_model("mask_factories:maskrcnn"))
    RunOptions(methods=("gradcam",)).check(boxes)
