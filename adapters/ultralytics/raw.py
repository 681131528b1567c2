"""Reading an ultralytics YOLO model's raw output: every anchor's candidate, across the
output forms of ultralytics 8.x (see :mod:`taskcam.adapters.ultralytics`), and its head."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["kpt_shape", "num_classes", "parse_output", "raw_predictions", "yolo_head"]


def yolo_head(model: nn.Module) -> nn.Module:
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not hasattr(layers[-1], "f"):
        raise TaskcamError(f"{type(model).__name__} is not an ultralytics YOLO model")
    return layers[-1]


def kpt_shape(head: nn.Module) -> Optional[tuple[int, int]]:
    """``(K, D)`` of a pose head (17 keypoints of x, y, visibility for COCO), else None."""
    shape = getattr(head, "kpt_shape", None)
    return None if shape is None else (int(shape[0]), int(shape[1]))


# -- raw outputs ---------------------------------------------------------------------------------
def _split(
    output: Any, head: Optional[nn.Module] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(preds Tensor[B, 4 + nc (+ nm), A], protos Tensor[B, nm, h, w] or None)``."""
    preds, protos, _ = parse_output(output, head)
    return preds, protos


def parse_output(
    output: Any, head: Optional[nn.Module] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor], bool]:
    """:func:`_split` plus whether the candidates are an end-to-end head's one-to-one
    branch."""
    if isinstance(output, dict):
        raise TaskcamError(
            "the YOLO output is a dict of raw head outputs (a model in training mode); call "
            "model.eval() first"
        )
    raw = None  # the head's raw outputs, when they come along
    if isinstance(output, torch.Tensor):
        preds, protos = output, None
    elif isinstance(output, (tuple, list)) and output:
        first = output[0]
        rest = output[1] if len(output) > 1 else None
        raw = rest if isinstance(rest, dict) else None
        if isinstance(first, (tuple, list)):  # ((y, protos), preds): Segment, 8.3+
            preds, protos = first[0], first[1] if len(first) > 1 else None
        elif isinstance(rest, torch.Tensor) and rest.ndim == 4:  # (y, protos): Segment export
            preds, protos = first, rest
        elif (
            isinstance(rest, (tuple, list))
            and len(rest) == 3
            and isinstance(rest[2], torch.Tensor)
            and rest[2].ndim == 4
        ):  # (y, (feats, mc, protos)): Segment before 8.3
            preds, protos = first, rest[2]
        else:  # (y, preds dict or per-level feature list): Detect
            preds, protos = first, None
    else:
        raise TaskcamError(f"cannot find YOLO predictions in a {type(output).__name__} output")
    if not isinstance(preds, torch.Tensor) or preds.ndim != 3:
        got = tuple(preds.shape) if isinstance(preds, torch.Tensor) else type(preds).__name__
        raise TaskcamError(f"YOLO predictions must be Tensor[B, 4 + nc, A], got {got}")
    nm = 0 if protos is None else protos.shape[1]
    if raw is not None and "one2one" in raw and not _per_anchor(preds, raw["one2one"], nm):
        return _one_to_one(raw["one2one"], head), protos, True
    # top-k rows of x1, y1, x2, y2, score, class (+ mask coefficients); a small input with
    # many classes can have fewer anchors than rows without being one
    if preds.shape[1] > preds.shape[2] and preds.shape[2] == 6 + nm:
        raise TaskcamError(
            f"YOLO predictions of shape {tuple(preds.shape)} look like end-to-end top-k output "
            "without the head's raw one-to-one outputs (an export-mode head), so no anchor "
            "is known; run the model with its head's export flag off"
        )
    return preds, protos, False


def _per_anchor(preds: torch.Tensor, one2one: Any, nm: int) -> bool:
    """Whether ``preds`` holds one column per anchor (the head's ``end2end`` is off) rather
    than top-k rows of ``6 + nm`` values."""
    if isinstance(one2one, dict) and isinstance(one2one.get("scores"), torch.Tensor):
        _, nc, anchors = one2one["scores"].shape  # [B, nc, A]
        return preds.shape[1:] == (4 + nc + nm, anchors)
    if isinstance(one2one, (list, tuple)):  # older releases: per-level [B, no, h, w] maps
        anchors = sum(t.shape[2] * t.shape[3] for t in one2one if t.ndim == 4)
        return preds.shape[2] == anchors and preds.shape[1] != 6 + nm
    return True


def _one_to_one(one2one: Any, head: Optional[nn.Module]) -> torch.Tensor:
    """``Tensor[B, 4 + nc (+ nm), A]``: an end-to-end head's one-to-one branch per anchor,
    decoded by the head itself, boxes as ``cx, cy, w, h``; differentiable."""
    if not isinstance(one2one, dict):
        raise TaskcamError(
            "this ultralytics release computes an end-to-end head's one-to-one branch on "
            "detached features and returns it as per-level maps, so its detections cannot be "
            "explained; upgrade ultralytics (8.4 or later), or set model.model[-1].end2end = "
            "False to explain the one-to-many branch (with NMS)"
        )
    if head is None:
        raise TaskcamError(
            "the model has an end-to-end head (YOLOv10, YOLO26): decoding its one-to-one "
            "predictions needs the model; build targets with YoloAdapter.targets or "
            "detection_targets(dets, model=model), or pass model= to raw_predictions"
        )
    decoded = head._inference(one2one)  # [B, 4 + nc (+ nm), A]
    if not (getattr(head, "end2end", True) or getattr(head, "xyxy", False)):
        return decoded  # boxes came out as cx, cy, w, h already
    x1, y1, x2, y2 = decoded[:, :4].unbind(1)
    boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1)
    return torch.cat([boxes, decoded[:, 4:]], dim=1)


def raw_predictions(output: Any, model: Optional[nn.Module] = None) -> torch.Tensor:
    """``Tensor[B, 4 + nc (+ nm), A]``: every anchor's candidate in a YOLO model's eval output.

    Rows are ``cx, cy, w, h`` in input pixels, the ``nc`` sigmoid class scores, then (segment
    models) the ``nm`` mask coefficients. Columns are the ``A`` anchors of all levels, finest
    stride first. Gradients flow through it. For an end-to-end head (YOLOv10, YOLO26) these
    are its one-to-one branch's candidates, the ones ``predict`` selects from.

    Args:
        output: what ``model(x)`` returned in eval mode (tuple forms of ultralytics 8.x, see
            the module docstring).
        model: the model that produced ``output``; needed for end-to-end heads, whose head
            decodes its one-to-one outputs.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> raw_predictions(m(torch.rand(1, 3, 64, 64))).shape
        torch.Size([1, 8, 84])
    """
    return _split(output, None if model is None else yolo_head(model))[0]


def num_classes(
    preds: torch.Tensor, protos: Optional[torch.Tensor], head: Optional[nn.Module] = None
) -> int:
    if head is not None and isinstance(getattr(head, "nc", None), int):
        return int(head.nc)  # a pose head's keypoints follow the classes too
    return preds.shape[1] - 4 - (0 if protos is None else protos.shape[1])
