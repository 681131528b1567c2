"""Attention capture with fused kernels: equal to the unfused attention, outputs unchanged."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from torch.overrides import TorchFunctionMode
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformerBlockV2,
)

from taskcam.adapters.classification import ClassTarget
from taskcam.attention import capture_attention, grad_rollout, legrad, rollout, vit_layout
from taskcam.errors import TaskcamError

from .helpers import model_state, timm_vit, tv_vit, unfused_timm_reference

TIMM_CONFIGS = {
    "cls": {},
    "cls+registers": {"reg_tokens": 2},
    "no-cls-avg": {"class_token": False, "global_pool": "avg"},
}


@pytest.mark.parametrize("config", list(TIMM_CONFIGS))
def test_timm_fused_capture_equals_unfused_attention_and_leaves_the_model_as_it_was(config):
    vit = timm_vit(**TIMM_CONFIGS[config])
    assert all(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = vit(x)
    before = model_state(vit)
    with capture_attention(vit) as cap, torch.no_grad():
        captured_out = vit(x)
    assert torch.equal(captured_out, plain)  # bit-identical
    assert model_state(vit) == before
    with torch.no_grad():
        _, refs = unfused_timm_reference(vit, x)
    n = vit.num_prefix_tokens + 16
    assert set(cap.attentions) == {"blocks.0.attn", "blocks.1.attn"}
    for name, attn in cap.attentions.items():
        assert attn.shape == (3, 2, n, n)
        assert torch.allclose(attn, refs[name], rtol=1e-5, atol=1e-6), name
        assert torch.allclose(attn.sum(-1), torch.ones(3, 2, n))


def test_torchvision_capture_equals_need_weights_attention_and_keeps_outputs():
    vit = tv_vit()
    x = torch.randn(2, 3, 64, 64)
    inputs = {}
    handles = [
        layer.self_attention.register_forward_pre_hook(
            lambda _m, args, n=name: inputs.__setitem__(n, args[0])
        )
        for name, layer in vit.encoder.layers.named_children()
    ]
    with torch.no_grad():
        plain = vit(x)
    for h in handles:
        h.remove()
    before = model_state(vit)
    with capture_attention(vit) as cap, torch.no_grad():
        out = vit(x)
    assert torch.equal(out, plain)
    assert model_state(vit) == before
    for name, layer in vit.encoder.layers.named_children():
        q = inputs[name]
        with torch.no_grad():
            _, ref = layer.self_attention(q, q, q, need_weights=True, average_attn_weights=False)
        got = cap.attentions[f"encoder.layers.{name}.self_attention"]
        assert got.shape == (2, 2, 17, 17)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), name


def test_gradients_wrt_captured_attention_equal_the_unfused_models_and_outputs_stay_equal():
    vit = timm_vit(reg_tokens=1)
    for p in vit.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = vit(x)
    before = model_state(vit)
    with capture_attention(vit, grad=True) as cap, torch.enable_grad():
        out = vit(x)
        leaves = [r.leaf for r in cap.records]
        grads = torch.autograd.grad(out[:, 2].sum(), leaves)
    assert torch.equal(out.detach(), plain)  # the zero term changes nothing
    assert model_state(vit) == before
    # reference: the unfused model's own attention tensors, differentiated directly
    with torch.enable_grad():
        ref_out, refs = unfused_timm_reference(vit, x.requires_grad_(True))
        ref_grads = torch.autograd.grad(ref_out[:, 2].sum(), [refs[r.name] for r in cap.records])
    for g, ref in zip(grads, ref_grads):
        assert g.abs().max() > 0
        assert torch.allclose(g, ref, rtol=1e-4, atol=1e-6)


def _timm_rope_vit(name, **kw):
    """A small timm ``Eva``-family model with random weights: rotary embeddings (EVA-02, DINOv3,
    the RoPE ViTs). Layer scale 1 and a non-zero head, so gradients are not ~1e-11."""
    import timm

    torch.manual_seed(0)
    args = dict(depth=2, embed_dim=64, num_heads=4, img_size=64, num_classes=5)
    args.update(kw)
    model = timm.create_model(name, pretrained=False, **args).eval()
    torch.nn.init.normal_(model.head.weight, std=0.2)
    with torch.no_grad():
        for block in model.blocks:  # layer scale starts at 1e-5 in some of these models
            for gamma in (getattr(block, "gamma_1", None), getattr(block, "gamma_2", None)):
                if gamma is not None:
                    gamma.fill_(1.0)
    return model


ROPE_CONFIGS = {
    # class token + 4 registers, rotate-half rotary embeddings, q/k/v biases (EvaAttention)
    "dinov3": ("vit_base_patch16_dinov3_qkvb", {"global_pool": "token"}),
    # EVA-02: rotary embeddings, SwiGLU, sub-LN scale norm, average pooling
    "eva02": ("eva02_tiny_patch14_224", {"img_size": 56}),
    # a different rotary embedding per block (AttentionRope)
    "rope-mixed": ("vit_base_patch16_rope_mixed_224", {}),
    # separate projections with 2 key/value heads for 4 query heads (AttentionRope)
    "rope-gqa": ("vit_base_patch16_rope_224", {"qkv_fused": False, "num_kv_heads": 2}),
    # 4 registers, no class token, average pooling
    "rope-reg-gap": ("vit_betwixt_patch16_rope_reg4_gap_256", {}),
}


@pytest.mark.parametrize("config", list(ROPE_CONFIGS))
def test_timm_rotary_attention_capture_equals_unfused_with_gradients(config):
    name, kw = ROPE_CONFIGS[config]
    vit = _timm_rope_vit(name, **kw)
    kinds = {type(m.attn).__name__ for m in vit.blocks}
    assert kinds <= {"EvaAttention", "AttentionRope"} and all(m.attn.fused_attn for m in vit.blocks)
    x = torch.randn(2, 3, *vit.patch_embed.img_size)
    with torch.no_grad():
        plain = vit(x)
    before = model_state(vit)
    with capture_attention(vit, grad=True) as cap, torch.enable_grad():
        out = vit(x)
        grads = torch.autograd.grad(out[:, 2].sum(), [r.leaf for r in cap.records])
    assert torch.equal(out.detach(), plain) and model_state(vit) == before
    with torch.enable_grad():
        ref_out, refs = unfused_timm_reference(vit, x.clone().requires_grad_(True))
        ref_grads = torch.autograd.grad(ref_out[:, 2].sum(), [refs[r.name] for r in cap.records])
    n = vit.num_prefix_tokens + 16  # a 4x4 grid
    assert [r.name for r in cap.records] == ["blocks.0.attn", "blocks.1.attn"]
    for rec, g, ref_g in zip(cap.records, grads, ref_grads):
        assert rec.attn.shape == (2, 4, n, n)
        assert torch.allclose(rec.attn, refs[rec.name], rtol=1e-5, atol=1e-6), rec.name
        assert g.abs().max() > 0 and torch.allclose(g, ref_g, rtol=1e-4, atol=1e-6), rec.name
    layout = vit_layout(vit)
    assert layout.prefix == vit.num_prefix_tokens and layout.grid(x.shape[-2:]) == (4, 4)
    for method in (rollout, grad_rollout, legrad):
        exp = method(vit, x, [ClassTarget(1), ClassTarget(4)])
        assert exp.maps.shape == (2, 2, *x.shape[-2:]) and torch.isfinite(exp.maps).all()
        assert exp.maps.min() >= 0 and exp.maps.max() <= 1 and not exp.empty.any(), method
    assert model_state(vit) == before


class _SoftmaxRecorder(TorchFunctionMode):
    """Records every F.softmax output: torchvision's Swin computes its attention with it."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is F.softmax:
            self.outputs.append(out)
        return out


@pytest.mark.parametrize("v2", [False, True])
def test_torchvision_swin_window_attention_per_stage(v2):
    torch.manual_seed(0)
    extra = {"block": SwinTransformerBlockV2, "downsample_layer": PatchMergingV2} if v2 else {}
    swin = torchvision.models.SwinTransformer(
        patch_size=[4, 4],
        embed_dim=16,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=[4, 4],
        num_classes=3,
        **extra,
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), _SoftmaxRecorder() as rec:
        plain = swin(x)
    before = model_state(swin)
    with capture_attention(swin) as cap, torch.no_grad():
        out = swin(x)
    assert torch.equal(out, plain) and model_state(swin) == before
    stages = cap.by_stage()
    assert list(stages) == ["features.1", "features.3"]
    # stage 1: 8x8 tokens in 4x4 windows -> 2x2 windows; stage 2: 4x4 tokens, one window
    assert [r.windows for r in stages["features.1"]] == [(2, 2), (2, 2)]
    assert stages["features.1"][1].attn.shape == (2, 4, 2, 16, 16)
    assert stages["features.3"][0].attn.shape == (2, 1, 4, 16, 16)
    for got, ref in zip(cap.records, rec.outputs[: len(cap.records)]):
        assert torch.allclose(got.attn.flatten(0, 1), ref, rtol=1e-5, atol=1e-6), got.name


#: a two-stage timm Swin / SwinV2 of 4x4 windows, small enough for the CPU
_SWIN = dict(
    patch_size=4, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(2, 4), num_classes=3
)


@pytest.mark.parametrize("v2", [False, True])
def test_timm_swin_fused_window_attention_equals_unfused(v2):
    torch.manual_seed(0)
    arch = SwinTransformerV2 if v2 else SwinTransformer  # V2 is unfused: its softmax is hooked
    swin = arch(img_size=32, **_SWIN).eval()
    for m in swin.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = swin(x)
    with capture_attention(swin) as cap, torch.no_grad():
        out = swin(x)
    assert torch.equal(out, plain)
    with torch.no_grad():
        _, refs = unfused_timm_reference(swin, x)
    assert [r.name for r in cap.by_stage()["layers.0"]] == [
        "layers.0.blocks.0.attn",
        "layers.0.blocks.1.attn",
    ]
    for r in cap.records:
        assert r.attn.shape[:2] == (2, r.windows[0] * r.windows[1])
        assert torch.allclose(r.attn.flatten(0, 1), refs[r.name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("v2", [False, True])
def test_timm_swin_window_grid_follows_the_input_size_it_runs_at(v2):
    # built for 64x64, run at 64x96 (strict_img_size=False): the 16x24 first stage holds 4x6
    # windows of 4x4, not the 4x4 windows its input_resolution still says
    arch = SwinTransformerV2 if v2 else SwinTransformer
    kwargs = dict(_SWIN, strict_img_size=False)
    torch.manual_seed(0)
    swin = arch(img_size=64, **kwargs).eval()
    native = arch(img_size=(64, 96), **kwargs).eval()  # built at the size: the reference
    native.load_state_dict(swin.state_dict())
    x = torch.randn(2, 3, 64, 96)
    caps = []
    for model in (swin, native):
        with capture_attention(model) as cap, torch.no_grad():
            model(x)
        caps.append(cap)
    windows = {"layers.0": (4, 6), "layers.1": (2, 3)}
    for r, ref in zip(*(c.records for c in caps)):
        assert r.windows == ref.windows == windows[r.stage]
        assert r.attn.shape == (2, r.windows[0] * r.windows[1], r.attn.shape[2], 16, 16)
        torch.testing.assert_close(r.attn, ref.attn)
    # and another size: the grid is read at each call
    with capture_attention(swin) as cap, torch.no_grad():
        swin(torch.randn(1, 3, 32, 64))
    assert [r.windows for r in cap.records[::2]] == [(2, 4), (1, 2)]


def test_capture_takes_one_module_name_as_a_string():
    vit = timm_vit()
    with capture_attention(vit, modules="blocks.1.attn") as cap, torch.no_grad():
        vit(torch.rand(1, 3, 32, 32))
    assert [r.name for r in cap.records] == ["blocks.1.attn"]
    with pytest.raises(TaskcamError, match=r"\['blocks\.0'\] are not attention modules"):
        capture_attention(vit, modules="blocks.0")


def test_capture_in_training_mode_names_the_dropout():
    vit = timm_vit(attn_drop_rate=0.5).train()
    before = model_state(vit)
    pattern = r"blocks\.0\.attn.*training mode with dropout \(attn_drop p=0\.5\)"
    with pytest.raises(TaskcamError, match=pattern), capture_attention(vit, eval_mode=False):
        vit(torch.rand(2, 3, 32, 32))
    assert model_state(vit) == before
    with capture_attention(vit) as cap:  # eval mode for the duration: no dropout
        vit(torch.rand(2, 3, 32, 32))
    assert len(cap.records) == 2 and vit.training
