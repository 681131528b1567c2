"""Finding attention modules: the timm classes taskcam recomputes, matched by module path."""

import pytest
import torch

from taskcam.attention import capture_attention, rollout
from taskcam.errors import TaskcamError


def _other_timm_attention():
    """timm models whose attention classes share a supported name but not its computation."""
    from timm.models.beit import Beit
    from timm.models.davit import DaVit
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    torch.manual_seed(0)
    return [
        Beit(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=5),
        PyramidVisionTransformerV2(
            depths=(1, 1),
            embed_dims=(16, 32),
            num_heads=(1, 2),
            sr_ratios=(2, 1),
            mlp_ratios=(2, 2),
            num_classes=5,
        ),
        DaVit(depths=(1, 1), embed_dims=(16, 32), num_heads=(1, 2), num_classes=5),
    ]


def test_timm_classes_named_like_supported_attention_are_not_captured():
    # BEiT's and PVT v2's `Attention` and DaViT's `WindowAttention` are other computations:
    # they are matched by module path, not name, so they count as no attention module
    for model in _other_timm_attention():
        model.eval()
        name = type(model).__name__
        pattern = rf"{name} has no attention module.*timm\.layers\.attention"
        with pytest.raises(TaskcamError, match=pattern):
            capture_attention(model)
        with pytest.raises(TaskcamError, match=pattern):
            rollout(model, torch.rand(1, 3, 32, 32))
