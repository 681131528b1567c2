"""effdet's post-processing, written again so that each detection keeps its candidate.

``DetBenchPredict`` (``effdet.bench._post_process`` then ``effdet.anchors.
generate_detections`` per image) does, and :func:`effdet_select` does the same with effdet's
own functions on the same numbers:

1. the best ``max_detection_points`` (5000) (anchor, class) pairs by class logit, over all
   levels at once (``topk`` of the flattened ``Tensor[B, N·K]`` logits);
2. their boxes decoded against their anchors (``decode_box_outputs``), clipped to the image's
   extent on the input when the bench is given ``img_info`` (``clip_boxes_xyxy``);
3. scores ``sigmoid(logit)``; per-class NMS at IoU 0.5 (``batched_nms``), or effdet's Gaussian
   Soft-NMS when the config asks for it (``soft_nms``: IoU 0.3, scores rescored);
4. the best ``max_det_per_image`` (100), class ids ``+ 1`` (1-based).

effdet applies no score threshold; it pads its output to ``max_det_per_image`` rows of zeros
and its COCO evaluator stops at the first score under 0.001 (scores fall row after row). So a
detection is kept here when its score is at least ``conf`` (:data:`EVAL_CONF`, effdet's 0.001,
by default).
"""

from __future__ import annotations

from typing import Optional

import torch

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.effdet.library import effdet_module

__all__ = ["EVAL_CONF", "NMS_IOU", "effdet_select"]

EVAL_CONF = 0.001
"""The score under which effdet's evaluator stops reading a bench's detections."""

NMS_IOU = 0.5
"""The IoU of ``generate_detections``' ``batched_nms``."""


def effdet_select(
    candidates: Candidates,
    anchors: torch.Tensor,
    *,
    max_points: int = 5000,
    max_det: int = 100,
    iou: float = NMS_IOU,
    soft_nms: bool = False,
    conf: float = EVAL_CONF,
    extent: Optional[torch.Tensor] = None,
) -> list[Detections]:
    """The detections of ``DetBenchPredict``, per image, each with its candidate (see the
    module doc).

    Args:
        candidates: an EfficientDet output's candidates
            (:func:`~taskcam.adapters.effdet.outputs.effdet_candidates`: its ``extras``
            hold the logits ``Tensor[B, N, K]`` and box codes ``Tensor[B, N, 4]``).
        anchors: ``Tensor[N, 4]`` effdet's anchors (``y1, x1, y2, x2``).
        max_points: the config's ``max_detection_points`` (pairs kept before NMS).
        max_det: the config's ``max_det_per_image``.
        iou: NMS IoU (effdet's 0.5).
        soft_nms: the config's ``soft_nms``.
        conf: detections scoring less are dropped.
        extent: ``Tensor[B, 2]`` each image's width and height on the input (effdet's
            ``img_size / img_scale``): boxes are clipped to it before NMS, as the bench does
            with ``img_info``; None: no clip, as ``bench(x)``.

    Returns:
        One :class:`Detections` per image, best first: boxes xyxy in input pixels, scores,
        effdet's class ids (from 1), candidate indices.

    Example:
        >>> from taskcam.adapters.effdet.outputs import effdet_candidates
        >>> cls = [torch.tensor([[[[-1.0, 2.0]], [[3.0, 0.0]]]])]  # 1 level 1×2, A = 1, K = 2
        >>> box = [torch.zeros(1, 4, 1, 2)]
        >>> anchors = torch.tensor([[0.0, 0, 8, 8], [0, 8, 8, 16]])
        >>> c = effdet_candidates((cls, box), anchors)
        >>> d = effdet_select(c, anchors)[0]  # every (anchor, class) pair: no overlap
        >>> d.candidates.tolist(), d.classes.tolist()
        ([0, 1, 1, 0], [2, 1, 2, 1])
        >>> d = effdet_select(c, anchors, conf=0.6)[0]
        >>> d.candidates.tolist(), d.classes.tolist(), d.boxes.tolist()
        ([0, 1], [2, 1], [[0.0, 0.0, 8.0, 8.0], [8.0, 0.0, 16.0, 8.0]])
    """
    anchors_mod = effdet_module("anchors")
    from torchvision.ops import batched_nms

    logits, codes = candidates.extras["logits"], candidates.extras["codes"]
    b, n, k = logits.shape
    _, top = torch.topk(logits.reshape(b, -1), dim=1, k=min(int(max_points), n * k))
    indices, classes = top // k, top % k  # [B, k]
    anchors = anchors.to(codes.device)
    out = []
    for i in range(b):
        idx, cls = indices[i], classes[i]
        boxes = anchors_mod.decode_box_outputs(
            codes[i, idx].float(), anchors[idx], output_xyxy=True
        )
        if extent is not None:
            boxes = anchors_mod.clip_boxes_xyxy(boxes, extent[i].to(boxes.device))
        scores = logits[i, idx, cls][:, None].sigmoid().squeeze(1).float()
        if soft_nms:
            keep, soft = effdet_module("soft_nms").batched_soft_nms(
                boxes, scores, cls, method_gaussian=True, iou_threshold=0.3, score_threshold=0.001
            )
            scores[keep] = soft
        else:
            keep = batched_nms(boxes, scores, cls, iou_threshold=float(iou))
        keep = keep[: int(max_det)]
        keep = keep[scores[keep] >= conf] if conf > 0 else keep
        out.append(Detections(boxes[keep], scores[keep], cls[keep] + 1, idx[keep]))
    return out
