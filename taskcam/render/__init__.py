"""Pictures: heatmap overlays, labelled grids, detections with their maps, model internals
(first-layer filters, feature maps, attention), PNG/JPEG files.

All functions take images in any form :func:`taskcam.io.to_rgb_uint8` accepts and return
``np.ndarray[H, W, 3]`` uint8 RGB (OpenCV's BGR stays inside this package):

- :mod:`~taskcam.render.overlays`: colour maps, overlays, grids, files;
- :mod:`~taskcam.render.annotation`: boxes, rotated boxes, outlines, keypoints, labels, and
  every detection's map in its box;
- :mod:`~taskcam.render.internals`: filters, feature maps, attention grids;
- :mod:`~taskcam.render.text`: labels and the font metrics the others lay text out with.
"""

from taskcam.render.annotation import (
    COCO_SKELETON,
    OUTCOME_COLORS,
    box_normalized,
    detections_picture,
    draw_box,
    draw_boxes,
    draw_keypoints,
    draw_polygon,
    outline,
)
from taskcam.render.internals import attention_grid, feature_map_grid, filter_grid
from taskcam.render.overlays import COLORMAPS, colorize, grid, overlay, save_image
from taskcam.render.text import draw_label

__all__ = [
    "COCO_SKELETON",
    "COLORMAPS",
    "OUTCOME_COLORS",
    "attention_grid",
    "box_normalized",
    "colorize",
    "detections_picture",
    "draw_box",
    "draw_boxes",
    "draw_keypoints",
    "draw_label",
    "draw_polygon",
    "feature_map_grid",
    "filter_grid",
    "grid",
    "outline",
    "overlay",
    "save_image",
]
