"""The detect task of ultralytics YOLO (v3u, v5u, v8, v9, v10, 11, 12, 26): every anchor's
candidate read from the model's output, and the target of one detection, which the other tasks'
targets build on."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates
from taskcam.adapters.detection.scoring import WHAT, DetectionTarget
from taskcam.adapters.ultralytics.raw import kpt_shape, num_classes, parse_output, yolo_head
from taskcam.boxes import cxcywh_to_xyxy, rotated_bounds

__all__ = ["YoloDetectionTarget", "candidates_of", "is_obb", "yolo_candidates"]


def is_obb(head: Optional[nn.Module]) -> bool:
    """Whether ``head`` is an oriented-box head (``OBB``: an angle per anchor)."""
    return head is not None and (type(head).__name__ == "OBB" or bool(getattr(head, "ne", 0)))


def yolo_candidates(output: Any, head: Optional[nn.Module] = None) -> Candidates:
    """Every anchor's candidate in a YOLO model's eval output (see
    :func:`taskcam.adapters.ultralytics.raw.raw_predictions`).

    ``boxes`` are xyxy in input pixels (an OBB model's: the axis-aligned bounds of its rotated
    boxes), ``scores`` the sigmoid class scores; YOLOv8-style heads have no objectness, so a
    candidate's is its best class score (for D-RISE matching). ``extras``: a segmentation
    model's mask ``"coefficients"`` ``[B, A, nm]`` and ``"prototypes"`` ``[B, nm, h, w]``, a
    pose model's ``"keypoints"`` ``[B, A, K, D]``, an OBB model's ``"rboxes"`` ``[B, A, 5]``.
    An end-to-end head's one-to-one candidates (YOLOv10, YOLO26) have ``nms=False``.

    Args:
        output: what ``model(x)`` returned in eval mode.
        head: the model's head; needed for end-to-end, pose and OBB heads.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> c = yolo_candidates(m(torch.rand(1, 3, 64, 64)))
        >>> c.boxes.shape, c.scores.shape, c.nms
        (torch.Size([1, 84, 4]), torch.Size([1, 84, 4]), True)
    """
    return candidates_of(*parse_output(output, head), head)


def candidates_of(
    preds: torch.Tensor,
    protos: Optional[torch.Tensor],
    end2end: bool,
    head: Optional[nn.Module] = None,
) -> Candidates:
    """:func:`yolo_candidates` of an output already parsed
    (:func:`~taskcam.adapters.ultralytics.raw.parse_output`)."""
    nc = num_classes(preds, protos, head)
    probs = preds[:, 4 : 4 + nc].transpose(1, 2)  # [B, A, nc]
    extras: dict[str, torch.Tensor] = {}
    if is_obb(head):
        rboxes = torch.cat([preds[:, :4], preds[:, 4 + nc : 5 + nc]], dim=1).transpose(1, 2)
        boxes = rotated_bounds(rboxes)
        extras["rboxes"] = rboxes
    else:
        boxes = cxcywh_to_xyxy(preds[:, :4].transpose(1, 2))  # [B, A, 4]
    if protos is not None:
        extras["coefficients"] = preds[:, 4 + nc :].transpose(1, 2)  # [B, A, nm]
        extras["prototypes"] = protos
    shape = kpt_shape(head) if head is not None else None
    if shape is not None:
        values = preds[:, 4 + nc : 4 + nc + shape[0] * shape[1]].transpose(1, 2)
        extras["keypoints"] = values.reshape(*values.shape[:2], *shape)  # [B, A, K, D]
    return Candidates(boxes, probs, objectness=probs.amax(dim=-1), extras=extras, nms=not end2end)


class YoloDetectionTarget(DetectionTarget):
    """One candidate's class score, or one side of its box, from a YOLO model's output.

    Args:
        candidate: the anchor index (``Detections.candidates``).
        class_id: the class whose score is explained.
        what: ``"score"`` (the sigmoid class score) or a box side ``"x1" | "y1" | "x2" | "y2"``
            in input pixels.
        box: the detection's box (input pixels), needed by perturbation methods, which match
            it by D-RISE similarity (:meth:`perturbed`).
        layer: the neck level that predicted it (:func:`candidate_layer`), or None.
        model: the YOLO model; needed for an end-to-end head (YOLOv10, YOLO26), whose
            one-to-one outputs its head decodes into candidates (:func:`raw_predictions`).
            It takes no part in equality or ``repr``.

    A candidate beyond the output's anchors (a resized input) scores 0, as the engine's
    contract asks. Flips and rescales move anchors, so ``aug_smooth`` does not suit these
    targets. YOLOv8-style heads have no objectness; for D-RISE matching a candidate's
    objectness is its best class score.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> YoloDetectionTarget(5, 2)(m(torch.rand(2, 3, 64, 64))).shape
        torch.Size([2])
    """

    supports = WHAT[:5]

    def __init__(
        self,
        candidate: int,
        class_id: int,
        what: str = "score",
        *,
        box: Optional[torch.Tensor] = None,
        layer: Optional[str] = None,
        model: Optional[nn.Module] = None,
    ) -> None:
        super().__init__(candidate, class_id, what, box=box, layer=layer)
        self.head = None if model is None else yolo_head(model)

    def parse(self, output: Any) -> tuple[torch.Tensor, Optional[torch.Tensor], bool]:
        """``(preds Tensor[B, 4 + nc (+ ...), A], protos or None, end-to-end)``, the class
        checked (:func:`~taskcam.adapters.ultralytics.raw.parse_output`)."""
        parsed = parse_output(output, self.head)
        self.check_class(num_classes(parsed[0], parsed[1], self.head))
        return parsed

    def score(self, preds: torch.Tensor) -> torch.Tensor:
        """``Tensor[B]``: the candidate's class score or box side in ``preds``."""
        missing = self.absent(preds.shape[2], preds)
        if missing is not None:
            return missing
        column = preds[:, :, self.candidate]  # [B, C]
        if self.what == "score":
            return column[:, 4 + self.class_id]
        return self.side(cxcywh_to_xyxy(column[:, :4]))

    def __call__(self, output: Any) -> torch.Tensor:
        return self.score(self.parse(output)[0])

    def candidates(self, output: Any) -> Candidates:
        return candidates_of(*self.parse(output), self.head)
