"""Pictures: heatmap overlays, labelled grids, first-layer filters and feature maps, PNG/JPEG files.

All functions take images in any form :func:`taskcam.io.to_rgb_uint8` accepts and return
``np.ndarray[H, W, 3]`` uint8 RGB (OpenCV's BGR stays inside this module).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.io import ImageLike, to_rgb_uint8

__all__ = [
    "COLORMAPS",
    "attention_grid",
    "box_normalized",
    "draw_keypoints",
    "draw_polygon",
    "colorize",
    "detections_picture",
    "draw_box",
    "draw_label",
    "feature_map_grid",
    "filter_grid",
    "grid",
    "outline",
    "overlay",
    "save_image",
]

#: OpenCV colormap names (lower case, e.g. ``"jet"``, ``"turbo"``, ``"viridis"``) -> cv2 id.
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): int(getattr(cv2, name))
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)

Color = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# heatmaps


def colorize(heatmap: np.ndarray | torch.Tensor, colormap: str | int = "jet") -> np.ndarray:
    """Colour a ``[0, 1]`` map with an OpenCV colormap.

    Args:
        heatmap: ``[H, W]`` float (leading size-1 dims are dropped); clipped to [0, 1], NaN -> 0.
        colormap: an OpenCV colormap name (case-insensitive, see :data:`COLORMAPS`) or cv2 id.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: unknown colormap (the message lists the valid names) or a non-2D map.

    Example:
        >>> colorize(np.array([[0.0, 1.0]]), "jet").tolist()  # jet: low blue, high red
        [[[0, 0, 128], [128, 0, 0]]]
    """
    cmap = _colormap_id(colormap)
    u8 = np.rint(_as_heatmap(heatmap) * 255.0).astype(np.uint8)
    return cv2.cvtColor(cv2.applyColorMap(u8, cmap), cv2.COLOR_BGR2RGB)


def overlay(
    image: ImageLike,
    heatmap: np.ndarray | torch.Tensor,
    *,
    colormap: str | int = "jet",
    alpha: float = 0.5,
) -> np.ndarray:
    """Blend a coloured heatmap over an image: ``(1 - alpha) * image + alpha * colour(heatmap)``.

    Args:
        image: the picture, in any form :func:`taskcam.io.to_rgb_uint8` accepts.
        heatmap: ``[h, w]`` numpy array or tensor with values in [0, 1] (clipped; NaN -> 0;
            leading size-1 dims dropped); resized to the image with bilinear interpolation when
            its size differs.
        colormap: an OpenCV colormap name (``"jet"``, ``"turbo"``, ``"inferno"``, ...;
            case-insensitive) or cv2 id. With ``"jet"`` high values are red.
        alpha: weight of the heatmap colour, in [0, 1].

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB, the size of ``image``.

    Raises:
        TaskcamError: unknown colormap, ``alpha`` outside [0, 1], or a bad image/heatmap shape.

    Example:
        >>> img = np.zeros((64, 64, 3), np.uint8)
        >>> out = overlay(img, np.ones((7, 7)), alpha=1.0)
        >>> out.shape, out[0, 0].tolist()  # jet's top colour, dark red
        ((64, 64, 3), [128, 0, 0])
    """
    if not (isinstance(alpha, (int, float)) and 0.0 <= float(alpha) <= 1.0):
        raise TaskcamError(f"alpha must be a number in [0, 1], got {alpha!r}")
    cmap = _colormap_id(colormap)
    rgb = to_rgb_uint8(image)
    hm = _as_heatmap(heatmap)
    h, w = rgb.shape[:2]
    if hm.shape != (h, w):
        hm = np.clip(cv2.resize(hm, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    colored = colorize(hm, cmap)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# text and grids


def draw_label(
    image: ImageLike,
    text: str,
    *,
    origin: tuple[int, int] = (4, 4),
    font_scale: float | None = None,
    color: Color = _WHITE,
    outline: Color | None = _BLACK,
    thickness: int = 1,
) -> np.ndarray:
    """Write text on a copy of an image, white with a black outline by default (readable anywhere).

    OpenCV's Hershey font draws ASCII only (other characters show as ``?``); ``\\n`` starts a new
    line.

    Args:
        image: the picture, in any form :func:`taskcam.io.to_rgb_uint8` accepts.
        text: the label.
        origin: ``(x, y)`` of the text's top-left corner, in pixels.
        font_scale: OpenCV font scale; ``None`` picks one from the image size.
        color: RGB text colour.
        outline: RGB outline colour, or ``None`` for no outline.
        thickness: stroke width of the letters in pixels.

    Returns:
        A new ``np.ndarray[H, W, 3]`` uint8 RGB; the input is not modified.

    Example:
        >>> img = np.zeros((40, 120, 3), np.uint8)
        >>> out = draw_label(img, "cat 0.93")
        >>> bool(out.any()), bool(img.any())
        (True, False)
    """
    out = to_rgb_uint8(image).copy()
    if font_scale is None:
        font_scale = _auto_font_scale(*out.shape[:2])
    x, y = int(origin[0]), int(origin[1])
    line_h = _text_size("Ag", font_scale, thickness)[1]
    for line in str(text).split("\n"):
        _, th, base = _text_metrics(line or " ", font_scale, thickness)
        y_base = y + th  # putText wants the baseline's left end
        if outline is not None:
            cv2.putText(
                out, line, (x, y_base), _FONT, font_scale, outline, thickness + 2, cv2.LINE_AA
            )
        cv2.putText(out, line, (x, y_base), _FONT, font_scale, color, thickness, cv2.LINE_AA)
        y += max(th, line_h) + base + max(2, thickness + 1)
    return out


def outline(picture: np.ndarray, mask: np.ndarray, color: Color = _WHITE) -> np.ndarray:
    """Draw the outline of ``mask`` (``bool[H, W]``) on an RGB picture, with a dark edge.

    Example:
        >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
        >>> outline(np.zeros((8, 8, 3), np.uint8), m)[2, 2].tolist()
        [255, 255, 255]
    """
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.ascontiguousarray(picture.copy())
    cv2.drawContours(out, contours, -1, _BLACK, 3)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def draw_box(
    image: ImageLike,
    box: Sequence[float],
    label: str = "",
    *,
    color: Color = _WHITE,
    thickness: int = 2,
) -> np.ndarray:
    """Draw an xyxy box (image pixels) with a dark edge and its label above it, on a copy.

    Example:
        >>> out = draw_box(np.zeros((50, 80, 3), np.uint8), [10, 20, 40, 45], "cat 0.9")
        >>> out[20, 25].tolist(), out.shape
        ([255, 255, 255], (50, 80, 3))
    """
    out = to_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
    y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
    cv2.rectangle(out, (x1, y1), (x2, y2), _BLACK, thickness + 2)
    cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
    if label:
        scale = _auto_font_scale(h, w)
        tw, th = _text_size(label, scale, 1)
        ty = y1 - th - 6 if y1 - th - 6 >= 0 else min(y1 + 4, max(0, h - th - 4))
        tx = max(0, min(x1 + 2, w - tw - 4))  # keep the label inside the picture
        out = draw_label(out, label, origin=(tx, ty), font_scale=scale, color=color)
    return out


def draw_polygon(
    image: ImageLike, corners: Sequence[Sequence[float]], label: str = "", *, color: Color = _WHITE
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
    cv2.polylines(out, [points], True, _BLACK, 4)
    cv2.polylines(out, [points], True, color, 2)
    if label:
        h, w = out.shape[:2]
        top = points[:, 0, :][points[:, 0, 1].argmin()]
        scale = _auto_font_scale(h, w)
        tw, th = _text_size(label, scale, 1)
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
    color: Color = _WHITE,
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
            cv2.line(out, points[a], points[b], _BLACK, 3)
            cv2.line(out, points[a], points[b], color, 1)
    for i, point in enumerate(points):
        if point is not None:
            radius = 5 if i == highlight else 3
            cv2.circle(out, point, radius + 1, _BLACK, -1)
            cv2.circle(out, point, radius, color, -1)
    return out


def _box_mask(box: Sequence[float], h: int, w: int) -> np.ndarray:
    """``bool[H, W]``: the pixels inside an xyxy box, as the metrics count them
    (:func:`taskcam.boxes.boxes_to_masks`: pixel centres in the box)."""
    from taskcam.boxes import boxes_to_masks

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
    hm = _as_heatmap(heatmap)
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
) -> np.ndarray:
    """One picture of every detection of an image, as ultralytics' ``visualize`` draws them:
    each detection's map inside its own box (where boxes overlap, the larger value), the
    image untouched outside the boxes, and each box with its label.

    Args:
        image: the picture, in any form :func:`taskcam.io.to_rgb_uint8` accepts.
        maps: ``[K, H, W]`` in [0, 1] on the image's grid, one per detection.
        boxes: ``K`` xyxy boxes in image pixels.
        labels: ``K`` labels (``None``: boxes without labels).
        colormap: OpenCV colormap.
        alpha: weight of the heatmap colour.
        box_norm: rescale each map inside its box first (:func:`box_normalized`).

    Raises:
        TaskcamError: as many maps as boxes (and labels) are needed.

    Example:
        >>> img = np.zeros((40, 60, 3), np.uint8)
        >>> maps = np.zeros((1, 40, 60), np.float32); maps[0, 10:20, 10:20] = 1.0
        >>> out = detections_picture(img, maps, [[5, 5, 25, 25]], ["0: cat 0.90"], alpha=1.0)
        >>> out[15, 15].tolist(), out[35, 50].tolist()  # red inside its box, untouched outside
        ([128, 0, 0], [0, 0, 0])
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
    combined = np.zeros((h, w), np.float32)
    inside = np.zeros((h, w), bool)
    for heat, box in zip(maps, boxes):
        heat = _as_heatmap(heat)
        if heat.shape != (h, w):
            heat = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
        if box_norm:
            heat = box_normalized(heat, box)
        mask = _box_mask(box, h, w)
        combined = np.where(mask, np.maximum(combined, heat), combined)
        inside |= mask
    out = np.where(inside[..., None], overlay(rgb, combined, colormap=colormap, alpha=alpha), rgb)
    for k, box in enumerate(boxes):
        out = draw_box(out, box, labels[k] if labels is not None else "")
    return out


def grid(
    rows: Sequence[Sequence[ImageLike | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 4,
    cell_size: int | tuple[int, int] | None = None,
    background: Color = _WHITE,
) -> np.ndarray:
    """Tile images into a labelled grid, e.g. methods (rows) x targets (columns).

    Every cell is resized to ``cell_size`` (default: the first image's size). Rows may have
    different lengths and a cell may be ``None``; missing cells stay blank. Column labels go in a
    strip above the grid, row labels in a strip on its left; a label too long for its cell is cut
    with ``..``.

    Args:
        rows: ``rows[i][j]`` is the image in row ``i``, column ``j`` (any form
            :func:`taskcam.io.to_rgb_uint8` accepts, or ``None``).
        row_labels: one label per row, or ``None``.
        col_labels: one label per column (the longest row's length), or ``None``.
        pad: pixels between cells and around the grid.
        cell_size: ``int`` (square) or ``(h, w)`` of every cell; ``None`` for the first image's.
        background: RGB colour of padding, strips and empty cells.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: no images, label counts that do not match, or a bad ``pad``/``cell_size``.

    Example:
        >>> a, b = np.zeros((32, 48, 3), np.uint8), np.ones((64, 64, 3), np.uint8)
        >>> grid([[a, b], [b, a]], pad=2).shape  # 2 x 2 cells of 32 x 48
        (70, 102, 3)
        >>> grid([[a, b]], row_labels=["gradcam"], col_labels=["cat", "dog"]).shape[0] > 40
        True
    """
    if not isinstance(pad, (int, np.integer)) or pad < 0:
        raise TaskcamError(f"pad must be a non-negative int, got {pad!r}")
    rows = [list(r) for r in rows]
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    first = next((img for r in rows for img in r if img is not None), None)
    if first is None:
        raise TaskcamError("grid needs at least one image, got none")
    if row_labels is not None and len(row_labels) != n_rows:
        raise TaskcamError(f"row_labels has {len(row_labels)} labels for {n_rows} rows")
    if col_labels is not None and len(col_labels) != n_cols:
        raise TaskcamError(f"col_labels has {len(col_labels)} labels for {n_cols} columns")

    if cell_size is None:
        ch, cw = to_rgb_uint8(first).shape[:2]
    else:
        ch, cw = _check_hw(cell_size, "cell_size")

    scale = _auto_font_scale(ch, cw)
    text_h = _text_size("Ag", scale, 1)[1]
    header_h = text_h + 2 * pad + 4 if col_labels is not None else 0
    if row_labels is not None:
        widest = max((_text_size(str(t), scale, 1)[0] for t in row_labels), default=0)
        left_w = min(widest, 2 * cw) + 2 * pad  # never wider than two cells
    else:
        left_w = 0

    height = header_h + n_rows * ch + (n_rows + 1) * pad
    width = left_w + n_cols * cw + (n_cols + 1) * pad
    canvas = np.empty((height, width, 3), np.uint8)
    canvas[:] = np.asarray(background, np.uint8)

    for i, row in enumerate(rows):
        y = header_h + pad + i * (ch + pad)
        for j, img in enumerate(row):
            if img is None:
                continue
            x = left_w + pad + j * (cw + pad)
            canvas[y : y + ch, x : x + cw] = _resize(to_rgb_uint8(img), ch, cw)
        if row_labels is not None:
            label = _fit_text(str(row_labels[i]), left_w - 2 * pad, scale)
            canvas = _put_plain(canvas, label, pad, y + (ch - text_h) // 2, scale)
    if col_labels is not None:
        for j, text in enumerate(col_labels):
            x = left_w + pad + j * (cw + pad)
            label = _fit_text(str(text), cw, scale)
            tw = _text_size(label, scale, 1)[0]
            canvas = _put_plain(canvas, label, x + max(0, (cw - tw) // 2), pad + 2, scale)
    return canvas


# --------------------------------------------------------------------------------------------
# model internals


def filter_grid(
    conv: nn.Conv2d | torch.Tensor,
    *,
    max_filters: int = 64,
    scale: int = 8,
    pad: int = 2,
    symmetric: bool = False,
) -> np.ndarray:
    """Draw a convolution's filters, the classic first-layer picture.

    Each filter ``[in_ch, kh, kw]`` becomes one tile: with 3 input channels its weights are the
    tile's RGB, otherwise the mean over input channels is shown as gray. Each filter is normalised
    on its own to [0, 1]: ``(w - min) / (max - min)`` (``symmetric=True``: ``w / (2 max|w|) + 0.5``
    so that a zero weight is mid-gray); a constant filter is mid-gray. Tiles are enlarged ``scale``
    times with nearest neighbour and laid out in a near-square grid on a white background.

    Args:
        conv: an ``nn.Conv2d`` or its weight ``Tensor[O, I, kh, kw]``.
        max_filters: draw only the first ``max_filters`` filters.
        scale: integer enlargement of each tile.
        pad: pixels between tiles and around the grid.
        symmetric: normalise around zero instead of min-max.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: ``conv`` is not a Conv2d or a 4-D weight (the message names the shape), or
            ``max_filters``/``scale``/``pad`` is out of range.

    Example:
        >>> conv = torch.nn.Conv2d(3, 16, 7)
        >>> filter_grid(conv, scale=4, pad=1).shape  # 4 x 4 tiles of 28 x 28
        (117, 117, 3)
    """
    if isinstance(conv, nn.Conv2d):
        weight = conv.weight
    elif isinstance(conv, torch.Tensor):
        weight = conv
    else:
        raise TaskcamError(
            f"conv must be a torch.nn.Conv2d or a weight tensor, got {type(conv).__name__}"
        )
    if weight.dim() != 4 or weight.numel() == 0:
        raise TaskcamError(
            f"conv weight must be a non-empty [out_ch, in_ch, kh, kw] tensor, "
            f"got shape {tuple(weight.shape)}"
        )
    _check_positive(max_filters, "max_filters")
    _check_positive(scale, "scale")
    _check_positive(pad, "pad", allow_zero=True)

    w = weight.detach()[:max_filters].float().cpu()  # [N, I, kh, kw]
    if w.shape[1] == 3:
        tiles = w.permute(0, 2, 3, 1)  # [N, kh, kw, 3]
    else:
        tiles = w.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
    tiles = torch.nan_to_num(tiles, nan=0.0)
    flat = tiles.reshape(tiles.shape[0], -1)
    if symmetric:
        m = flat.abs().amax(dim=1).view(-1, 1, 1, 1)
        norm = torch.where(
            m > 0, tiles / (2 * m).clamp_min(1e-12) + 0.5, torch.full_like(tiles, 0.5)
        )
    else:
        lo = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, 1, 1, 1)
        norm = torch.where(
            span > 0, (tiles - lo) / span.clamp_min(1e-12), torch.full_like(tiles, 0.5)
        )
    u8 = (norm.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # [N, kh, kw, 3]
    u8 = u8.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour enlargement
    return _tile_grid(list(u8), pad=pad)


def feature_map_grid(
    model: nn.Module,
    layer: str | nn.Module,
    image_tensor: torch.Tensor,
    *,
    max_maps: int = 64,
    colormap: str | int = "viridis",
    tile: int = 64,
    pad: int = 2,
) -> np.ndarray:
    """Show a layer's output channels for one image, strongest first.

    The model runs once in eval mode under ``torch.no_grad`` with a forward hook on ``layer``;
    the hook is removed and every module's train/eval flag restored afterwards, even on error.
    Channels are ordered by mean activation (descending), the first ``max_maps`` are each
    normalised to [0, 1] (a constant map is 0), coloured and laid out in a near-square grid. If the
    layer runs more than once in a forward pass, its first output is shown.

    Args:
        model: the network.
        layer: a submodule of ``model`` or its dotted name (``"layer3.1.conv2"``).
        image_tensor: the preprocessed input ``Tensor[1, 3, H, W]`` (or ``[3, H, W]``); moved to
            the model's device and floating dtype.
        max_maps: show at most this many channels.
        colormap: an OpenCV colormap name (see :data:`COLORMAPS`).
        tile: height in pixels of each map tile; the width follows the map's aspect ratio.
        pad: pixels between tiles and around the grid.

    Returns:
        ``np.ndarray[H', W', 3]`` uint8 RGB.

    Raises:
        TaskcamError: unknown layer name, a module that is not part of ``model``, a layer that
            does not run or whose output is not ``[1, C, h, w]`` (the message names layer and
            shape), or a bad ``image_tensor`` shape.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> feature_map_grid(net, "0", torch.rand(1, 3, 16, 16), tile=14, pad=1).shape
        (46, 46, 3)
    """
    cmap = _colormap_id(colormap)
    _check_positive(max_maps, "max_maps")
    _check_positive(tile, "tile")
    _check_positive(pad, "pad", allow_zero=True)
    module, name = _resolve_layer(model, layer)
    if not isinstance(image_tensor, torch.Tensor):
        raise TaskcamError(
            f"image_tensor must be a torch.Tensor [1, 3, H, W], got {type(image_tensor).__name__}"
        )
    x = image_tensor.unsqueeze(0) if image_tensor.dim() == 3 else image_tensor
    if x.dim() != 4 or x.shape[0] != 1:
        raise TaskcamError(
            f"image_tensor must be [1, C, H, W] (one image), got shape {tuple(image_tensor.shape)}"
        )
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, dtype=param.dtype if param.is_floating_point() else None)

    captured: list[object] = []

    def hook(_mod: nn.Module, _inp: object, out: object) -> None:
        if not captured:
            captured.append(out.detach() if isinstance(out, torch.Tensor) else out)

    modes = [(m, m.training) for m in model.modules()]
    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        for m, flag in modes:
            m.training = flag

    if not captured:
        raise TaskcamError(f"layer '{name}' did not run in the forward pass")
    out = captured[0]
    if not isinstance(out, torch.Tensor):
        raise TaskcamError(
            f"layer '{name}' output must be a tensor [1, C, h, w], got {type(out).__name__}"
        )
    if out.dim() != 4 or out.shape[0] != 1:
        raise TaskcamError(
            f"layer '{name}' output must be [1, C, h, w], got shape {tuple(out.shape)}"
        )

    maps = torch.nan_to_num(out[0].float(), nan=0.0, posinf=0.0, neginf=0.0)  # [C, h, w]
    order = torch.argsort(maps.mean(dim=(1, 2)), descending=True, stable=True)[:max_maps]
    maps = maps[order]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    maps = torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))
    maps_np = maps.cpu().numpy()  # [K, h, w] in [0, 1]

    h, w = maps_np.shape[1:]
    th, tw = tile, max(1, round(tile * w / h))
    tiles = [colorize(_resize(m, th, tw), cmap) for m in maps_np]
    return _tile_grid(tiles, pad=pad)


def attention_grid(
    image: ImageLike,
    maps: np.ndarray | torch.Tensor,
    *,
    layer_labels: Sequence[str] | None = None,
    colormap: str | int = "jet",
    alpha: float = 0.5,
    marker: tuple[int, int] | None = None,
    cell: int = 112,
    mean_column: bool = True,
) -> np.ndarray:
    """Draw attention maps as a layers × heads grid of overlays (the last column their mean).

    Each cell is the image with one head's map over the patch grid overlaid, the map
    normalised on its own (min-max; a constant map shows as 0). With ``marker``, the query
    patch ``(row, col)`` is outlined in every cell.

    Args:
        image: the (resized) model input picture, any form :func:`taskcam.io.to_rgb_uint8`
            accepts.
        maps: ``[L, heads, h, w]`` attention of one query over the patch grid.
        layer_labels: one label per layer (default ``L0``, ``L1``, ...).
        colormap: OpenCV colormap name.
        alpha: heatmap weight in the overlays.
        marker: the query patch ``(row, col)``, or ``None``.
        cell: side of each cell in pixels.
        mean_column: append a column with the heads' mean.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: ``maps`` is not 4-D or the label count does not match.

    Example:
        >>> img = np.zeros((32, 32, 3), np.uint8)
        >>> attention_grid(img, np.random.rand(2, 3, 4, 4), cell=32).shape[1] > 4 * 32
        True
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    arr = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    if arr.ndim != 4 or 0 in arr.shape:
        raise TaskcamError(f"maps must be [layers, heads, h, w], got shape {arr.shape}")
    n_layers, n_heads, gh, gw = arr.shape
    if layer_labels is None:
        layer_labels = [f"L{i}" for i in range(n_layers)]
    if len(layer_labels) != n_layers:
        raise TaskcamError(f"layer_labels has {len(layer_labels)} labels for {n_layers} layers")
    _check_positive(cell, "cell")
    picture = _resize(to_rgb_uint8(image), cell, cell)
    if mean_column:
        arr = np.concatenate([arr, arr.mean(axis=1, keepdims=True)], axis=1)
    lo = arr.min(axis=(2, 3), keepdims=True)
    span = arr.max(axis=(2, 3), keepdims=True) - lo
    norm = np.where(span > 0, (arr - lo) / np.where(span > 0, span, 1.0), 0.0)
    box = None
    if marker is not None:
        r, c = int(marker[0]), int(marker[1])
        box = [c * cell / gw, r * cell / gh, (c + 1) * cell / gw - 1, (r + 1) * cell / gh - 1]
    rows = []
    for layer in norm:
        row = []
        for m in layer:
            hm = cv2.resize(m, (cell, cell), interpolation=cv2.INTER_NEAREST)
            out = overlay(picture, hm, colormap=colormap, alpha=alpha)
            row.append(draw_box(out, box, thickness=1) if box is not None else out)
        rows.append(row)
    cols = [f"head {k}" for k in range(n_heads)] + (["mean"] if mean_column else [])
    return grid(rows, row_labels=list(layer_labels), col_labels=cols)


# --------------------------------------------------------------------------------------------
# files


def save_image(path: str | os.PathLike[str], rgb: ImageLike, *, jpeg_quality: int = 95) -> Path:
    """Write an RGB image to a PNG/JPEG (or any format OpenCV writes), creating parent folders.

    Args:
        path: the file; its extension picks the format.
        rgb: ``np.ndarray[H, W, 3]`` uint8 RGB, or any form :func:`taskcam.io.to_rgb_uint8`
            accepts.
        jpeg_quality: 0-100, for ``.jpg``/``.jpeg``.

    Returns:
        The path written.

    Raises:
        TaskcamError: OpenCV cannot write the file (unknown extension, unwritable folder); the
            message names the path.

    Example:
        >>> import tempfile
        >>> p = save_image(tempfile.mkdtemp() + "/out/a.png", np.zeros((4, 4, 3), np.uint8))
        >>> p.name, p.exists()
        ('a.png', True)
    """
    path = Path(path)
    bgr = cv2.cvtColor(to_rgb_uint8(rgb), cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if path.suffix.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ok = cv2.imwrite(str(path), bgr, params)
    except (cv2.error, OSError) as e:
        raise TaskcamError(f"cannot write image '{path}': {e}") from e
    if not ok:
        raise TaskcamError(f"cannot write image '{path}'")
    return path


# --------------------------------------------------------------------------------------------
# helpers


def _colormap_id(colormap: str | int) -> int:
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        if int(colormap) in COLORMAPS.values():
            return int(colormap)
    elif isinstance(colormap, str) and colormap.strip().lower() in COLORMAPS:
        return COLORMAPS[colormap.strip().lower()]
    raise TaskcamError(
        f"unknown colormap {colormap!r}; valid names: {', '.join(sorted(COLORMAPS))}"
    )


def _as_heatmap(heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
    """Any ``[..., H, W]`` map with size-1 leading dims -> float32 ``[H, W]`` in [0, 1]."""
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().float().cpu().numpy()
    hm = np.asarray(heatmap, dtype=np.float32)
    shape = hm.shape
    while hm.ndim > 2 and hm.shape[0] == 1:
        hm = hm[0]
    if hm.ndim != 2 or hm.size == 0:
        raise TaskcamError(f"heatmap must be [H, W], got shape {tuple(shape)}")
    return np.clip(np.nan_to_num(hm, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize to ``(h, w)``: area averaging when shrinking, bilinear when enlarging."""
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _tile_grid(tiles: list[np.ndarray], *, pad: int, background: int = 255) -> np.ndarray:
    """Same-size ``[h, w, 3]`` uint8 tiles -> near-square grid (``ceil(sqrt(n))`` columns)."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = tiles[0].shape[:2]
    canvas = np.full((rows * th + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3), background)
    canvas = canvas.astype(np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        canvas[y : y + th, x : x + tw] = t
    return canvas


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, str]:
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer), layer
        except AttributeError as e:
            raise TaskcamError(f"model has no layer named '{layer}'") from e
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return m, name or "<model>"
        raise TaskcamError(f"layer {type(layer).__name__} is not a submodule of the model")
    raise TaskcamError(f"layer must be a dotted name or an nn.Module, got {type(layer).__name__}")


def _check_hw(size: int | tuple[int, int], name: str) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool) and size > 0:
        return int(size), int(size)
    if (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
        and min(size) > 0
    ):
        return int(size[0]), int(size[1])
    raise TaskcamError(f"{name} must be a positive int or (h, w) pair, got {size!r}")


def _check_positive(value: int, name: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise TaskcamError(f"{name} must be {kind} int, got {value!r}")


def _auto_font_scale(h: int, w: int) -> float:
    return float(np.clip(min(h, w) / 400.0, 0.35, 2.0))


def _text_metrics(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, _FONT, scale, thickness)
    return tw, th, base


def _text_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    tw, th, base = _text_metrics(text, scale, thickness)
    return tw, th + base


def _fit_text(text: str, max_w: int, scale: float) -> str:
    """Cut ``text`` with ``..`` until it is at most ``max_w`` pixels wide."""
    if _text_size(text, scale, 1)[0] <= max_w:
        return text
    for n in range(len(text) - 1, 0, -1):
        cut = text[:n] + ".."
        if _text_size(cut, scale, 1)[0] <= max_w:
            return cut
    return ""


def _put_plain(canvas: np.ndarray, text: str, x: int, y: int, scale: float) -> np.ndarray:
    """Dark text without outline (for labels on the light background strips)."""
    if not text:
        return canvas
    return draw_label(canvas, text, origin=(x, y), font_scale=scale, color=_BLACK, outline=None)
