"""Detections matched to the user's labels as detectors' validation matches them: per class,
greedy by score, a detection taking the unmatched label of its class it overlaps most, at an
IoU of at least the threshold (0.5 by default, as COCO's AP50 and ultralytics' mAP50 count a
hit; Everingham et al., IJCV 2010, "The PASCAL Visual Object Classes (VOC) Challenge", set the
rule)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from taskcam.errors import TaskcamError

__all__ = ["MATCH_IOU", "Match", "check_iou", "match_labels"]

MATCH_IOU = 0.5
"""The IoU at which a detection hits a label of its class (``--iou``)."""


def check_iou(iou: object, name: str = "--iou") -> float:
    """``iou`` as a float when it is in (0, 1], else an error naming ``name`` and the value."""
    if isinstance(iou, bool) or not isinstance(iou, (int, float)) or not 0.0 < float(iou) <= 1.0:
        raise TaskcamError(f"{name}: expected an IoU in (0, 1], got {iou!r}")
    return float(iou)


@dataclass
class Match:
    """How one image's detections and labels pair up.

    Attributes:
        label_of: per detection, the index of the label it hits, or -1 (a false positive).
        detection_of: per label, the index of the detection that hits it, or -1 (missed).
        iou: per label, the IoU with its detection (0 when missed).
    """

    label_of: list[int]
    detection_of: list[int]
    iou: list[float]

    @property
    def hits(self) -> int:
        """Labels hit by a detection."""
        return sum(d >= 0 for d in self.detection_of)

    @property
    def missed(self) -> list[int]:
        """The labels no detection hits."""
        return [j for j, d in enumerate(self.detection_of) if d < 0]

    @property
    def false_positives(self) -> list[int]:
        """The detections that hit no label."""
        return [i for i, j in enumerate(self.label_of) if j < 0]


def match_labels(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    label_boxes: torch.Tensor,
    label_classes: torch.Tensor,
    iou: float = MATCH_IOU,
) -> Match:
    """Match detections to labels: best score first, each detection takes the unmatched label
    of its own class with the highest IoU, if that IoU is at least ``iou``.

    Args:
        boxes: ``Tensor[N, 4]`` the detections' xyxy boxes (the labels' pixels).
        scores: ``Tensor[N]`` their scores.
        classes: ``LongTensor[N]`` their classes.
        label_boxes: ``Tensor[M, 4]`` xyxy.
        label_classes: ``LongTensor[M]`` in the detector's numbering.
        iou: the IoU a hit needs (:func:`check_iou`).

    Returns:
        A :class:`Match`.

    Example:
        >>> dets = torch.tensor([[0.0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60]])
        >>> labels = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
        >>> m = match_labels(dets, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1]),
        ...                  labels, torch.tensor([0, 1]))
        >>> m.label_of, m.detection_of, m.missed, m.false_positives
        ([0, -1, -1], [0, -1], [1], [1, 2])
    """
    from torchvision.ops import box_iou

    iou = check_iou(iou)
    n, m = len(scores), len(label_classes)
    label_of, detection_of, ious = [-1] * n, [-1] * m, [0.0] * m
    if n == 0 or m == 0:
        return Match(label_of, detection_of, ious)
    overlap = box_iou(boxes.float().cpu(), label_boxes.float().cpu())  # [N, M]
    same = classes.cpu()[:, None] == label_classes.cpu()[None, :]
    overlap = torch.where(same, overlap, torch.full_like(overlap, -1.0))
    # stable, so equal scores keep the detector's own order
    for i in torch.argsort(scores.cpu(), descending=True, stable=True).tolist():
        free = overlap[i].clone()
        free[[j for j in range(m) if detection_of[j] >= 0]] = -1.0
        j = int(free.argmax())
        if float(free[j]) >= iou:
            label_of[i], detection_of[j], ious[j] = j, i, float(free[j])
    return Match(label_of, detection_of, ious)
