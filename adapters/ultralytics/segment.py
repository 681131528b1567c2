"""The segment task of ultralytics YOLO (``-seg``): an instance's mask from its prototypes, and
its target (the class score, or the mask's logits over its own pixels)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from taskcam.adapters.ultralytics.detect import YoloDetectionTarget
from taskcam.adapters.ultralytics.raw import num_classes
from taskcam.errors import TaskcamError

__all__ = ["YoloInstanceTarget", "instance_masks"]


def instance_masks(
    coeffs: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``BoolTensor[N, H, W]``: ``sigmoid(coeffs @ protos) > 0.5``, upsampled to the input
    ``size``, cropped to each box, as ultralytics draws an instance's mask.

    Args:
        coeffs: ``Tensor[N, nm]`` the instances' mask coefficients.
        protos: ``Tensor[nm, h, w]`` the image's prototypes.
        boxes: ``Tensor[N, 4]`` xyxy in input pixels.
        size: ``(H, W)`` of the input.
    """
    nm, ph, pw = protos.shape
    logits = (coeffs @ protos.reshape(nm, -1)).reshape(-1, 1, ph, pw)  # [N, 1, h, w]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]
    ys = torch.arange(size[0], device=boxes.device, dtype=boxes.dtype)[None, :, None]
    xs = torch.arange(size[1], device=boxes.device, dtype=boxes.dtype)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    return (logits > 0) & inside  # sigmoid > 0.5 <=> logit > 0


class YoloInstanceTarget(YoloDetectionTarget):
    """One instance of a YOLO segmentation model: its candidate's class score, or its mask.

    The class score is what ranks the instance and decides that it exists. Its mask is a
    linear mix of prototypes shared by all instances (YOLACT: Bolya et al., "YOLACT: Real-time
    Instance Segmentation", ICCV 2019): ``what="mask"`` explains the mask's logits
    ``coefficients · prototypes``, upsampled to the input as the mask is drawn, summed over
    the instance's own pixels (``region``: its mask at detection time, inside its box), as
    Seg-Grad-CAM sums a class region. Box sides work as in the parent class.

    Args:
        candidate, class_id, what, box, layer, model: as :class:`YoloDetectionTarget`; ``what``
            may also be ``"mask"``.
        region: ``BoolTensor[H, W]``, the instance's mask on the input grid (needed for
            ``"mask"``: :func:`detect` gives it as ``Detections.masks``).

    Raises:
        TaskcamError: when called on a detection model's output (no mask prototypes); a
            ``"mask"`` target without a region.
    """

    supports = (*YoloDetectionTarget.supports, "mask")

    def __init__(self, *args: Any, region: Optional[torch.Tensor] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.what == "mask" and (region is None or region.ndim != 2):
            got = None if region is None else tuple(region.shape)
            raise TaskcamError(
                f"what='mask': the instance's mask BoolTensor[H, W] is needed as region, got {got}"
            )
        self.region = None if region is None else region.detach().bool()

    def __call__(self, output: Any) -> torch.Tensor:
        preds, protos, _ = self.parse(output)
        if protos is None:
            raise TaskcamError(
                "YoloInstanceTarget needs a segmentation model's output (mask prototypes); "
                "use YoloDetectionTarget for detection models"
            )
        if self.what != "mask":
            return self.score(preds)
        missing = self.absent(preds.shape[2], preds)
        if missing is not None:
            return missing
        assert self.region is not None
        nc = num_classes(preds, protos)
        coeffs = preds[:, 4 + nc :, self.candidate]  # [B, nm]
        logits = torch.einsum("bm,bmhw->bhw", coeffs, protos)[:, None]  # [B, 1, h, w]
        region = self.region.to(logits.device)
        logits = F.interpolate(logits, size=region.shape, mode="bilinear", align_corners=False)
        return (logits[:, 0] * region).sum(dim=(1, 2))  # [B]
