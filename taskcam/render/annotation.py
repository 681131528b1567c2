"""Detections drawn as people read them: boxes, rotated boxes, masks' outlines, keypoints and
skeletons, labels, and every detection's map inside its own box on one picture.

The drawing is supervision's annotators (imported on first use), as ultralytics and
supervision users know it: labels on filled backgrounds in their box's colour, sized to the
picture and moved apart where they would overlap; a dark edge under every line so that it
reads on a heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import cv2
import numpy as np
import torch

from taskcam.boxes import boxes_to_masks
from taskcam.errors import TaskcamError
from taskcam.io import ImageLike, to_rgb_uint8
from taskcam.render.overlays import as_heatmap, overlay
from taskcam.render.text import BLACK, WHITE, Color, label_font, line_width, text_color_on

__all__ = [
    "COCO_SKELETON",
    "OUTCOME_COLORS",
    "box_normalized",
    "detections_picture",
    "draw_box",
    "draw_boxes",
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
    """Draw the outline of ``mask`` (``bool[H, W]``) on a copy of an RGB picture, with a dark
    edge: supervision's ``PolygonAnnotator`` on the mask's polygons, as its users see
    instance masks outlined.

    Example:
        >>> m = np.zeros((8, 8), bool); m[2:6, 2:6] = True
        >>> outline(np.zeros((8, 8, 3), np.uint8), m)[2, 2].tolist()
        [255, 255, 255]
    """
    out = np.ascontiguousarray(to_rgb_uint8(picture).copy())
    mask = np.asarray(mask, bool)
    if not mask.any():
        return out
    sv = _supervision()
    ys, xs = np.nonzero(mask)
    dets = sv.Detections(
        xyxy=np.array([[xs.min(), ys.min(), xs.max(), ys.max()]], np.float32),
        mask=mask[None],
        class_id=np.zeros(1, int),
    )
    lw = max(line_width(*out.shape[:2]) - 1, 1)
    for shade, width in ((BLACK, lw + 2), (color, lw)):
        sv.PolygonAnnotator(color=_sv_color(shade), thickness=width).annotate(out, dets)
    return out


def draw_boxes(
    image: ImageLike,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[str] | None = None,
    *,
    colors: Sequence[Color] | None = None,
    thickness: int | None = None,
    dashed: bool = False,
) -> np.ndarray:
    """Draw xyxy boxes (image pixels) with a dark edge and their labels, on a copy, as
    ultralytics and supervision draw them: each label on a filled background in its box's
    colour above the box's top-left corner, in black or white text (whichever reads on it),
    sized to the picture, and labels moved apart (supervision's ``smart_position``) where
    they would overlap or leave the picture.

    Args:
        image: the picture, in any form :func:`taskcam.io.to_rgb_uint8` accepts.
        boxes: ``K`` xyxy boxes in image pixels.
        labels: ``K`` labels (``""``: none for that box; ``None``: no labels).
        colors: ``K`` RGB colours (``None``: all white).
        thickness: line width in pixels (``None``: from the picture's size,
            :func:`taskcam.render.text.line_width`).
        dashed: draw the boxes in dashes (labelled, ground-truth boxes).

    Raises:
        TaskcamError: as many labels and colours as boxes are needed.

    Example:
        >>> img = np.zeros((120, 160, 3), np.uint8)
        >>> out = draw_boxes(img, [[20, 60, 70, 110], [75, 60, 125, 110]], ["0: cat", "1: dog"])
        >>> out[80, 20].tolist(), out[58, 30].tolist()  # the box, then its filled label
        ([255, 255, 255], [255, 255, 255])
    """
    out = np.ascontiguousarray(to_rgb_uint8(image).copy())
    h, w = out.shape[:2]
    for name, given in (("labels", labels), ("colors", colors)):
        if given is not None and len(given) != len(boxes):
            raise TaskcamError(
                f"draw_boxes: {len(given)} {name} for {len(boxes)} boxes; expected one per box"
            )
    colors = list(colors) if colors is not None else [WHITE] * len(boxes)
    xyxy = _clamped(boxes, h, w)  # [K, 4] int
    lw = line_width(h, w) if thickness is None else int(thickness)
    if dashed:
        for (x1, y1, x2, y2), color in zip(xyxy.tolist(), colors):
            _dashed_rectangle(out, (x1, y1), (x2, y2), color, lw)
    elif len(xyxy):
        sv = _supervision()
        dets = sv.Detections(xyxy=xyxy.astype(np.float32), class_id=np.arange(len(xyxy)))
        sv.BoxAnnotator(color=_sv_color(BLACK), thickness=lw + 2).annotate(out, dets)
        sv.BoxAnnotator(
            color=_sv_palette(colors), thickness=lw, color_lookup=sv.ColorLookup.INDEX
        ).annotate(out, dets)
    _draw_labels(out, xyxy, labels, colors)
    return out


def draw_box(
    image: ImageLike,
    box: Sequence[float],
    label: str = "",
    *,
    color: Color = WHITE,
    thickness: int | None = None,
    dashed: bool = False,
) -> np.ndarray:
    """Draw one xyxy box (image pixels) with a dark edge and its label, on a copy: one box of
    :func:`draw_boxes` (filled label background in the box's colour, text sized to the
    picture).

    ``dashed=True`` draws it in dashes (a labelled, ground-truth box), the picture showing
    through the gaps; each side starts with a dash at its corner.

    Example:
        >>> out = draw_box(np.zeros((50, 80, 3), np.uint8), [10, 20, 40, 45], "cat 0.9")
        >>> out[30, 10].tolist(), out.shape
        ([255, 255, 255], (50, 80, 3))
        >>> gt = draw_box(np.zeros((50, 80, 3), np.uint8), [10, 20, 70, 45], dashed=True)
        >>> gt[20, 12].tolist(), gt[20, 21].tolist()  # a dash at the corner, then a gap
        ([255, 255, 255], [0, 0, 0])
    """
    return draw_boxes(image, [box], [label], colors=[color], thickness=thickness, dashed=dashed)


def _supervision() -> Any:  # the module, imported on first drawing
    import supervision

    return supervision


def _sv_color(color: Color) -> Any:
    """A supervision colour that lands as ``color`` on our RGB arrays: supervision writes
    ``Color.as_bgr()`` into the array it is given, so red and blue are handed over swapped."""
    r, g, b = (int(v) for v in color)
    return _supervision().Color(r=b, g=g, b=r)


def _sv_palette(colors: Sequence[Color]) -> Any:
    return _supervision().ColorPalette([_sv_color(c) for c in colors])


def _clamped(boxes: Sequence[Sequence[float]], h: int, w: int) -> np.ndarray:
    """xyxy boxes rounded to pixels and kept inside an ``h`` x ``w`` picture, ``int[K, 4]``."""
    xyxy = np.rint(np.asarray(boxes, np.float64).reshape(-1, 4)).astype(int)
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, w - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, h - 1)
    return xyxy


def _draw_labels(
    out: np.ndarray,
    xyxy: np.ndarray,
    labels: Sequence[str] | None,
    colors: Sequence[Color],
) -> None:
    """Each non-empty label above its box's top-left corner on a background of its colour, in
    place, laid out together (supervision's ``LabelAnnotator`` with ``smart_position``)."""
    shown = [k for k, text in enumerate(labels or ()) if text]
    if not shown:
        return
    sv = _supervision()
    scale, stroke = label_font(*out.shape[:2])
    fills = [colors[k] for k in shown]
    _label_annotator()(
        color=_sv_palette(fills),
        text_color=_sv_palette([text_color_on(c) for c in fills]),
        color_lookup=sv.ColorLookup.INDEX,
        text_scale=scale,
        text_thickness=stroke,
        text_padding=max(2, round(4 * scale)),
        text_position=sv.Position.TOP_LEFT,
        smart_position=True,
    ).annotate(
        out,
        sv.Detections(xyxy=xyxy[shown].astype(np.float32), class_id=np.arange(len(shown))),
        labels=[str(labels[k]) for k in shown],  # type: ignore[index]
    )


def _label_annotator() -> Any:
    """supervision's ``LabelAnnotator`` whose ``smart_position`` layout is repeated until no
    two labels overlap (at most 20 rounds): once spread apart, labels at the picture's edge
    are snapped back inside it, onto their neighbours, and spreading again moves those."""
    sv = _supervision()

    class SpreadLabels(sv.LabelAnnotator):  # type: ignore[misc,name-defined]
        def _adjust_labels_in_frame(self, resolution_wh: Any, labels: Any, props: Any) -> Any:
            for _ in range(20):
                props = super()._adjust_labels_in_frame(resolution_wh, labels, props)
                if not _overlapping(props[:, :4]):
                    break
            return props

    return SpreadLabels


def _overlapping(xyxy: np.ndarray) -> bool:
    """Whether any two of the rectangles ``[K, 4]`` (xyxy, corners included as OpenCV fills
    them) share pixels.

    Example:
        >>> _overlapping(np.array([[0, 0, 10, 10], [11, 0, 20, 10]]))
        False
        >>> _overlapping(np.array([[0, 0, 10, 10], [10, 10, 20, 20]]))  # one corner pixel
        True
    """
    x1, y1, x2, y2 = (np.floor(xyxy[:, k]).astype(int) for k in range(4))
    meet = (x1[:, None] <= x2[None]) & (x1[None] <= x2[:, None])
    meet &= (y1[:, None] <= y2[None]) & (y1[None] <= y2[:, None])
    np.fill_diagonal(meet, False)
    return bool(meet.any())


def _dashed_rectangle(
    out: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], color: Color, thickness: int
) -> None:
    """A rectangle of dashes with a dark edge, drawn in place: dashes of
    ``max(4, 3 * thickness)`` pixels along each side from its corners, and gaps wide enough
    for the picture to show between their dark edges (supervision draws no dashed boxes)."""
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
    its label above it, on a copy: supervision's ``OrientedBoxAnnotator`` and the labels of
    :func:`draw_boxes` (over the polygon's bounding box).

    Example:
        >>> corners = [[5, 5], [30, 5], [30, 20], [5, 20]]
        >>> out = draw_polygon(np.zeros((40, 40, 3), np.uint8), corners)
        >>> out[5, 15].tolist()
        [255, 255, 255]
    """
    out = np.ascontiguousarray(to_rgb_uint8(image).copy())
    h, w = out.shape[:2]
    points = np.rint(np.asarray(corners, dtype=np.float64)).astype(np.int32).reshape(-1, 2)
    sv = _supervision()
    from supervision.config import ORIENTED_BOX_COORDINATES

    bounds = np.concatenate([points.min(0), points.max(0)])[None]
    dets = sv.Detections(
        xyxy=bounds.astype(np.float32),
        class_id=np.zeros(1, int),
        data={ORIENTED_BOX_COORDINATES: points[None]},
    )
    lw = line_width(h, w)
    for shade, width in ((BLACK, lw + 2), (color, lw)):
        sv.OrientedBoxAnnotator(color=_sv_color(shade), thickness=width).annotate(out, dets)
    _draw_labels(out, _clamped(bounds, h, w), [label], [color])
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
    them on a copy, with supervision's ``EdgeAnnotator`` and ``VertexAnnotator`` (each with
    a dark edge); keypoints less visible than ``min_visibility`` are left out, ``highlight``
    (an index) is drawn larger. ``skeleton=None`` joins COCO's 17 keypoints when there are
    17. Sizes grow with the picture (:func:`taskcam.render.text.line_width`).

    Example:
        >>> out = draw_keypoints(np.zeros((40, 40, 3), np.uint8), [[10, 10, 0.9], [30, 30, 0.1]])
        >>> out[10, 10].tolist(), out[30, 30].tolist()
        ([255, 255, 255], [0, 0, 0])
    """
    out = np.ascontiguousarray(to_rgb_uint8(image).copy())
    if not len(keypoints):
        return out
    sv = _supervision()
    rows = [[float(v) for v in k] for k in keypoints]
    visible = np.array([len(k) < 3 or k[2] >= min_visibility for k in rows])
    # supervision leaves out points at (0, 0): the hidden ones are sent there
    xy = np.where(visible[:, None], np.array([k[:2] for k in rows]), 0.0)
    xy = np.rint(xy).astype(np.float32)
    n = len(rows)
    if skeleton is None and n == 17:
        skeleton = COCO_SKELETON
    edges = [(a + 1, b + 1) for a, b in skeleton or () if a < n and b < n]  # 1-based
    lw = line_width(*out.shape[:2])
    points = sv.KeyPoints(xy=xy[None])
    if edges:
        for shade, width in ((BLACK, lw + 1), (color, lw - 1)):
            sv.EdgeAnnotator(color=_sv_color(shade), thickness=width, edges=edges).annotate(
                out, points
            )
    for shade, grow in ((BLACK, 1), (color, 0)):
        sv.VertexAnnotator(color=_sv_color(shade), radius=lw + 1 + grow).annotate(out, points)
    if highlight is not None and 0 <= highlight < n and visible[highlight]:
        one = sv.KeyPoints(xy=np.where(np.arange(n)[:, None] == highlight, xy, 0.0)[None])
        for shade, grow in ((BLACK, 1), (color, 0)):
            sv.VertexAnnotator(color=_sv_color(shade), radius=lw + 3 + grow).annotate(out, one)
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
    out = draw_boxes(out, boxes, colors=colors)
    dashed = [b for b in label_boxes or () if b is not None]
    if dashed:
        out = draw_boxes(out, dashed, colors=[OUTCOME_COLORS["label"]] * len(dashed), dashed=True)
    colors = list(colors) if colors is not None else [WHITE] * len(boxes)
    _draw_labels(out, _clamped(boxes, h, w), labels, colors)  # last: no line crosses a label
    return out
