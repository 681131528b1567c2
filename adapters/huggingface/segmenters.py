"""Hugging Face segmenters as taskcam explains them: a semantic segmenter's logits at the
input's size, and a universal segmenter's (Mask2Former, MaskFormer) per-class logits, each a
view that holds the library model's own submodules under their own names."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from taskcam.loaded import SharedModules
from taskcam.outputs import universal_class_logits

__all__ = ["DEFAULT_LAYERS", "UNIVERSAL", "SemanticSegmenter", "UniversalSegmenter"]

# universal segmenters whose semantic post-processing taskcam follows, by config model_type:
# the size their mask logits are resized to before the sigmoid (None: kept as they are)
UNIVERSAL = {"mask2former": (384, 384), "maskformer": None}

# the feature map before each family's 1x1 class head, by config model_type
DEFAULT_LAYERS = {
    "segformer": "decode_head.activation",
    "upernet": "decode_head.fpn_bottleneck",
    "beit": "decode_head.fpn_bottleneck",
    "data2vec-vision": "decode_head.fpn_bottleneck",
    "dpt": "head.head.2",
    "mask2former": "model.pixel_level_module.decoder.mask_projection",
    "maskformer": "model.pixel_level_module.decoder.mask_projection",
}


class SemanticSegmenter(SharedModules):
    """A ``*ForSemanticSegmentation`` model whose output is ``Tensor[B, K, H, W]``: its logits
    upsampled (bilinear, ``align_corners=False``) to the input's size, as the library's
    ``post_process_semantic_segmentation`` does for a target size.

    Args:
        model: the Hugging Face model (SegFormer's logits are at 1/4 of the input, DPT's at
            twice its fused features, UperNet's at the input already).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, H, W]
        out = self.wrapped(pixel_values=x)
        logits = out.logits if hasattr(out, "logits") else out[0]  # [B, K, h, w]
        if tuple(logits.shape[-2:]) != tuple(x.shape[-2:]):
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits


class UniversalSegmenter(SharedModules):
    """Mask2Former or MaskFormer whose output is ``Tensor[B, K, H, W]`` per-class logits at
    the input's size (:func:`universal_class_logits`), so that region targets, regions and
    class ids are those of its semantic segmentation.

    Args:
        model: a ``Mask2FormerForUniversalSegmentation`` or ``MaskFormerForInstanceSegmentation``.
        mask_size: see :func:`universal_class_logits`.
    """

    def __init__(self, model: nn.Module, mask_size: Optional[tuple[int, int]] = None) -> None:
        super().__init__(model)
        self.mask_size = mask_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, H, W]
        out = self.wrapped(pixel_values=x)
        return universal_class_logits(
            out.class_queries_logits, out.masks_queries_logits, tuple(x.shape[-2:]), self.mask_size
        )
