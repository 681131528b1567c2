"""The OBB task of ultralytics YOLO (``-obb``): oriented boxes kept by ultralytics' own rotated
NMS, and their target (the class score the NMS ranks by)."""

from __future__ import annotations

from typing import Any

import torch

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.ultralytics.detect import YoloDetectionTarget
from taskcam.boxes import rotated_bounds

__all__ = ["YoloObbTarget", "obb_detections"]


def obb_detections(
    candidates: Candidates, image: int, conf: float, iou: float, max_det: int
) -> Detections:
    """One image's oriented boxes as ultralytics' rotated NMS keeps them (its own function,
    asked for the kept candidates); ``boxes`` are the rotated boxes' axis-aligned bounds,
    ``rboxes`` the boxes (``cx, cy, w, h, angle``, input pixels).

    Args:
        candidates: an OBB model's candidates (``extras["rboxes"]``: ``Tensor[B, A, 5]``).
        image: which image of the batch.
        conf, iou, max_det: as ultralytics' ``predict``.
    """
    from ultralytics.utils.nms import non_max_suppression

    rboxes, scores = candidates.extras["rboxes"][image], candidates.scores[image]
    p = torch.cat([rboxes[:, :4], scores, rboxes[:, 4:]], dim=1).T  # [4 + nc + 1, A]
    (rows,), (kept,) = non_max_suppression(
        p[None], conf, iou, nc=scores.shape[1], max_det=max_det, rotated=True, return_idxs=True
    )  # rows: [n, 7] x, y, w, h, score, class, angle
    kept_boxes = torch.cat([rows[:, :4], rows[:, -1:]], dim=1)
    return Detections(
        boxes=rotated_bounds(kept_boxes),
        scores=rows[:, 4],
        classes=rows[:, 5].long(),
        candidates=kept.long(),
        rboxes=kept_boxes,
    )


class YoloObbTarget(YoloDetectionTarget):
    """One oriented box of a YOLO OBB model: its candidate's class score (what ultralytics'
    rotated NMS ranks by). Its D-RISE candidates are the axis-aligned bounds of the rotated
    boxes. The model is needed (its head says how many classes there are).
    """

    supports = ("score",)

    def candidates(self, output: Any) -> Candidates:
        assert self.head is not None
        return super().candidates(output)
