"""Box geometry shared by the adapters, the metrics and the pictures: box formats, overlap,
boxes as pixel masks and the corners of rotated boxes. All functions are pure tensor maths."""

from __future__ import annotations

from typing import Optional

import torch

from taskcam.errors import TaskcamError

__all__ = [
    "box_iou",
    "boxes_to_masks",
    "cxcywh_to_xyxy",
    "rotated_bounds",
    "rotated_corners",
]


def cxcywh_to_xyxy(boxes: torch.Tensor, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """``Tensor[..., 4]`` ``cx, cy, w, h`` -> ``x1, y1, x2, y2``; with ``size`` (h, w) the
    boxes are normalised to [0, 1] (DETR, RT-DETR) and come back in pixels of that input.

    Example:
        >>> cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4]), (10, 20)).tolist()
        [8.0, 3.0, 12.0, 7.0]
    """
    xy, wh = boxes[..., :2], boxes[..., 2:4] / 2
    out = torch.cat([xy - wh, xy + wh], dim=-1)
    if size is None:
        return out
    h, w = size
    return out * boxes.new_tensor([w, h, w, h])


def box_iou(boxes: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., N]``: IoU of ``boxes: Tensor[..., N, 4]`` (xyxy) with one box
    ``ref: Tensor[4]``; 0 where the union is empty.

    Example:
        >>> box_iou(torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3]]), torch.tensor([0.0, 0, 2, 2]))
        tensor([1.0000, 0.1429])
    """
    x1 = torch.maximum(boxes[..., 0], ref[0])
    y1 = torch.maximum(boxes[..., 1], ref[1])
    x2 = torch.minimum(boxes[..., 2], ref[2])
    y2 = torch.minimum(boxes[..., 3], ref[3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )
    ref_area = (ref[2] - ref[0]).clamp(min=0) * (ref[3] - ref[1]).clamp(min=0)
    return inter / (area + ref_area - inter).clamp(min=1e-9)


def boxes_to_masks(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Rasterise ``xyxy`` boxes to pixel masks.

    Boxes are in continuous pixel coordinates, pixel ``(x, y)`` covering ``[x, x+1) ×
    [y, y+1)``: a pixel belongs to a box when its centre ``(x + 0.5, y + 0.5)`` lies in
    ``[x1, x2) × [y1, y2)``. So ``(0, 0, W, H)`` covers the whole image, ``(2, 3, 5, 7)``
    columns 2..4 and rows 3..6, and an empty or inverted box no pixel; parts outside the
    image are dropped.

    Args:
        boxes: ``Tensor[B, 4]`` (or ``[4]``) as ``x1, y1, x2, y2``.
        height: mask height ``H``.
        width: mask width ``W``.

    Returns:
        ``BoolTensor[B, H, W]`` (``B = 1`` for a single box) on the boxes' device.

    Raises:
        TaskcamError: boxes that are not ``Tensor[B, 4]`` or ``Tensor[4]``, or a size that is
            not a positive integer (the message names what was received).

    Example:
        >>> boxes_to_masks(torch.tensor([1, 0, 3, 1]), 2, 4).int().tolist()
        [[[0, 1, 1, 0], [0, 0, 0, 0]]]
    """
    if (
        not isinstance(boxes, torch.Tensor)
        or boxes.ndim not in (1, 2)
        or boxes.shape[-1] != 4
        or boxes.dtype == torch.bool
    ):
        got = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
        raise TaskcamError(
            f"boxes: expected Tensor[B, 4] or Tensor[4] as x1, y1, x2, y2, got {got}"
        )
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise TaskcamError(f"{name} must be a positive integer, got {value!r}")
    b = boxes.reshape(-1, 4).double()
    cx = torch.arange(width, dtype=torch.float64, device=b.device) + 0.5  # [W]
    cy = torch.arange(height, dtype=torch.float64, device=b.device) + 0.5  # [H]
    in_x = (cx >= b[:, 0:1]) & (cx < b[:, 2:3])  # [B, W]
    in_y = (cy >= b[:, 1:2]) & (cy < b[:, 3:4])  # [B, H]
    return in_y[:, :, None] & in_x[:, None, :]


def rotated_corners(rboxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4, 2]``: the corners of rotated boxes ``Tensor[..., 5]`` (cx, cy, w, h,
    angle in radians), in order around the box.

    Example:
        >>> rotated_corners(torch.tensor([5.0, 5.0, 4.0, 2.0, 0.0])).tolist()
        [[7.0, 6.0], [3.0, 6.0], [3.0, 4.0], [7.0, 4.0]]
    """
    centre, w, h, angle = rboxes[..., :2], rboxes[..., 2], rboxes[..., 3], rboxes[..., 4]
    cos, sin = angle.cos(), angle.sin()
    along = torch.stack([w / 2 * cos, w / 2 * sin], dim=-1)  # half the width's vector
    across = torch.stack([-h / 2 * sin, h / 2 * cos], dim=-1)
    return torch.stack(
        [centre + along + across, centre - along + across, centre - along - across,
         centre + along - across],
        dim=-2,
    )  # fmt: skip


def rotated_bounds(rboxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4]`` xyxy: the axis-aligned box around each rotated box ``Tensor[..., 5]``.

    Example:
        >>> rotated_bounds(torch.tensor([5.0, 5.0, 4.0, 2.0, 0.0])).tolist()
        [3.0, 4.0, 7.0, 6.0]
    """
    corners = rotated_corners(rboxes)
    return torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)
