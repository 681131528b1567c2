"""An EfficientDet's raw output read as candidates, and one candidate's target.

``EfficientDet.forward`` returns ``(class_out, box_out)``: per pyramid level ``l`` (finest
first), ``Tensor[B, A·K, H_l, W_l]`` class logits and ``Tensor[B, A·4, H_l, W_l]`` box codes
(``ty, tx, th, tw`` relative to the anchor, effdet's Faster R-CNN box coder), ``A`` anchors per
cell and ``K`` classes. effdet flattens them level after level, cell after cell (row-major),
anchor after anchor: candidate ``n`` is that anchor, and its boxes are decoded against
effdet's own anchors (``Anchors.from_config``: ``Tensor[N, 4]`` ``y1, x1, y2, x2`` in input
pixels, in the same order) with effdet's ``decode_box_outputs``.

Class ids are effdet's: its detections number classes from 1 (``class + 1``, 0 being the
background), so a candidate's scores are ``K + 1`` columns, the first 0.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from taskcam.adapters.detection.candidates import Candidates
from taskcam.adapters.detection.scoring import WHAT, DetectionTarget
from taskcam.adapters.effdet.library import effdet_module
from taskcam.errors import TaskcamError

__all__ = ["EffDetTarget", "effdet_candidates", "locate", "split_output"]


def split_output(output: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(class_out, box_out)`` of an ``EfficientDet`` output, checked.

    Raises:
        TaskcamError: anything else (a bench's detections, a model in another shape).
    """
    ok = isinstance(output, (tuple, list)) and len(output) == 2
    if ok:
        cls_out, box_out = output
        ok = (
            isinstance(cls_out, (list, tuple))
            and isinstance(box_out, (list, tuple))
            and len(cls_out) == len(box_out) > 0
            and all(isinstance(t, torch.Tensor) and t.ndim == 4 for t in (*cls_out, *box_out))
        )
    if not ok:
        raise TaskcamError(
            "cannot find EfficientDet's per-level (class logits, box codes) in the output "
            f"(got a {type(output).__name__}): run the EfficientDet itself, not a DetBench"
        )
    return list(cls_out), list(box_out)


def _geometry(cls_out: list[torch.Tensor], box_out: list[torch.Tensor]) -> tuple[int, int]:
    """``(A, K)``: anchors per cell and classes."""
    anchors = int(box_out[0].shape[1]) // 4
    return anchors, int(cls_out[0].shape[1]) // anchors


def locate(candidate: int, output: Any) -> Optional[tuple[int, int, int, int]]:
    """``(level, anchor, y, x)`` of candidate ``candidate`` in an output, None when the output
    has fewer candidates.

    Example:
        >>> cls = [torch.zeros(1, 3 * 2, 4, 4), torch.zeros(1, 3 * 2, 2, 2)]  # A = 3, K = 2
        >>> box = [torch.zeros(1, 3 * 4, 4, 4), torch.zeros(1, 3 * 4, 2, 2)]
        >>> locate(0, (cls, box)), locate(52, (cls, box)), locate(60, (cls, box))
        ((0, 0, 0, 0), (1, 1, 0, 1), None)
    """
    cls_out, box_out = split_output(output)
    anchors, _ = _geometry(cls_out, box_out)
    start = 0
    for level, t in enumerate(cls_out):
        h, w = int(t.shape[-2]), int(t.shape[-1])
        count = h * w * anchors
        if candidate < start + count:
            cell, anchor = divmod(candidate - start, anchors)
            return level, anchor, cell // w, cell % w
        start += count
    return None


def effdet_candidates(output: Any, anchors: torch.Tensor) -> Candidates:
    """Every anchor of an ``EfficientDet`` output, differentiably (see the module doc).

    Args:
        output: ``(class_out, box_out)``, per level.
        anchors: ``Tensor[N, 4]`` effdet's anchors (``y1, x1, y2, x2``, input pixels).

    Returns:
        Candidates: ``boxes`` ``Tensor[B, N, 4]`` xyxy input pixels; ``scores``
        ``Tensor[B, N, K + 1]`` (column 0, the background, is 0; column ``k`` is
        ``sigmoid(logit k - 1)``); ``levels`` ``LongTensor[N]``; ``extras["logits"]``
        ``Tensor[B, N, K]`` and ``extras["codes"]`` ``Tensor[B, N, 4]`` (effdet's own
        post-processing selects from these).

    Raises:
        TaskcamError: an output whose candidates are not the anchors' (another input size).
    """
    cls_out, box_out = split_output(output)
    a, k = _geometry(cls_out, box_out)
    b = int(cls_out[0].shape[0])
    logits = torch.cat([t.permute(0, 2, 3, 1).reshape(b, -1, k) for t in cls_out], 1)
    codes = torch.cat([t.permute(0, 2, 3, 1).reshape(b, -1, 4) for t in box_out], 1)
    n = logits.shape[1]
    if anchors.shape[0] != n:
        raise TaskcamError(
            f"the output has {n} candidates where the model's {anchors.shape[0]} anchors are: "
            "EfficientDet takes inputs of its config's image_size only"
        )
    anchors = anchors.to(codes.device, codes.dtype)
    decode = effdet_module("anchors").decode_box_outputs
    boxes = decode(codes.reshape(-1, 4), anchors.repeat(b, 1), output_xyxy=True).reshape(b, n, 4)
    scores = torch.cat([logits.new_zeros(b, n, 1), logits.sigmoid()], dim=-1)
    counts = torch.tensor([t.shape[-2] * t.shape[-1] * a for t in cls_out], device=codes.device)
    levels = torch.arange(len(cls_out), device=codes.device).repeat_interleave(counts)
    return Candidates(boxes, scores, levels=levels, extras={"logits": logits, "codes": codes})


class EffDetTarget(DetectionTarget):
    """One EfficientDet anchor: its class score (``sigmoid`` of its class logit, what effdet
    ranks by) or one side of its decoded box (input pixels), read from the anchor's own cell
    of the per-level outputs without decoding the others.

    Args:
        candidate, class_id, what, box, layer: as :class:`~taskcam.adapters.detection.
            DetectionTarget` (``class_id`` in effdet's numbering, from 1).
        anchor: ``Tensor[4]`` the candidate's anchor (``y1, x1, y2, x2``), for its box.
        read: ``output -> Candidates`` (D-RISE matching on perturbed outputs).

    Example:
        >>> cls = [torch.full((1, 2, 2, 2), 0.5)]  # one level, A = 1, K = 2
        >>> box = [torch.zeros(1, 4, 2, 2)]
        >>> anchor = torch.tensor([0.0, 0.0, 8.0, 16.0])  # y1, x1, y2, x2
        >>> t = EffDetTarget(3, 2, anchor=anchor)
        >>> t((cls, box)), EffDetTarget(3, 2, "x2", anchor=anchor)((cls, box))
        (tensor([0.6225]), tensor([16.]))
    """

    supports = WHAT[:5]

    def __init__(
        self,
        *args: Any,
        anchor: Optional[torch.Tensor] = None,
        read: Optional[Callable[[Any], Candidates]] = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.anchor = None if anchor is None else anchor.detach().float().cpu()
        self.read = read

    def __call__(self, output: Any) -> torch.Tensor:
        cls_out, box_out = split_output(output)
        _, k = _geometry(cls_out, box_out)
        self.check_class(k + 1)
        where = locate(self.candidate, (cls_out, box_out))
        if where is None:
            return cls_out[0].new_zeros(cls_out[0].shape[0])
        level, a, y, x = where
        if self.what == "score":
            if self.class_id == 0:
                raise TaskcamError(
                    "class_id 0 is EfficientDet's background: its classes are numbered from 1"
                )
            return cls_out[level][:, a * k + self.class_id - 1, y, x].sigmoid()
        if self.anchor is None:
            raise TaskcamError(f"{self!r}: a box side needs the candidate's anchor (anchor=)")
        codes = box_out[level][:, a * 4 : a * 4 + 4, y, x]  # [B, 4]
        anchor = self.anchor.to(codes.device, codes.dtype).expand(codes.shape[0], 4)
        decode = effdet_module("anchors").decode_box_outputs
        return self.side(decode(codes, anchor, output_xyxy=True))

    def candidates(self, output: Any) -> Candidates:
        if self.read is None:
            raise TaskcamError(f"{self!r}: pass read= to match it on perturbed outputs")
        return self.read(output)
