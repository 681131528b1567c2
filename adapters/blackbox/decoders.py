"""Reading a black box's output as candidates: an ultralytics export's two output layouts, and
what a user's callable returns (boxes with per-class scores)."""

from __future__ import annotations

from typing import Any, Callable

import torch

from taskcam.adapters.detection.candidates import Candidates
from taskcam.errors import TaskcamError

__all__ = ["end2end_decode", "scores_decode", "ultralytics_decode"]


def _first(output: Any) -> torch.Tensor:
    """The first tensor of an output (segment and pose exports have more than one)."""
    while isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TaskcamError(f"expected a tensor output, got {type(output).__name__}")
    return output


def ultralytics_decode(num_classes: int) -> Callable[[Any], Candidates]:
    """The decode of an ultralytics export without NMS: ``Tensor[B, 4 + nc (+ extras), A]``,
    each anchor's box centre, width and height in input pixels, then its ``nc`` class scores
    (mask coefficients or keypoints after them are left out). Its heads have no objectness:
    as for ultralytics models in PyTorch, a candidate's best class score stands for it, so
    D-RISE weighs a match by how sure the detector is of it.

    Example:
        >>> out = torch.zeros(1, 6, 3); out[0, :4, 0] = torch.tensor([5.0, 5, 4, 2])
        >>> out[0, 5, 0] = 0.5
        >>> c = ultralytics_decode(2)(out)
        >>> c.boxes[0, 0].tolist(), c.scores[0, 0].tolist(), c.objectness[0].tolist()
        ([3.0, 4.0, 7.0, 6.0], [0.0, 0.5], [0.5, 0.0, 0.0])
    """

    def decode(output: Any) -> Candidates:
        preds = _first(output)
        if preds.ndim != 3 or preds.shape[1] < 4 + num_classes:
            raise TaskcamError(
                f"an ultralytics export's output must be Tensor[B, 4 + {num_classes}, anchors], "
                f"got {tuple(preds.shape)}"
            )
        preds = preds.float().transpose(1, 2)  # [B, A, 4 + nc + ...]
        xy, wh = preds[..., :2], preds[..., 2:4]
        boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=-1)  # [B, A, 4] xyxy
        scores = preds[..., 4 : 4 + num_classes]  # [B, A, nc]
        return Candidates(boxes, scores, objectness=scores.amax(dim=-1))

    return decode


def end2end_decode(num_classes: int) -> Callable[[Any], Candidates]:
    """The decode of an export that selects its detections itself (YOLOv10 / YOLO26
    end-to-end heads, ``nms=True``): ``Tensor[B, D, 6 (+ extras)]`` rows of x1, y1, x2, y2,
    score, class; each row a candidate whose score vector is its score at its class (its
    objectness for D-RISE), kept without NMS.

    Example:
        >>> c = end2end_decode(3)(torch.tensor([[[0.0, 0, 4, 4, 0.8, 2]]]))
        >>> c.scores.tolist(), c.nms
        ([[[0.0, 0.0, 0.800000011920929]]], False)
    """

    def decode(output: Any) -> Candidates:
        rows = _first(output)
        if rows.ndim != 3 or rows.shape[-1] < 6:
            raise TaskcamError(
                f"an end-to-end export's output must be Tensor[B, D, 6] (x1, y1, x2, y2, score, "
                f"class), got {tuple(rows.shape)}"
            )
        rows = rows.float()
        cls = rows[..., 5].round().long().clamp(0, num_classes - 1)
        scores = torch.zeros(*rows.shape[:2], num_classes, dtype=rows.dtype, device=rows.device)
        scores.scatter_(-1, cls.unsqueeze(-1), rows[..., 4:5])
        return Candidates(rows[..., :4], scores, objectness=rows[..., 4], nms=False)

    return decode


def scores_decode(nms: bool = True) -> Callable[[Any], Candidates]:
    """The decode of a callable that returns ``(boxes, scores)`` or ``(boxes, scores,
    objectness)`` for the batch, a list of them (one per image, each with as many boxes as it
    found), or :class:`~taskcam.Candidates` as they are: ``boxes`` ``Tensor[B, N, 4]`` xyxy in
    input pixels, ``scores`` ``Tensor[B, N, K]`` each box's score per class, ``objectness``
    ``Tensor[B, N]`` (the batch dimension left out in a per-image list). Images with fewer
    boxes are padded with empty boxes scoring 0.

    Args:
        nms: whether the detector's own post-processing runs NMS over these boxes (False: they
            are its final detections already).

    Example:
        >>> per_image = [(torch.zeros(2, 4), torch.rand(2, 5)),
        ...              (torch.zeros(0, 4), torch.zeros(0, 5))]
        >>> c = scores_decode(nms=False)(per_image)
        >>> tuple(c.boxes.shape), tuple(c.scores.shape), c.nms, float(c.scores[1].sum())
        ((2, 2, 4), (2, 2, 5), False, 0.0)
    """

    def decode(output: Any) -> Candidates:
        if isinstance(output, Candidates):
            return output
        if isinstance(output, list) and all(isinstance(o, (tuple, list)) for o in output):
            return _padded([_parts(o) for o in output], nms)
        parts = _parts(output)
        if parts[0].ndim == 2:  # one image without its batch dimension
            return _padded([parts], nms)
        return Candidates(parts[0], parts[1], objectness=_third(parts), nms=nms)

    return decode


def _parts(output: Any) -> list[torch.Tensor]:
    if not isinstance(output, (tuple, list)) or len(output) not in (2, 3):
        size = f" of {len(output)}" if isinstance(output, (tuple, list)) else ""
        raise TaskcamError(
            "a black box's callable must return (boxes, scores[, objectness]), a list of them "
            f"per image, or taskcam.Candidates; got {type(output).__name__}{size}"
        )
    return [torch.as_tensor(v).float() for v in output]


def _third(parts: list[torch.Tensor]) -> Any:
    return parts[2] if len(parts) == 3 else None


def _padded(images: list[list[torch.Tensor]], nms: bool) -> Candidates:
    """One image's boxes after another, padded to the most boxes with zeros."""
    n = max(len(p[0]) for p in images)
    found = [p[1] for p in images if p[1].numel()]  # an empty image's scores may be (0,)
    k = found[0].shape[-1] if found else images[0][1].shape[-1]

    def pad(t: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.cat([t.reshape(-1, *shape), t.new_zeros(n - len(t), *shape)])

    boxes = torch.stack([pad(p[0], (4,)) for p in images])
    scores = torch.stack([pad(p[1], (k,)) for p in images])
    objectness = None
    if all(len(p) == 3 for p in images):
        objectness = torch.stack([pad(p[2], ()) for p in images])
    return Candidates(boxes, scores, objectness=objectness, nms=nms)
