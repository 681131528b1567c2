"""Where a map lies: the pointing game (Zhang et al., ECCV 2016) and its energy-based version
(Wang et al., CVPR-W 2020), against boxes (:func:`taskcam.boxes.boxes_to_masks`) or masks."""

from __future__ import annotations

import torch

from taskcam.boxes import boxes_to_masks
from taskcam.errors import TaskcamError
from taskcam.metrics.curves import shape_of

__all__ = ["energy_pointing_game", "pointing_game"]


# -- localisation -------------------------------------------------------------------------------
def _maps_and_regions(saliency: object, region: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Tensor[B, H, W], BoolTensor[B, H, W])`` with a single map or region broadcast."""
    if not isinstance(saliency, torch.Tensor) or saliency.ndim not in (2, 3):
        raise TaskcamError(
            f"saliency: expected Tensor[B, H, W] or Tensor[H, W], got {shape_of(saliency)}"
        )
    sal = saliency.detach()
    sal = torch.nan_to_num(sal[None] if sal.ndim == 2 else sal, nan=0.0).float()
    h, w = sal.shape[-2:]
    if not isinstance(region, torch.Tensor):
        raise TaskcamError(
            "region: expected boxes Tensor[B, 4] or a BoolTensor[B, H, W] mask, got "
            f"{type(region).__name__}"
        )
    if region.dtype == torch.bool:
        mask = region[None] if region.ndim == 2 else region
        if mask.ndim != 3 or tuple(mask.shape[-2:]) != (h, w):
            raise TaskcamError(
                f"region: a mask must be BoolTensor[B, H, W] or [H, W] at the saliency's size "
                f"{(h, w)}, got {tuple(region.shape)} for saliency of shape {tuple(saliency.shape)}"
            )
    elif region.ndim in (1, 2) and region.shape[-1] == 4:
        mask = boxes_to_masks(region, h, w)
    else:
        raise TaskcamError(
            "region: expected boxes Tensor[B, 4] / Tensor[4] (x1, y1, x2, y2) or a "
            f"BoolTensor[B, H, W] / [H, W] mask, got {region.dtype} {tuple(region.shape)}"
        )
    mask = mask.to(sal.device)
    if sal.shape[0] != mask.shape[0] and 1 not in (sal.shape[0], mask.shape[0]):
        raise TaskcamError(
            f"region: {mask.shape[0]} regions for {sal.shape[0]} saliency maps; give one "
            "region per map, or one for all"
        )
    batch = max(sal.shape[0], mask.shape[0])
    return sal.expand(batch, h, w), mask.expand(batch, h, w)


def pointing_game(
    saliency: torch.Tensor, region: torch.Tensor, *, tolerance: float = 15
) -> torch.Tensor:
    """The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016).

    A map scores a hit when its maximum falls inside the region or within ``tolerance``
    pixels of it (Euclidean distance between pixel centres, the same as dilating the region
    by a disk of that radius; the paper used 15). When several pixels share the maximum, the
    first in row-major order is the one that points. A constant map (an all-zero, empty map
    included) points nowhere and is a miss; so is an empty region.

    Args:
        saliency: ``Tensor[B, H, W]`` or ``Tensor[H, W]``.
        region: boxes ``Tensor[B, 4]`` / ``[4]`` in ``xyxy`` pixel coordinates (rasterised by
            :func:`boxes_to_masks`: a pixel is in when its centre is in ``[x1, x2) × [y1, y2)``)
            or masks ``BoolTensor[B, H, W]`` / ``[H, W]``. Non-bool tensors are read as boxes.
            One map or one region is shared by all of the other's batch.
        tolerance: radius in pixels, >= 0.

    Returns:
        ``BoolTensor[B]`` hits (``B = 1`` for a single map and region).

    Example:
        >>> sal = torch.zeros(10, 10)
        >>> sal[2, 3] = 1.0
        >>> pointing_game(sal, torch.tensor([3, 2, 4, 3]), tolerance=0).tolist()
        [True]
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise TaskcamError(f"tolerance must be a number >= 0, got {tolerance!r}")
    sal, mask = _maps_and_regions(saliency, region)
    batch, h, w = sal.shape
    flat = sal.reshape(batch, -1)
    peak = flat.argmax(dim=1)  # the first maximum, row-major
    constant = flat.amax(dim=1) <= flat.amin(dim=1)
    py, px = (peak // w).view(-1, 1, 1), (peak % w).view(-1, 1, 1)
    ys = torch.arange(h, device=sal.device).view(1, -1, 1)
    xs = torch.arange(w, device=sal.device).view(1, 1, -1)
    near = (ys - py) ** 2 + (xs - px) ** 2 <= float(tolerance) ** 2  # [B, H, W]
    return (mask & near).flatten(1).any(dim=1) & ~constant


def energy_pointing_game(saliency: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The energy-based pointing game (Wang et al., "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks", CVPR Workshops 2020).

    The share of the map's energy inside the region: the sum of the saliency (negative values
    clipped to 0) over the region's pixels, divided by its sum over the image. A map with no
    positive value gives 0, never NaN.

    Args:
        saliency: ``Tensor[B, H, W]`` or ``Tensor[H, W]``.
        region: boxes or masks, as in :func:`pointing_game`.

    Returns:
        ``Tensor[B]`` in [0, 1] (float32).

    Example:
        >>> sal = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
        >>> energy_pointing_game(sal, torch.tensor([1, 0, 2, 2])).tolist()
        [0.75]
    """
    sal, mask = _maps_and_regions(saliency, region)
    sal = sal.double().clamp(min=0)
    total = sal.sum(dim=(1, 2))
    inside = (sal * mask).sum(dim=(1, 2))
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0).float()
