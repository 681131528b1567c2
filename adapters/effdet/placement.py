"""An image on an EfficientDet's input as effdet's eval pipeline places it, and back.

effdet's ``ResizePad`` scales the image by ``s = min(h_in / H, w_in / W)`` to
``int(W s) × int(H s)`` (PIL, bicubic unless the model config names another interpolation),
pastes it at the top-left corner of an ``h_in × w_in`` canvas filled with the mean colour, and
its ``PrefetchLoader`` normalises the uint8 pixels by ``255 × mean`` and ``255 × std``. The
bench then clips boxes to ``img_size / img_scale`` (the image's extent on the input) before
NMS and multiplies them by ``img_scale = 1 / s``: :class:`ResizePadPlacement` holds those two
numbers as effdet's collate makes them (``img_size`` int32, ``img_scale`` float32).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from taskcam.adapters.detection.placement import check_image, resize_maps
from taskcam.errors import TaskcamError

__all__ = ["ResizePadPlacement", "resize_pad"]


@dataclass(frozen=True)
class ResizePadPlacement:
    """How :func:`resize_pad` placed an image on the input, to undo it.

    Attributes:
        height, width: the original image's size.
        img_scale: effdet's ``img_scale``, ``1 / s`` (image pixels per input pixel).
        new_height, new_width: the scaled image's size, at the input's top-left corner.
        input_height, input_width: the input's size (the model's ``image_size``).

    Example:
        >>> p = ResizePadPlacement(300, 451, 451 / 256, 170, 256, 256, 256)
        >>> p.boxes_to_image(torch.tensor([[0.0, 10.0, 128.0, 300.0]])).round().tolist()
        [[0.0, 18.0, 226.0, 300.0]]
    """

    height: int
    width: int
    img_scale: float
    new_height: int
    new_width: int
    input_height: int
    input_width: int

    @property
    def input_size(self) -> tuple[int, int]:
        """``(h, w)`` of the input."""
        return self.input_height, self.input_width

    def scale_tensor(self) -> torch.Tensor:
        """``img_scale`` as effdet's collate holds it: a float32 scalar tensor."""
        return torch.tensor(self.img_scale, dtype=torch.float32)

    def extent(self) -> torch.Tensor:
        """``Tensor[2]`` float32: ``img_size / img_scale``, the image's width and height in
        input pixels, computed as effdet's bench computes the box clip of
        ``generate_detections``."""
        size = torch.tensor([self.width, self.height], dtype=torch.int32)
        return size / self.scale_tensor()

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels (``× img_scale``, as effdet
        scales its detections), clipped to the image."""
        out = boxes * self.scale_tensor().to(boxes.device)
        limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(out.clamp(min=0), limit)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h_in, w_in]`` on the input's grid -> ``Tensor[..., H, W]``: the
        padding cropped, the rest resized (bilinear; maps in [0, 1] stay there)."""
        if tuple(maps.shape[-2:]) != self.input_size:
            h, w = self.input_size
            raise TaskcamError(f"maps: expected Tensor[..., {h}, {w}], got {tuple(maps.shape)}")
        crop = maps[..., : self.new_height, : self.new_width]
        return resize_maps(crop, (self.height, self.width))


def resize_pad(
    image: np.ndarray,
    size: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    fill_color: Sequence[int],
    interpolation: str = "bicubic",
) -> tuple[torch.Tensor, ResizePadPlacement]:
    """effdet's eval preprocessing of one image (see the module doc): ``ResizePad``, then
    the ``PrefetchLoader``'s normalisation.

    Args:
        image: ``uint8[H, W, 3]`` RGB.
        size: the input's ``(h, w)`` (the model's ``image_size``).
        mean, std: normalisation of pixels in [0, 1] (applied as ``255 × mean``, ``255 × std``
            to the uint8 pixels, as effdet does).
        fill_color: the padding's uint8 RGB.
        interpolation: ``bilinear``, ``bicubic``, ``lanczos`` or ``hamming`` (PIL's).

    Returns:
        ``(x, placement)``: ``x: Tensor[1, 3, h, w]`` float32 on the CPU.

    Example:
        >>> x, p = resize_pad(np.zeros((300, 451, 3), np.uint8), (256, 256),
        ...                   mean=(0.5,) * 3, std=(0.5,) * 3, fill_color=(128,) * 3)
        >>> x.shape, (p.new_height, p.new_width), float(x[0, 0, 0, 0]), float(x[0, 0, -1, 0])
        (torch.Size([1, 3, 256, 256]), (170, 256), -1.0, 0.003921568859368563)
    """
    from PIL import Image

    check_image(image)
    height, width = image.shape[:2]
    th, tw = int(size[0]), int(size[-1])
    scale = min(th / height, tw / width)
    new_h, new_w = max(int(height * scale), 1), max(int(width * scale), 1)
    methods = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS, "hamming": Image.HAMMING}
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (new_w, new_h), methods.get(interpolation, Image.BILINEAR)
    )
    canvas = Image.new("RGB", (tw, th), color=tuple(int(c) for c in fill_color))
    canvas.paste(resized)
    pixels = torch.from_numpy(np.asarray(canvas, dtype=np.uint8).copy()).permute(2, 0, 1)[None]
    m = torch.tensor([v * 255 for v in mean]).view(1, 3, 1, 1)
    s = torch.tensor([v * 255 for v in std]).view(1, 3, 1, 1)
    x = pixels.float().sub_(m).div_(s)
    return x, ResizePadPlacement(height, width, 1.0 / scale, new_h, new_w, th, tw)
