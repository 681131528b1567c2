"""Transformers: attention capture that survives fused kernels, and attention explanations.

Capture
    :func:`capture_attention` hooks every attention module of a model and *recomputes* its
    attention probabilities from the module's own weights and its input, so the model's own
    forward (fused ``F.scaled_dot_product_attention`` in timm, ``need_weights=False`` in
    torchvision's ViT) is left untouched and its outputs stay bit-identical. Each recomputation
    is checked against the module's real output (the recomputed attention, applied to the
    values and the output projection, must give the module's output to float tolerance), so a
    variant whose forward differs from the one recomputed is refused rather than misreported.

Gradients w.r.t. the attention (``grad=True``)
    The fused kernels never materialise the attention, so there is nothing to differentiate.
    Each module's output is replaced by ``out + (f(A) - f(A).detach())`` where ``A`` is the
    recomputed attention, made a leaf of the graph, and ``f`` the module's own computation from
    attention to output (values, merge, norm/gate, projection; weights and values detached).
    The added term is exactly zero, so the outputs are still bit-identical, the fused backward
    still carries every other gradient, and ``d target / d A`` is the true partial derivative
    of the target w.r.t. that layer's attention probabilities (to float tolerance: what the
    unfused model gives, as the tests check).

Explanations (ViT-style models: timm ``VisionTransformer`` and relatives, timm ``Eva`` (EVA-02,
DINOv3, the RoPE ViTs), torchvision ``VisionTransformer``)
    :func:`rollout` (Abnar & Zuidema, ACL 2020), :func:`grad_rollout` (Chefer, Gur & Wolf,
    ICCV 2021, the generic rule without LRP) and :func:`legrad` (Bousselham et al. 2024).
    Each returns a :class:`taskcam.Explanation` whose ``maps`` are ``Tensor[B, T, H, W]`` in
    [0, 1] at the input size; the patch grid and the number of prefix tokens (class,
    distillation, register tokens) are read from the model.

Report
    :func:`attention_report` (and ``taskcam attention IMAGE --model SPEC``): a layers × heads
    grid of one query token's attention, per-head entropy, prefix mass and mean attention
    distance, flagged heads, rollout next to Grad-CAM, and a JSON summary.
"""

from __future__ import annotations

import inspect
import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from taskcam.capture import HookSession, ModelState
from taskcam.errors import TaskcamError
from taskcam.explanation import Explanation, normalize_maps, upsample_maps
from taskcam.targets import per_image_targets, target_scores

__all__ = [
    "ATTENTION_METHODS",
    "AttentionCapture",
    "AttentionExplainer",
    "AttentionRecord",
    "ViTLayout",
    "attention_report",
    "capture_attention",
    "find_attention_modules",
    "grad_rollout",
    "head_statistics",
    "legrad",
    "rollout",
    "vit_layout",
]

#: the attention explanation methods, by the names ``taskcam eval --method`` takes.
ATTENTION_METHODS = ("rollout", "grad-rollout", "legrad")

SEARCHED = (
    "timm Attention (ViT, DeiT, ...: timm.layers.attention, timm.models.vision_transformer)",
    "timm EvaAttention / AttentionRope (EVA-02, DINOv3, RoPE ViTs: timm.models.eva, "
    "timm.layers.attention)",
    "timm WindowAttention (Swin, SwinV2: timm.models.swin_transformer, "
    "timm.models.swin_transformer_v2)",
    "torch.nn.MultiheadAttention (torchvision ViT)",
    "torchvision ShiftedWindowAttention / ShiftedWindowAttentionV2 (Swin, Swin V2)",
)

Query = Union[str, tuple[int, int], int]


# --------------------------------------------------------------------------------------------
# finding attention modules


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


def _module_kind(module: nn.Module) -> Optional[str]:
    """Which recomputation fits ``module``: ``timm``, ``mha``, ``timm-window``,
    ``timm-window-v2``, ``tv-window`` or ``None`` for a module that is not attention."""
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
    found = [(n, m, k) for n, m in model.named_modules() for k in [_module_kind(m)] if k]
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
class _Recomputed:
    """One call's attention and how to turn it back into the module's output."""

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


def _timm_attention(module: nn.Module, args: tuple, kwargs: dict) -> _Recomputed:
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

    return _Recomputed(attn, finish)


_MHA_SIG = inspect.signature(nn.MultiheadAttention.forward)


def _mha(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> _Recomputed:
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

    return _Recomputed(attn, finish)


def _timm_window(module: nn.Module, args: tuple, kwargs: dict) -> _Recomputed:
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

    return _Recomputed(attn, finish)


def _tv_window(module: nn.Module, args: tuple, kwargs: dict) -> _Recomputed:
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

    return _Recomputed(attn, finish, windows=(rows, cols))


_GLOBAL = ("timm", "mha")

_RECOMPUTE = {
    "timm": _timm_attention,
    "mha": _mha,
    "timm-window": _timm_window,
    "tv-window": _tv_window,
}


# --------------------------------------------------------------------------------------------
# capture


@dataclass
class AttentionRecord:
    """One attention module's call.

    Attributes:
        name: the module's dotted name in the model.
        kind: ``timm``, ``mha``, ``timm-window``, ``timm-window-v2`` or ``tv-window``.
        attn: the attention probabilities ``Tensor[B, heads, N, N]`` (rows are queries, each
            sums to 1); for window attention ``Tensor[B, windows, heads, n, n]``, windows in
            row-major order over the (shifted) window grid.
        leaf: with ``grad=True``, the leaf ``Tensor[B', heads, N, N]`` that feeds the model's
            output: ``torch.autograd.grad(score, record.leaf)`` is ``d score / d attn``
            (global attention only).
        windows: ``(rows, cols)`` of the window grid for window attention, else ``None``.
    """

    name: str
    kind: str
    attn: torch.Tensor
    leaf: Optional[torch.Tensor] = None
    windows: Optional[tuple[int, int]] = None

    @property
    def stage(self) -> str:
        """The stage a window-attention block belongs to (``layers.1``, ``features.3``)."""
        parts = self.name.split(".")[:-2]  # drop the block index and the attention's own name
        if parts and parts[-1] == "blocks":
            parts = parts[:-1]
        return ".".join(parts)


class AttentionCapture(HookSession):
    """Context manager recording every attention module's attention on each forward.

    See the module docstring for how fused attention is recomputed and, with ``grad=True``,
    made differentiable without changing the outputs. On exit, even after an error, the hooks
    are removed and every module's mode and parameter's ``requires_grad`` flag restored.

    Args:
        model: any model holding supported attention modules (see :data:`SEARCHED`).
        grad: make each global attention a graph leaf (:attr:`AttentionRecord.leaf`) whose
            gradient is the target's derivative w.r.t. it. Needs ``torch.enable_grad()``.
        eval_mode: run in eval mode for the duration (dropout off: the recomputation is of
            the deterministic attention).
        check: verify that each recomputed attention reproduces the module's output
            (``rtol``/``atol``); a mismatch raises :class:`TaskcamError` naming the module.
        modules: restrict to these dotted names, or one name as a ``str`` (default: every
            attention module).

    Example:
        >>> import torch, torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64).eval()
        >>> with AttentionCapture(vit) as cap:
        ...     _ = vit(torch.rand(1, 3, 32, 32))
        >>> [tuple(r.attn.shape) for r in cap.records]
        [(1, 2, 5, 5), (1, 2, 5, 5)]
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        grad: bool = False,
        eval_mode: bool = True,
        check: bool = True,
        modules: Optional[Sequence[str]] = None,
        rtol: float = 1e-3,
        atol: float = 1e-4,
    ) -> None:
        super().__init__()
        found = find_attention_modules(model)
        if isinstance(modules, str):
            modules = [modules]  # one name, not its characters
        if modules is not None:
            names = {n for n, _, _ in found}
            unknown = [m for m in modules if m not in names]
            if unknown:
                raise TaskcamError(f"modules: {unknown} are not attention modules of the model")
            found = [f for f in found if f[0] in set(modules)]
        self.model = model
        self.modules = found
        self.grad = grad
        self.eval_mode = eval_mode
        self.check = check
        self.rtol, self.atol = rtol, atol
        self.records: list[AttentionRecord] = []
        self._batch: Optional[int] = None
        # timm window attention: the block of each, and the window grid of its latest call
        self._window_blocks = _timm_window_blocks(model, found)
        self._windows: dict[str, tuple[int, int]] = {}

    # -- results --------------------------------------------------------------------------
    @property
    def attentions(self) -> dict[str, torch.Tensor]:
        """Module name -> its last call's attention."""
        return {r.name: r.attn for r in self.records}

    def global_records(self) -> list[AttentionRecord]:
        """The records of global (non-window) attention, in call order."""
        return [r for r in self.records if r.kind in _GLOBAL]

    def by_stage(self) -> dict[str, list[AttentionRecord]]:
        """Window-attention records grouped by stage (``layers.0``, ``features.1``), in call
        order; each record's ``attn`` is ``Tensor[B, windows, heads, n, n]``."""
        out: dict[str, list[AttentionRecord]] = {}
        for r in self.records:
            if r.kind not in _GLOBAL:
                out.setdefault(r.stage, []).append(r)
        return out

    def clear(self) -> None:
        self.records.clear()

    # -- hooks ----------------------------------------------------------------------------
    def _root_hook(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(x, torch.Tensor) and x.dim() >= 3:
            self._batch = int(x.shape[0]) if x.dim() == 4 else 1

    def _block_hook(self, name: str):
        """Read the window grid from the input a timm Swin block really gets: a model built
        with ``strict_img_size=False`` runs at sizes its ``input_resolution`` does not hold."""
        block = self._window_blocks[name]

        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else kwargs.get("x")
            res = getattr(block, "input_resolution", None)
            if isinstance(x, torch.Tensor) and x.dim() == 4:  # [B, H, W, C]
                self._windows[name] = _window_grid(block, x.shape[1:3])
            elif res is not None:  # older timm: tokens [B, H*W, C] of the built resolution
                self._windows[name] = _window_grid(block, _pair(res))

        return hook

    def _hook(self, name: str, kind: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            real = output[0] if isinstance(output, tuple) else output
            with torch.no_grad():
                rec = _RECOMPUTE[kind](module, args, kwargs)
                if self.check:
                    mine = rec.finish(rec.attn)
                    scale = max(1.0, float(real.detach().abs().max()))
                    if mine.shape != real.shape or not torch.allclose(
                        mine, real.detach(), rtol=self.rtol, atol=self.atol * scale
                    ):
                        err = (mine - real.detach()).abs().max() if mine.shape == real.shape else -1
                        dropout = _active_dropout(module)
                        if dropout:
                            raise TaskcamError(
                                f"attention capture: {name} ({type(module).__name__}) is in "
                                f"training mode with dropout ({dropout}), so its output is "
                                f"random and the recomputed one differs by {float(err):.3g}; "
                                "capture with eval_mode=True (the default) or call model.eval()"
                            )
                        raise TaskcamError(
                            f"attention capture: {name} ({type(module).__name__}) does not "
                            f"compute what a {kind} attention does (recomputed output differs "
                            f"by {float(err):.3g}); this variant is not supported"
                        )
            attn = rec.attn
            new_output = None
            leaf = None
            if self.grad and torch.is_grad_enabled() and kind in _GLOBAL:
                leaf = attn.detach().requires_grad_(True)
                term = rec.finish(leaf)
                real_out = real + (term - term.detach())  # exactly `real`, with d/d leaf
                new_output = (real_out, *output[1:]) if isinstance(output, tuple) else real_out
            windows = rec.windows or self._windows.get(name)
            if kind not in _GLOBAL:
                if windows is not None:
                    attn = attn.reshape(-1, windows[0] * windows[1], *attn.shape[1:])
                elif self._batch:
                    attn = attn.reshape(self._batch, -1, *attn.shape[1:])
            self.records.append(
                AttentionRecord(name, kind, attn.detach(), leaf=leaf, windows=windows)
            )
            return new_output

        return hook

    def _softmax_hook(self, name: str):
        def hook(_module: nn.Module, _args: tuple, output: torch.Tensor) -> None:
            attn = output.detach()
            windows = self._windows.get(name)
            if windows is not None:
                attn = attn.reshape(-1, windows[0] * windows[1], *attn.shape[1:])
            elif self._batch:
                attn = attn.reshape(self._batch, -1, *attn.shape[1:])
            self.records.append(AttentionRecord(name, "timm-window-v2", attn, windows=windows))

        return hook

    def __enter__(self) -> AttentionCapture:
        self._state = ModelState(self.model)
        try:
            if self.eval_mode:
                self._state.eval_and_freeze(False)
            self._handles.append(
                self.model.register_forward_pre_hook(self._root_hook, with_kwargs=True)
            )
            for name, block in self._window_blocks.items():
                hook = self._block_hook(name)
                self._handles.append(block.register_forward_pre_hook(hook, with_kwargs=True))
            for name, module, kind in self.modules:
                if kind == "timm-window-v2":  # unfused in timm: its softmax module is hooked
                    handle = module.softmax.register_forward_hook(self._softmax_hook(name))
                else:
                    handle = module.register_forward_hook(self._hook(name, kind), with_kwargs=True)
                self._handles.append(handle)
        except BaseException:
            self._release()
            raise
        return self


def _active_dropout(module: nn.Module) -> str:
    """The dropout that makes a training-mode ``module``'s output random, for messages
    (``attn_drop p=0.5``), or ``""`` when none is active."""
    if not module.training:
        return ""
    active = [
        f"{n} p={m.p:g}"
        for n, m in module.named_modules()
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.training and m.p > 0
    ]
    # nn.MultiheadAttention and torchvision's window attention keep their rates as floats
    for attr in ("dropout", "attention_dropout"):
        rate = getattr(module, attr, None)
        if isinstance(rate, float) and rate > 0:
            active.append(f"{attr}={rate:g}")
    return ", ".join(active)


def _timm_window_blocks(
    model: nn.Module, found: list[tuple[str, nn.Module, str]]
) -> dict[str, nn.Module]:
    """timm window attention sees windows only: its block (the parent) knows the window size
    and receives the stage's ``Tensor[B, H, W, C]``, from which the window grid follows."""
    modules = dict(model.named_modules())
    blocks = {}
    for name, _module, kind in found:
        if not kind.startswith("timm-window"):
            continue
        block = modules.get(name.rpartition(".")[0])
        if block is not None and getattr(block, "window_size", None) is not None:
            blocks[name] = block
    return blocks


def _window_grid(block: nn.Module, size: Sequence[int]) -> tuple[int, int]:
    """``(rows, cols)`` of the windows a timm Swin block cuts a ``size`` ``(H, W)`` stage into
    (padded right and bottom to whole windows, as the block does)."""
    (h, w), (wh, ww) = _pair(tuple(size)), _pair(block.window_size)
    return -(-h // wh), -(-w // ww)


def capture_attention(model: nn.Module, **options: Any) -> AttentionCapture:
    """Record every attention module's per-head attention during forwards run inside ``with``.

    Works with fused attention (timm ``fused_attn=True``, torchvision ViT's
    ``need_weights=False``) without changing the model's outputs or leaving anything behind.

    Args:
        model: a model with timm or torchvision attention modules.
        **options: see :class:`AttentionCapture` (``grad=``, ``eval_mode=``, ``check=``,
            ``modules=``).

    Returns:
        An :class:`AttentionCapture`; after the forward, ``cap.records`` holds one
        :class:`AttentionRecord` per call with ``attn: Tensor[B, heads, N, N]``.

    Example:
        >>> import torch
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=3)
        >>> with capture_attention(vit) as cap:
        ...     _ = vit(torch.rand(2, 3, 32, 32))
        >>> cap.attentions["blocks.0.attn"].shape  # 1 class token + 2x2 patches
        torch.Size([2, 2, 5, 5])
    """
    return AttentionCapture(model, **options)


# --------------------------------------------------------------------------------------------
# ViT layout: patch grid, prefix tokens, blocks, head


@dataclass
class ViTLayout:
    """What the attention explanations need to know about a ViT-style model.

    Attributes:
        vit: the transformer module inside the model (the model itself, or inside a wrapper).
        family: ``timm`` or ``torchvision``.
        patch: ``(ph, pw)`` patch size in pixels.
        prefix: tokens before the patch tokens (class, distillation, registers).
        pool: ``token`` (the class token is pooled) or ``avg`` (patch tokens are averaged).
        attention: the blocks' attention module names, relative to the *model*, in order.
        blocks: the blocks, in order.
        class_token: the first prefix token is a class token (``False`` for models whose
            prefix holds register tokens only).
    """

    vit: nn.Module
    family: str
    patch: tuple[int, int]
    prefix: int
    pool: str
    attention: list[str]
    blocks: list[nn.Module] = field(repr=False)
    class_token: bool = True

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        """The patch grid ``(h, w)`` for an input of spatial ``size`` ``(H, W)``: rounded up
        when the patch embedding pads the input to whole patches (timm ``dynamic_img_pad``),
        else down."""
        (h, w), (ph, pw) = (int(size[0]), int(size[1])), self.patch
        if self.pads:
            return -(-h // ph), -(-w // pw)
        return h // ph, w // pw

    @property
    def pads(self) -> bool:
        """The patch embedding pads the input right and bottom to whole patches."""
        embed = getattr(self.vit, "patch_embed", None)
        return self.family == "timm" and bool(getattr(embed, "dynamic_img_pad", False))

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own final norm, pooling and classifier applied to a block's tokens."""
        if self.family == "timm":
            return self.vit.forward_head(self.vit.norm(tokens))
        return self.vit.heads(self.vit.encoder.ln(tokens)[:, 0])


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def vit_layout(model: nn.Module) -> ViTLayout:
    """Find the ViT-style transformer in ``model`` and read its layout.

    Raises:
        TaskcamError: no timm or torchvision ``VisionTransformer``-like module is found (Swin
            and other windowed models included: their attention is not global).

    Example:
        >>> import torchvision
        >>> lay = vit_layout(torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64))
        >>> lay.family, lay.patch, lay.prefix, lay.pool, lay.grid((32, 32))
        ('torchvision', (16, 16), 1, 'token', (2, 2))
    """
    names = {id(m): n for n, m in model.named_modules()}
    for vit in model.modules():
        base = names[id(vit)]
        prefix_name = f"{base}." if base else ""
        blocks = getattr(vit, "blocks", None)
        if (
            hasattr(vit, "patch_embed")
            and isinstance(blocks, (nn.Sequential, nn.ModuleList))
            and hasattr(vit, "forward_head")
            and all(_module_kind(getattr(b, "attn", nn.Identity())) == "timm" for b in blocks)
            and len(blocks)
        ):
            pool = getattr(vit, "global_pool", "token")
            if pool not in ("token", "avg"):
                raise TaskcamError(
                    f"{type(vit).__name__} pools with {pool!r}; attention explanations support "
                    "class-token ('token') and average ('avg') pooling"
                )
            if pool == "token" and not getattr(vit, "num_prefix_tokens", 0):
                raise TaskcamError("timm model pools a class token it does not have")
            block_names = [n for n, _ in blocks.named_children()]
            return ViTLayout(
                vit=vit,
                family="timm",
                patch=_pair(vit.patch_embed.patch_size),
                prefix=int(getattr(vit, "num_prefix_tokens", 1)),
                pool=pool,
                attention=[f"{prefix_name}blocks.{b}.attn" for b in block_names],
                blocks=list(blocks),
                # registers without a class token (timm class_token=False, reg_tokens=N)
                class_token=getattr(vit, "cls_token", True) is not None,
            )
        encoder = getattr(vit, "encoder", None)
        if (
            hasattr(vit, "conv_proj")
            and hasattr(vit, "class_token")
            and encoder is not None
            and hasattr(encoder, "layers")
        ):
            layers = list(encoder.layers.named_children())
            return ViTLayout(
                vit=vit,
                family="torchvision",
                patch=_pair(vit.patch_size),
                prefix=1,
                pool="token",
                attention=[f"{prefix_name}encoder.layers.{n}.self_attention" for n, _ in layers],
                blocks=[m for _, m in layers],
            )
    find_attention_modules(model)  # a model without attention gets the "searched" message
    raise TaskcamError(
        f"{type(model).__name__} is not a ViT-style model (timm VisionTransformer or Eva with "
        "patch_embed/blocks or torchvision VisionTransformer); attention explanations need "
        "global attention over a patch grid (for Swin, use capture_attention's window views)"
    )


# --------------------------------------------------------------------------------------------
# explanations


def _targets(output: Any, targets: Any, batch: int) -> list[list[Any]]:
    """Targets per image: as given, or each image's top-1 class in ``output`` (read from the
    explained forward itself, so no extra pass)."""
    if targets is not None:
        return per_image_targets(targets, batch)
    from taskcam.adapters.classification import ClassTarget, logits_of

    return [[ClassTarget(int(k))] for k in logits_of(output).argmax(dim=1)]


def _query_rows(
    matrix: torch.Tensor, layout: ViTLayout, grid: tuple[int, int], query: Query
) -> torch.Tensor:
    """``matrix: Tensor[B, N, N]`` -> ``Tensor[B, h*w]``: the query's row over patch keys."""
    p = layout.prefix
    if isinstance(query, str) and query == "cls":
        if layout.pool == "avg" or p == 0 or not layout.class_token:
            query = "mean"
        else:
            return matrix[:, 0, p:]
    if isinstance(query, str) and query == "mean":
        return matrix[:, p:, p:].mean(dim=1)
    return matrix[:, _query_index(query, layout, grid), p:]


def _query_index(query: Query, layout: ViTLayout, grid: tuple[int, int]) -> int:
    if isinstance(query, str):
        if query == "cls" and layout.prefix and layout.class_token:
            return 0
        if query == "cls":
            held = f" (its {layout.prefix} prefix token(s) are registers)" if layout.prefix else ""
            raise TaskcamError(
                f"query: the model has no class token{held}; pass a patch (row, col)"
            )
        raise TaskcamError(f"query: expected 'cls' or a patch (row, col), got {query!r}")
    if isinstance(query, int):
        if not 0 <= query < layout.prefix + grid[0] * grid[1]:
            raise TaskcamError(
                f"query: token {query} outside 0..{layout.prefix + grid[0] * grid[1] - 1}"
            )
        return query
    r, c = (int(v) for v in query)
    if not (0 <= r < grid[0] and 0 <= c < grid[1]):
        raise TaskcamError(f"query: patch ({r}, {c}) is outside the {grid[0]}x{grid[1]} grid")
    return layout.prefix + r * grid[1] + c


def _finish(
    raw: torch.Tensor,
    size: Sequence[int],
    name: str,
    scores: torch.Tensor,
    layout: ViTLayout,
    output: Any,
) -> Explanation:
    """``raw: Tensor[B, T, h, w]`` -> an Explanation with maps at the input size in [0, 1].

    A patch grid that covers another area than the input (timm ``dynamic_img_pad`` pads
    right and bottom to whole patches; without it the remainder is dropped) is laid on that
    area and cropped or zero-padded to the input, not stretched over it, as the engine does.
    """
    raw = raw.detach().float()
    size = (int(size[0]), int(size[-1]))
    covered = (raw.shape[-2] * layout.patch[0], raw.shape[-1] * layout.patch[1])
    maps, empty = normalize_maps(upsample_maps(raw, size, covered))
    return Explanation(
        maps=maps,
        raw={name: raw},
        scores=scores.detach(),
        empty=empty,
        method=name,
        layers=list(layout.attention),
        output=output.detach() if isinstance(output, torch.Tensor) else output,
    )


def _prepare(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    if not isinstance(model, nn.Module):
        raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TaskcamError(f"inputs: expected a torch.Tensor, got {type(inputs).__name__}")
    x = inputs[None] if inputs.ndim == 3 else inputs
    if x.ndim != 4:
        raise TaskcamError(f"inputs: expected Tensor[B, 3, H, W], got {tuple(inputs.shape)}")
    dev = next((p.device for p in model.parameters()), x.device)
    return x.to(dev)


def _ordered(cap: AttentionCapture, layout: ViTLayout) -> list[AttentionRecord]:
    recs = {r.name: r for r in cap.records}
    missing = [n for n in layout.attention if n not in recs]
    if missing:
        raise TaskcamError(f"attention modules {missing} did not run in the forward pass")
    return [recs[n] for n in layout.attention]


def _check_tokens(attn: torch.Tensor, layout: ViTLayout, grid: tuple[int, int]) -> None:
    n = attn.shape[-1]
    if n != layout.prefix + grid[0] * grid[1]:
        raise TaskcamError(
            f"attention over {n} tokens does not hold {layout.prefix} prefix token(s) and a "
            f"{grid[0]}x{grid[1]} patch grid (input size not a multiple of the patch size?)"
        )


def rollout(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Any = None,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    query: Query = "cls",
) -> Explanation:
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
    ACL 2020).

    Per layer the heads' attention is fused (``head_fusion``: mean, as in the paper, or
    ``max``/``min``), the residual connection is added as the identity and rows are
    renormalised: ``Â = (A + I) / 2``; the layers are multiplied in order,
    ``R = Â_L ⋯ Â_1``, and the query token's row over the patch tokens is the map. The query
    is the class token (``"cls"``; for models that average-pool their tokens, the mean row
    over patch tokens), ``"mean"``, or a patch ``(row, col)``.

    Rollout does not depend on the class: with targets, every target of an image gets the
    same map (``T`` copies), without them ``T = 1``.

    Args:
        model: a ViT-style model (see :func:`vit_layout`), possibly inside a wrapper.
        inputs: ``Tensor[B, 3, H, W]`` preprocessed as the model wants.
        targets: optional targets as :func:`taskcam.explain` takes them (only their count
            and scores are used).
        head_fusion: ``mean``, ``max`` or ``min``.
        discard_ratio: per layer and query row, this fraction of the fused attention to
            patch tokens (the weakest) is set to 0 before the identity is added, the
            denoising of the widely used ``vit-explain`` rollout; attention to prefix tokens
            is kept. 0 (the default) is the paper's rollout. On a ``shapes-vit`` trained
            without registers, ``max`` fusion with ``discard_ratio=0.9`` raised the pointing
            game from 0.78 (paper) to 0.90 (0.88 with ``max`` alone); the shipped model,
            with registers, scores 0.99 to 1.00 with all three.
        query: ``"cls"``, ``"mean"``, a patch ``(row, col)`` or a token index (an ``int``:
            the prefix tokens first, then the patches row by row).

    Returns:
        An :class:`taskcam.Explanation`; ``maps: Tensor[B, T, H, W]`` in [0, 1].

    Example:
        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64)
        >>> rollout(vit, torch.rand(2, 3, 32, 32)).maps.shape
        torch.Size([2, 1, 32, 32])
    """
    if head_fusion not in ("mean", "max", "min"):
        raise TaskcamError(f"head_fusion: expected mean, max or min, got {head_fusion!r}")
    if not 0.0 <= discard_ratio < 1.0:
        raise TaskcamError(f"discard_ratio: expected a fraction in [0, 1), got {discard_ratio!r}")
    x = _prepare(model, inputs)
    layout = vit_layout(model)
    grid = layout.grid(x.shape[-2:])
    with torch.inference_mode(False), torch.no_grad():
        per_image = None if targets is None else per_image_targets(targets, x.shape[0])
        with AttentionCapture(model, modules=layout.attention) as cap:
            output = model(x)
        records = _ordered(cap, layout)
        _check_tokens(records[0].attn, layout, grid)
        n = records[0].attn.shape[-1]
        eye = torch.eye(n, device=x.device, dtype=torch.float32)
        result = eye.expand(x.shape[0], n, n)
        for rec in records:
            a = rec.attn.float()
            fused = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]
            if discard_ratio > 0:
                fused = _discard_weakest(fused, layout.prefix, discard_ratio)
            a_hat = fused + eye
            a_hat = a_hat / a_hat.sum(dim=-1, keepdim=True)
            result = a_hat @ result
        row = _query_rows(result, layout, grid, query).reshape(x.shape[0], 1, *grid)
        if per_image is None:
            scores = _top_scores(output)
        else:
            scores = target_scores(output, per_image)
            row = row.expand(-1, scores.shape[1], -1, -1)
    return _finish(row, x.shape[-2:], "rollout", scores, layout, output)


def _discard_weakest(attn: torch.Tensor, prefix: int, ratio: float) -> torch.Tensor:
    """``attn: Tensor[B, N, N]`` with the weakest ``ratio`` of each row's patch columns at 0."""
    patches = attn[..., prefix:]  # [B, N, P]
    drop = int(patches.shape[-1] * ratio)
    if drop == 0:
        return attn
    weakest = patches.topk(drop, dim=-1, largest=False).indices
    return torch.cat([attn[..., :prefix], patches.scatter(-1, weakest, 0.0)], dim=-1)


def _top_scores(output: Any) -> torch.Tensor:
    from taskcam.adapters.classification import logits_of

    return logits_of(output).amax(dim=1, keepdim=True)


def grad_rollout(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Any = None,
    *,
    query: Query = "cls",
) -> Explanation:
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, "Generic Attention-model
    Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021;
    the generic rule, without LRP).

    Starting from ``R = I``, each layer in order updates
    ``R ← R + mean_heads((∇A ⊙ A)⁺) · R``, where ``∇A`` is the gradient of the target's
    score w.r.t. that layer's attention probabilities (taken through the real model, fused
    attention included: see the module docstring). The query's row of ``R`` over the patch
    tokens is the map.

    Args:
        model: a ViT-style model (see :func:`vit_layout`).
        inputs: ``Tensor[B, 3, H, W]``.
        targets: as :func:`taskcam.explain` takes them; default each image's top-1 class.
        query: ``"cls"``, ``"mean"``, a patch ``(row, col)`` or a token index (an ``int``:
            the prefix tokens first, then the patches row by row).

    Returns:
        An :class:`taskcam.Explanation`; ``maps: Tensor[B, T, H, W]`` in [0, 1].

    Example:
        >>> import torchvision
        >>> from taskcam.adapters.classification import ClassTarget
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64, num_classes=5)
        >>> grad_rollout(vit, torch.rand(1, 3, 32, 32), [ClassTarget(0), ClassTarget(3)]).maps.shape
        torch.Size([1, 2, 32, 32])
    """
    x = _prepare(model, inputs)
    layout = vit_layout(model)
    grid = layout.grid(x.shape[-2:])
    with torch.inference_mode(False):
        state = ModelState(model)
        try:
            state.eval_and_freeze(True)
            with AttentionCapture(model, grad=True, modules=layout.attention) as cap:
                with torch.enable_grad():
                    output = model(x)
                    per_image = _targets(output, targets, x.shape[0])
                    scores = target_scores(output, per_image)  # [B, T]
                records = _ordered(cap, layout)
                _check_tokens(records[0].attn, layout, grid)
                leaves = [r.leaf for r in records]
                rows = []
                for t in range(scores.shape[1]):
                    grads = torch.autograd.grad(
                        scores[:, t].sum(), leaves, retain_graph=True, allow_unused=True
                    )
                    with torch.no_grad():
                        n = leaves[0].shape[-1]
                        eye = torch.eye(n, device=x.device)
                        rel = eye.expand(x.shape[0], n, n).clone()
                        for leaf, g in zip(leaves, grads):
                            if g is None:
                                continue
                            cam = (g * leaf).clamp(min=0).mean(dim=1)  # [B, N, N]
                            rel = rel + cam @ rel
                        rows.append(_query_rows(rel, layout, grid, query))
        finally:
            state.restore()
    raw = torch.stack(rows, dim=1).reshape(x.shape[0], len(rows), *grid)
    return _finish(raw, x.shape[-2:], "grad-rollout", scores, layout, output)


def legrad(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Any = None,
    *,
    last_layers: Optional[int] = None,
) -> Explanation:
    """LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, "LeGrad: An Explainability
    Method for Vision Transformers via Feature Formation Sensitivity", 2024).

    For every layer ``l`` the model's own final norm, pooling and classifier are applied to
    that block's output tokens, giving the intermediate score ``s_l`` of the target; its
    gradient w.r.t. the layer's attention probabilities ``A_l`` is rectified, averaged over
    heads and over query tokens, and its patch-token columns are the layer's map. The maps
    are summed over layers and min-max normalised.

    Args:
        model: a ViT-style model (see :func:`vit_layout`); the target is applied to the
            intermediate logits ``head(block_l output)`` of the transformer inside it.
        inputs: ``Tensor[B, 3, H, W]``.
        targets: as :func:`taskcam.explain` takes them; default each image's top-1 class.
        last_layers: sum over the last this many layers only, 1 to the number of blocks (the
            authors' code starts at the second-to-last layer for CLIP models); default every
            layer, as in the paper.

    Returns:
        An :class:`taskcam.Explanation`; ``maps: Tensor[B, T, H, W]`` in [0, 1].

    Example:
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=3)
        >>> legrad(vit, torch.rand(2, 3, 32, 32)).maps.shape
        torch.Size([2, 1, 32, 32])
    """
    x = _prepare(model, inputs)
    layout = vit_layout(model)
    depth = len(layout.blocks)
    if last_layers is not None and (
        isinstance(last_layers, bool)
        or not isinstance(last_layers, numbers.Integral)
        or not 1 <= last_layers <= depth
    ):
        raise TaskcamError(
            f"last_layers: expected an int in 1..{depth} (the model has {depth} blocks) or "
            f"None for every layer, got {last_layers!r}"
        )
    grid = layout.grid(x.shape[-2:])
    with torch.inference_mode(False):
        state = ModelState(model)
        outs: dict[int, torch.Tensor] = {}

        def keep(i: int):
            def hook(_m: nn.Module, _a: Any, out: Any) -> None:
                outs[i] = out[0] if isinstance(out, tuple) else out

            return hook

        handles = []
        try:
            state.eval_and_freeze(True)
            handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(layout.blocks)]
            with AttentionCapture(model, grad=True, modules=layout.attention) as cap:
                with torch.enable_grad():
                    output = model(x)
                    per_image = _targets(output, targets, x.shape[0])
                    scores = target_scores(output, per_image)
                records = _ordered(cap, layout)
                _check_tokens(records[0].attn, layout, grid)
                total = None
                first = 0 if last_layers is None else len(records) - int(last_layers)
                for i, rec in enumerate(records):
                    if i < first:
                        continue
                    with torch.enable_grad():
                        inter = target_scores(layout.head(outs[i]), per_image)  # [B, T]
                    per_t = []
                    for t in range(inter.shape[1]):
                        (g,) = torch.autograd.grad(
                            inter[:, t].sum(), [rec.leaf], retain_graph=True, allow_unused=True
                        )
                        if g is None:
                            g = torch.zeros_like(rec.leaf)
                        rel = g.clamp(min=0).mean(dim=(1, 2))[:, layout.prefix :]  # [B, h*w]
                        per_t.append(rel)
                    layer_map = torch.stack(per_t, dim=1)
                    total = layer_map if total is None else total + layer_map
        finally:
            for h in handles:
                h.remove()
            state.restore()
    assert total is not None
    raw = total.reshape(x.shape[0], total.shape[1], *grid)
    return _finish(raw, x.shape[-2:], "legrad", scores, layout, output)


_FUNCTIONS: dict[str, Callable[..., Explanation]] = {
    "rollout": rollout,
    "grad-rollout": grad_rollout,
    "legrad": legrad,
}


class AttentionExplainer:
    """An attention method with the call shape of :class:`taskcam.Explainer`.

    Args:
        model: a ViT-style model.
        method: one of :data:`ATTENTION_METHODS`.
        **options: passed to the method's function (``query=``, ``head_fusion=``).

    Example:
        >>> import torchvision
        >>> from taskcam.adapters.classification import ClassTarget
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64, num_classes=4)
        >>> AttentionExplainer(vit, "legrad")(torch.rand(1, 3, 32, 32), [ClassTarget(2)]).maps.shape
        torch.Size([1, 1, 32, 32])
    """

    def __init__(self, model: nn.Module, method: str = "rollout", **options: Any) -> None:
        if method not in _FUNCTIONS:
            raise TaskcamError(
                f"attention method {method!r} is unknown; expected one of {ATTENTION_METHODS}"
            )
        self.model = model
        self.method = method
        self.name = method
        self.options = options

    def __call__(self, inputs: torch.Tensor, targets: Any = None) -> Explanation:
        fn = _FUNCTIONS[self.method]
        return fn(self.model, inputs, targets, **self.options)


# --------------------------------------------------------------------------------------------
# statistics and the debugging report


def _check_fraction(name: str, value: Any) -> None:
    """``value`` is a number in [0, 1]; else an error naming the argument and its flag."""
    flag = "--" + name.replace("_", "-")
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise TaskcamError(f"{name} ({flag}): expected a fraction in [0, 1], got {value!r}")


def head_statistics(
    attn: torch.Tensor,
    grid: tuple[int, int],
    prefix: int,
    query: int = 0,
    *,
    uniform_threshold: float = 0.95,
    prefix_threshold: float = 0.9,
) -> list[dict[str, Any]]:
    """Per-head statistics of one image's attention in one layer.

    Args:
        attn: ``Tensor[heads, N, N]`` attention probabilities, ``N = prefix + h*w``.
        grid: ``(h, w)`` patch grid.
        prefix: prefix tokens before the patches.
        query: the token whose row is examined (0: the class token).
        uniform_threshold: a head whose query-row entropy is at least this fraction of
            ``log N`` is flagged ``uniform``.
        prefix_threshold: a head whose query row puts at least this share of its mass on
            prefix tokens is flagged ``prefix-only``.

    Returns:
        One dict per head: ``entropy`` (nats, of the query row), ``normalized_entropy``
        (``entropy / log N``), ``prefix_mass``, ``mean_distance`` (attention-weighted distance
        in patches from each patch query to the patches it attends to, averaged over patch
        queries: the "attention distance" of Dosovitskiy et al., ICLR 2021), ``query_distance``
        (the same for the query alone when it is a patch, else ``None``) and ``flags``.

    Example:
        >>> uniform = torch.full((1, 5, 5), 0.2)
        >>> head_statistics(uniform, (2, 2), 1)[0]["flags"]
        ['uniform']
    """
    _check_fraction("uniform_threshold", uniform_threshold)
    _check_fraction("prefix_threshold", prefix_threshold)
    heads, n, _ = attn.shape
    h, w = grid
    if n != prefix + h * w:
        raise TaskcamError(f"attention over {n} tokens is not {prefix} prefix + {h}x{w} patches")
    a = attn.detach().float().cpu()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], dim=1).float()  # [h*w, 2]
    dist = torch.cdist(pos, pos)  # [h*w, h*w] in patches
    patch = a[:, prefix:, prefix:]  # [heads, P, P]
    patch = patch / patch.sum(-1, keepdim=True).clamp(min=1e-12)
    mean_distance = (patch * dist).sum(-1).mean(-1)  # [heads]
    out = []
    for k in range(heads):
        row = a[k, query]
        ent = float(-(row * row.clamp(min=1e-12).log()).sum())
        norm_ent = ent / math.log(n) if n > 1 else 0.0
        pmass = float(row[:prefix].sum())
        qdist = None
        if query >= prefix:
            qdist = float((patch[k, query - prefix] * dist[query - prefix]).sum())
        flags = []
        if norm_ent >= uniform_threshold:
            flags.append("uniform")
        if prefix and pmass >= prefix_threshold:
            flags.append("prefix-only")
        out.append(
            {
                "head": k,
                "entropy": ent,
                "normalized_entropy": norm_ent,
                "prefix_mass": pmass,
                "mean_distance": float(mean_distance[k]),
                "query_distance": qdist,
                "flags": flags,
            }
        )
    return out


def _report_query(
    q_index: int, layout: ViTLayout, grid: tuple[int, int], *, as_json: bool = False
) -> Any:
    """Token ``q_index`` as a query: ``"cls"`` for the class token, the index of another prefix
    token (distillation, register), or a patch ``(row, col)`` (a list ``[row, col]`` in JSON)."""
    if q_index == 0 and layout.prefix and layout.class_token:
        return "cls"
    if q_index < layout.prefix:
        return q_index
    row, col = divmod(q_index - layout.prefix, grid[1])
    return [row, col] if as_json else (row, col)


def _gradcam_map(model: nn.Module, layout: ViTLayout, x: torch.Tensor, target: Any) -> Explanation:
    """Grad-CAM on the input of the last block's attention (its norm), tokens to grid."""
    from taskcam.engine import explain
    from taskcam.reshape import TokensToGrid

    last = layout.blocks[-1]
    norm = getattr(last, "norm1", None) or getattr(last, "ln_1", None)
    if norm is None:
        raise TaskcamError("cannot find the last block's pre-attention norm for Grad-CAM")
    grid = layout.grid(x.shape[-2:])
    return explain(
        model, x, [target], layers=norm, method="gradcam", reshape=TokensToGrid(grid, layout.prefix)
    )


def attention_report(
    model: nn.Module,
    image: Any,
    out_dir: Union[str, Path],
    *,
    size: Sequence[int] = (224, 224),
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    query: Query = "cls",
    target: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    model_name: str = "",
    colormap: str = "jet",
    uniform_threshold: float = 0.95,
    prefix_threshold: float = 0.9,
) -> dict[str, Any]:
    """Write an attention debugging report for one image to ``out_dir``.

    Files: ``attention_grid.png`` (rows: layers; columns: heads, then their mean; each cell
    the query token's attention over the patches, overlaid on the image and normalised per
    cell), ``maps.png`` (the image, attention rollout, gradient-weighted rollout and Grad-CAM
    side by side) and ``attention.json`` (per-head entropy, prefix mass, mean attention
    distance and flags; the heads flagged ``uniform`` and ``prefix-only``; the prediction).

    Args:
        model: a ViT-style classifier (see :func:`vit_layout`).
        image: a path or any image :func:`taskcam.io.to_rgb_uint8` accepts.
        out_dir: output folder (created).
        size: the model's input size ``(h, w)``.
        mean: normalisation mean.
        std: normalisation std.
        query: ``"cls"``, a patch ``(row, col)`` or a token index (an ``int``: the prefix
            tokens first, then the patches row by row; the JSON records a prefix token's
            index, a patch's ``[row, col]``).
        target: the class explained by grad-rollout and Grad-CAM (default: the top-1).
        class_names: names of the classes, for the summary.
        model_name: recorded in the JSON.
        colormap: overlay colormap.
        uniform_threshold: see :func:`head_statistics`.
        prefix_threshold: see :func:`head_statistics`.

    Returns:
        The JSON summary as a dict.

    Example:
        >>> import tempfile, numpy as np, torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64)
        >>> img = np.zeros((40, 40, 3), np.uint8)
        >>> s = attention_report(vit, img, tempfile.mkdtemp(), size=(32, 32))
        >>> len(s["layers"]), len(s["layers"][0]["heads"])
        (2, 2)
    """
    from taskcam.adapters.classification import ClassTarget, logits_of
    from taskcam.io import load_image, to_rgb_uint8, to_tensor
    from taskcam.render import attention_grid, overlay, save_image
    from taskcam.render import grid as image_grid

    _check_fraction("uniform_threshold", uniform_threshold)
    _check_fraction("prefix_threshold", prefix_threshold)
    out = Path(out_dir)
    label = str(image) if isinstance(image, (str, Path)) else "<array>"
    rgb = load_image(image) if isinstance(image, (str, Path)) else to_rgb_uint8(image)
    size = (int(size[0]), int(size[-1]))
    x = _prepare(model, to_tensor(rgb, size, mean, std))
    layout = vit_layout(model)
    grid = layout.grid(size)
    q_index = _query_index(query, layout, grid)
    with torch.inference_mode(False), torch.no_grad():
        with AttentionCapture(model, modules=layout.attention) as cap:
            logits = logits_of(model(x))
        records = _ordered(cap, layout)
    _check_tokens(records[0].attn, layout, grid)
    probs = logits.softmax(dim=1)[0]
    k = int(probs.argmax()) if target is None else int(target)
    if not 0 <= k < probs.numel():
        raise TaskcamError(f"target: class {k} does not exist (the model has {probs.numel()})")
    tgt = ClassTarget(k)
    # query row over patches per layer and head: [L, heads, h, w]
    rows = torch.stack([r.attn[0, :, q_index, layout.prefix :] for r in records])
    rows = rows.reshape(len(records), rows.shape[1], *grid)
    # the same query for rollout: the class token, another prefix token by index, or a patch
    roll_query: Query = _report_query(q_index, layout, grid)
    roll = rollout(model, x, query=roll_query).maps[0, 0]
    groll = grad_rollout(model, x, [tgt], query=roll_query).maps[0, 0]
    cam = _gradcam_map(model, layout, x, tgt).maps[0, 0]

    shown = rgb if rgb.shape[:2] == size else None
    if shown is None:
        import cv2

        shown = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    marker = None if q_index < layout.prefix else divmod(q_index - layout.prefix, grid[1])
    picture = attention_grid(
        shown,
        rows,
        layer_labels=[f"layer {i}" for i in range(len(records))],
        colormap=colormap,
        marker=marker,
    )
    save_image(out / "attention_grid.png", picture)
    cells = [shown, *(overlay(shown, m, colormap=colormap) for m in (roll, groll, cam))]
    name = class_names[k] if class_names and k < len(class_names) else str(k)
    labels = ["image", "rollout", f"grad-rollout {name}", f"grad-cam {name}"]
    cell = max(160, min(size))
    save_image(out / "maps.png", image_grid([cells], col_labels=labels, cell_size=cell))

    layers_json = []
    uniform, prefix_only = [], []
    for li, rec in enumerate(records):
        stats = head_statistics(
            rec.attn[0],
            grid,
            layout.prefix,
            q_index,
            uniform_threshold=uniform_threshold,
            prefix_threshold=prefix_threshold,
        )
        for s in stats:
            if "uniform" in s["flags"]:
                uniform.append([li, s["head"]])
            if "prefix-only" in s["flags"]:
                prefix_only.append([li, s["head"]])
        layers_json.append({"index": li, "name": rec.name, "heads": stats})
    summary = {
        "version": 1,
        "model": model_name,
        "image": label,
        "input_size": list(size),
        "grid": list(grid),
        "patch_size": list(layout.patch),
        "prefix_tokens": layout.prefix,
        "tokens": layout.prefix + grid[0] * grid[1],
        "query": _report_query(q_index, layout, grid, as_json=True),
        "prediction": {"class_id": k, "class_name": name, "probability": float(probs[k])},
        "thresholds": {"uniform": uniform_threshold, "prefix_only": prefix_threshold},
        "layers": layers_json,
        "flagged": {"uniform": uniform, "prefix_only": prefix_only},
        "files": {"grid": "attention_grid.png", "maps": "maps.png"},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention.json").write_text(json.dumps(summary, indent=2))
    return summary
