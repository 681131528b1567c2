"""Labels against detections: every outcome (hit, missed for each reason, false positive)
produced on purpose on the zoo's trained detectors, checked against the model's own
predictions, and each missed label's targets explained."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import taskcam
from taskcam.adapters import adapter_for
from taskcam.adapters.detection.families import detector_for
from taskcam.adapters.detection.labels import Labels
from taskcam.adapters.detection.matching import match_labels
from taskcam.adapters.detection.outcomes import (
    ContrastTarget,
    RegionTarget,
    label_outcomes,
)
from taskcam.data import make_sample
from taskcam.errors import TaskcamError
from taskcam.models import load_model


@pytest.fixture(scope="module")
def yolo():
    return adapter_for(load_model("zoo:shapes-yolo"))


@pytest.fixture(scope="module")
def rcnn():
    return adapter_for(load_model("zoo:shapes-fasterrcnn"))


def _labels(sample, classes=None, offset=0) -> Labels:
    """The sample's objects as labels (``offset``: 1 for torchvision's numbering, where 0 is
    the background)."""
    k = (sample.labels if classes is None else classes) + offset
    return Labels(torch.tensor(sample.boxes), torch.as_tensor(k, dtype=torch.long))


def _independent_match(boxes, scores, classes, gt, gt_classes, thr):
    """Greedy matching written out plainly: best score first, the free label of the same class
    with the highest IoU at or above ``thr``."""

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    taken: dict[int, int] = {}
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        best, at = -1.0, -1
        for j in range(len(gt)):
            if j in taken.values() or gt_classes[j] != classes[i]:
                continue
            v = iou(boxes[i], gt[j])
            if v > best:
                best, at = v, j
        if at >= 0 and best >= thr:
            taken[i] = at
    return taken


def _explained(detector, result, method="odam"):
    """Every outcome's targets explained in one call: (maps, scores) of the image."""
    targets = [t for o in result.outcomes for _, t in o.targets]
    exp = taskcam.explain(
        detector.model, result.x, [targets], layers=detector.default_layers(), method=method
    )
    return exp, targets


def test_matching_is_greedy_by_score_per_class_at_the_iou():
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 8], [30, 30, 40, 40]])
    scores, classes = torch.tensor([0.5, 0.9, 0.8]), torch.tensor([0, 0, 1])
    gt = torch.tensor([[0.0, 0, 10, 10], [30, 30, 40, 40]])
    m = match_labels(boxes, scores, classes, gt, torch.tensor([0, 0]))
    # the better-scored detection takes the label although the other overlaps it more
    assert m.label_of == [-1, 0, -1] and m.detection_of == [1, -1]
    assert m.iou[0] == pytest.approx(0.8)
    # class 1 detection does not hit a class 0 label however much it overlaps
    assert m.false_positives == [0, 2] and m.missed == [1]
    # at IoU 0.9 the better-scored one overlaps too little: the exact one hits
    strict = match_labels(boxes, scores, classes, gt, torch.tensor([0, 0]), iou=0.9)
    assert strict.label_of == [0, -1, -1] and strict.iou[0] == pytest.approx(1.0)
    with pytest.raises(TaskcamError, match=r"--iou: expected an IoU in \(0, 1\], got 1.5"):
        match_labels(boxes, scores, classes, gt, torch.tensor([0, 0]), iou=1.5)


def test_the_labels_of_a_trained_detector_are_hits_equal_to_an_independent_matching(yolo):
    outcomes = {"hit": 0, "missed": 0, "false_positive": 0}
    for i in range(6):
        sample = make_sample(i, seed=123, size=256)
        result = label_outcomes(yolo, sample.image, _labels(sample))
        dets = result.detections
        boxes = result.placement.boxes_to_image(dets.boxes.float()).tolist()
        taken = _independent_match(
            boxes,
            dets.scores.tolist(),
            dets.classes.tolist(),
            sample.boxes.tolist(),
            sample.labels.tolist(),
            0.5,
        )
        assert {i: j for i, j in enumerate(result.match.label_of) if j >= 0} == taken
        # every label once, every detection once
        labels = sorted(o.label for o in result.outcomes if o.label is not None)
        assert labels == list(range(len(sample.labels)))
        shown = sorted(o.detection for o in result.outcomes if o.detection is not None)
        assert shown == list(range(len(dets)))
        for name, n in result.counts.items():
            outcomes[name] += n
    assert outcomes["hit"] >= 0.9 * (outcomes["hit"] + outcomes["missed"]), outcomes


def test_a_threshold_that_drops_a_true_object_gives_below_conf(yolo):
    sample = make_sample(5, seed=123, size=256)
    x, _ = yolo.prepare(sample.image)
    scores = yolo.detect(x)[0].scores
    conf = float(scores.min()) + 1e-3  # the weakest detection falls below it
    before = yolo.conf
    yolo.conf = conf
    try:
        result = label_outcomes(yolo, sample.image, _labels(sample))
    finally:
        yolo.conf = before
    (miss,) = result.missed
    assert miss.reason == "below_conf" and miss.candidate_score <= conf
    assert miss.candidate_score == pytest.approx(float(scores.min()), abs=1e-5)
    exp, targets = _explained(yolo, result)
    assert_close(exp.scores[0, -1], torch.tensor(miss.candidate_score), atol=1e-4, rtol=0)
    assert not exp.empty[0, -1] and torch.isfinite(exp.maps).all()


def test_a_class_swapped_in_the_labels_is_wrong_class_with_its_contrast(yolo):
    sample = make_sample(5, seed=123, size=256)
    swapped = (sample.labels + 1) % 4
    result = label_outcomes(yolo, sample.image, _labels(sample, swapped))
    assert result.counts == {"hit": 0, "missed": 3, "false_positive": 3}
    dets = result.detections
    for miss in result.missed:
        assert miss.reason == "wrong_class" and miss.versus_class != miss.label_class
        assert miss.versus_score > yolo.conf > miss.candidate_score
        # the class that won there is the one a detection on that object has
        near = [
            int(dets.classes[i])
            for i in range(len(dets))
            if int(dets.candidates[i]) == miss.candidate
        ]
        assert near in ([], [miss.versus_class])
        roles = [r for r, _ in miss.targets]
        assert roles == ["score", "versus", "contrast"]
        contrast = miss.targets[2][1]
        assert isinstance(contrast, ContrastTarget)
    exp, targets = _explained(yolo, result)
    row = {id(t): k for k, t in enumerate(targets)}
    for miss in result.missed:
        mine, versus, contrast = (row[id(t)] for _, t in miss.targets)
        assert_close(exp.scores[0, contrast], exp.scores[0, versus] - exp.scores[0, mine])
        assert float(exp.scores[0, contrast]) > 0  # the other class won
        assert_close(exp.scores[0, versus], torch.tensor(miss.versus_score), atol=1e-4, rtol=0)


def test_two_overlapping_objects_where_nms_keeps_one_give_suppressed(yolo):
    sample = make_sample(24, seed=7, size=256)  # objects 0 and 3: crosses at IoU 0.13
    before = yolo.iou
    yolo.iou = 0.05  # NMS drops a cross overlapping a better one by more than that
    try:
        result = label_outcomes(yolo, sample.image, _labels(sample))
    finally:
        yolo.iou = before
    (miss,) = [m for m in result.missed if m.label in (0, 3)]
    assert miss.reason == "suppressed" and miss.candidate_score > yolo.conf
    kept = result.detections
    by = miss.suppressed_by
    assert kept.classes[by] == miss.label_class and kept.scores[by] >= miss.candidate_score
    assert miss.suppressed_iou > 0.05
    # the suppressor hits the other square
    assert result.match.label_of[by] in (0, 3) and result.match.label_of[by] != miss.label
    # with the model's own NMS IoU both are found
    again = label_outcomes(yolo, sample.image, _labels(sample))
    assert not [m for m in again.missed if m.label in (0, 3)]


def test_a_label_on_empty_background_is_no_candidate_explained_over_its_box(yolo):
    sample = make_sample(5, seed=123, size=256)
    # a small box in a corner with no object: no candidate's box overlaps it at IoU 0.5 (a
    # larger one may: a dense detector predicts a box at every anchor, scored near 0 there,
    # and that is below_conf)
    empty = torch.tensor([[226.0, 8, 244, 26]])
    labels = Labels(torch.cat([torch.tensor(sample.boxes), empty]), torch.tensor([3, 1, 0, 2]))
    result = label_outcomes(yolo, sample.image, labels)
    (miss,) = result.missed
    assert miss.label == 3 and miss.reason == "no_candidate" and miss.candidate is None
    ((role, target),) = miss.targets
    assert isinstance(target, RegionTarget) and len(target.indices) > 1
    exp, _ = _explained(yolo, result)
    assert not exp.empty[0, -1]
    # what is explained: the label class's score summed over the candidates centred in the box
    with torch.no_grad():
        cands = yolo.candidates(yolo.model(result.x))
    boxes = result.placement.boxes_to_image(cands.boxes[0, target.indices].float())
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert ((centres >= empty[0, :2]) & (centres <= empty[0, 2:])).all()
    total = cands.scores[0, target.indices, 2].sum()
    assert_close(exp.scores[0, -1], total, atol=1e-5, rtol=1e-4)
    assert miss.candidate_score == pytest.approx(float(total), abs=1e-5)


def test_perturbation_methods_explain_missed_labels_too(yolo):
    sample = make_sample(5, seed=123, size=256)
    result = label_outcomes(yolo, sample.image, _labels(sample, (sample.labels + 1) % 4))
    targets = [t for o in result.missed for _, t in o.targets]
    exp = taskcam.explain(
        yolo.model, result.x, [targets], method=taskcam.get_method("drise", n_masks=16)
    )
    assert exp.maps.shape[1] == len(targets) and torch.isfinite(exp.maps).all()


def test_a_two_stage_detector_gets_the_same_outcomes(rcnn):
    sample = make_sample(2, seed=123, size=256)
    result = label_outcomes(rcnn, sample.image, _labels(sample, offset=1))
    assert result.counts == {"hit": 2, "missed": 0, "false_positive": 0}
    swapped = (sample.labels + 1) % 4
    swapped = label_outcomes(rcnn, sample.image, _labels(sample, swapped, offset=1))
    reasons = {m.reason for m in swapped.missed}
    assert swapped.counts["hit"] == 0 and reasons <= {"wrong_class", "below_conf"}
    exp, targets = _explained(rcnn, swapped)
    assert exp.maps.shape[1] == len(targets) and torch.isfinite(exp.maps).all()


def test_a_label_class_the_model_lacks_is_refused(yolo):
    labels = Labels(torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([7]))
    with pytest.raises(TaskcamError, match="class id 7 does not exist.*4 classes"):
        label_outcomes(yolo, np.zeros((64, 64, 3), np.uint8), labels)


@pytest.mark.parametrize(
    "spec",
    ["yolov8n-seg.yaml", "yolov8n-pose.yaml", "yolo26n.yaml", "rtdetr-l.yaml"],
)
def test_every_ultralytics_task_explains_its_errors(spec):
    """Random weights: a label at a detection's box with its class is a hit; with another
    class, a miss whose targets (the family's own) explain with ODAM."""
    from taskcam.adapters.ultralytics import load_yolo

    torch.manual_seed(0)
    model = load_yolo(spec, nc=3)
    detector = detector_for(model, size=160)
    detector.conf, detector.max_det = 0.0, 4  # a few detections of random weights
    image = make_sample(5, seed=123, size=160).image
    x, placement = detector.prepare(image)
    dets = detector.detect(x)[0]
    assert len(dets) > 0, spec
    box = placement.boxes_to_image(dets.boxes[:1].float())
    k = int(dets.classes[0])
    labels = Labels(box.repeat(2, 1), torch.tensor([k, (k + 1) % 3]))
    result = label_outcomes(detector, image, labels)
    assert result.match.detection_of[0] == 0 and [o.label for o in result.missed] == [1]
    exp, targets = _explained(detector, result)
    assert exp.maps.shape[1] == len(targets) and torch.isfinite(exp.maps).all()
