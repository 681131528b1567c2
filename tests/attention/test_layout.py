"""The layout of ViT-style models: prefix tokens, pooling, attention modules, patch grid."""

from taskcam.attention import vit_layout

from .helpers import timm_vit, tv_vit


def test_layout_reads_prefix_tokens_and_grid():
    assert vit_layout(timm_vit(reg_tokens=3)).prefix == 4
    lay = vit_layout(timm_vit(class_token=False, global_pool="avg", patch_size=4))
    assert (lay.prefix, lay.pool, lay.grid((32, 32))) == (0, "avg", (8, 8))
    assert vit_layout(tv_vit()).attention[0] == "encoder.layers.encoder_layer_0.self_attention"


def test_the_grid_patch_and_prefix_come_from_the_shared_token_layout():
    from torch import nn

    from taskcam.reshape import token_layout

    padded = timm_vit(dynamic_img_size=True, dynamic_img_pad=True, reg_tokens=4)
    for model in (padded, timm_vit(), tv_vit()):
        lay = vit_layout(model)
        assert lay.tokens == token_layout(model)
        assert (lay.patch, lay.prefix, lay.pads) == (
            lay.tokens.patch,
            lay.tokens.prefix[0],
            lay.tokens.pads,
        )
        assert lay.grid((36, 44)) == lay.tokens.grid((36, 44))
    assert vit_layout(padded).grid((36, 44)) == (5, 6) and vit_layout(padded).prefix == 5
    wrapped = vit_layout(nn.Sequential(padded))  # the ViT inside a wrapper
    assert wrapped.vit is padded and wrapped.attention[0] == "0.blocks.0.attn"
