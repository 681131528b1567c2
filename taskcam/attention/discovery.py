"""Finding a model's attention modules and recomputing their attention from their weights.

:func:`find_attention_modules` lists the attention modules taskcam can capture, each with its
*kind*: which recomputation fits it. The recomputation (:data:`RECOMPUTE`, one function per
kind) rebuilds a module's attention probabilities from its own weights and its input, so the
model's own forward (fused ``F.scaled_dot_product_attention`` in timm, ``need_weights=False``
in torchvision's ViT) is left untouched and its outputs stay bit-identical. Each recomputation
also returns how to turn the attention back into the module's output (values, merge,
norm/gate, projection); :class:`taskcam.attention.AttentionCapture` checks it against the
module's real output, so a variant whose forward differs from the one recomputed is refused
rather than misreported.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from taskcam.errors import TaskcamError

__all__ = [
    "GLOBAL_KINDS",
    "RECOMPUTE",
    "SEARCHED",
    "Recomputed",
    "find_attention_modules",
    "module_kind",
]

#: the attention module types taskcam can capture, for messages
SEARCHED = (
    "timm Attention (ViT, DeiT, ...: timm.layers.attention, timm.models.vision_transformer)",
    "timm EvaAttention / AttentionRope (EVA-02, DINOv3, RoPE ViTs: timm.models.eva, "
    "timm.layers.attention)",
    "timm WindowAttention (Swin, SwinV2: timm.models.swin_transformer, "
    "timm.models.swin_transformer_v2)",
    "torch.nn.MultiheadAttention (torchvision ViT)",
    "torchvision ShiftedWindowAttention / ShiftedWindowAttentionV2 (Swin, Swin V2)",
)


#: the timm attention classes whose forward the recomputation follows, by class name and the
#: modules that define them (timm moved ViT's ``Attention`` from ``timm.models.vision_transformer``
#: to ``timm.layers.attention``). Other timm classes of the same name (BEiT's, PVT v2's, DaViT's
#: ``WindowAttention``...) compute something else and are not attention taskcam can capture.
_TIMM_CLASSES = {
    "Attention": ("timm.layers.attention", "timm.models.vision_transformer"),
    "EvaAttention": ("timm.models.eva",),
    "AttentionRope": ("timm.layers.attention", "timm.models.eva"),
    "WindowAttention": ("timm.models.swin_transformer", "timm.models.swin_transformer_v2"),
}

#: timm's global attention classes: ViT's ``Attention``; EVA's (EVA-02, DINOv3, the RoPE ViTs)
#: ``EvaAttention`` and ``AttentionRope``, which add rotary embeddings, q/k/v biases, separate
#: projections and grouped key/value heads.
_TIMM_GLOBAL = ("Attention", "EvaAttention", "AttentionRope")


def _from_timm(cls: type, name: str) -> bool:
    """``cls`` is (or subclasses) the timm class ``name`` taskcam supports, by its module path."""
    return any(c.__name__ == name and c.__module__ in _TIMM_CLASSES[name] for c in cls.__mro__)


def module_kind(module: nn.Module) -> Optional[str]:
    """Which recomputation fits ``module``: ``timm``, ``mha``, ``timm-window``,
    ``timm-window-v2``, ``tv-window`` or ``None`` for a module that is not attention.

    Example:
        >>> module_kind(torch.nn.MultiheadAttention(8, 2)), module_kind(torch.nn.Linear(2, 2))
        ('mha', None)
    """
    cls = type(module)
    if isinstance(module, nn.MultiheadAttention):
        return "mha"
    if any(_from_timm(cls, n) for n in _TIMM_GLOBAL) and hasattr(module, "num_heads"):
        return "timm"
    if _from_timm(cls, "WindowAttention") and hasattr(module, "qkv"):
        return "timm-window-v2" if hasattr(module, "logit_scale") else "timm-window"
    if any(
        c.__module__.startswith("torchvision.") and c.__name__ == "ShiftedWindowAttention"
        for c in cls.__mro__
    ):
        return "tv-window"
    return None


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """The attention modules of ``model`` in registration order: ``(name, module, kind)``.

    Raises:
        TaskcamError: ``model`` has none; the message names the module types searched.

    Example:
        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64)
        >>> [(n, k) for n, _, k in find_attention_modules(vit)]
        [('encoder.layers.encoder_layer_0.self_attention', 'mha'), ('encoder.layers.encoder_layer_1.self_attention', 'mha')]
    """  # noqa: E501
    if not isinstance(model, nn.Module):
        raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
    found = [(n, m, k) for n, m in model.named_modules() for k in [module_kind(m)] if k]
    if not found:
        raise TaskcamError(
            f"{type(model).__name__} has no attention module taskcam can capture; searched "
            f"for {'; '.join(SEARCHED)}"
        )
    return found


# --------------------------------------------------------------------------------------------
# recomputation of each kind's attention


def _detached_call(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` with its parameters detached (no gradient reaches them)."""
    if not any(True for _ in module.parameters()):
        return module(*args)
    state = {n: p.detach() for n, p in module.named_parameters()}
    state.update(dict(module.named_buffers()))
    return torch.func.functional_call(module, state, args)


def _linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    bias = None if layer.bias is None else layer.bias.detach()
    return F.linear(x, layer.weight.detach(), bias)


def _mask_logits(logits: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Apply an SDPA-style mask: bool ``True`` takes part, float is added."""
    if mask is None:
        return logits
    if mask.dtype == torch.bool:
        return logits.masked_fill(~mask, float("-inf"))
    return logits + mask


def _causal(n: int, s: int, device: torch.device) -> torch.Tensor:
    return torch.ones(n, s, dtype=torch.bool, device=device).tril()


@dataclass
class Recomputed:
    """One call's attention and how to turn it back into the module's output.

    Attributes:
        attn: the attention probabilities ``Tensor[B', heads, N, N]`` (``B'``: images, or
            images × windows for window attention).
        finish: the module's own computation from attention to output (values, merge,
            norm/gate, projection; weights and values detached): ``finish(attn)`` is the
            module's output to float tolerance.
        windows: ``(rows, cols)`` of the window grid for window attention the recomputation
            can read it from (torchvision), else ``None``.
    """

    attn: torch.Tensor  # [B', heads, N, N] probabilities
    finish: Callable[[torch.Tensor], torch.Tensor]  # attention -> the module's output tensor
    windows: Optional[tuple[int, int]] = None  # (rows, cols) of windows for window attention


def _timm_qkv(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values ``[B, heads, N, d]`` of a timm attention (fused ``qkv`` with
    its own or EVA's separate biases, or separate projections with fewer key/value heads)."""
    b, n, _ = x.shape
    heads = module.num_heads
    if getattr(module, "qkv", None) is not None:
        qkv = _linear(x, module.qkv)
        if getattr(module, "q_bias", None) is not None:
            qkv = qkv + torch.cat((module.q_bias, module.k_bias, module.v_bias)).detach()
        q, k, v = qkv.reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        return q, k, v
    kv_heads = getattr(module, "num_kv_heads", None) or heads
    q = _linear(x, module.q_proj).reshape(b, n, heads, -1).transpose(1, 2)
    k = _linear(x, module.k_proj).reshape(b, n, kv_heads, -1).transpose(1, 2)
    v = _linear(x, module.v_proj).reshape(b, n, kv_heads, -1).transpose(1, 2)
    return q, k, v


def _rotate(t: torch.Tensor, rope: torch.Tensor, prefix: int, half: bool) -> torch.Tensor:
    """timm's rotary embedding on the patch tokens of ``t`` (prefix tokens are not rotated)."""
    from timm.layers import apply_rot_embed_cat

    patches = t[:, :, prefix:]
    # `half` is passed only where set: older timm releases lack the argument
    rotated = (
        apply_rot_embed_cat(patches, rope, half=True)
        if half
        else apply_rot_embed_cat(patches, rope)
    )
    return torch.cat([t[:, :, :prefix], rotated], dim=2)


def _timm_attention(module: nn.Module, args: tuple, kwargs: dict) -> Recomputed:
    sig = inspect.signature(type(module).forward).bind(module, *args, **kwargs).arguments
    x = sig["x"].detach()
    rope = sig.get("rope")
    attn_mask, is_causal = sig.get("attn_mask"), bool(sig.get("is_causal", False))
    b, n, _ = x.shape
    q, k, v = _timm_qkv(module, x)  # [B, heads, N, d]
    q, k = _detached_call(module.q_norm, q), _detached_call(module.k_norm, k)
    if rope is not None:
        prefix, half = module.num_prefix_tokens, bool(getattr(module, "rotate_half", False))
        rope = rope.detach()
        q, k = _rotate(q, rope, prefix, half).type_as(v), _rotate(k, rope, prefix, half).type_as(v)
    groups = q.shape[1] // k.shape[1]
    if groups > 1:  # grouped key/value heads: head h reads key/value head h // groups
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    logits = (q * module.scale) @ k.transpose(-2, -1)  # [B, heads, N, N]
    if is_causal:
        logits = _mask_logits(logits, _causal(n, n, x.device))
    logits = _mask_logits(logits, attn_mask)
    attn = logits.softmax(dim=-1)
    gate = getattr(module, "gate", None)
    gate_x = None if gate is None else _detached_call(gate, x).sigmoid()

    def finish(a: torch.Tensor) -> torch.Tensor:
        out = (a @ v).transpose(1, 2).reshape(b, n, -1)
        out = _detached_call(module.norm, out) if hasattr(module, "norm") else out
        if gate_x is not None:
            out = out * gate_x
        return _linear(out, module.proj)

    return Recomputed(attn, finish)


_MHA_SIG = inspect.signature(nn.MultiheadAttention.forward)


def _mha(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> Recomputed:
    sig = _MHA_SIG.bind(module, *args, **kwargs).arguments
    if module.bias_k is not None or module.add_zero_attn:
        raise TaskcamError(
            "MultiheadAttention with add_bias_kv or add_zero_attn is not supported by "
            "attention capture"
        )
    query, key, value = (sig[k].detach() for k in ("query", "key", "value"))
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query[:, None], key[:, None], value[:, None]
    if module.batch_first and not unbatched:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, b, e = query.shape  # [N, B, E] from here on
    s = key.shape[0]
    heads = module.num_heads
    d = e // heads
    w = module.in_proj_weight
    bias = module.in_proj_bias
    if module._qkv_same_embed_dim:
        wq, wk, wv = w.detach().chunk(3)
    else:
        wq, wk, wv = (
            module.q_proj_weight.detach(),
            module.k_proj_weight.detach(),
            module.v_proj_weight.detach(),
        )
    bq = bk = bv = None
    if bias is not None:
        bq, bk, bv = bias.detach().chunk(3)

    def split(t: torch.Tensor, length: int) -> torch.Tensor:  # [L, B, E] -> [B, heads, L, d]
        return t.reshape(length, b, heads, d).permute(1, 2, 0, 3)

    q = split(F.linear(query, wq, bq), n)
    k = split(F.linear(key, wk, bk), s)
    v = split(F.linear(value, wv, bv), s)
    logits = (q * d**-0.5) @ k.transpose(-2, -1)  # [B, heads, N, S]
    attn_mask = sig.get("attn_mask")
    if sig.get("is_causal", False) and attn_mask is None:
        logits = _mask_logits(logits, _causal(n, s, query.device))
    if attn_mask is not None:
        if attn_mask.dim() == 3:
            attn_mask = attn_mask.reshape(b, heads, n, s)
        # nn.MultiheadAttention's bool masks mark what must NOT be attended
        logits = (
            logits.masked_fill(attn_mask, float("-inf"))
            if attn_mask.dtype == torch.bool
            else logits + attn_mask
        )
    padding = sig.get("key_padding_mask")
    if padding is not None:
        pad = padding[:, None, None, :]
        logits = logits.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else logits + pad
    attn = logits.softmax(dim=-1)

    def finish(a: torch.Tensor) -> torch.Tensor:
        out = (a @ v).permute(2, 0, 1, 3).reshape(n, b, e)  # [N, B, E]
        out = _linear(out, module.out_proj)
        if unbatched:
            return out[:, 0]
        return out.transpose(0, 1) if module.batch_first else out

    return Recomputed(attn, finish)


def _timm_window(module: nn.Module, args: tuple, kwargs: dict) -> Recomputed:
    sig = inspect.signature(type(module).forward).bind(module, *args, **kwargs).arguments
    x, mask = sig["x"].detach(), sig.get("mask")
    bw, n, c = x.shape
    heads = module.num_heads
    qkv = _linear(x, module.qkv).reshape(bw, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    logits = (q * module.scale) @ k.transpose(-2, -1) + module._get_rel_pos_bias().detach()
    if mask is not None:
        nw = mask.shape[0]
        logits = logits.view(-1, nw, heads, n, n) + mask[None, :, None]
        logits = logits.view(-1, heads, n, n)
    attn = logits.softmax(dim=-1)

    def finish(a: torch.Tensor) -> torch.Tensor:
        return _linear((a @ v).transpose(1, 2).reshape(bw, n, -1), module.proj)

    return Recomputed(attn, finish)


def _tv_window(module: nn.Module, args: tuple, kwargs: dict) -> Recomputed:
    """torchvision's ``shifted_window_attention`` up to its softmax, and back."""
    (x,) = args if args else (kwargs["x"],)
    x = x.detach()
    b, h, w, c = x.shape
    ws = list(module.window_size)
    pad_r, pad_b = (ws[1] - w % ws[1]) % ws[1], (ws[0] - h % ws[0]) % ws[0]
    xp = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    ph, pw = xp.shape[1:3]
    shift = list(module.shift_size)
    if ws[0] >= ph:
        shift[0] = 0
    if ws[1] >= pw:
        shift[1] = 0
    if sum(shift) > 0:
        xp = torch.roll(xp, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    rows, cols = ph // ws[0], pw // ws[1]
    nw = rows * cols
    xw = xp.view(b, rows, ws[0], cols, ws[1], c).permute(0, 1, 3, 2, 4, 5)
    xw = xw.reshape(b * nw, ws[0] * ws[1], c)
    heads = module.num_heads
    logit_scale = getattr(module, "logit_scale", None)
    qkv_bias = None if module.qkv.bias is None else module.qkv.bias.detach()
    if logit_scale is not None and qkv_bias is not None:
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length : 2 * length] = 0
    qkv = F.linear(xw, module.qkv.weight.detach(), qkv_bias)
    qkv = qkv.reshape(xw.shape[0], xw.shape[1], 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    if logit_scale is not None:
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        logits = logits * torch.clamp(logit_scale.detach(), max=math.log(100.0)).exp()
    else:
        logits = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    logits = logits + module.get_relative_position_bias().detach()
    n = xw.shape[1]
    if sum(shift) > 0:
        region = x.new_zeros((ph, pw))
        h_slices = ((0, -ws[0]), (-ws[0], -shift[0]), (-shift[0], None))
        w_slices = ((0, -ws[1]), (-ws[1], -shift[1]), (-shift[1], None))
        count = 0
        for hs in h_slices:
            for wsl in w_slices:
                region[hs[0] : hs[1], wsl[0] : wsl[1]] = count
                count += 1
        region = region.view(rows, ws[0], cols, ws[1]).permute(0, 2, 1, 3).reshape(nw, n)
        mask = region[:, None] - region[:, :, None]
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        logits = (logits.view(b, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    attn = logits.softmax(dim=-1)

    def finish(a: torch.Tensor) -> torch.Tensor:
        out = (a @ v).transpose(1, 2).reshape(b * nw, n, c)
        out = _linear(out, module.proj)
        out = out.view(b, rows, cols, ws[0], ws[1], c).permute(0, 1, 3, 2, 4, 5)
        out = out.reshape(b, ph, pw, c)
        if sum(shift) > 0:
            out = torch.roll(out, shifts=(shift[0], shift[1]), dims=(1, 2))
        return out[:, :h, :w, :].contiguous()

    return Recomputed(attn, finish, windows=(rows, cols))


#: the kinds of global attention (every token attends to every token), as opposed to windows
GLOBAL_KINDS = ("timm", "mha")

#: kind -> its recomputation ``(module, args, kwargs) -> Recomputed`` from a forward hook's
#: view of one call. ``timm-window-v2`` has none: timm runs it unfused, and its softmax
#: module's output is the attention.
RECOMPUTE: dict[str, Callable[[Any, tuple, dict], Recomputed]] = {
    "timm": _timm_attention,
    "mha": _mha,
    "timm-window": _timm_window,
    "tv-window": _tv_window,
}
