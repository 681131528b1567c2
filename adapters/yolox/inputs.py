"""An image on a YOLOX input as YOLOX's own preprocessing places it (``preproc`` of the YOLOX
repository, Ge et al., 2021, "YOLOX: Exceeding YOLO Series in 2021", and libreyolo's
``preprocess_numpy`` for YOLOX), and back.

YOLOX differs from ultralytics' letterbox in three ways that matter for the maps and boxes: the
resized image sits in the *top-left* corner (padding right and below only, gray 114), its size is
``int(w × r) × int(h × r)`` (rounded down), and the pixels stay in ``[0, 255]``, in BGR order
(YOLOX was trained on ``cv2.imread`` images), without normalisation. libreyolo resizes with PIL's
bilinear filter; so does :func:`yolox_input`.
"""

from __future__ import annotations

import numpy as np
import torch

from taskcam.adapters.detection.placement import PAD_VALUE, LetterboxInfo, check_image
from taskcam.errors import TaskcamError

__all__ = ["yolox_input"]


def yolox_input(image: np.ndarray, size: int = 640) -> tuple[torch.Tensor, LetterboxInfo]:
    """``uint8[H, W, 3]`` RGB -> the YOLOX input and its placement.

    Scale ``r = min(S / H, S / W)``; PIL bilinear resize to ``int(W r) × int(H r)``; paste at
    the top-left of an ``S × S`` gray (114) canvas; RGB -> BGR; float in ``[0, 255]``.

    Args:
        image: ``uint8[H, W, 3]`` RGB.
        size: the input side ``S`` (the model's strides divide it: a multiple of 32).

    Returns:
        ``(x, placement)``: ``x: Tensor[1, 3, S, S]`` float32 BGR in ``[0, 255]`` on the CPU;
        the placement (padding ``left = top = 0``) brings boxes and maps back to the image.

    Raises:
        TaskcamError: not an RGB ``uint8[H, W, 3]`` image, or a size that is not a positive
            multiple of 32 (the message gives what was received).

    Example:
        >>> x, p = yolox_input(np.full((200, 320, 3), (255, 0, 0), np.uint8), size=256)
        >>> x.shape, (p.new_height, p.new_width), p.top, x[0, :, 0, 0].tolist()
        (torch.Size([1, 3, 256, 256]), (160, 256), 0, [0.0, 0.0, 255.0])
        >>> x[0, :, 200, 0].tolist()  # below the image: the gray padding
        [114.0, 114.0, 114.0]
    """
    from PIL import Image

    check_image(image)
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 32:
        raise TaskcamError(f"size: expected a positive multiple of 32 (YOLOX), got {size!r}")
    h, w = image.shape[:2]
    ratio = min(size / w, size / h)
    new_w, new_h = max(int(w * ratio), 1), max(int(h * ratio), 1)
    resized = Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (size, size), (PAD_VALUE,) * 3)
    canvas.paste(resized, (0, 0))
    bgr = np.array(canvas, dtype=np.float32)[:, :, ::-1]  # [S, S, 3]
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]  # [1, 3, S, S]
    return x, LetterboxInfo(h, w, size, ratio, 0, 0, new_w, new_h)
