"""How an image is placed on a detector's input, and how boxes and maps come back to it.

:func:`letterbox` is ultralytics' (and YOLOv5's) letterbox, to the square or, as their own
predict pads a PyTorch model's input, to the minimal rectangle; :func:`stretched_input`
resizes the whole image (RT-DETR stretches to a square, DETR keeps the aspect ratio). Each
returns the input and a placement, which is all a run needs to bring a detection's box and its
maps back to the original image (:class:`Placement`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError

__all__ = [
    "PAD_VALUE",
    "LetterboxInfo",
    "Placement",
    "StretchPlacement",
    "check_image",
    "letterbox",
    "resize_maps",
    "stretched_input",
]

PAD_VALUE = 114
"""Gray level of ultralytics' letterbox padding."""


class Placement(Protocol):
    """How an image was placed on the model input, to bring boxes and maps back."""

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels, clipped to the image."""
        ...

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` on the input's grid -> ``Tensor[..., H, W]`` on the image's."""
        ...


def check_image(image: object, *, uint8: bool = True) -> np.ndarray:
    """``image`` when it is an RGB ``uint8[H, W, 3]`` array (any dtype with ``uint8=False``).

    Raises:
        TaskcamError: another shape or dtype (the message gives what was received).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__)
        raise TaskcamError(f"image: expected a uint8[H, W, 3] array, got {got}")
    if uint8 and image.dtype != np.uint8:
        raise TaskcamError(f"image: expected dtype uint8, got {image.dtype}")
    return image


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``Tensor[..., h, w]`` to ``size`` (values in [0, 1] stay there)."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).to(maps.dtype)


@dataclass(frozen=True)
class LetterboxInfo:
    """How :func:`letterbox` placed an image on the input, to undo it.

    Attributes:
        height, width: the original image's size.
        size: the input's longer side ``S`` (the side asked for).
        ratio: the scale applied, ``min(S / height, S / width)``.
        left, top: the padding before the resized image, in input pixels.
        new_width, new_height: the resized image's size inside the input.
        input_height, input_width: the input's size: ``S × S`` for the square letterbox, less
            on the shorter side for the minimal rectangle (0 when built: ``S``).
    """

    height: int
    width: int
    size: int
    ratio: float
    left: int
    top: int
    new_width: int
    new_height: int
    input_height: int = 0
    input_width: int = 0

    def __post_init__(self) -> None:
        for name in ("input_height", "input_width"):
            if not getattr(self, name):
                object.__setattr__(self, name, self.size)

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the input."""
        return self.input_height, self.input_width

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> original-image pixels, clipped to the image."""
        offset = boxes.new_tensor([self.left, self.top, self.left, self.top])
        out = (boxes - offset) / self.ratio
        limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(out.clamp(min=0), limit)

    def boxes_to_input(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in original-image pixels -> input pixels."""
        offset = boxes.new_tensor([self.left, self.top, self.left, self.top])
        return boxes * self.ratio + offset

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` on the input's grid -> ``Tensor[..., height, width]``: crop the
        padding, resize.

        Bilinear resizing keeps maps in [0, 1] in [0, 1].
        """
        if maps.shape[-2:] != self.input_size:
            h, w = self.input_size
            raise TaskcamError(f"maps: expected Tensor[..., {h}, {w}], got {tuple(maps.shape)}")
        crop = maps[
            ..., self.top : self.top + self.new_height, self.left : self.left + self.new_width
        ]
        return resize_maps(crop, (self.height, self.width))


def letterbox(
    image: np.ndarray, size: int = 640, stride: int = 32, auto: bool = False
) -> tuple[torch.Tensor, LetterboxInfo]:
    """Resize keeping the aspect ratio and pad, as ultralytics does: to ``size × size``, or
    with ``auto`` to the minimal rectangle.

    Same arithmetic as ``ultralytics.data.augment.LetterBox(auto=auto, stride=stride)``:
    scale ``r = min(S / h, S / w)``, bilinear resize to ``round(w r) × round(h r)``, gray 114
    padding split evenly (the odd pixel goes bottom/right). The square pads each side up to
    ``S``; the minimal rectangle (``auto``, what ultralytics' and YOLOv5's ``predict`` do for a
    PyTorch model) only up to the next multiple of ``stride``, so the longer side is ``S`` and
    the shorter one less for a non-square image.

    Args:
        image: ``uint8[H, W, 3]`` RGB.
        size: the input's (longer) side ``S``; a multiple of ``stride``.
        stride: the model's largest stride.
        auto: pad to the minimal rectangle instead of the square.

    Returns:
        ``(x, info)``: ``x: Tensor[1, 3, h, w]`` float in [0, 1] (``h = w = S`` unless
        ``auto``), and the placement.

    Example:
        >>> x, info = letterbox(np.zeros((200, 320, 3), np.uint8), size=256)
        >>> x.shape, info.top, info.new_height
        (torch.Size([1, 3, 256, 256]), 48, 160)
        >>> x, info = letterbox(np.zeros((200, 320, 3), np.uint8), size=256, auto=True)
        >>> x.shape, info.top, info.new_height, info.input_size
        (torch.Size([1, 3, 160, 256]), 0, 160, (160, 256))
    """
    import cv2

    check_image(image)
    if not isinstance(size, int) or size <= 0 or size % stride:
        raise TaskcamError(f"size: expected a positive multiple of stride {stride}, got {size!r}")
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_w, pad_h = size - new_w, size - new_h
    if auto:  # the minimal rectangle
        pad_w, pad_h = pad_w % stride, pad_h % stride
    dw, dh = pad_w / 2, pad_h / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float() / 255.0
    info = LetterboxInfo(
        h, w, size, r, left, top, new_w, new_h, new_h + top + bottom, new_w + left + right
    )
    return x, info


@dataclass(frozen=True)
class StretchPlacement:
    """An image resized as a whole to the model input ``size`` (h, w), without padding, and
    how to undo it (RT-DETR stretches to a square; DETR keeps the aspect ratio).

    Example:
        >>> p = StretchPlacement(100, 200, (50, 50))
        >>> p.boxes_to_image(torch.tensor([[10.0, 10.0, 60.0, 40.0]])).tolist()
        [[40.0, 20.0, 200.0, 80.0]]
    """

    height: int
    width: int
    size: tuple[int, int]

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels, clipped to the image."""
        h, w = self.size
        scale = boxes.new_tensor([self.width / w, self.height / h] * 2)
        limit = boxes.new_tensor([self.width, self.height] * 2)
        return torch.minimum((boxes * scale).clamp(min=0), limit)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` -> ``Tensor[..., H, W]`` (bilinear)."""
        return resize_maps(maps.float(), (self.height, self.width))


def stretched_input(
    image: np.ndarray, size: tuple[int, int]
) -> tuple[torch.Tensor, StretchPlacement]:
    """``uint8[H, W, 3]`` RGB resized (bilinear, as a whole) to ``size`` (h, w): the input
    ``Tensor[1, 3, h, w]`` in [0, 1] on the CPU, and its placement.

    Raises:
        TaskcamError: not a ``uint8[H, W, 3]`` image (the message gives what was received).

    Example:
        >>> x, p = stretched_input(np.zeros((30, 60, 3), np.uint8), (32, 32))
        >>> x.shape, p.size
        (torch.Size([1, 3, 32, 32]), (32, 32))
    """
    import cv2

    check_image(image, uint8=False)
    height, width = image.shape[:2]
    h, w = int(size[0]), int(size[1])
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float() / 255
    return x, StretchPlacement(height, width, (h, w))
