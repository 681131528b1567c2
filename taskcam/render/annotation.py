"""Detections drawn as people read them: boxes, rotated boxes, masks' outlines, keypoints and
skeletons, labels, and every detection's map inside its own box on one picture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import cv2
import numpy as np
import torch

from taskcam.boxes import boxes_to_masks
from taskcam.errors import TaskcamError
from taskcam.io import ImageLike, to_rgb_uint8
from taskcam.render.overlays import as_heatmap, overlay
from taskcam.render.text import BLACK, WHITE, Color, auto_font_scale, draw_label, text_size

__all__ = [
    "COCO_SKELETON",
    "OUTCOME_COLORS",
    "box_normalized",
    "detections_picture",
    "draw_box",
    "draw_keypoints",
    "draw_polygon",
    "outline",
]


#: Colours (RGB) of a detection run checked against labels (``--labels``): each detection
#: record's ``outcome`` (``hit``, ``missed``, ``false_positive``) and ``label``, the labelled
#: (ground-truth) box, drawn dashed. Chosen to read on a jet heatmap with their dark edge:
#: green, red-orange and magenta boxes, white dashes for the label.
OUTCOME_COLORS: dict[str, Color] = {
    "hit": (0, 230, 0),
    "missed": (255, 80, 0),
    "false_positive": (255, 0, 255),
    "label": WHITE,
}


def outline(picture: np.ndarray, mask: np.ndarray, color: Color = WHITE) -> np.ndarray:
    """Draw the outline of ``mask`` (``bool[H, W]``) on an RGB picture, with a dark edge.

    Example:
        >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
        >>> outline(np.zeros((8, 8, 3), np.uint8), m)[2, 2].tolist()
        [255, 255, 255]
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.ascontiguousarray(picture.copy())
    cv2.drawContours(out, contours, -1, BLACK, 3)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def draw_box(
    image: ImageLike,
    box: Sequence[float],
    label: str = "",
    *,
    color: Color = WHITE,
    thickness: int = 2,
    dashed: bool = False,
) -> np.ndarray:
    """Draw an xyxy box (image pixels) with a dark edge and its label above it, on a copy.

    ``dashed=True`` draws it in dashes (a labelled, ground-truth box), the picture showing
    through the gaps; each side starts with a dash at its corner.

    Example:
        >>> out = draw_box(np.zeros((50, 80, 3), np.uint8), [10, 20, 40, 45], "cat 0.9")
        >>> out[20, 25].tolist(), out.shape
        ([255, 255, 255], (50, 80, 3))
        >>> gt = draw_box(np.zeros((50, 80, 3), np.uint8), [10, 20, 70, 45], dashed=True)
        >>> gt[20, 12].tolist(), gt[20, 21].tolist()  # a dash at the corner, then a gap
        ([255, 255, 255], [0, 0, 0])
    """
    out = to_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
    y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
    if dashed:
        _dashed_rectangle(out, (x1, y1), (x2, y2), color, thickness)
    else:
        cv2.rectangle(out, (x1, y1), (x2, y2), BLACK, thickness + 2)
        cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
    if label:
        scale = auto_font_scale(h, w)
        tw, th = text_size(label, scale, 1)
        ty = y1 - th - 6 if y1 - th - 6 >= 0 else min(y1 + 4, max(0, h - th - 4))
        tx = max(0, min(x1 + 2, w - tw - 4))  # keep the label inside the picture
        out = draw_label(out, label, origin=(tx, ty), font_scale=scale, color=color)
    return out


def _dashed_rectangle(
    out: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color: Color, thickness: int
) -> None:
    """A rectangle of dashes with a dark edge, drawn in place: dashes of
    ``max(4, 3 * thickness)`` pixels along each side from its corners, and gaps wide enough
    for the picture to show between their dark edges."""
    (x1, y1), (x2, y2) = p1, p2
    dash = max(4, 3 * thickness)
    period = 2 * dash + thickness + 2
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    dashes = []
    for a, b in zip(corners, corners[1:] + corners[:1]):
        length = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
        dx, dy = np.sign(b[0] - a[0]), np.sign(b[1] - a[1])
        for start in range(0, max(length, 1), period):
            end = min(start + dash, length)
            dashes.append(
                ((a[0] + dx * start, a[1] + dy * start), (a[0] + dx * end, a[1] + dy * end))
            )
    for shade, width in ((BLACK, thickness + 2), (color, thickness)):
        for a, b in dashes:
            cv2.line(out, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), shade, width)


def draw_polygon(
    image: ImageLike, corners: Sequence[Sequence[float]], label: str = "", *, color: Color = WHITE
) -> np.ndarray:
    """Draw a closed polygon (an oriented box's corners, image pixels) with a dark edge and
    its label at its top corner, on a copy.

    Example:
        >>> corners = [[5, 5], [30, 5], [30, 20], [5, 20]]
        >>> out = draw_polygon(np.zeros((40, 40, 3), np.uint8), corners)
        >>> out[5, 15].tolist()
        [255, 255, 255]
    """
    out = to_rgb_uint8(image).copy()
    points = np.round(np.asarray(corners, dtype=np.float64)).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(out, [points], True, BLACK, 4)
    cv2.polylines(out, [points], True, color, 2)
    if label:
        h, w = out.shape[:2]
        top = points[:, 0, :][points[:, 0, 1].argmin()]
        scale = auto_font_scale(h, w)
        tw, th = text_size(label, scale, 1)
        origin = (max(0, min(int(top[0]), w - tw - 4)), max(0, int(top[1]) - th - 6))
        out = draw_label(out, label, origin=origin, font_scale=scale, color=color)
    return out


# COCO's 17-keypoint skeleton (nose, eyes, ears, shoulders, elbows, wrists, hips, knees,
# ankles), as pairs of keypoint indices
COCO_SKELETON = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
    (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)  # fmt: skip


def draw_keypoints(
    image: ImageLike,
    keypoints: Sequence[Sequence[float]],
    *,
    skeleton: Optional[Sequence[tuple[int, int]]] = None,
    highlight: Optional[int] = None,
    min_visibility: float = 0.5,
    color: Color = WHITE,
) -> np.ndarray:
    """Draw keypoints ``[[x, y(, visibility)], ...]`` (image pixels) and the skeleton between
    them on a copy; keypoints less visible than ``min_visibility`` are left out, ``highlight``
    (an index) is drawn larger. ``skeleton=None`` joins COCO's 17 keypoints when there are 17.

    Example:
        >>> out = draw_keypoints(np.zeros((40, 40, 3), np.uint8), [[10, 10, 0.9], [30, 30, 0.1]])
        >>> out[10, 10].tolist(), out[30, 30].tolist()
        ([255, 255, 255], [0, 0, 0])
    """
    out = to_rgb_uint8(image).copy()
    points = [
        (int(round(float(k[0]))), int(round(float(k[1]))))
        if len(k) < 3 or float(k[2]) >= min_visibility
        else None
        for k in keypoints
    ]
    if skeleton is None and len(points) == 17:
        skeleton = COCO_SKELETON
    for a, b in skeleton or ():
        if a < len(points) and b < len(points) and points[a] and points[b]:
            cv2.line(out, points[a], points[b], BLACK, 3)
            cv2.line(out, points[a], points[b], color, 1)
    for i, point in enumerate(points):
        if point is not None:
            radius = 5 if i == highlight else 3
            cv2.circle(out, point, radius + 1, BLACK, -1)
            cv2.circle(out, point, radius, color, -1)
    return out


def _box_mask(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """``bool[H, W]``: the pixels inside an xyxy box, as the metrics count them
    (:func:`taskcam.boxes.boxes_to_masks`: pixel centres in the box)."""
    return boxes_to_masks(torch.tensor([float(v) for v in box]), h, w)[0].numpy()


def box_normalized(heatmap: np.ndarray | torch.Tensor, box: Sequence[float]) -> np.ndarray:
    """A map rescaled so that its values inside ``box`` span [0, 1] (clipped outside): for
    display, so a detection whose map is faint next to the image's brightest spot still shows
    its shape. The map itself (the ``.npy``) is not changed.

    Args:
        heatmap: ``[H, W]`` in [0, 1].
        box: ``[x1, y1, x2, y2]`` in the map's pixels.

    Example:
        >>> m = np.zeros((4, 4), np.float32); m[1, 1], m[3, 3] = 0.2, 1.0
        >>> shown = box_normalized(m, [0, 0, 2, 2])  # the box's peak 0.2 becomes 1
        >>> float(shown[1, 1]), float(shown[3, 3]), round(float(m[1, 1]), 2)
        (1.0, 1.0, 0.2)
    """
    hm = as_heatmap(heatmap)
    inside = hm[_box_mask(box, *hm.shape)]
    if not inside.size:
        return hm.copy()
    lo, hi = float(inside.min()), float(inside.max())
    if hi - lo <= 1e-12:
        return hm.copy()
    return np.clip((hm - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def detections_picture(
    image: ImageLike,
    maps: np.ndarray | torch.Tensor,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    *,
    colormap: str | int = "jet",
    alpha: float = 0.5,
    box_norm: bool = False,
    colors: Sequence[Color] | None = None,
    label_boxes: Sequence[Sequence[float] | None] | None = None,
) -> np.ndarray:
    """One picture of every detection of an image, as ultralytics' ``visualize`` draws them:
    each detection's map inside its own box (where boxes overlap, the larger value), the
    image untouched outside the boxes, and each box with its label.

    Against labels, each box can have its own colour (its outcome's,
    :data:`OUTCOME_COLORS`) and its labelled box beside it, dashed in
    ``OUTCOME_COLORS["label"]`` over the boxes (both show where they coincide).

    Args:
        image: the picture, in any form :func:`taskcam.io.to_rgb_uint8` accepts.
        maps: ``[K, H, W]`` in [0, 1] on the image's grid, one per detection.
        boxes: ``K`` xyxy boxes in image pixels.
        labels: ``K`` labels (``None``: boxes without labels).
        colormap: OpenCV colormap.
        alpha: weight of the heatmap colour.
        box_norm: rescale each map inside its box first (:func:`box_normalized`).
        colors: ``K`` RGB colours, one per box (``None``: all white).
        label_boxes: ``K`` xyxy labelled boxes in image pixels, or ``None`` where a box has
            none (``None``: no labelled boxes).

    Raises:
        TaskcamError: as many maps as boxes (and labels, colours, labelled boxes) are needed.

    Example:
        >>> img = np.zeros((40, 60, 3), np.uint8)
        >>> maps = np.zeros((1, 40, 60), np.float32); maps[0, 10:20, 10:20] = 1.0
        >>> out = detections_picture(img, maps, [[5, 5, 25, 25]], ["0: cat 0.90"], alpha=1.0)
        >>> out[19, 15].tolist(), out[35, 50].tolist()  # red inside its box, untouched outside
        ([128, 0, 0], [0, 0, 0])
        >>> hit, label = OUTCOME_COLORS["hit"], OUTCOME_COLORS["label"]
        >>> out = detections_picture(
        ...     img, maps, [[5, 5, 25, 25]], colors=[hit], label_boxes=[[30, 8, 55, 30]]
        ... )
        >>> out[15, 5].tolist() == list(hit), out[8, 31].tolist() == list(label)
        (True, True)
    """
    rgb = to_rgb_uint8(image)
    h, w = rgb.shape[:2]
    maps = maps.detach().cpu().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps)
    if (
        maps.ndim != 3
        or len(maps) != len(boxes)
        or (labels is not None and len(labels) != len(boxes))
    ):
        raise TaskcamError(
            f"detections_picture: {len(maps) if maps.ndim == 3 else maps.shape} maps, "
            f"{len(boxes)} boxes and {'no' if labels is None else len(labels)} labels; expected "
            "one map (and label) per box"
        )
    for name, given in (("colors", colors), ("label_boxes", label_boxes)):
        if given is not None and len(given) != len(boxes):
            raise TaskcamError(
                f"detections_picture: {len(given)} {name} for {len(boxes)} boxes; expected one "
                "per box"
            )
    combined = np.zeros((h, w), np.float32)
    inside = np.zeros((h, w), bool)
    for heat, box in zip(maps, boxes):
        heat = as_heatmap(heat)
        if heat.shape != (h, w):
            heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        if box_norm:
            heat = box_normalized(heat, box)
        mask = _box_mask(box, h, w)
        combined = np.where(mask, np.maximum(combined, heat), combined)
        inside |= mask
    out = np.where(inside[..., None], overlay(rgb, combined, colormap=colormap, alpha=alpha), rgb)
    for k, box in enumerate(boxes):
        label = labels[k] if labels is not None else ""
        out = draw_box(out, box, label, color=colors[k] if colors is not None else WHITE)
    for label_box in label_boxes or ():
        if label_box is not None:
            out = draw_box(out, label_box, color=OUTCOME_COLORS["label"], dashed=True)
    return out
