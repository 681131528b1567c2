"""YOLO adapter: loading, letterbox, raw candidates, NMS tracing, targets, explanations."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2
import numpy as np
import pytest
import torch
from torch.testing import assert_close

import taskcam
from taskcam import TaskcamError
from taskcam.adapters.ultralytics import (
    Detections,
    YoloDetectionTarget,
    YoloInstanceTarget,
    backbone_stages,
    candidate_layer,
    default_layers,
    detect,
    detection_targets,
    letterbox,
    load_yolo,
    raw_predictions,
    yolo_task,
)
from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.zoo.shapes_models import weights_path

pytest.importorskip("ultralytics")

S = 128  # input side for the random-weight models
ANCHORS = (S // 8) ** 2 + (S // 16) ** 2 + (S // 32) ** 2


@pytest.fixture(scope="module")
def det_model():
    torch.manual_seed(0)
    return load_yolo("yolov8n.yaml", nc=4)


@pytest.fixture(scope="module")
def seg_model():
    torch.manual_seed(0)
    return load_yolo("yolov8n-seg.yaml", nc=4)


@pytest.fixture(params=["det", "seg"])
def model(request, det_model, seg_model):
    return det_model if request.param == "det" else seg_model


def _x(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, S, S, generator=g)


def _xyxy(xywh: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = xywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def _state(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]


# -- loading -------------------------------------------------------------------------------------
def test_load_yolo_builds_detect_and_segment_models(det_model, seg_model):
    assert type(det_model).__name__ == "DetectionModel"
    assert type(seg_model).__name__ == "SegmentationModel"
    for m in (det_model, seg_model):
        assert not m.training
        assert next(m.parameters()).dtype == torch.float32
        assert m.model[-1].nc == 4
    assert yolo_task(det_model) == "detect" and yolo_task(seg_model) == "segment"


def test_missing_paths_are_named(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(TaskcamError, match="nope.pt"):
        load_yolo(missing)
    with pytest.raises(TaskcamError, match="no-such-model.yaml"):
        load_yolo("no-such-model.yaml")
    with pytest.raises(TaskcamError, match=r"\.onnx"):
        load_yolo(tmp_path / "model.onnx")


def test_a_task_outside_those_asked_for_is_refused_naming_it():
    from ultralytics.nn.tasks import ClassificationModel

    cls = ClassificationModel("yolov8n-cls.yaml", nc=4, verbose=False)
    with pytest.raises(TaskcamError, match="is a 'classify' model; taskcam explains .* detect"):
        yolo_task(cls)  # the detection adapter's tasks
    assert yolo_task(cls, ("classify",)) == "classify"


def test_files_that_are_not_ultralytics_checkpoints_are_refused_naming_them(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "state.pt")
    with pytest.raises(TaskcamError, match=r"state\.pt: not an ultralytics checkpoint"):
        load_yolo(tmp_path / "state.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(TaskcamError, match=r"junk\.pt: not an ultralytics checkpoint"):
        load_yolo(tmp_path / "junk.pt")


def test_default_layers_are_the_heads_inputs(det_model):
    assert default_layers(det_model) == [f"model.{i}" for i in det_model.model[-1].f]
    assert candidate_layer(det_model, 0, S) == "model.15"
    assert candidate_layer(det_model, (S // 8) ** 2, S) == "model.18"
    assert candidate_layer(det_model, ANCHORS - 1, (S, S)) == "model.21"
    with pytest.raises(TaskcamError, match="out of range"):
        candidate_layer(det_model, ANCHORS, S)


# -- letterbox -----------------------------------------------------------------------------------
def test_letterbox_matches_ultralytics_and_round_trips():
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(200, 320, 3), dtype=np.uint8)
    x, info = letterbox(image, size=256)
    assert x.shape == (1, 3, 256, 256) and x.dtype == torch.float32
    ref = LetterBox((256, 256), auto=False)(image=image)
    assert np.array_equal((x[0].permute(1, 2, 0) * 255).round().byte().numpy(), ref)
    assert (info.top, info.new_height, info.left, info.new_width) == (48, 160, 0, 256)

    boxes = torch.tensor([[10.0, 20.0, 100.0, 150.0], [0.0, 0.0, 320.0, 200.0]])
    back = info.boxes_to_image(info.boxes_to_input(boxes))
    assert (back - boxes).abs().max() <= 1.0

    inside = torch.zeros(2, 1, 256, 256)
    inside[..., 48:208, :] = 1.0  # the image region, padding left at 0
    maps = info.map_to_image(inside)
    assert maps.shape == (2, 1, 200, 320)
    assert_close(maps, torch.ones_like(maps))


def test_letterbox_checks_its_inputs():
    with pytest.raises(TaskcamError, match="uint8"):
        letterbox(np.zeros((8, 8, 3), np.float32), size=64)
    with pytest.raises(TaskcamError, match=r"\[H, W, 3\]"):
        letterbox(np.zeros((8, 8), np.uint8), size=64)
    with pytest.raises(TaskcamError, match="multiple of stride"):
        letterbox(np.zeros((8, 8, 3), np.uint8), size=100)


def _asset(name: str) -> np.ndarray:
    """One of ultralytics' own photos, BGR as cv2 reads it: ``bus.jpg`` (810 × 1080, portrait),
    ``zidane.jpg`` (1280 × 720, landscape)."""
    import ultralytics

    return cv2.imread(str(Path(ultralytics.__file__).parent / "assets" / name))


@pytest.mark.parametrize(
    "name, size, shape",
    [("bus.jpg", 640, (640, 480)), ("bus.jpg", 320, (320, 256)), ("zidane.jpg", 640, (384, 640))],
)
def test_minimal_rectangle_letterbox_is_ultralytics_and_round_trips(name, size, shape):
    from ultralytics.data.augment import LetterBox

    image = cv2.cvtColor(_asset(name), cv2.COLOR_BGR2RGB)
    x, info = letterbox(image, size=size, auto=True)
    assert x.shape == (1, 3, *shape) and info.input_size == shape and info.size == size
    ref = LetterBox(size, auto=True, stride=32)(image=image)  # predict's, for a .pt model
    assert np.array_equal((x[0].permute(1, 2, 0) * 255).round().byte().numpy(), ref)
    square, _ = letterbox(image, size=size)
    assert square.shape == (1, 3, size, size)

    h, w = image.shape[:2]
    boxes = torch.tensor([[10.0, 20.0, 300.0, 500.0], [0.0, 0.0, w, h]])
    assert (info.boxes_to_image(info.boxes_to_input(boxes)) - boxes).abs().max() <= 1.0
    inside = torch.zeros(2, 1, *shape)
    rows, cols = (
        slice(info.top, info.top + info.new_height),
        slice(info.left, info.left + info.new_width),
    )
    inside[..., rows, cols] = 1.0  # the image region, padding left at 0
    maps = info.map_to_image(inside)
    assert maps.shape == (2, 1, h, w)
    assert_close(maps, torch.ones_like(maps))
    with pytest.raises(TaskcamError, match=rf"expected Tensor\[\.\.\., {shape[0]}, {shape[1]}\]"):
        info.map_to_image(torch.zeros(1, size, size))


# -- raw predictions and NMS tracing -------------------------------------------------------------
def test_raw_predictions_shapes(det_model, seg_model):
    with torch.no_grad():
        assert raw_predictions(det_model(_x())).shape == (1, 4 + 4, ANCHORS)
        out = seg_model(_x())
    assert raw_predictions(out).shape == (1, 4 + 4 + 32, ANCHORS)
    preds = raw_predictions(out)
    assert raw_predictions((preds, out[0][1])) is preds  # Segment export form
    assert raw_predictions((preds, ([], None, out[0][1]))) is preds  # Segment before 8.3
    with pytest.raises(TaskcamError, match="training mode"):
        raw_predictions({"boxes": preds})


def test_detections_trace_back_to_their_candidates(model):
    x = _x(1)
    (dets,) = detect(model, x, conf=0.0, max_det=6)
    assert len(dets) == 6 and dets.candidates.dtype == torch.long
    with torch.no_grad():
        raw = raw_predictions(model(x))[0]  # [4 + nc (+ nm), A]
    cand = dets.candidates
    assert_close(dets.boxes, _xyxy(raw[:4, cand].T))
    assert_close(dets.scores, raw[4 + dets.classes, cand])
    assert torch.equal(dets.classes, raw[4:8, cand].argmax(0))
    assert torch.all(dets.scores[:-1] >= dets.scores[1:])
    if model.model[-1].__class__.__name__ == "Segment":
        assert dets.masks is not None and dets.masks.shape == (6, S, S)
        assert dets.masks.dtype == torch.bool
        ys, xs = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
        for box, mask in zip(dets.boxes, dets.masks):
            inside = (xs >= box[0]) & (xs < box[2]) & (ys >= box[1]) & (ys < box[3])
            assert not (mask & ~inside).any()
    else:
        assert dets.masks is None


def test_detect_respects_conf_and_restores_flags(det_model):
    det_model.train()
    try:
        (dets,) = detect(det_model, _x(), conf=1.0)
        assert det_model.training
    finally:
        det_model.eval()
    assert len(dets) == 0


def test_targets_read_scores_and_box_sides(det_model):
    x = _x(2)
    (dets,) = detect(det_model, x, conf=0.0, max_det=1)
    c, k = int(dets.candidates[0]), int(dets.classes[0])
    out = det_model(x)
    assert_close(YoloDetectionTarget(c, k)(out), dets.scores)
    sides = torch.stack([YoloDetectionTarget(c, k, w)(out) for w in ("x1", "y1", "x2", "y2")], 1)
    assert_close(sides, dets.boxes)


def test_targets_are_differentiable_and_check_their_inputs(det_model, seg_model):
    x = _x(3).requires_grad_()
    score = YoloDetectionTarget(3, 1, "x2")(det_model(x))
    (grad,) = torch.autograd.grad(score.sum(), x)
    assert grad.abs().sum() > 0
    assert_close(YoloDetectionTarget(10**6, 0)(det_model(_x())), torch.zeros(1))
    with pytest.raises(TaskcamError, match="class_id 4"):
        YoloDetectionTarget(0, 4)(det_model(_x()))
    with pytest.raises(TaskcamError, match="what"):
        YoloDetectionTarget(0, 0, "area")
    with pytest.raises(TaskcamError, match="candidate"):
        YoloDetectionTarget(-1, 0)
    with pytest.raises(TaskcamError, match="segmentation"):
        YoloInstanceTarget(0, 0)(det_model(_x()))
    with torch.no_grad():
        out = seg_model(_x())
    assert_close(YoloInstanceTarget(7, 2)(out), raw_predictions(out)[:, 6, 7])


def test_detection_targets_per_image(det_model, seg_model):
    x = torch.cat([_x(4), _x(5)])
    dets = detect(det_model, x, conf=0.0, max_det=2)
    targets = detection_targets(dets)
    assert [len(t) for t in targets] == [2, 2]
    assert targets[0][0] == YoloDetectionTarget(int(dets[0].candidates[0]), int(dets[0].classes[0]))
    seg = detection_targets(detect(seg_model, _x(), conf=0.0, max_det=2), what="y2")
    assert all(type(t) is YoloInstanceTarget and t.what == "y2" for t in seg[0])
    empty = Detections(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0).long(), torch.zeros(0).long()
    )
    assert detection_targets([empty]) == [[]]


# -- explanations --------------------------------------------------------------------------------
def test_explain_k_detections_in_one_call(model):
    x = _x(6)
    dets = detect(model, x, conf=0.0, max_det=3)
    model.model[0].conv.weight.requires_grad_(False)
    before = _state(model)
    try:
        exp = taskcam.explain(model, x, detection_targets(dets), layers=default_layers(model)[:1])
        assert _state(model) == before
    finally:
        model.model[0].conv.weight.requires_grad_(True)
    assert exp.maps.shape == (1, 3, S, S)
    assert torch.isfinite(exp.maps).all()
    assert_close(exp.scores[0], dets[0].scores)


@pytest.mark.parametrize("index", [0, 3])  # one object, four objects
def test_shapes_yolo_detects_and_explains_each_object(index):
    model = load_yolo(weights_path("shapes-yolo"))
    assert model.names[0] == "circle"
    sample = make_sample(index, seed=HELDOUT_SEED, size=256)
    x, info = letterbox(sample.image, size=256)
    (dets,) = detect(model, x)
    boxes = info.boxes_to_image(dets.boxes)
    gt = torch.from_numpy(sample.boxes).float()
    from torchvision.ops import box_iou

    iou = box_iou(gt, boxes)  # [G, N]
    best = iou.argmax(1)
    assert (iou.max(1).values > 0.5).all()
    assert torch.equal(dets.classes[best], torch.from_numpy(sample.labels))

    before = _state(model)
    exp = taskcam.explain(model, x, detection_targets([dets]), layers=default_layers(model)[:1])
    assert _state(model) == before
    maps = info.map_to_image(exp.maps)[0]  # [N, H, W] on the original image
    assert maps.shape == (len(dets), *sample.image.shape[:2])
    for k, box in enumerate(boxes.round().long().tolist()):
        x1, y1, x2, y2 = box
        inside = maps[k, y1:y2, x1:x2].sum() / maps[k].sum()
        share = (x2 - x1) * (y2 - y1) / maps[k].numel()
        assert inside > share, (k, float(inside), share)


@pytest.mark.parametrize("yaml", ["yolov5nu.yaml", "yolo11n.yaml", "yolo26n.yaml"])
def test_other_yolo_generations_are_traced_and_explained(yaml):
    from taskcam.adapters.ultralytics import YoloAdapter

    torch.manual_seed(0)
    model = load_yolo(yaml, nc=4)
    # YOLO26's end-to-end flag stays as built (off in ultralytics' yaml builds since 8.4's
    # external-NMS default): its one-to-many branch and NMS, as predict then uses
    end2end = getattr(model.model[-1], "end2end", False)
    adapter = YoloAdapter(model, size=64, conf=0.0, max_det=3)
    image = np.random.default_rng(0).integers(0, 256, (50, 80, 3), dtype=np.uint8)
    x, info = adapter.prepare(image)
    dets = adapter.detect(x)[0]
    assert len(dets) == 3 and set(dets.levels) <= set(default_layers(model))  # neck outputs
    # by default the backbone's stages at those strides are hooked, fused for every detection
    assert adapter.default_layers() == backbone_stages(model)
    assert not set(adapter.default_layers()) & set(dets.levels)
    # random weights give class scores with vanishing gradients; box sides have real ones
    # (hooking the neck outputs: each detection is explained at its own level)
    targets = adapter.targets(dets, "x2")
    exp = taskcam.explain(model, x, [targets], layers=default_layers(model), method="odam")
    maps = info.map_to_image(exp.maps)
    assert maps.shape == (1, 3, 50, 80) and torch.isfinite(maps).all()
    assert not exp.empty.any()
    assert_close(exp.scores[0], dets.boxes[:, 2])  # x2 of each box, input pixels
    assert getattr(model.model[-1], "end2end", False) == end2end


# -- end-to-end heads: what predict returns ------------------------------------------------------
def _calibrated(
    yaml: str, image: np.ndarray, size: int = 0, spread: bool = False
) -> torch.nn.Module:
    """A random-weight model whose batch norms took their statistics from ``image``, letterboxed
    as predict does at ``size`` (default :data:`E2E_SIZE`): as built, activations shrink layer
    after layer and every class score is its bias (ties galore). With ``spread``, the class
    logits' biases are zeroed too, so that scores spread over (0, 1) instead of lying near the
    tiny prior ultralytics initialises them to."""
    torch.manual_seed(0)
    model = load_yolo(yaml)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 1.0  # running statistics := this batch's
    model.train()
    with torch.no_grad():
        model(letterbox(image, size or E2E_SIZE, auto=True)[0])
    model.eval()
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    if spread:
        with torch.no_grad():
            for branch in model.model[-1].cv3:
                branch[-1].bias.zero_()
    return model


def _assert_detections_are_predicts(ours: Detections, info, result) -> None:
    """Our detections, in image pixels, are ultralytics' ``Results`` row for row; a segment
    model's ``predict`` drops instances whose mask is empty, so theirs are then a subsequence."""
    boxes, theirs = info.boxes_to_image(ours.boxes), result.boxes
    keep, j = [], 0
    for i in range(len(ours)):
        if (
            j < len(theirs)
            and int(ours.classes[i]) == int(theirs.cls[j])
            and abs(float(ours.scores[i]) - float(theirs.conf[j])) < 1e-3
        ):
            keep.append(i)
            j += 1
    if result.masks is None:
        assert keep == list(range(len(ours))) and len(ours) == len(theirs)
    assert len(keep) == len(theirs) > 0
    assert_close(boxes[keep], theirs.xyxy, atol=0.1, rtol=0)  # image pixels
    assert_close(ours.scores[keep], theirs.conf, atol=1e-3, rtol=0)
    assert torch.equal(ours.classes[keep], theirs.cls.long())


E2E_SIZE = 320


@pytest.mark.parametrize("yaml", ["yolo26n.yaml", "yolov10n.yaml", "yolo26n-seg.yaml"])
def test_end_to_end_heads_explain_the_one_to_one_detections_predict_returns(yaml):
    from skimage import data
    from ultralytics import YOLO

    from taskcam.adapters.ultralytics import YoloAdapter

    # built first: building a model flips the training flag of the activation module that
    # ultralytics' convolutions share
    yolo = YOLO(yaml, task="segment" if "-seg" in yaml else "detect")
    image = data.astronaut()  # square: predict's minimal-padding letterbox adds none either
    model = _calibrated(yaml, image)
    head = model.model[-1]
    head.end2end = True  # as predict(nms=False) sets it, and checkpoints saved end-to-end
    before = _state(model)
    max_det = 20
    adapter = YoloAdapter(model, size=E2E_SIZE, conf=0.0, max_det=2 * max_det)
    x, info = adapter.prepare(image)
    # a threshold that drops some, between two scores far enough apart that predict's fused
    # model (rounding differently) keeps the same ones
    scores = adapter.detect(x)[0].scores
    gaps = scores[:-1] - scores[1:]
    n = int(gaps[10:30].argmax()) + 11  # the detections above it
    conf = float(scores[n - 1] + scores[n]) / 2
    adapter = YoloAdapter(model, size=E2E_SIZE, conf=conf, max_det=2 * max_det)
    (dets,) = adapter.detect(x)
    assert len(dets) == n  # top pairs, no NMS: one anchor may come with several classes
    assert dets.candidates.unique().numel() < n

    yolo.model = copy.deepcopy(model)  # predict fuses its own copy
    kwargs = dict(imgsz=E2E_SIZE, conf=conf, max_det=2 * max_det, verbose=False, save=False)
    (result,) = yolo.predict(image[..., ::-1].copy(), nms=False, **kwargs)  # BGR, as cv2 reads
    _assert_detections_are_predicts(dets, info, result)
    # predict's own (fused: the one-to-many branch removed) model gives the same, exactly
    fused = yolo.predictor.model.model
    assert fused.model[-1].cv2 is None and fused.model[-1].end2end
    (same,) = YoloAdapter(fused, size=E2E_SIZE, conf=conf, max_det=2 * max_det).detect(x)
    assert torch.equal(same.candidates, dets.candidates)
    assert torch.equal(same.classes, dets.classes)

    # the one-to-one scores are differentiable: non-empty maps, scores as detected
    picked = dets.select(range(3))
    targets = adapter.targets(picked)
    exp = taskcam.explain(model, x, [targets], layers=adapter.default_layers(), method="odam")
    assert not exp.empty.any() and torch.isfinite(exp.maps).all()
    assert_close(exp.scores[0], picked.scores)
    out = model(x)
    cands = targets[0].candidates(out)
    assert_close(cands.scores[0, picked.candidates[0], picked.classes[0]], picked.scores[0])
    with pytest.raises(TaskcamError, match="needs the model"):
        YoloDetectionTarget(int(picked.candidates[0]), int(picked.classes[0]))(out)
    assert _state(model) == before and head.end2end and head.cv2 is not None

    # with end2end off, predict's NMS over the one-to-many branch is what is explained
    head.end2end = False
    (dets,) = YoloAdapter(model, size=E2E_SIZE, conf=0.0, max_det=max_det).detect(x)
    kwargs.update(conf=0.0, max_det=max_det)
    yolo.model, yolo.predictor = copy.deepcopy(model), None  # the last one fused its copy
    (result,) = yolo.predict(image[..., ::-1].copy(), **kwargs)
    _assert_detections_are_predicts(dets, info, result)
    assert not head.end2end


def _conf_between(scores: torch.Tensor) -> float:
    """A threshold that keeps 11 to 30 detections, halfway across the widest gap between two
    scores there, so that predict's fused model (rounding differently) keeps the same ones."""
    gaps = scores[:-1] - scores[1:]
    n = int(gaps[10:30].argmax()) + 11
    return float(scores[n - 1] + scores[n]) / 2


@pytest.mark.parametrize("name, size", [("bus.jpg", 320), ("zidane.jpg", 640)])
def test_detections_on_a_non_square_photo_are_what_predict_shows(name, size):
    """``yolo predict`` pads a PyTorch model's input to the minimal rectangle: the same
    detections, scores and boxes; the square letterbox taskcam padded to before gives others."""
    from ultralytics import YOLO

    from taskcam.adapters.ultralytics import YoloAdapter

    yolo = YOLO("yolov8n.yaml")  # built first (see the end-to-end test above)
    bgr = _asset(name)
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    model = _calibrated("yolov8n.yaml", image, size, spread=True)
    adapter = YoloAdapter(model, size=size, conf=0.0, max_det=300)
    x, info = adapter.prepare(image)
    assert x.shape[-2:] == letterbox(image, size, auto=True)[0].shape[-2:] != (size, size)
    adapter.conf = _conf_between(adapter.detect(x)[0].scores)
    (dets,) = adapter.detect(x)
    yolo.model = copy.deepcopy(model)  # predict fuses its own copy
    kwargs = dict(imgsz=size, conf=adapter.conf, max_det=300, verbose=False, save=False)
    (result,) = yolo.predict(bgr, **kwargs)
    _assert_detections_are_predicts(dets, info, result)
    # each detection names its level, counted on the rectangular grid
    h, w = x.shape[-2:]
    finest = (h // 8) * (w // 8)
    for c, level in zip(dets.candidates.tolist(), dets.levels):
        assert (level == "model.15") == (c < finest)
    # the square letterbox scores otherwise (what taskcam showed before)
    square = YoloAdapter(model, size=size, conf=adapter.conf, max_det=300)
    square.rect = False
    xs, squared = square.prepare(image)
    assert xs.shape[-2:] == (size, size)
    with pytest.raises(AssertionError):
        _assert_detections_are_predicts(square.detect(xs)[0], squared, result)
    # maps of the rectangular input come back to the photo
    targets = adapter.targets(dets.select(range(2)), "x2")
    exp = taskcam.explain(model, x, [targets], layers=default_layers(model), method="odam")
    maps = info.map_to_image(exp.maps)
    assert maps.shape == (1, 2, *image.shape[:2]) and not exp.empty.any()


# -- ultralytics ONNX exports; a trained YOLOv8n on real photos ---------------------------------
def _nudenet_onnx():
    """NudeNet's detector: a YOLOv8n that ultralytics 8.2 trained on photos of people (faces,
    feet, armpits, belly...) and exported to ONNX; the wheel ships it, so it needs no download."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None:
        pytest.skip("nudenet is not installed (pip install 'taskcam[dev]')")
    return Path(spec.submodule_search_locations[0]) / "320n.onnx"


def _people_photos() -> dict[str, np.ndarray]:
    """RGB photos with people: scikit-image's astronaut and cameraman, ultralytics' bus."""
    import ultralytics
    from skimage import data

    bus = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"
    return {
        "astronaut": data.astronaut(),
        "camera": np.repeat(data.camera()[..., None], 3, axis=2),
        "bus": cv2.cvtColor(cv2.imread(str(bus)), cv2.COLOR_BGR2RGB),
    }


def test_onnx_export_is_rebuilt_in_pytorch_and_computes_what_onnxruntime_does(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path = _nudenet_onnx()
    model = load_yolo(path)
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert yolo_task(model) == "detect" and model.args["imgsz"] == [320, 320]
    assert model.model[-1].nc == 18 and model.names[1] == "FACE_FEMALE"
    x, _ = letterbox(_people_photos()["astronaut"], size=320)
    with torch.no_grad():
        ours = raw_predictions(model(x))  # [1, 4 + 18, 2100]
    (theirs,) = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    # boxes are in input pixels (up to 320), scores in [0, 1]
    assert_close(ours[:, :4], torch.from_numpy(theirs[:, :4]), atol=5e-3, rtol=1e-4)
    assert_close(ours[:, 4:], torch.from_numpy(theirs[:, 4:]), atol=1e-4, rtol=1e-4)
    assert float(ours[0, 4 + 1].max()) > 0.5  # the astronaut's face

    from taskcam.models import load_model

    loaded = load_model(f"yolo:{path}")  # the export's own input size, as ultralytics predicts
    assert loaded.preprocess.size == (320, 320) and loaded.adapter.size == 320
    with pytest.raises(TaskcamError, match=r"holds its weights already.*pass yolo:other\.pt"):
        load_model(f"yolo:{path}", weights="other.pt")

    # saved as an ultralytics checkpoint, it loads back through yolo:PATH.pt the same
    torch.save({"model": model, "train_args": {"imgsz": 320}}, tmp_path / "nudenet.pt")
    loaded = load_model(f"yolo:{tmp_path / 'nudenet.pt'}")
    assert loaded.adapter.size == 320 and loaded.class_names[12] == "FACE_MALE"
    with torch.no_grad():
        assert torch.equal(raw_predictions(loaded.model(x)), ours)


def test_trained_yolov8_default_maps_explain_the_score_better_than_maps_without_the_model(
    tmp_path,
):
    """Issue 18's bar on a real, trained YOLOv8 and real photos, through the CLI's defaults:
    in deletion and insertion of each detection's own score, the default maps beat a Gaussian
    at the box centre by >= 0.05 and a random map by >= 0.2 on average, and the blob on at
    least 75 % of the detections."""
    from taskcam.adapters.ultralytics import YoloAdapter
    from taskcam.cli import main
    from taskcam.faithfulness import baseline_maps, target_faithfulness

    photos = {n: p for n, p in _people_photos().items() if n in ("astronaut", "camera", "bus")}
    for name, image in photos.items():
        cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    args = ["explain", *(str(tmp_path / f"{n}.png") for n in photos), "--faithfulness"]
    args += ["--model", f"yolo:{_nudenet_onnx()}", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["methods"] == ["odam"]
    assert results["layers"] == ["model.4", "model.6", "model.9"]  # backbone stages, fused
    own = {}
    for item in results["items"]:
        for t in item["targets"]:
            own[(Path(item["image"]).stem, t["index"])] = t["faithfulness"]
            assert t["faithfulness"] == pytest.approx(t["insertion"] - t["deletion"], abs=2e-4)
    # the same detections' maps drawn without the model, scored the same way
    model = load_yolo(_nudenet_onnx())
    adapter = YoloAdapter(model, size=320)
    centre, noise = {}, {}
    for name, image in photos.items():
        x, _ = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        drawn = [
            baseline_maps(b.float().cpu(), *x.shape[-2:], seed=k) for k, b in enumerate(dets.boxes)
        ]
        maps = torch.stack([torch.stack([d["centre"], d["random"]]) for d in drawn])
        rows = target_faithfulness(model, x, adapter.targets(dets), maps)
        for k, (c, r) in enumerate(rows):
            centre[(name, k)], noise[(name, k)] = c.faithfulness, r.faithfulness
    assert set(own) == set(centre) and len(own) >= 4, own
    mean = {
        d: float(np.mean(list(v.values()))) for d, v in (("own", own), ("c", centre), ("r", noise))
    }
    assert mean["own"] >= mean["c"] + 0.05 and mean["own"] >= mean["r"] + 0.2, mean
    assert np.mean([own[k] > centre[k] for k in own]) >= 0.75, (own, centre)


@pytest.mark.parametrize(
    "yaml, simplify",
    [("yolo11n-seg.yaml", False), ("yolov5nu.yaml", False), ("yolov8n.yaml", True)],
)
def test_ultralytics_onnx_exports_are_rebuilt(yaml, simplify, tmp_path, monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from ultralytics import YOLO

    monkeypatch.chdir(tmp_path)  # the exporter writes next to the yaml's name
    torch.manual_seed(0)
    # 80 classes at 64 px: fewer anchors (84) than prediction rows (4 + 80 + 32)
    if simplify:  # ultralytics' default: equal tensors (zero biases here) end up shared
        pytest.importorskip("onnxslim")
    path = YOLO(yaml).export(format="onnx", imgsz=64, simplify=simplify, verbose=False)
    model = load_yolo(path)
    assert yolo_task(model) == ("segment" if "seg" in yaml else "detect")
    assert model.model[-1].nc == 80 and model.args["imgsz"] == [64, 64]
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    theirs = ort.InferenceSession(str(path)).run(None, {"images": x.numpy()})
    with torch.no_grad():
        ours = model(x)
    assert_close(raw_predictions(ours), torch.from_numpy(theirs[0]), atol=1e-3, rtol=1e-4)
    (dets,) = detect(model, x, conf=0.0, max_det=2)
    exp = taskcam.explain(model, x, detection_targets([dets], "x2"), layers=default_layers(model))
    assert exp.maps.shape == (1, 2, 64, 64) and torch.isfinite(exp.maps).all()


def test_exports_are_padded_as_predict_pads_them(tmp_path, monkeypatch):
    """ultralytics predicts a static export at its fixed square and a dynamic one (NudeNet's, a
    YOLOv8n trained on people) on the minimal rectangle: so do the models rebuilt from them."""
    pytest.importorskip("onnxruntime")
    from ultralytics import YOLO

    from taskcam.adapters.ultralytics import YoloAdapter, fixed_input

    bgr = _asset("bus.jpg")
    image = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    monkeypatch.chdir(tmp_path)  # the exporter writes next to the yaml's name
    yolo = YOLO("yolov8n.yaml")
    yolo.model.load_state_dict(_calibrated("yolov8n.yaml", image, 320, spread=True).state_dict())
    static = yolo.export(format="onnx", imgsz=320, simplify=False, verbose=False)
    model = load_yolo(static)
    assert fixed_input(model) and not fixed_input(load_yolo("yolov8n.yaml"))
    adapter = YoloAdapter(model, size=320, conf=0.0, max_det=300)
    x, info = adapter.prepare(image)
    assert x.shape[-2:] == (320, 320)  # as the export was traced
    adapter.conf = _conf_between(adapter.detect(x)[0].scores)
    kwargs = dict(imgsz=320, conf=adapter.conf, max_det=300, verbose=False, save=False)
    (result,) = YOLO(static, task="detect").predict(bgr, **kwargs)
    _assert_detections_are_predicts(adapter.detect(x)[0], info, result)

    nudenet = load_yolo(_nudenet_onnx())  # its height and width are dynamic
    assert not fixed_input(nudenet)
    adapter = YoloAdapter(nudenet, size=320)
    x, info = adapter.prepare(image)
    assert x.shape[-2:] == (320, 256)
    (dets,) = adapter.detect(x)
    (result,) = YOLO(str(_nudenet_onnx()), task="detect").predict(bgr, **{**kwargs, "conf": 0.25})
    _assert_detections_are_predicts(dets, info, result)  # the feet, at 0.26 and 0.25
    # saved as a checkpoint, it is a PyTorch model again: the minimal rectangle
    torch.save({"model": load_yolo(static), "train_args": {"imgsz": 320}}, tmp_path / "re.pt")
    assert not fixed_input(load_yolo(tmp_path / "re.pt"))


def test_end_to_end_top_k_output_is_told_apart_from_anchor_predictions():
    with pytest.raises(TaskcamError, match="end-to-end top-k"):
        raw_predictions(torch.zeros(1, 300, 6))
    protos = torch.zeros(1, 32, 16, 16)
    with pytest.raises(TaskcamError, match="end-to-end top-k"):
        raw_predictions((torch.zeros(1, 300, 38), protos))
    assert raw_predictions((torch.zeros(1, 116, 84), protos)).shape == (1, 116, 84)


def _onnx_file(path, metadata: dict, shape=(16, 3, 3, 3)):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.zeros(shape, np.float32), "model.0.conv.weight")
    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 16, 3, 3])
    node = helper.make_node("Conv", ["images", "model.0.conv.weight"], ["output0"], strides=[2, 2])
    graph = helper.make_graph([node], "g", [x], [y], initializer=[weight])
    proto = helper.make_model(graph)
    for key, value in metadata.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    return path


def test_onnx_files_that_cannot_be_rebuilt_are_refused_naming_why(tmp_path):
    pytest.importorskip("onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\x00 not a protobuf \xff" * 8)
    with pytest.raises(TaskcamError, match=r"bad\.onnx: not a readable ONNX file"):
        load_yolo(tmp_path / "bad.onnx")
    plain = _onnx_file(tmp_path / "plain.onnx", {"producer": "torch"})
    with pytest.raises(TaskcamError, match=r"plain\.onnx: not an ultralytics export.*producer"):
        load_yolo(plain)
    cls = _onnx_file(tmp_path / "cls.onnx", {"task": "classify", "names": "{0: 'a'}"})
    with pytest.raises(TaskcamError, match=r"cls\.onnx: the export is a 'classify' model"):
        load_yolo(cls)
    garbled = _onnx_file(tmp_path / "garbled.onnx", {"task": "detect", "names": "{0: 'a'"})
    with pytest.raises(TaskcamError, match=r"garbled\.onnx: unreadable ultralytics metadata"):
        load_yolo(garbled)
    odd = _onnx_file(tmp_path / "odd.onnx", {"task": "detect", "names": "{0: 'a'}"})
    with pytest.raises(TaskcamError, match=r"odd\.onnx: no ultralytics detect architecture"):
        load_yolo(odd)
    with pytest.raises(TaskcamError, match="nc=3 but the export"):
        load_yolo(_nudenet_onnx(), nc=3)
