"""Post-processing that keeps each detection's candidate: the two ways detectors select what
they keep, written once for every family that selects that way.

* :func:`nms_keep`: single-label, class-aware NMS (ultralytics' default, and most detectors'):
  each candidate keeps its best class, those above the threshold go through per-class NMS, the
  best ``max_det`` remain;
* :func:`top_pairs`: no NMS (end-to-end heads such as YOLOv10's and YOLO26's): the best
  (candidate, class) pairs above the threshold.

Both return ``(candidates, classes)``: which candidates are kept, best first, and the class each
is kept for.
"""

from __future__ import annotations

import torch

__all__ = ["nms_keep", "top_pairs"]


def nms_keep(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    conf: float,
    iou: float,
    max_det: int,
    *,
    agnostic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidates, classes)`` kept by single-label NMS.

    Args:
        boxes: ``Tensor[N, 4]`` xyxy.
        scores: ``Tensor[N, K]`` per-class scores.
        conf: keep candidates whose best score is above it (every candidate when 0).
        iou: the NMS IoU threshold.
        max_det: at most this many are kept.
        agnostic: one NMS over all classes instead of one per class.

    Example:
        >>> boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
        >>> scores = torch.tensor([[0.9, 0.0], [0.8, 0.1], [0.1, 0.7]])
        >>> [t.tolist() for t in nms_keep(boxes, scores, 0.25, 0.5, 10)]
        [[0, 2], [0, 1]]
    """
    from torchvision.ops import batched_nms

    score, cls = scores.max(dim=1)  # [N]
    cand = torch.nonzero(score > conf if conf > 0 else score >= 0).flatten()
    groups = torch.zeros_like(cls[cand]) if agnostic else cls[cand]
    keep = batched_nms(boxes[cand], score[cand], groups, iou)[:max_det]
    cand = cand[keep]
    return cand, cls[cand]


def top_pairs(scores: torch.Tensor, conf: float, max_det: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidates, classes)``: the best (candidate, class) pairs above ``conf``, best first.

    The selection of an end-to-end head: the ``k = min(max_det, N)`` candidates with the best
    class score, then the best ``k`` of their ``k × K`` pairs (the same pairs as the best
    ``k`` over all candidates, found with less sorting), then those above ``conf``.

    Example:
        >>> scores = torch.tensor([[0.9, 0.8], [0.1, 0.2], [0.3, 0.95]])
        >>> [t.tolist() for t in top_pairs(scores, 0.25, 3)]
        [[2, 0, 0], [1, 0, 1]]
    """
    nc = scores.shape[1]
    k = min(max_det, scores.shape[0])
    anchors = scores.amax(dim=1).topk(k).indices  # [k]
    best, pairs = scores[anchors].flatten().topk(k)  # [k]
    keep = best > conf if conf > 0 else best >= 0
    pairs = pairs[keep]
    return anchors[pairs // nc], pairs % nc
