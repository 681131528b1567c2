"""Tiny seeded transformers and the checks the attention tests share (no test collected here)."""

import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer


def model_state(model):
    """Everything attention capture could leave behind on a model."""
    return [
        (
            name,
            m.training,
            dict(m._forward_hooks),
            dict(m._forward_pre_hooks),
            dict(m._backward_hooks),
            getattr(m, "fused_attn", None),
            "forward" in m.__dict__,
        )
        for name, m in model.named_modules()
    ] + [(n, p.requires_grad, p.grad) for n, p in model.named_parameters()]


def timm_vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)
    args.update(kw)
    return VisionTransformer(**args).eval()


def tv_vit():
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=64,
        patch_size=16,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        mlp_dim=128,
        num_classes=5,
    ).eval()
    torch.nn.init.normal_(vit.heads.head.weight, std=0.2)  # torchvision starts the head at 0
    return vit


def unfused_timm_reference(vit, x):
    """The attention timm itself computes with fused_attn off (its attn_drop input)."""
    refs, handles = {}, []
    flags = {m: m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn")}
    for name, m in vit.named_modules():
        if hasattr(m, "qkv") and hasattr(m, "attn_drop"):
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
            handles.append(
                m.attn_drop.register_forward_hook(lambda _m, _i, o, n=name: refs.__setitem__(n, o))
            )
    try:
        out = vit(x)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.fused_attn = flag
    return out, refs
