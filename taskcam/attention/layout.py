"""The layout of a ViT-style model, as the attention explanations need it.

:func:`vit_layout` finds the transformer inside a model (timm ``VisionTransformer`` and its
relatives, timm ``Eva`` (EVA-02, DINOv3, the RoPE ViTs), torchvision ``VisionTransformer``)
and reads its blocks, their attention modules, its pooling and its classifier head. How an
input size becomes a patch grid, and how many prefix tokens (class, distillation, registers)
come before the patches, is read by :func:`taskcam.reshape.token_layout`, the same reading
the CAM engine's token reshapes use, so attention maps and CAMs always agree on the grid.

The helpers here relate a layout to captured attention: :func:`query_index` turns a query
(``"cls"``, a patch ``(row, col)``, a token index) into a token index,
:func:`ordered_records` puts the captured records in block order and :func:`check_tokens`
checks that the attention holds the prefix tokens and the patch grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import nn

from taskcam.attention.discovery import find_attention_modules, module_kind
from taskcam.attention.recording import AttentionRecord
from taskcam.errors import TaskcamError
from taskcam.reshape import TokenLayout, token_layout

__all__ = [
    "Query",
    "ViTLayout",
    "check_tokens",
    "ordered_records",
    "query_index",
    "vit_layout",
]

#: a query token: ``"cls"`` (or ``"mean"`` where a method allows it), a patch ``(row, col)``,
#: or a token index (the prefix tokens first, then the patches row by row)
Query = Union[str, tuple[int, int], int]


@dataclass
class ViTLayout:
    """What the attention explanations need to know about a ViT-style model.

    Attributes:
        vit: the transformer module inside the model (the model itself, or inside a wrapper).
        family: ``timm`` or ``torchvision``.
        tokens: its token layout (patch size, prefix token counts, padding), read by
            :func:`taskcam.reshape.token_layout`.
        pool: ``token`` (the class token is pooled) or ``avg`` (patch tokens are averaged).
        attention: the blocks' attention module names, relative to the *model*, in order.
        blocks: the blocks, in order.
        class_token: the first prefix token is a class token (``False`` for models whose
            prefix holds register tokens only).
    """

    vit: nn.Module
    family: str
    tokens: TokenLayout
    pool: str
    attention: list[str]
    blocks: list[nn.Module] = field(repr=False)
    class_token: bool = True

    @property
    def patch(self) -> tuple[int, int]:
        """``(ph, pw)`` patch size in pixels."""
        return self.tokens.patch

    @property
    def prefix(self) -> int:
        """Tokens before the patch tokens in the blocks (class, distillation, registers)."""
        assert self.tokens.prefix is not None  # a ViT's token layout names its prefix
        return self.tokens.prefix[0]

    @property
    def pads(self) -> bool:
        """The patch embedding pads the input right and bottom to whole patches."""
        return self.tokens.pads

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        """The patch grid ``(h, w)`` for an input of spatial ``size`` ``(H, W)``: rounded up
        when the patch embedding pads the input to whole patches (timm ``dynamic_img_pad``),
        else down (see :meth:`taskcam.reshape.TokenLayout.grid`)."""
        return self.tokens.grid(size)

    def head(self, tokens: torch.Tensor) -> torch.Tensor:
        """The model's own final norm, pooling and classifier applied to a block's tokens."""
        if self.family == "timm":
            return self.vit.forward_head(self.vit.norm(tokens))
        return self.vit.heads(self.vit.encoder.ln(tokens)[:, 0])


def _timm_layout(vit: nn.Module, base: str, tokens: TokenLayout) -> ViTLayout:
    """The layout of a timm ViT-style module ``vit`` named ``base`` in the model."""
    pool = getattr(vit, "global_pool", "token")
    if pool not in ("token", "avg"):
        raise TaskcamError(
            f"{type(vit).__name__} pools with {pool!r}; attention explanations support "
            "class-token ('token') and average ('avg') pooling"
        )
    if pool == "token" and not getattr(vit, "num_prefix_tokens", 0):
        raise TaskcamError("timm model pools a class token it does not have")
    block_names = [n for n, _ in vit.blocks.named_children()]
    return ViTLayout(
        vit=vit,
        family="timm",
        tokens=tokens,
        pool=pool,
        attention=[f"{base}blocks.{b}.attn" for b in block_names],
        blocks=list(vit.blocks),
        # registers without a class token (timm class_token=False, reg_tokens=N)
        class_token=getattr(vit, "cls_token", True) is not None,
    )


def _is_timm_vit(vit: nn.Module) -> bool:
    blocks = getattr(vit, "blocks", None)
    return (
        hasattr(vit, "patch_embed")
        and isinstance(blocks, (nn.Sequential, nn.ModuleList))
        and hasattr(vit, "forward_head")
        and all(module_kind(getattr(b, "attn", nn.Identity())) == "timm" for b in blocks)
        and len(blocks) > 0
    )


def _is_torchvision_vit(vit: nn.Module) -> bool:
    encoder = getattr(vit, "encoder", None)
    return (
        hasattr(vit, "conv_proj")
        and hasattr(vit, "class_token")
        and encoder is not None
        and hasattr(encoder, "layers")
    )


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
        tokens = token_layout(vit)
        if tokens is None or tokens.stages != 1 or not tokens.prefix:
            continue  # not a plain ViT: no single patch grid
        if _is_timm_vit(vit):
            return _timm_layout(vit, prefix_name, tokens)
        if _is_torchvision_vit(vit):
            layers = list(vit.encoder.layers.named_children())
            return ViTLayout(
                vit=vit,
                family="torchvision",
                tokens=tokens,
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


def query_index(query: Query, layout: ViTLayout, grid: tuple[int, int]) -> int:
    """The token index of ``query`` in attention over ``layout.prefix + h*w`` tokens.

    Args:
        query: ``"cls"`` (the class token), a patch ``(row, col)`` or a token index.
        layout: the model's layout.
        grid: ``(h, w)`` patch grid of the input.

    Raises:
        TaskcamError: ``"cls"`` on a model without a class token, another string, a token
            index or patch outside the grid; the message names the query.

    Example:
        >>> import torchvision
        >>> lay = vit_layout(torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64))
        >>> query_index("cls", lay, (2, 2)), query_index((1, 0), lay, (2, 2))
        (0, 3)
    """
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


def ordered_records(records: Sequence[AttentionRecord], layout: ViTLayout) -> list[AttentionRecord]:
    """The records of ``layout.attention``'s modules, in block order.

    Raises:
        TaskcamError: a block's attention did not run in the forward pass (names them).
    """
    recs = {r.name: r for r in records}
    missing = [n for n in layout.attention if n not in recs]
    if missing:
        raise TaskcamError(f"attention modules {missing} did not run in the forward pass")
    return [recs[n] for n in layout.attention]


def check_tokens(attn: torch.Tensor, layout: ViTLayout, grid: tuple[int, int]) -> None:
    """Check that ``attn: Tensor[..., N, N]`` is over ``layout.prefix`` prefix tokens and a
    ``grid`` of patches.

    Raises:
        TaskcamError: ``N`` is another count (an input size the grid was not read for).
    """
    n = attn.shape[-1]
    if n != layout.prefix + grid[0] * grid[1]:
        raise TaskcamError(
            f"attention over {n} tokens does not hold {layout.prefix} prefix token(s) and a "
            f"{grid[0]}x{grid[1]} patch grid (input size not a multiple of the patch size?)"
        )
