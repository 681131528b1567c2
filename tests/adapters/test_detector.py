"""The detector contract (``taskcam.Detector``) on a detector taskcam does not wrap: the small
anchor-free detector written in ``examples/own_detector.py``, with seeded random weights (its
training is the example's own business), and small decode functions written here."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.testing import assert_close

import taskcam
from taskcam.adapters import adapter_for, detector_for
from taskcam.adapters.detection import Candidates, CandidateTarget, Detections
from taskcam.adapters.detection.families import family_of
from taskcam.cli import main
from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.errors import TaskcamError
from taskcam.faithfulness import target_faithfulness
from taskcam.models import load_model

EXAMPLES = Path(__file__).parents[2] / "examples"


@pytest.fixture(scope="module")
def own():
    """The example's module, imported from its file (its training does not run on import)."""
    spec = importlib.util.spec_from_file_location(
        "own_detector_example", EXAMPLES / "own_detector.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spread(detector: taskcam.Detector) -> taskcam.Detector:
    """He-initialised convolutions and no class prior: PyTorch's default init leaves every
    score within 1e-3 of the prior, so nothing would pass a threshold, or all would tie."""
    torch.manual_seed(0)
    for module in detector.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.nn.init.zeros_(detector.model.cls.bias)
    return detector


def _images() -> list[np.ndarray]:
    from skimage import data

    shapes = [make_sample(i, seed=HELDOUT_SEED, size=s).image for i, s in ((0, 256), (1, 200))]
    return [*shapes, data.chelsea()]


@pytest.mark.parametrize("share, iou", [(0.5, 0.05), (0.1, 0.5), (0.02, 0.5)])
def test_detections_equal_the_detectors_own_post_processing(own, share, iou):
    """At thresholds that ``share`` of an image's cells pass, whatever the random weights
    (their boxes barely overlap: a low ``iou`` makes NMS drop some)."""
    detector = _spread(own.build())
    model = detector.model
    for image in _images():
        x, placement = detector.prepare(image)
        assert x.shape == (1, 3, 128, 128)
        with torch.no_grad():
            best = model(x)[0].sigmoid().amax(dim=1).flatten()  # each cell's best score
        detector.conf = conf = float(best.quantile(1 - share))
        detector.max_det, detector.iou = 1000, iou  # every cell that NMS keeps
        dets = detector.detect(x)[0]
        (theirs,) = model.postprocess(model(x), conf=conf, iou=iou, max_det=1000)
        assert 0 < len(dets) == len(theirs["boxes"])
        if iou < 0.5:
            assert len(dets) < int((best > conf).sum())  # NMS removed some
        assert torch.equal(dets.boxes, theirs["boxes"])
        assert torch.equal(dets.scores, theirs["scores"])
        assert torch.equal(dets.classes, theirs["labels"])
        boxes = placement.boxes_to_image(dets.boxes)
        assert (boxes[:, 2] <= image.shape[1]).all() and (boxes[:, 3] <= image.shape[0]).all()


def test_every_kind_of_method_explains_its_detections_through_the_contract(own):
    detector = _spread(own.build())
    detector.conf = 0.6
    x, _ = detector.prepare(_images()[0])
    dets = detector.detect(x)[0].select(range(3))
    targets = detector.targets(dets)
    assert all(type(t) is CandidateTarget for t in targets)
    assert [t.candidate for t in targets] == dets.candidates.tolist()
    layers = detector.default_layers()
    assert layers == ["stage1", "stage2", "neck"]
    odam = taskcam.explain(detector.model, x, [targets], layers, method="odam")
    assert_close(odam.scores[0], dets.scores)  # each map explains its own detection's score
    assert not odam.empty.any() and odam.maps.shape == (1, 3, 128, 128)
    sides = taskcam.explain(detector.model, x, [detector.targets(dets, "x2")], layers)
    assert_close(sides.scores[0], dets.boxes[:, 2])
    drise = taskcam.explain(
        detector.model, x, [targets], method=taskcam.get_method("fast-drise", n_masks=32)
    )
    assert not drise.empty.any() and torch.isfinite(drise.maps).all()
    rows = target_faithfulness(detector.model, x, targets, odam.maps[0], steps=4)
    assert len(rows) == 3 and all(-2 <= r[0].faithfulness <= 2 for r in rows)
    # on perturbed copies a detection is re-found by D-RISE similarity; on the clean input its
    # own cell matches it with IoU 1 and the cosine of its one-hot class with its scores
    with torch.no_grad():
        clean = detector.candidates(detector.model(x))
        matched = float(targets[0].perturbed()(detector.model(x)))
    own_scores = clean.scores[0, targets[0].candidate]
    assert matched >= float(own_scores[targets[0].class_id] / own_scores.norm()) - 1e-6


def test_the_model_comes_back_exactly_as_it_was(own):
    detector = _spread(own.build())
    model = detector.model.train()
    model.stem[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    detector.conf = 0.6
    x, _ = detector.prepare(_images()[0])
    dets = detector.detect(x)[0].select([0])
    taskcam.explain(model, x, [detector.targets(dets)], detector.default_layers(), method="odam")
    assert model.training and all(m.training for m in model.modules())
    assert not model.stem[0].weight.requires_grad and model.cls.weight.requires_grad
    assert not model._forward_hooks and not any(m._forward_hooks for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch norm stats too


def test_the_command_line_and_explain_files_take_a_detector_of_yours(own, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    weights = tmp_path / "tiny.pt"
    torch.save(_spread(own.build()).model.state_dict(), weights)
    image = _images()[0]
    Image.fromarray(image).save(tmp_path / "shapes.png")
    out = tmp_path / "cli"
    args = ["explain", str(tmp_path / "shapes.png"), "--model", "own_detector:build"]
    args += ["--weights", str(weights), "--conf", "0.6", "--targets", "0,1", "--out", str(out)]
    assert main([*args, "--method", "odam,fast-drise", "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "own_detector:build" and results["task"] == "detect"
    assert results["layers"] == ["stage1", "stage2", "neck"]
    records = results["items"][0]["targets"]
    assert [(r["method"], r["index"]) for r in records] == [
        ("odam", 0),
        ("odam", 1),
        ("fast-drise", 0),
        ("fast-drise", 1),
    ]
    for r in records:
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
        assert r["kind"] == "detection" and r["class_name"] in own.CLASSES
        assert np.load(out / r["heatmap"]).shape == image.shape[:2]

    # the same detector, in Python: load_model gives its records, explain_files takes it as is
    loaded = load_model("own_detector:build", weights=str(weights))
    assert loaded.is_detector and adapter_for(loaded) is loaded.adapter
    assert (
        detector_for(loaded.adapter) is loaded.adapter and family_of(loaded.adapter) == "detector"
    )
    loaded.adapter.conf = 0.6
    summary = taskcam.explain_files(
        loaded.adapter, [tmp_path / "shapes.png"], tmp_path / "py", targets="0,1", progress=False
    )
    assert summary.results["model"] == "detector:TinyDetector"
    assert summary.results["items"][0]["targets"] == [
        {**r, "heatmap": r["heatmap"], "overlay": r["overlay"]} for r in records[:2]
    ]


def _decode_rows(output: torch.Tensor) -> Candidates:
    """``output: [B, N, 4 + K]``: xyxy boxes then class scores."""
    return Candidates(output[..., :4], output[..., 4:])


class _Rows(torch.nn.Module):
    """A stand-in whose output is given candidate rows (for the selection rules alone)."""

    def __init__(self, rows: torch.Tensor) -> None:
        super().__init__()
        self.rows = torch.nn.Parameter(rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rows.expand(x.shape[0], -1, -1) + 0 * x.mean()


def test_selection_nms_none_per_class_boxes_and_keypoints():
    rows = torch.tensor(
        [
            [0.0, 0, 10, 10, 0.9, 0.1],
            [1.0, 1, 10, 10, 0.8, 0.0],  # suppressed by row 0 (same class, IoU 0.81)
            [20.0, 20, 30, 30, 0.2, 0.7],
            [0.0, 0, 10, 10, 0.1, 0.3],  # another class at row 0's place: kept
        ]
    )[None]
    x = torch.zeros(1, 3, 32, 32)
    nms = taskcam.Detector(_Rows(rows), _decode_rows, size=32, conf=0.25, iou=0.5)
    d = nms.detect(x)[0]
    assert d.candidates.tolist() == [0, 2, 3] and d.classes.tolist() == [0, 1, 1]
    nms.agnostic = True  # one NMS for all classes: row 3 goes with row 0
    assert nms.detect(x)[0].candidates.tolist() == [0, 2]

    def levelled(output: torch.Tensor) -> Candidates:  # rows 0-1 on one level, 2-3 on another
        return Candidates(output[..., :4], output[..., 4:], levels=torch.tensor([0, 0, 1, 1]))

    pyramid = taskcam.Detector(
        _Rows(rows), levelled, size=32, conf=0.25, iou=0.5, level_layers=["p3", "p4"]
    )
    d = pyramid.detect(x)[0]
    assert d.levels == ["p3", "p4", "p4"] and pyramid.level_layers() == ["p3", "p4"]
    assert [t.layer for t in pyramid.targets(d)] == ["p3", "p4", "p4"]  # ODAM's own level

    def queries(output: torch.Tensor) -> Candidates:  # no NMS: the best (query, class) pairs
        return Candidates(output[..., :4], output[..., 4:], nms=False)

    pairs = taskcam.Detector(_Rows(rows), queries, size=32, conf=0.25, max_det=3).detect(x)[0]
    assert list(zip(pairs.candidates.tolist(), pairs.classes.tolist())) == [(0, 0), (1, 0), (2, 1)]

    def per_class(output: torch.Tensor) -> Candidates:  # a box per class; keypoints beside
        boxes = torch.stack([output[..., :4], output[..., :4] + 1], dim=2)  # [B, N, 2, 4]
        points = output[..., :4].reshape(*output.shape[:2], 2, 2)  # two keypoints (x, y)
        return Candidates(boxes, output[..., 4:], extras={"keypoints": points})

    det = taskcam.Detector(_Rows(rows), per_class, size=32, conf=0.25, iou=0.5, keypoints=(2, 2))
    d = det.detect(x)[0]
    assert d.boxes[1].tolist() == [21.0, 21.0, 31.0, 31.0]  # class 1's box of row 2
    assert d.keypoints.shape == (3, 2, 2) and d.keypoints[1].tolist() == [[20, 20], [30, 30]]
    with torch.no_grad():
        out = det.model(x)
    assert [float(t(out)) for t in det.targets(d, "kpt1.y")] == [10.0, 30.0, 10.0]
    assert [float(t(out)) for t in det.targets(d, "y2")] == [10.0, 31.0, 11.0]


def test_the_letterbox_is_square_unless_the_detector_pads_to_the_minimal_rectangle():
    """A detector of yours keeps its fixed square input; ``rect`` pads as ultralytics' and
    YOLOv5's predict pad a PyTorch model's input (their adapters set it)."""
    det = taskcam.Detector(_Rows(torch.rand(1, 5, 6)), _decode_rows, size=64, stride=16)
    image = np.full((30, 64, 3), 200, np.uint8)
    x, placement = det.prepare(image)
    assert not det.rect and x.shape[-2:] == (64, 64) and placement.input_size == (64, 64)
    det.rect = True
    x, placement = det.prepare(image)
    assert x.shape[-2:] == (32, 64) and placement.input_size == (32, 64)  # 30 -> 32: stride 16
    assert (placement.top, placement.new_height) == (1, 30)
    assert_close(placement.map_to_image(torch.ones(1, 32, 64)), torch.ones(1, 30, 64))


def test_bad_decodes_and_whats_are_refused_naming_what_was_wrong():
    rows = torch.rand(1, 5, 6)
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(TaskcamError, match="decode must return taskcam.Candidates, got tuple"):
        taskcam.Detector(_Rows(rows), lambda out: (out, out), size=32).detect(x)
    bad = taskcam.Detector(_Rows(rows), lambda out: Candidates(out[..., :3], out[..., 4:]), size=32)
    with pytest.raises(TaskcamError, match=r"decode: boxes must be Tensor\[1, 5, 4\]"):
        bad.detect(x)
    with pytest.raises(TaskcamError, match="pass decode= .* or implement candidates"):
        taskcam.Detector(_Rows(rows), size=32).detect(x)
    det = taskcam.Detector(_Rows(rows), _decode_rows, size=32, conf=0.0)
    d = det.detect(x)[0]
    with pytest.raises(TaskcamError, match=r"what='mask': a _Rows \(decoded\) has no masks"):
        det.targets(d, "mask")
    with pytest.raises(TaskcamError, match=r"what='kpt0.x': a _Rows \(decoded\) has no keypoints"):
        det.targets(d, "kpt0.x")
    with pytest.raises(TaskcamError, match="candidates have no objectness"):
        det.targets(d, "objectness")[0](det.model(x))
    with pytest.raises(TaskcamError, match="class_id 7 does not exist: the model has 2 classes"):
        CandidateTarget(0, 7, read=_decode_rows)(det.model(x))
    with pytest.raises(TaskcamError, match=r"conf, iou in \[0, 1\] .* got 1.5, 0.45, 300"):
        taskcam.Detector(_Rows(rows), _decode_rows, conf=1.5)
    with pytest.raises(TaskcamError, match="resize: expected one of letterbox, stretch, none"):
        taskcam.Detector(_Rows(rows), _decode_rows, resize="crop")
    with pytest.raises(TaskcamError, match="size: expected a positive multiple of stride 32"):
        taskcam.Detector(_Rows(rows), _decode_rows, size=40).prepare(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(
        TaskcamError, match=r"image: expected a uint8\[H, W, 3\] array, got \(8, 8\)"
    ):
        det.prepare(np.zeros((8, 8), np.uint8))
    # a candidate an output lacks (a smaller input has fewer cells) scores 0
    assert float(CandidateTarget(9, 0, read=_decode_rows)(det.model(x))) == 0.0
    assert isinstance(Detections.empty(), Detections) and len(Detections.empty()) == 0
