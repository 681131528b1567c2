"""A torchvision detector's stages, run by :class:`~taskcam.adapters.torchvision.traced.
TracedDetector` one by one so that every candidate's scores stay differentiable and each
detection keeps its candidate: the two-stage path (RPN, box head, torchvision's
``postprocess_detections``, Mask R-CNN's mask branch) and the one-stage path (head, anchors,
post-processing)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import batched_nms, clip_boxes_to_image, remove_small_boxes

from taskcam.adapters.detection.candidates import Detections
from taskcam.adapters.torchvision.postprocess import (
    MIN_BOX,
    anchors_per_level,
    dense_postprocess,
    levels_from_counts,
    roi_levels,
    ssd_postprocess,
)
from taskcam.adapters.torchvision.traced_output import MaskLogits, TracedOutput, empty_output

__all__ = ["box_head", "mask_branch", "one_stage", "tracked", "two_stage"]


def two_stage(
    traced: nn.Module,
    images: Any,
    features: dict[str, torch.Tensor],
    size: tuple[int, int],
    with_masks: bool,
    score_thresh: Optional[float],
) -> TracedOutput:
    """Faster / Mask / Keypoint R-CNN: proposals, the box head on each, torchvision's
    ``postprocess_detections`` remembering each detection's proposal (see
    :class:`~taskcam.adapters.torchvision.traced_output.TracedOutput`)."""
    heads = traced.roi_heads
    proposals, _ = traced.rpn(images, features)  # detached boxes, transformed pixels
    pool = heads.box_roi_pool
    counts = [len(p) for p in proposals]
    # The box head runs on every proposal (1000 per image for R50-FPN), but only the
    # detections' rows are ever explained. With gradients on, it runs on all of them
    # without gradients (for the detections and for matching), then again with gradients
    # on the detections' proposals only (``tracked``): a backward crosses K rows of the
    # head instead of 1000, with the same gradients.
    tracking = torch.is_grad_enabled()
    with torch.no_grad() if tracking else nullcontext():
        class_logits, box_regression = box_head(traced, features, proposals, images)
    boxes_all = heads.box_coder.decode(box_regression, proposals)  # [sum N, K, 4]
    probs_all = F.softmax(class_logits, -1)  # [sum N, K]
    levels_all = roi_levels(pool, list(features), proposals)
    thresh = heads.score_thresh if score_thresh is None else score_thresh

    out = empty_output(traced.family, list(features))
    kept_boxes_t: list[torch.Tensor] = []
    for boxes_t, probs, levels, image_size in zip(
        boxes_all.split(counts, 0), probs_all.split(counts, 0), levels_all, images.image_sizes
    ):
        # torchvision's RoIHeads.postprocess_detections, remembering each row's proposal
        boxes_t = clip_boxes_to_image(boxes_t, image_size)  # [N, K, 4]
        n, k = probs.shape
        labels = torch.arange(k, device=probs.device).view(1, -1).expand_as(probs)
        fg_boxes = boxes_t[:, 1:].reshape(-1, 4)
        fg_scores = probs[:, 1:].reshape(-1)
        fg_labels = labels[:, 1:].reshape(-1)
        rows = torch.where(fg_scores > thresh)[0]
        rows = rows[remove_small_boxes(fg_boxes[rows], min_size=MIN_BOX)]
        keep = batched_nms(fg_boxes[rows], fg_scores[rows], fg_labels[rows], heads.nms_thresh)
        rows = rows[keep[: heads.detections_per_img]]
        kept_boxes_t.append(fg_boxes[rows])
        candidates = torch.div(rows, k - 1, rounding_mode="floor")
        out.detections.append(
            Detections(
                boxes=resize_boxes(fg_boxes[rows], image_size, size),
                scores=fg_scores[rows],
                classes=fg_labels[rows],
                candidates=candidates,
            )
        )
        out.probs.append(probs)
        out.scores.append(probs)
        boxes = resize_boxes(boxes_t.reshape(-1, 4), image_size, size).reshape(n, k, 4)
        out.boxes.append(boxes)
        assert out.objectness is not None
        out.objectness.append(1 - probs[:, 0])
        out.levels.append(levels)
    if tracking:
        out.tracked = tracked(traced, features, proposals, images, out.detections, size)
    if heads.has_mask():
        out.mask_logits = MaskLogits(
            heads, features, images.image_sizes, kept_boxes_t, out.detections
        )
    if with_masks and heads.has_mask():
        mask_branch(traced, features, images.image_sizes, kept_boxes_t, out.detections, size)
    return out


def box_head(
    traced: nn.Module, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], images: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoI pooling, box head and predictor: class logits and box deltas per proposal."""
    heads = traced.roi_heads
    pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
    return heads.box_predictor(heads.box_head(pooled))


def tracked(
    traced: nn.Module,
    features: dict[str, torch.Tensor],
    proposals: list[torch.Tensor],
    images: Any,
    dets: list[Detections],
    size: tuple[int, int],
) -> list[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """The box head again, with gradients, on the detections' proposals only."""
    heads = traced.roi_heads
    kept = [torch.unique(d.candidates) for d in dets]
    chosen = [p[i] for p, i in zip(proposals, kept)]
    logits, regression = box_head(traced, features, chosen, images)
    probs = F.softmax(logits, -1).split([len(i) for i in kept])  # [R, K] per image
    boxes = heads.box_coder.decode(regression, chosen).split([len(i) for i in kept])
    tracked = []
    for cands, p, box, image_size in zip(kept, probs, boxes, images.image_sizes):
        n, k = p.shape
        box = clip_boxes_to_image(box, image_size).reshape(-1, 4)  # [R * K, 4]
        box = resize_boxes(box, image_size, size).reshape(n, k, 4)
        tracked.append({int(c): (p[i], box[i]) for i, c in enumerate(cands.tolist())})
    return tracked


def mask_branch(
    traced: nn.Module,
    features: dict[str, torch.Tensor],
    image_sizes: list[tuple[int, int]],
    boxes_t: list[torch.Tensor],
    dets: list[Detections],
    size: tuple[int, int],
) -> None:
    """Mask R-CNN's mask branch on the detections, pasted as torchvision pastes them."""
    heads = traced.roi_heads
    mask_features = heads.mask_head(heads.mask_roi_pool(features, boxes_t, image_sizes))
    logits = heads.mask_predictor(mask_features)
    probs = maskrcnn_inference(logits, [d.classes for d in dets])
    placement = traced.placement(*size)
    for det, prob in zip(dets, probs):
        if len(det) == 0:
            det.masks = torch.zeros(0, *size, dtype=torch.bool, device=prob.device)
            continue
        pasted = paste_masks_in_image(prob, det.boxes, size)[:, 0]  # [n, H, W]
        det.masks = placement.image_to_map(pasted) > 0.5


def one_stage(
    traced: nn.Module,
    images: Any,
    features: dict[str, torch.Tensor],
    size: tuple[int, int],
    score_thresh: Optional[float],
) -> TracedOutput:
    """RetinaNet, FCOS and SSD: the head on every level, the anchors, torchvision's
    post-processing remembering each detection's anchor."""
    d = traced.detector
    feats = list(features.values())
    head = traced.head(feats)
    anchors = traced.anchor_generator(images, feats)
    counts = anchors_per_level(traced.anchor_generator, feats, head["cls_logits"].shape[1])
    thresh = d.score_thresh if score_thresh is None else score_thresh
    out = empty_output(traced.family, list(features))
    ssd_probs = F.softmax(head["cls_logits"], dim=-1) if traced.family == "ssd" else None
    for b, image_size in enumerate(images.image_sizes):
        regression, image_anchors = head["bbox_regression"][b], anchors[b]
        objectness: Optional[torch.Tensor] = None
        if ssd_probs is not None:
            probs = scores = ssd_probs[b]
            objectness = 1 - probs[:, 0]
            boxes_t = d.box_coder.decode_single(regression, image_anchors)
            boxes_t = clip_boxes_to_image(boxes_t, image_size)
            det = ssd_postprocess(d, probs, boxes_t, thresh)
        else:
            probs_l = [torch.sigmoid(lg) for lg in head["cls_logits"][b].split(counts)]
            if traced.family == "fcos":
                ctr_l = [torch.sigmoid(c) for c in head["bbox_ctrness"][b].split(counts)]
                scores_l = [torch.sqrt(p * c) for p, c in zip(probs_l, ctr_l)]
                objectness = torch.cat(ctr_l)[:, 0]
                boxes_t = d.box_coder.decode(regression, image_anchors)
            else:
                scores_l = probs_l
                boxes_t = d.box_coder.decode_single(regression, image_anchors)
            boxes_t = clip_boxes_to_image(boxes_t, image_size)
            probs, scores = torch.cat(probs_l), torch.cat(scores_l)
            det = dense_postprocess(
                d, traced.family, scores_l, regression, image_anchors, counts, image_size, thresh
            )
        det.boxes = resize_boxes(det.boxes, image_size, size)
        out.detections.append(det)
        out.probs.append(probs)
        out.scores.append(scores)
        out.boxes.append(resize_boxes(boxes_t, image_size, size))
        if out.objectness is not None and objectness is not None:
            out.objectness.append(objectness)
        out.levels.append(levels_from_counts(counts, probs.shape[0], probs.device))
    return out
