"""What an explanation call returns, and the map arithmetic every method family shares:
per-map min-max normalisation and bringing a layer's grid to the input's size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError

__all__ = ["Explanation", "normalize_maps", "upsample_maps"]


@dataclass
class Explanation:
    """The result of one explanation call.

    Attributes:
        maps: ``Tensor[B, T, H, W]`` in [0, 1] at the input's size, one per (image, target).
        raw: layer name -> ``Tensor[B, T, h, w]`` the rectified, unnormalised map at the
            layer's own resolution.
        scores: ``Tensor[B, T]`` each target's score on the unperturbed input.
        empty: ``BoolTensor[B, T]`` maps that were all zero (or constant): their ``maps`` are 0.
        method: the method's registered name.
        layers: the target layers' names.
        pixel_grads: ``Tensor[B, T, 3, H, W]`` for pixel-space methods (Guided Backprop).
        output: the model's output on the unperturbed input, detached.
        forwards: for the methods that read only outputs (rise, drise, fast-drise), the
            masked copies of each image the model scored; with a stop rule, fewer than the
            method's ``n_masks``.
    """

    maps: torch.Tensor
    raw: dict[str, torch.Tensor]
    scores: torch.Tensor
    empty: torch.Tensor
    method: str
    layers: list[str]
    pixel_grads: Optional[torch.Tensor] = None
    output: Any = field(default=None, repr=False)
    forwards: Optional[list[int]] = None

    def picture(
        self,
        images: Any = None,
        *,
        colormap: str = "jet",
        alpha: float = 0.5,
        labels: Optional[Sequence[str]] = None,
        cell_size: Optional[int] = None,
    ) -> np.ndarray:
        """The maps as one picture: a grid with a row per image and a column per target.

        Args:
            images: what to draw the maps over: ``Tensor[B, 3, H, W]`` in [0, 1] (the input
                before normalisation), or ``B`` images in any form
                :func:`taskcam.io.to_rgb_uint8` accepts; ``None`` draws the heatmaps alone.
            colormap: OpenCV colormap.
            alpha: weight of the heatmap over the images.
            labels: one label per target (column), e.g. class names.
            cell_size: side of each cell in pixels (default: the maps' size, at least 96).

        Returns:
            ``np.ndarray[H, W, 3]`` uint8 RGB.

        Example:
            >>> exp = Explanation(torch.rand(2, 3, 8, 8), {}, torch.zeros(2, 3),
            ...                   torch.zeros(2, 3, dtype=torch.bool), "gradcam", [])
            >>> exp.picture(labels=["cat", "dog", "car"]).shape[2]
            3
        """
        from taskcam.render import colorize, grid, overlay

        maps = self.maps.detach().float().cpu()  # [B, T, H, W]
        if images is not None:
            if isinstance(images, torch.Tensor) and images.ndim == 4:
                images = list(images)
            if len(images) != maps.shape[0]:
                raise TaskcamError(
                    f"picture: {len(images)} image(s) for maps of {maps.shape[0]} image(s)"
                )
        rows = []
        for b in range(maps.shape[0]):
            if images is None:
                rows.append([colorize(m.numpy(), colormap) for m in maps[b]])
            else:
                rows.append(
                    [overlay(images[b], m.numpy(), colormap=colormap, alpha=alpha) for m in maps[b]]
                )
        size = cell_size or max(96, int(maps.shape[-1]))
        return grid(rows, col_labels=labels, cell_size=size)

    def _repr_png_(self) -> bytes:
        """PNG bytes of :meth:`picture` (Jupyter shows an Explanation as its maps)."""
        import cv2

        ok, buffer = cv2.imencode(".png", self.picture()[..., ::-1])
        return buffer.tobytes() if ok else b""

    def show(self, images: Any = None, **options: Any) -> Any:
        """Show :meth:`picture` (``images``, ``colormap``, ``alpha``, ``labels``): in a
        notebook it is displayed under the cell; elsewhere the system's image viewer opens it.

        Returns:
            The picture as a ``PIL.Image.Image``.
        """
        from PIL import Image

        picture = Image.fromarray(self.picture(images, **options))
        try:
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            get_ipython = None  # noqa: N806 - IPython's own name
        if get_ipython is not None and get_ipython() is not None:
            display(picture)
        else:
            picture.show()
        return picture


def normalize_maps(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Min-max normalise each map over its last two dimensions.

    Args:
        maps: ``Tensor[..., H, W]``; NaN and infinities count as 0.

    Returns:
        ``(normalised, empty)``: maps in [0, 1] and ``BoolTensor[...]`` flagging maps that are
        constant (all zero included); those come back as zeros, never NaN.

    Example:
        >>> m, empty = normalize_maps(torch.tensor([[[0.0, 2.0]], [[0.0, 0.0]]]))
        >>> m.tolist(), empty.tolist()
        ([[[0.0, 1.0]], [[0.0, 0.0]]], [False, True])
    """
    maps = torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    empty = (span <= 1e-12 * hi.abs().clamp(min=1.0))[..., 0, 0]
    out = (maps - lo) / torch.where(span > 0, span, torch.ones_like(span))
    return out.masked_fill(empty[..., None, None], 0.0), empty


def upsample_maps(
    cam: torch.Tensor, size: torch.Size | tuple[int, int], covers: Optional[tuple[int, int]] = None
) -> torch.Tensor:
    """``Tensor[B, T, h, w]`` -> ``[B, T, *size]``, negatives cut.

    A grid that covers another area of the input than all of it (``covers``: a ViT that pads
    to whole patches, or drops the remainder) is laid on that area from the top-left corner
    and cropped or zero-padded to the input, not stretched over it.

    Example:
        >>> upsample_maps(torch.ones(1, 1, 2, 2), (4, 6), covers=(4, 4))[0, 0, 0].tolist()
        [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    """
    area = tuple(size) if covers is None else covers
    up = F.interpolate(cam.float(), size=area, mode="bilinear", align_corners=False).clamp(min=0)
    if area != tuple(size):
        h, w = size
        up = F.pad(up[..., :h, :w], (0, max(0, w - area[1]), 0, max(0, h - area[0])))
    return up
