"""Attention capture: every attention module's per-head attention, fused kernels included.

:class:`AttentionCapture` (or :func:`capture_attention`) hooks the attention modules that
:func:`taskcam.attention.find_attention_modules` finds and records each call's attention,
recomputed from the module's weights and input (see :mod:`taskcam.attention.discovery`), so
the model runs unchanged and its outputs stay bit-identical. Window attention (Swin) is
recorded per window, grouped by the window grid its block cuts the stage into.

Gradients w.r.t. the attention (``grad=True``)
    The fused kernels never materialise the attention, so there is nothing to differentiate.
    Each module's output is replaced by ``out + (f(A) - f(A).detach())`` where ``A`` is the
    recomputed attention, made a leaf of the graph, and ``f`` the module's own computation from
    attention to output (values, merge, norm/gate, projection; weights and values detached).
    The added term is exactly zero, so the outputs are still bit-identical, the fused backward
    still carries every other gradient, and ``d target / d A`` is the true partial derivative
    of the target w.r.t. that layer's attention probabilities (to float tolerance: what the
    unfused model gives, as the tests check).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from taskcam.attention.discovery import GLOBAL_KINDS, RECOMPUTE, find_attention_modules
from taskcam.capture import HookSession, ModelState
from taskcam.errors import TaskcamError

__all__ = ["AttentionCapture", "AttentionRecord", "capture_attention"]


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


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
        return [r for r in self.records if r.kind in GLOBAL_KINDS]

    def by_stage(self) -> dict[str, list[AttentionRecord]]:
        """Window-attention records grouped by stage (``layers.0``, ``features.1``), in call
        order; each record's ``attn`` is ``Tensor[B, windows, heads, n, n]``."""
        out: dict[str, list[AttentionRecord]] = {}
        for r in self.records:
            if r.kind not in GLOBAL_KINDS:
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
                rec = RECOMPUTE[kind](module, args, kwargs)
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
            if self.grad and torch.is_grad_enabled() and kind in GLOBAL_KINDS:
                leaf = attn.detach().requires_grad_(True)
                term = rec.finish(leaf)
                real_out = real + (term - term.detach())  # exactly `real`, with d/d leaf
                new_output = (real_out, *output[1:]) if isinstance(output, tuple) else real_out
            windows = rec.windows or self._windows.get(name)
            if kind not in GLOBAL_KINDS:
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
