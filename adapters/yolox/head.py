"""What YOLOX's decoupled head predicts, read as candidates, and the detections its
post-processing keeps (Ge et al., 2021, "YOLOX: Exceeding YOLO Series in 2021").

In eval mode the head returns, per pyramid level (strides 8, 16, 32), ``Tensor[B, 5 + K, h, w]``:
per grid cell the box offsets ``x, y`` and log sizes ``w, h`` (raw), the objectness and ``K``
class probabilities (sigmoids). A cell's box is ``((x + col) · s, (y + row) · s)`` at the
centre and ``exp(w) · s × exp(h) · s`` in size (no half-cell offset); YOLOX ranks it by
``objectness × class probability``, as the original YOLOv5 does.

:func:`select` is libreyolo's YOLOX post-processing (``libreyolo.postprocess.yolox.postprocess``
and ``postprocess_detections``), step for step, each detection keeping its grid cell: the best
class per cell, scores above ``conf`` (strictly), boxes scaled to the image and clipped to it,
empty and non-finite boxes dropped, per-class NMS on the clipped boxes, the best ``max_det``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.errors import TaskcamError

__all__ = ["STRIDES", "Extent", "select", "yolox_candidates"]

STRIDES = (8, 16, 32)
"""The strides of YOLOX's three levels, finest first."""

Extent = tuple[float, float, float]
"""``(ratio, width, height)``: the scale from the image to the input, and the image's size in
its own pixels (the box a detection is clipped to, as libreyolo clips)."""


def _level_maps(output: Any) -> list[torch.Tensor]:
    """The head's per-level ``Tensor[B, 5 + K, h, w]`` in an eval output, else an error."""
    maps = list(output) if isinstance(output, (list, tuple)) else None
    if not maps or not all(isinstance(m, torch.Tensor) and m.ndim == 4 for m in maps):
        got = type(output).__name__
        raise TaskcamError(
            f"cannot find YOLOX's per-level outputs [B, 5 + K, h, w] in a {got} (a model in "
            "training mode returns its training tensors; call model.eval())"
        )
    return maps


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4]`` centre and size -> corners, with libreyolo's arithmetic."""
    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def yolox_candidates(output: Any, strides: Sequence[int] = STRIDES) -> Candidates:
    """Every grid cell of a YOLOX eval output, differentiably.

    Args:
        output: the head's eval output, a list of ``Tensor[B, 5 + K, h_i, w_i]`` (one per
            level), or the decoded ``Tensor[B, N, 5 + K]`` (centre, size, objectness,
            probabilities) of a head in export mode.
        strides: each level's stride, finest first.

    Returns:
        :class:`Candidates`: ``boxes`` ``Tensor[B, N, 4]`` xyxy in input pixels, ``scores``
        ``Tensor[B, N, K]`` = objectness × class probability, ``objectness`` ``Tensor[B, N]``,
        ``probs`` ``Tensor[B, N, K]`` (D-RISE's class vectors), ``levels`` ``LongTensor[N]``
        (None for a decoded output); ``N = Σ h_i w_i``.

    Example:
        >>> maps = [torch.zeros(1, 7, 4, 4), torch.zeros(1, 7, 2, 2), torch.zeros(1, 7, 1, 1)]
        >>> c = yolox_candidates(maps)
        >>> c.boxes.shape, c.boxes[0, 1].tolist(), c.levels.tolist()[-2:]
        (torch.Size([1, 21, 4]), [4.0, -4.0, 12.0, 4.0], [1, 2])
    """
    if isinstance(output, torch.Tensor) and output.ndim == 3:  # export mode: decoded already
        rows, levels = output, None
        boxes = _xyxy(rows[..., :4])
    else:
        maps = _level_maps(output)
        if len(maps) != len(strides):
            raise TaskcamError(f"YOLOX: {len(maps)} output levels for strides {list(strides)}")
        flat, grids, scales, level_ids = [], [], [], []
        for i, (m, stride) in enumerate(zip(maps, strides)):
            b, c, h, w = m.shape
            flat.append(m.reshape(b, c, h * w).permute(0, 2, 1))  # [B, h w, 5 + K]
            yv, xv = torch.meshgrid(
                torch.arange(h, device=m.device, dtype=m.dtype),
                torch.arange(w, device=m.device, dtype=m.dtype),
                indexing="ij",
            )
            grids.append(torch.stack((xv, yv), dim=2).reshape(h * w, 2))
            scales.append(torch.full((h * w, 1), stride, device=m.device, dtype=m.dtype))
            level_ids.append(torch.full((h * w,), i, device=m.device, dtype=torch.long))
        rows = torch.cat(flat, dim=1)  # [B, N, 5 + K]
        grid, scale = torch.cat(grids), torch.cat(scales)  # [N, 2], [N, 1]
        centre = (rows[..., 0:2] + grid) * scale
        size = torch.exp(rows[..., 2:4]) * scale
        boxes, levels = _xyxy(torch.cat([centre, size], dim=-1)), torch.cat(level_ids)
    objectness, probs = rows[..., 4], rows[..., 5:]
    return Candidates(
        boxes, objectness[..., None] * probs, objectness=objectness, probs=probs, levels=levels
    )


def _clipped(boxes: torch.Tensor, extent: Extent) -> torch.Tensor:
    """``Tensor[M, 4]`` input pixels -> image pixels, clipped to the image, as libreyolo."""
    ratio, width, height = extent
    out = boxes / ratio
    out[:, [0, 2]] = torch.clamp(out[:, [0, 2]], 0, width)
    out[:, [1, 3]] = torch.clamp(out[:, [1, 3]], 0, height)
    return out


def select(
    candidates: Candidates,
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    max_det: int = 300,
    extents: Optional[Sequence[Optional[Extent]]] = None,
    agnostic: bool = False,
) -> list[Detections]:
    """libreyolo's YOLOX post-processing (see the module doc), keeping each detection's cell.

    Args:
        candidates: :func:`yolox_candidates` of a batch.
        conf: a cell is kept when its best ``objectness × class probability`` is above it.
        iou: the NMS IoU threshold.
        max_det: detections kept per image.
        extents: per image, ``(ratio, width, height)`` of the image on the input
            (:data:`Extent`): boxes are clipped to it, and empty ones dropped, before NMS.
            None (or a None entry): not clipped, as libreyolo's ``postprocess`` without an
            original size.
        agnostic: one NMS over all classes (libreyolo's YOLOX runs one per class).

    Returns:
        One :class:`Detections` per image, best first: ``boxes`` ``Tensor[M, 4]`` the cells'
        own boxes in input pixels (a placement clips them to the image), ``scores``,
        ``classes`` and ``candidates`` (the cells).

    Example:
        >>> maps = [torch.zeros(1, 6, 4, 4), torch.zeros(1, 6, 2, 2), torch.zeros(1, 6, 1, 1)]
        >>> maps[0][0, 4:, 1, 2] = 0.9  # one cell: objectness 0.9, probability 0.9
        >>> d = select(yolox_candidates(maps), conf=0.5)[0]
        >>> d.candidates.tolist(), [round(s, 2) for s in d.scores.tolist()]
        ([6], [0.81])
    """
    from torchvision.ops import batched_nms

    out = []
    for b in range(candidates.scores.shape[0]):
        best, cls = candidates.scores[b].max(dim=1)  # [N]
        cand = torch.nonzero(best > conf).flatten()
        score, cls = best[cand], cls[cand]
        extent = None if extents is None else extents[b]
        boxes = candidates.boxes[b, cand]
        clipped = boxes if extent is None else _clipped(boxes, extent)
        keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
        if extent is None:
            keep = torch.ones_like(keep)
        keep &= torch.isfinite(clipped).all(dim=1) & torch.isfinite(score)
        cand, score, cls, clipped = cand[keep], score[keep], cls[keep], clipped[keep]
        shifted = clipped - clipped.min().clamp(max=0) if len(clipped) else clipped
        if shifted.dtype == torch.float16:  # as libreyolo: fp16 offsets would merge classes
            shifted, score = shifted.float(), score.float()
        groups = torch.zeros_like(cls) if agnostic else cls
        kept = batched_nms(shifted, score, groups, iou)
        kept = kept[torch.topk(score[kept], min(len(kept), max_det)).indices]
        out.append(
            Detections(
                boxes=candidates.boxes[b, cand[kept]],
                scores=score[kept],
                classes=cls[kept].long(),
                candidates=cand[kept].long(),
            )
        )
    return out
