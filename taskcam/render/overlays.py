"""Heatmaps over pictures: colour maps, overlays, labelled grids of pictures, and image files.

All functions take images in any form :func:`taskcam.io.to_rgb_uint8` accepts and return
``np.ndarray[H, W, 3]`` uint8 RGB (OpenCV's BGR stays inside :mod:`taskcam.render`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from taskcam.errors import TaskcamError
from taskcam.io import ImageLike, to_rgb_uint8
from taskcam.render.text import (
    WHITE,
    Color,
    auto_font_scale,
    fit_text,
    put_plain,
    text_size,
)

__all__ = [
    "COLORMAPS",
    "as_heatmap",
    "colorize",
    "colormap_id",
    "grid",
    "overlay",
    "resize_image",
    "save_image",
]

#: OpenCV colormap names (lower case, e.g. ``"jet"``, ``"turbo"``, ``"viridis"``) -> cv2 id.
COLORMAPS: dict[str, int] = {
    name[len("COLORMAP_") :].lower(): int(getattr(cv2, name))
    for name in sorted(dir(cv2))
    if name.startswith("COLORMAP_")
}


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
    cmap = colormap_id(colormap)
    u8 = np.rint(as_heatmap(heatmap) * 255.0).astype(np.uint8)
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
    cmap = colormap_id(colormap)
    rgb = to_rgb_uint8(image)
    hm = as_heatmap(heatmap)
    h, w = rgb.shape[:2]
    if hm.shape != (h, w):
        hm = np.clip(cv2.resize(hm, (w, h), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)
    colored = colorize(hm, cmap)
    out = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colored.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def grid(
    rows: Sequence[Sequence[ImageLike | None]],
    *,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    pad: int = 4,
    cell_size: int | tuple[int, int] | None = None,
    background: Color = WHITE,
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

    scale = auto_font_scale(ch, cw)
    text_h = text_size("Ag", scale, 1)[1]
    header_h = text_h + 2 * pad + 4 if col_labels is not None else 0
    if row_labels is not None:
        widest = max((text_size(str(t), scale, 1)[0] for t in row_labels), default=0)
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
            canvas[y : y + ch, x : x + cw] = resize_image(to_rgb_uint8(img), ch, cw)
        if row_labels is not None:
            label = fit_text(str(row_labels[i]), left_w - 2 * pad, scale)
            canvas = put_plain(canvas, label, pad, y + (ch - text_h) // 2, scale)
    if col_labels is not None:
        for j, text in enumerate(col_labels):
            x = left_w + pad + j * (cw + pad)
            label = fit_text(str(text), cw, scale)
            tw = text_size(label, scale, 1)[0]
            canvas = put_plain(canvas, label, x + max(0, (cw - tw) // 2), pad + 2, scale)
    return canvas


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


def colormap_id(colormap: str | int) -> int:
    if isinstance(colormap, (int, np.integer)) and not isinstance(colormap, bool):
        if int(colormap) in COLORMAPS.values():
            return int(colormap)
    elif isinstance(colormap, str) and colormap.strip().lower() in COLORMAPS:
        return COLORMAPS[colormap.strip().lower()]
    raise TaskcamError(
        f"unknown colormap {colormap!r}; valid names: {', '.join(sorted(COLORMAPS))}"
    )


def as_heatmap(heatmap: np.ndarray | torch.Tensor) -> np.ndarray:
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


def resize_image(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize to ``(h, w)``: area averaging when shrinking, bilinear when enlarging."""
    if img.shape[:2] == (h, w):
        return img
    shrink = h * w < img.shape[0] * img.shape[1]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


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
