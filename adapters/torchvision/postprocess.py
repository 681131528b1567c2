"""torchvision's post-processing, written again so that each detection keeps the index of its
candidate: the one-stage detectors' (RetinaNet, FCOS, SSD), and the pyramid level each
candidate comes from."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign, batched_nms, clip_boxes_to_image

from taskcam.adapters.detection.candidates import Detections
from taskcam.errors import TaskcamError

__all__ = [
    "MIN_BOX",
    "anchors_per_level",
    "dense_postprocess",
    "levels_from_counts",
    "roi_levels",
    "ssd_postprocess",
]

MIN_BOX = 1e-2  # torchvision's roi_heads drops boxes smaller than this (transformed pixels)


def roi_levels(
    pool: nn.Module, names: list[str], proposals: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per image ``LongTensor[N]``: index into ``names`` of the level each proposal is pooled
    from (``MultiScaleRoIAlign``'s level mapper), -1 for other poolers."""
    counts = [len(p) for p in proposals]
    device = proposals[0].device
    total = sum(counts)
    if not isinstance(pool, MultiScaleRoIAlign):
        return list(torch.full((total,), -1, dtype=torch.long, device=device).split(counts))
    used = [i for i, n in enumerate(names) if n in pool.featmap_names]
    if len(used) == 1 or pool.map_levels is None:
        local = torch.zeros(total, dtype=torch.long, device=device)
    else:
        local = pool.map_levels(proposals)
    index = torch.tensor(used, dtype=torch.long, device=device)
    return list(index[local].split(counts))


def anchors_per_level(generator: nn.Module, feats: list[torch.Tensor], total: int) -> list[int]:
    """Candidates per level: ``H_l × W_l × A_l``, as the head concatenates them."""
    cells = [int(f.shape[-2] * f.shape[-1]) for f in feats]
    per_cell = getattr(generator, "num_anchors_per_location", None)
    if callable(per_cell):
        a = per_cell()
        if len(a) == len(cells) and sum(c * k for c, k in zip(cells, a)) == total:
            return [c * k for c, k in zip(cells, a)]
    if total % sum(cells) == 0:  # RetinaNet's own rule: the same A on every level
        a_all = total // sum(cells)
        return [c * a_all for c in cells]
    raise TaskcamError(
        f"cannot split {total} candidates over feature maps of {cells} cells"
    )  # pragma: no cover - torchvision heads always match


def levels_from_counts(counts: list[int], total: int, device: torch.device) -> torch.Tensor:
    levels = torch.arange(len(counts), device=device)
    return levels.repeat_interleave(torch.tensor(counts, device=device))[:total]


def dense_postprocess(
    d: nn.Module,
    family: str,
    scores_l: list[torch.Tensor],
    regression: torch.Tensor,
    anchors: torch.Tensor,
    counts: list[int],
    image_size: tuple[int, int],
    thresh: float,
) -> Detections:
    """RetinaNet's / FCOS's ``postprocess_detections`` for one image, keeping anchor indices.

    Per level: scores above the threshold, the best ``topk_candidates``, their boxes decoded
    and clipped; then per-class NMS over all levels and the best ``detections_per_img``.
    Boxes stay in transformed pixels.
    """
    start = 0
    all_boxes, all_scores, all_labels, all_anchors = [], [], [], []
    for scores, reg, anc, count in zip(
        scores_l, regression.split(counts), anchors.split(counts), counts
    ):
        k = scores.shape[-1]
        flat = scores.flatten()
        keep = flat > thresh
        flat = flat[keep]
        idx = torch.where(keep)[0]
        flat, order = flat.topk(min(int(idx.numel()), int(d.topk_candidates)))
        idx = idx[order]
        anchor = torch.div(idx, k, rounding_mode="floor")
        if family == "fcos":
            boxes = d.box_coder.decode(reg[anchor], anc[anchor])
        else:
            boxes = d.box_coder.decode_single(reg[anchor], anc[anchor])
        all_boxes.append(clip_boxes_to_image(boxes, image_size))
        all_scores.append(flat)
        all_labels.append(idx % k)
        all_anchors.append(anchor + start)
        start += count
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    labels, cands = torch.cat(all_labels), torch.cat(all_anchors)
    keep = batched_nms(boxes, scores, labels, d.nms_thresh)[: d.detections_per_img]
    return Detections(boxes[keep], scores[keep], labels[keep], cands[keep])


def ssd_postprocess(
    d: nn.Module, probs: torch.Tensor, boxes: torch.Tensor, thresh: float
) -> Detections:
    """SSD's ``postprocess_detections`` for one image, keeping anchor indices.

    Every foreground class: scores above the threshold, the best ``topk_candidates``; then
    per-class NMS and the best ``detections_per_img``. ``boxes: Tensor[N, 4]`` are the
    decoded, clipped anchor boxes in transformed pixels, and so are the detections'.
    """
    all_scores, all_labels, all_anchors = [], [], []
    for label in range(1, probs.shape[-1]):
        score = probs[:, label]
        keep = score > thresh
        idx = torch.where(keep)[0]
        score, order = score[keep].topk(min(int(idx.numel()), int(d.topk_candidates)))
        all_scores.append(score)
        all_anchors.append(idx[order])
        all_labels.append(torch.full_like(idx[order], label))
    scores, labels, cands = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_anchors)
    keep = batched_nms(boxes[cands], scores, labels, d.nms_thresh)[: d.detections_per_img]
    cands = cands[keep]
    return Detections(boxes[cands], scores[keep], labels[keep], cands)
