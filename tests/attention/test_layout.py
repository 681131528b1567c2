"""The layout of ViT-style models: prefix tokens, pooling, attention modules, patch grid."""

from taskcam.attention import vit_layout

from .helpers import timm_vit, tv_vit


def test_layout_reads_prefix_tokens_and_grid():
    assert vit_layout(timm_vit(reg_tokens=3)).prefix == 4
    lay = vit_layout(timm_vit(class_token=False, global_pool="avg", patch_size=4))
    assert (lay.prefix, lay.pool, lay.grid((32, 32))) == (0, "avg", (8, 8))
    assert vit_layout(tv_vit()).attention[0] == "encoder.layers.encoder_layer_0.self_attention"
