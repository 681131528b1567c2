"""Attention capture with fused kernels, rollout / grad-rollout / LeGrad, the attention report."""

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.models.swin_transformer import SwinTransformer
from timm.models.swin_transformer_v2 import SwinTransformerV2
from timm.models.vision_transformer import VisionTransformer
from torch.overrides import TorchFunctionMode
from torchvision.models.swin_transformer import (
    PatchMergingV2,
    SwinTransformerBlockV2,
)

from taskcam.adapters.classification import ClassTarget
from taskcam.adapters.transformers import (
    AttentionExplainer,
    attention_report,
    capture_attention,
    grad_rollout,
    head_statistics,
    legrad,
    rollout,
    vit_layout,
)
from taskcam.cli import main
from taskcam.errors import TaskcamError


def _state(model):
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


def _timm_vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, num_classes=5)
    args.update(kw)
    return VisionTransformer(**args).eval()


def _tv_vit():
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


TIMM_CONFIGS = {
    "cls": {},
    "cls+registers": {"reg_tokens": 2},
    "no-cls-avg": {"class_token": False, "global_pool": "avg"},
}


def _unfused_timm_reference(vit, x):
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


@pytest.mark.parametrize("config", list(TIMM_CONFIGS))
def test_timm_fused_capture_equals_unfused_attention_and_leaves_the_model_as_it_was(config):
    vit = _timm_vit(**TIMM_CONFIGS[config])
    assert all(m.fused_attn for m in vit.modules() if hasattr(m, "fused_attn"))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain = vit(x)
    before = _state(vit)
    with capture_attention(vit) as cap, torch.no_grad():
        captured_out = vit(x)
    assert torch.equal(captured_out, plain)  # bit-identical
    assert _state(vit) == before
    with torch.no_grad():
        _, refs = _unfused_timm_reference(vit, x)
    n = vit.num_prefix_tokens + 16
    assert set(cap.attentions) == {"blocks.0.attn", "blocks.1.attn"}
    for name, attn in cap.attentions.items():
        assert attn.shape == (3, 2, n, n)
        assert torch.allclose(attn, refs[name], rtol=1e-5, atol=1e-6), name
        assert torch.allclose(attn.sum(-1), torch.ones(3, 2, n))


def test_torchvision_capture_equals_need_weights_attention_and_keeps_outputs():
    vit = _tv_vit()
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
    before = _state(vit)
    with capture_attention(vit) as cap, torch.no_grad():
        out = vit(x)
    assert torch.equal(out, plain)
    assert _state(vit) == before
    for name, layer in vit.encoder.layers.named_children():
        q = inputs[name]
        with torch.no_grad():
            _, ref = layer.self_attention(q, q, q, need_weights=True, average_attn_weights=False)
        got = cap.attentions[f"encoder.layers.{name}.self_attention"]
        assert got.shape == (2, 2, 17, 17)
        assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), name


def test_gradients_wrt_captured_attention_equal_the_unfused_models_and_outputs_stay_equal():
    vit = _timm_vit(reg_tokens=1)
    for p in vit.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        plain = vit(x)
    before = _state(vit)
    with capture_attention(vit, grad=True) as cap, torch.enable_grad():
        out = vit(x)
        leaves = [r.leaf for r in cap.records]
        grads = torch.autograd.grad(out[:, 2].sum(), leaves)
    assert torch.equal(out.detach(), plain)  # the zero term changes nothing
    assert _state(vit) == before
    # reference: the unfused model's own attention tensors, differentiated directly
    with torch.enable_grad():
        ref_out, refs = _unfused_timm_reference(vit, x.requires_grad_(True))
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
    before = _state(vit)
    with capture_attention(vit, grad=True) as cap, torch.enable_grad():
        out = vit(x)
        grads = torch.autograd.grad(out[:, 2].sum(), [r.leaf for r in cap.records])
    assert torch.equal(out.detach(), plain) and _state(vit) == before
    with torch.enable_grad():
        ref_out, refs = _unfused_timm_reference(vit, x.clone().requires_grad_(True))
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
    assert _state(vit) == before


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
    before = _state(swin)
    with capture_attention(swin) as cap, torch.no_grad():
        out = swin(x)
    assert torch.equal(out, plain) and _state(swin) == before
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
        _, refs = _unfused_timm_reference(swin, x)
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


MODELS = {
    "timm-cls": lambda: _timm_vit(),
    "timm-registers": lambda: _timm_vit(reg_tokens=4, patch_size=16),
    "timm-avg": lambda: _timm_vit(class_token=False, global_pool="avg"),
    "torchvision": _tv_vit,
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("method", [rollout, grad_rollout, legrad])
def test_attention_explanations_are_maps_in_unit_range(name, method):
    model = MODELS[name]()
    size = 64 if name == "torchvision" else 32
    x = torch.randn(2, 3, size, size)
    before = _state(model)
    exp = method(model, x, [ClassTarget(1), ClassTarget(4)])
    assert _state(model) == before
    assert exp.maps.shape == (2, 2, size, size)
    assert torch.isfinite(exp.maps).all()
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1
    assert not exp.empty.any()
    layout = vit_layout(model)
    assert exp.raw[exp.method].shape[-2:] == layout.grid((size, size))
    if method is not rollout:  # class-specific: the two targets' maps differ
        assert not torch.allclose(exp.maps[:, 0], exp.maps[:, 1])


def test_layout_reads_prefix_tokens_and_grid():
    assert vit_layout(_timm_vit(reg_tokens=3)).prefix == 4
    lay = vit_layout(_timm_vit(class_token=False, global_pool="avg", patch_size=4))
    assert (lay.prefix, lay.pool, lay.grid((32, 32))) == (0, "avg", (8, 8))
    assert vit_layout(_tv_vit()).attention[0] == "encoder.layers.encoder_layer_0.self_attention"


def test_rollout_of_identity_attention_is_the_query_itself():
    """With q = k = 0 every head is uniform; a patch query's rollout still peaks on itself
    (the identity added for the residual path) and is otherwise flat."""
    vit = _timm_vit()
    for blk in vit.blocks:
        with torch.no_grad():
            blk.attn.qkv.weight[:128].zero_()
            blk.attn.qkv.bias[:128].zero_()
    exp = rollout(vit, torch.randn(1, 3, 32, 32), query=(1, 2))
    raw = exp.raw["rollout"][0, 0]
    assert raw.argmax() == 1 * 4 + 2
    others = raw.flatten()[torch.arange(16) != 6]
    assert torch.allclose(others, others[0].expand_as(others))


def test_head_statistics_flags_uniform_and_prefix_only_heads():
    n = 1 + 9
    uniform = torch.full((n, n), 1 / n)
    prefix = torch.zeros(n, n)
    prefix[:, 0] = 1.0
    local = torch.zeros(n, n)
    local[torch.arange(n), torch.arange(n)] = 1.0  # each token attends to itself
    stats = head_statistics(torch.stack([uniform, prefix, local]), (3, 3), 1, query=5)
    assert stats[0]["flags"] == ["uniform"]
    assert stats[0]["normalized_entropy"] == pytest.approx(1.0)
    assert stats[1]["flags"] == ["prefix-only"] and stats[1]["prefix_mass"] == 1.0
    assert stats[2]["flags"] == [] and stats[2]["mean_distance"] == 0.0
    assert stats[2]["query_distance"] == 0.0 and stats[2]["entropy"] == pytest.approx(0.0)


def test_attention_command_writes_the_grid_png_and_json(tmp_path):
    import cv2
    import numpy as np

    from taskcam.data.shapes import make_sample

    sample = make_sample(0, seed=123, size=64, max_objects=1)
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "att"
    code = main(["attention", str(image), "--model", "zoo:shapes-vit", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "attention.json").read_text())
    assert summary["grid"] == [8, 8] and summary["prefix_tokens"] == 5  # class token, 4 registers
    assert summary["query"] == "cls"
    assert len(summary["layers"]) == 4 and len(summary["layers"][0]["heads"]) == 4
    for layer in summary["layers"]:
        for head in layer["heads"]:
            assert 0 <= head["normalized_entropy"] <= 1 and 0 <= head["prefix_mass"] <= 1
            assert 0 <= head["mean_distance"] <= 8 * 2**0.5
    grid = cv2.imread(str(out / summary["files"]["grid"]))
    assert grid is not None and grid.shape[0] > 4 * 64 and grid.shape[1] > 5 * 64
    assert cv2.imread(str(out / summary["files"]["maps"])) is not None
    # a patch query on a timm model with random weights
    out2 = tmp_path / "att2"
    code = main(
        [
            "attention",
            str(image),
            "--model",
            "timm:test_vit",  # timm's own tiny test ViT: 160 px, 16 px patches, 6 blocks
            "--weights",
            "none",
            "--query",
            "2,3",
            "--out",
            str(out2),
        ]
    )
    assert code == 0
    summary = json.loads((out2 / "attention.json").read_text())
    assert summary["query"] == [2, 3] and summary["grid"] == [10, 10]
    assert len(summary["layers"]) == 6
    assert all(h["query_distance"] is not None for h in summary["layers"][0]["heads"])
    assert np.isfinite(summary["layers"][-1]["heads"][0]["entropy"])


def test_registers_without_a_class_token_are_not_queried_as_cls(tmp_path):
    import numpy as np

    vit = _timm_vit(class_token=False, reg_tokens=4, global_pool="avg")
    assert vit_layout(vit).prefix == 4 and not vit_layout(vit).class_token
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(TaskcamError, match=r"no class token \(its 4 prefix.*registers\); pass a"):
        attention_report(vit, image, tmp_path, size=(32, 32))
    # rollout's "cls" on an average-pooled model is the mean over patch queries, not register 0
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(rollout(vit, x).maps, rollout(vit, x, query="mean").maps)
    summary = attention_report(vit, image, tmp_path, size=(32, 32), query=(1, 2))
    assert summary["query"] == [1, 2]


def test_report_queries_a_prefix_token_by_its_index(tmp_path):
    import numpy as np

    vit = _timm_vit(reg_tokens=2)  # class token, 2 registers, 4x4 patches
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    summary = attention_report(vit, image, tmp_path, size=(32, 32), query=2)
    assert summary["query"] == 2  # the second register, not a patch
    x = _prepare_image(image)
    with capture_attention(vit) as cap, torch.no_grad():
        vit(x)
    row = cap.attentions["blocks.0.attn"][0, :, 2]  # [heads, N]: register 1's row
    heads = summary["layers"][0]["heads"]
    assert [h["prefix_mass"] for h in heads] == pytest.approx(row[:, :3].sum(-1).tolist())
    assert all(h["query_distance"] is None for h in heads)
    assert attention_report(vit, image, tmp_path, size=(32, 32), query=0)["query"] == "cls"
    assert attention_report(vit, image, tmp_path, size=(32, 32), query=3 + 6)["query"] == [1, 2]
    with pytest.raises(TaskcamError, match=r"query: token 19 outside 0\.\.18"):
        attention_report(vit, image, tmp_path, size=(32, 32), query=19)


@pytest.mark.parametrize("last_layers", [0, -1, 3, 1.5])
def test_legrad_last_layers_outside_the_blocks_is_named(last_layers):
    vit = _timm_vit()  # 2 blocks
    with pytest.raises(TaskcamError, match=rf"last_layers: .*1\.\.2 .*got {last_layers}"):
        legrad(vit, torch.rand(1, 3, 32, 32), last_layers=last_layers)


def test_legrad_last_layers_sums_the_last_blocks_only():
    vit, x = _timm_vit(), torch.rand(1, 3, 32, 32)
    assert torch.equal(legrad(vit, x, last_layers=2).maps, legrad(vit, x).maps)
    assert legrad(vit, x, last_layers=1).maps.shape == (1, 1, 32, 32)


def test_capture_takes_one_module_name_as_a_string():
    vit = _timm_vit()
    with capture_attention(vit, modules="blocks.1.attn") as cap, torch.no_grad():
        vit(torch.rand(1, 3, 32, 32))
    assert [r.name for r in cap.records] == ["blocks.1.attn"]
    with pytest.raises(TaskcamError, match=r"\['blocks\.0'\] are not attention modules"):
        capture_attention(vit, modules="blocks.0")


def test_capture_in_training_mode_names_the_dropout():
    vit = _timm_vit(attn_drop_rate=0.5).train()
    before = _state(vit)
    pattern = r"blocks\.0\.attn.*training mode with dropout \(attn_drop p=0\.5\)"
    with pytest.raises(TaskcamError, match=pattern), capture_attention(vit, eval_mode=False):
        vit(torch.rand(2, 3, 32, 32))
    assert _state(vit) == before
    with capture_attention(vit) as cap:  # eval mode for the duration: no dropout
        vit(torch.rand(2, 3, 32, 32))
    assert len(cap.records) == 2 and vit.training


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"uniform_threshold": 1.5}, "uniform_threshold"),
        ({"uniform_threshold": -0.1}, "uniform_threshold"),
        ({"prefix_threshold": 2}, "prefix_threshold"),
        ({"prefix_threshold": float("nan")}, "prefix_threshold"),
    ],
)
def test_report_thresholds_must_be_fractions(tmp_path, kwargs, name):
    import numpy as np

    image = np.zeros((32, 32, 3), np.uint8)
    flag = "--" + name.replace("_", "-")
    pattern = rf"{name} \({flag}\): expected a fraction in \[0, 1\], got"
    with pytest.raises(TaskcamError, match=pattern):
        attention_report(_timm_vit(), image, tmp_path, size=(32, 32), **kwargs)
    with pytest.raises(TaskcamError, match=pattern):
        head_statistics(torch.full((1, 5, 5), 0.2), (2, 2), 1, **kwargs)
    assert not list(tmp_path.iterdir())  # refused before anything is written


@pytest.mark.parametrize("method", [rollout, grad_rollout, legrad])
def test_padded_patch_grid_is_rounded_up_and_cropped_not_stretched(method):
    from taskcam.engine import normalize_maps

    # 36x44 pads to 40x48: a 5x6 grid whose last row and column are half padding
    vit = _timm_vit(dynamic_img_size=True, dynamic_img_pad=True)
    assert vit_layout(vit).grid((36, 44)) == (5, 6)
    exp = method(vit, torch.rand(1, 3, 36, 44), [ClassTarget(1)])
    (raw,) = exp.raw.values()
    assert raw.shape == (1, 1, 5, 6) and exp.maps.shape == (1, 1, 36, 44)
    covered = F.interpolate(raw, size=(40, 48), mode="bilinear", align_corners=False)
    expected, _ = normalize_maps(covered[..., :36, :44].clamp(min=0))
    torch.testing.assert_close(exp.maps, expected)
    stretched, _ = normalize_maps(
        F.interpolate(raw, size=(36, 44), mode="bilinear", align_corners=False).clamp(min=0)
    )
    assert not torch.allclose(exp.maps, stretched, atol=1e-3)


def _prepare_image(image):
    from taskcam.io import to_tensor

    return to_tensor(image, (32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_errors_name_what_was_wrong(tmp_path, capsys):
    resnet = torchvision.models.resnet18(weights=None)
    with pytest.raises(TaskcamError, match="no attention module.*MultiheadAttention"):
        capture_attention(resnet)
    with pytest.raises(TaskcamError, match="no attention module"):
        rollout(resnet, torch.rand(1, 3, 32, 32))
    swin = SwinTransformer(
        img_size=32, patch_size=4, window_size=4, embed_dim=16, depths=(2,), num_heads=(2,)
    )
    with pytest.raises(TaskcamError, match="not a ViT-style model"):
        legrad(swin, torch.rand(1, 3, 32, 32))
    vit = _timm_vit()
    with pytest.raises(TaskcamError, match=r"patch \(4, 0\) is outside the 4x4 grid"):
        rollout(vit, torch.rand(1, 3, 32, 32), query=(4, 0))
    with pytest.raises(TaskcamError, match="unknown"):
        AttentionExplainer(vit, "attention-flow")
    with pytest.raises(TaskcamError, match="not attention modules"):
        capture_attention(vit, modules=["blocks.0.mlp"])
    image = tmp_path / "x.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    code = main(["attention", str(image), "--model", "torchvision:resnet18", "--weights", "none"])
    assert code == 2 and "searched for" in capsys.readouterr().err


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


@pytest.fixture(scope="module")
def shapes_vit_heldout():
    from taskcam.evaluate import heldout_classification
    from taskcam.zoo import build_zoo_model

    loaded = build_zoo_model("shapes-vit")
    images, labels, masks, _ = heldout_classification(100)
    mean = torch.tensor(loaded.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocess.std).view(1, 3, 1, 1)
    targets = [[ClassTarget(int(k))] for k in labels]
    return loaded.model, (images - mean) / std, targets, masks


@pytest.mark.parametrize(
    "method, options, floor",
    [
        # Measured on the shipped weights, 100 held-out images, 4 px tolerance (what
        # `taskcam eval --models shapes-vit` uses): rollout as Abnar & Zuidema define it
        # (mean over heads) 1.00 (0.78 before the model had registers); max over heads 0.99,
        # and with the weakest 90 % of each row's patch attention discarded 0.99;
        # grad-rollout 0.98; LeGrad 0.85. The floors sit under the measurements.
        (rollout, {}, 0.95),
        (rollout, {"head_fusion": "max"}, 0.95),
        (rollout, {"head_fusion": "max", "discard_ratio": 0.9}, 0.95),
        (grad_rollout, {}, 0.95),
        (legrad, {}, 0.8),
    ],
)
def test_shapes_vit_pointing_game(shapes_vit_heldout, method, options, floor):
    from taskcam.metrics import pointing_game

    model, x, targets, masks = shapes_vit_heldout
    maps = method(model, x, targets, **options).maps[:, 0]
    assert pointing_game(maps, masks, tolerance=4).float().mean() >= floor


def test_shapes_vit_gradcam_is_grad_cam_157s(shapes_vit_heldout):
    # Grad-CAM's 0.71 on shapes-vit (README) is the method's on this model, not taskcam's:
    # grad-cam 1.5.7 with its ViT recipe (prefix tokens dropped, tokens to the 8x8 grid) on
    # the same layer gives the same maps
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from taskcam import explain

    model, x, targets, _ = shapes_vit_heldout
    x, targets = x[:16], targets[:16]
    prefix = model.num_prefix_tokens

    def to_grid(t):
        return t[:, prefix:].reshape(t.shape[0], 8, 8, t.shape[2]).permute(0, 3, 1, 2)

    with GradCAM(model, [model.blocks[3].norm1], reshape_transform=to_grid) as cam:
        theirs = cam(x, [ClassifierOutputTarget(t[0].class_index) for t in targets])
    ours = explain(model, x, targets, "blocks.3.norm1", "gradcam").maps[:, 0]
    torch.testing.assert_close(ours, torch.from_numpy(theirs).float(), atol=1e-5, rtol=0)


def test_eval_scores_attention_methods_on_shapes_vit():
    from taskcam.evaluate import evaluate

    (row,) = evaluate(["shapes-vit"], ["grad-rollout"], n=2, sanity_images=1, progress=False)
    assert row.method == "grad-rollout" and row.images == 2
    assert 0.0 <= row.energy_pg <= 1.0 and row.median_s > 0
    assert -1.0 <= row.sanity <= 1.0
