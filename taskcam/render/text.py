"""Text on pictures: labels with an outline readable on any background, and the font metrics
the other picture modules lay their labels out with (OpenCV's Hershey font, ASCII only)."""

from __future__ import annotations

import cv2
import numpy as np

from taskcam.io import ImageLike, to_rgb_uint8

__all__ = [
    "BLACK",
    "FONT",
    "WHITE",
    "Color",
    "auto_font_scale",
    "draw_label",
    "fit_text",
    "label_font",
    "line_width",
    "put_plain",
    "text_color_on",
    "text_metrics",
    "text_size",
]

FONT = cv2.FONT_HERSHEY_SIMPLEX
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

Color = tuple[int, int, int]


def draw_label(
    image: ImageLike,
    text: str,
    *,
    origin: tuple[int, int] = (4, 4),
    font_scale: float | None = None,
    color: Color = WHITE,
    outline: Color | None = BLACK,
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
        font_scale = auto_font_scale(*out.shape[:2])
    x, y = int(origin[0]), int(origin[1])
    line_h = text_size("Ag", font_scale, thickness)[1]
    for line in str(text).split("\n"):
        _, th, base = text_metrics(line or " ", font_scale, thickness)
        y_base = y + th  # putText wants the baseline's left end
        if outline is not None:
            # the letters' own strokes, widened: a thicker putText spaces its letters wider,
            # so its outline would drift right of the text
            ink = np.zeros(out.shape[:2], np.uint8)
            cv2.putText(ink, line, (x, y_base), FONT, font_scale, 255, thickness, cv2.LINE_8)
            out[cv2.dilate(ink, np.ones((3, 3), np.uint8)) > 0] = outline
        cv2.putText(out, line, (x, y_base), FONT, font_scale, color, thickness, cv2.LINE_AA)
        y += max(th, line_h) + base + max(2, thickness + 1)
    return out


def auto_font_scale(h: int, w: int) -> float:
    return float(np.clip(min(h, w) / 400.0, 0.35, 2.0))


def line_width(h: int, w: int) -> int:
    """Box line width in pixels for an ``h`` x ``w`` picture, as ultralytics' ``Annotator``
    picks it: 0.3 % of the mean side, at least 2.

    Example:
        >>> line_width(480, 640), line_width(1080, 810), line_width(2160, 3840)
        (2, 3, 9)
    """
    return max(round((h + w) / 2 * 0.003), 2)


def label_font(h: int, w: int) -> tuple[float, int]:
    """Font scale and stroke of box labels on an ``h`` x ``w`` picture: ultralytics'
    (line width / 3, line width - 1), smaller on small pictures (at most ``min(h, w) / 250``,
    at least 0.3) so that a label stays a small part of them.

    Example:
        >>> label_font(480, 640), label_font(1080, 810), label_font(60, 90)
        ((0.6666666666666666, 1), (1.0, 2), (0.3, 1))
    """
    lw = line_width(h, w)
    return max(0.3, min(lw / 3, min(h, w) / 250)), max(lw - 1, 1)


def text_color_on(background: Color) -> Color:
    """Black or white, whichever reads better on ``background`` (RGB): black on light
    colours (luma above 128), white on dark ones.

    Example:
        >>> text_color_on((255, 255, 255)), text_color_on((255, 0, 255))
        ((0, 0, 0), (255, 255, 255))
    """
    r, g, b = background
    return BLACK if 0.299 * r + 0.587 * g + 0.114 * b > 128 else WHITE


def text_metrics(text: str, scale: float, thickness: int) -> tuple[int, int, int]:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, thickness)
    return tw, th, base


def text_size(text: str, scale: float, thickness: int) -> tuple[int, int]:
    tw, th, base = text_metrics(text, scale, thickness)
    return tw, th + base


def fit_text(text: str, max_w: int, scale: float) -> str:
    """Cut ``text`` with ``..`` until it is at most ``max_w`` pixels wide."""
    if text_size(text, scale, 1)[0] <= max_w:
        return text
    for n in range(len(text) - 1, 0, -1):
        cut = text[:n] + ".."
        if text_size(cut, scale, 1)[0] <= max_w:
            return cut
    return ""


def put_plain(canvas: np.ndarray, text: str, x: int, y: int, scale: float) -> np.ndarray:
    """Dark text without outline (for labels on the light background strips)."""
    if not text:
        return canvas
    return draw_label(canvas, text, origin=(x, y), font_scale=scale, color=BLACK, outline=None)
