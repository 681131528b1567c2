"""Reshape transforms: turn a transformer layer's output into ``Tensor[B, C, h, w]`` for CAMs.

CAM methods weight the channels of a spatial feature map. Transformers do not give one: a
ViT or DeiT block outputs tokens ``Tensor[B, P + h*w, C]`` (``P`` prefix tokens: class,
distillation, registers, then the patch grid in row-major order), and the Swin stages of timm
and torchvision are channels-last ``Tensor[B, h, w, C]``. The transforms here turn both into
``Tensor[B, C, h, w]`` and back (``inverse``, used by methods that edit the layer, such as
Ablation-CAM), and :func:`infer_reshape` reads which one a layer needs from the model and the
input, never from a hard-coded grid:

- timm ``VisionTransformer`` and its kin (DeiT, distilled, register tokens, dynamic sizes):
  ``patch_embed`` gives the patch size and grid, ``num_prefix_tokens`` the prefix;
- torchvision ``VisionTransformer``: ``patch_size`` and its class token;
- timm and torchvision Swin / SwinV2: channels-last stages, patch size times ``2**stage``;
- Hugging Face ``transformers`` vision models: ``config.patch_size``; the prefix is what the
  token count leaves over the patch grid;
- any other model: the grid is derived from the input size and the token count alone.

The ViT grid and its prefix tokens follow Dosovitskiy et al., "An Image is Worth 16x16 Words",
ICLR 2021; distillation tokens Touvron et al., "Training data-efficient image transformers",
ICML 2021; register tokens Darcet et al., "Vision Transformers Need Registers", ICLR 2024;
Swin's channels-last stages Liu et al., "Swin Transformer", ICCV 2021.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = [
    "ChannelsLast",
    "Reshape",
    "TokenLayout",
    "TokensToGrid",
    "first_tensor",
    "infer_reshape",
    "reshape_for_output",
    "token_layout",
]

Reshape = Callable[[torch.Tensor], torch.Tensor]

# Hierarchical transformers halve the grid this many times at most (Swin: 3).
_MAX_STAGES = 6


class TokensToGrid:
    """ViT tokens ``Tensor[B, P + h*w, C]`` to ``Tensor[B, C, h, w]``, dropping P prefix tokens.

    Args:
        grid: ``(h, w)`` of the patch grid.
        prefix: how many tokens come before the patch tokens (class, distillation, registers).
        covers: ``(H, W)`` input pixels the grid covers (patches × patch size) when that is
            not the whole input: a ViT that pads its input to whole patches covers more
            (``dynamic_img_pad``), one that drops the remainder less. Maps are laid on that
            area and cropped (or padded with zeros) to the input, not stretched over it.

    Example:
        >>> TokensToGrid((2, 3), prefix=1)(torch.rand(4, 7, 16)).shape
        torch.Size([4, 16, 2, 3])
    """

    def __init__(
        self, grid: tuple[int, int], prefix: int = 1, covers: Optional[tuple[int, int]] = None
    ) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        self.prefix = int(prefix)
        self.covers = None if covers is None else (int(covers[0]), int(covers[1]))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        if x.ndim != 3 or x.shape[1] != self.prefix + h * w:
            raise TaskcamError(
                f"tokens of shape {tuple(x.shape)} do not hold {self.prefix} prefix token(s) "
                f"and a {h}x{w} grid"
            )
        return x[:, self.prefix :].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)

    def inverse(self, grid: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Put an edited grid back into tokens, the prefix tokens taken from ``like``.

        Args:
            grid: ``Tensor[N, C, h, w]``; ``N`` is ``like``'s batch, or ``like`` holds one
                image whose prefix tokens are repeated ``N`` times.
            like: the original tokens ``Tensor[B, P + h*w, C]``.

        Example:
            >>> t = torch.rand(2, 7, 4); r = TokensToGrid((2, 3), prefix=1)
            >>> torch.equal(r.inverse(r(t), t), t)
            True
        """
        n, c = grid.shape[0], grid.shape[1]
        patches = grid.permute(0, 2, 3, 1).reshape(n, -1, c)
        prefix = like[:, : self.prefix]
        if prefix.shape[0] != n:
            prefix = prefix.expand(n, *prefix.shape[1:])
        return torch.cat([prefix.to(patches.dtype), patches], dim=1)

    def __repr__(self) -> str:
        covers = "" if self.covers is None else f", covers={self.covers}"
        return f"TokensToGrid(grid={self.grid}, prefix={self.prefix}{covers})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, TokensToGrid)
            and other.grid == self.grid
            and other.prefix == self.prefix
            and other.covers == self.covers
        )

    def __hash__(self) -> int:
        return hash((TokensToGrid, self.grid, self.prefix, self.covers))


class ChannelsLast:
    """``Tensor[B, h, w, C]`` (Swin stages in timm and torchvision) to ``Tensor[B, C, h, w]``.

    Example:
        >>> ChannelsLast()(torch.rand(2, 4, 5, 8)).shape
        torch.Size([2, 8, 4, 5])
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise TaskcamError(f"expected a channels-last Tensor[B, h, w, C], got {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2)

    def inverse(self, grid: torch.Tensor, like: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``Tensor[B, C, h, w]`` back to ``Tensor[B, h, w, C]``.

        Example:
            >>> x = torch.rand(1, 2, 3, 4); r = ChannelsLast()
            >>> torch.equal(r.inverse(r(x)), x)
            True
        """
        return grid.permute(0, 2, 3, 1)

    def __repr__(self) -> str:
        return "ChannelsLast()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelsLast)

    def __hash__(self) -> int:
        return hash(ChannelsLast)


def first_tensor(output: Any) -> Optional[torch.Tensor]:
    """The tensor a layer's output carries: itself, or the first tensor of a tuple or list.

    Hugging Face layers return tuples such as ``(hidden_states, attentions)``; the hidden
    states come first.

    Example:
        >>> first_tensor((None, torch.zeros(2), torch.ones(3))).shape
        torch.Size([2])
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return None


# -- what the model says about its token layout ------------------------------------------------


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


@dataclass(frozen=True)
class TokenLayout:
    """How one transformer lays out its tokens, read from the model by :func:`token_layout`.

    Attributes:
        source: what told us, for messages: ``"timm VisionTransformer"``,
            ``"torchvision SwinTransformer"``...
        patch: ``(ph, pw)`` the first grid's stride in pixels.
        stages: how many times the grid may halve (1: never, a plain ViT).
        prefix: the prefix token counts a layer's tokens may hold, the model's own first
            (``(5, 0)``: class token and 4 registers, or none before they are added);
            ``None``: any.
        channels_last: 4-D outputs are ``Tensor[B, h, w, C]``.
        feat_size: the model's own ``(H, W) -> (h, w)`` helper, for dynamic-size ViTs.
        pads: the patch embedding pads the input right and bottom to whole patches (timm
            ``patch_embed.dynamic_img_pad``), so the grid rounds up.

    Example:
        >>> import torchvision
        >>> lay = token_layout(torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64))
        >>> lay.patch, lay.prefix, lay.grid((40, 56))
        ((16, 16), (1, 0), (2, 3))
    """

    source: str
    patch: tuple[int, int]
    stages: int
    prefix: Optional[tuple[int, ...]]
    channels_last: bool
    feat_size: Optional[Callable[[tuple[int, int]], tuple[int, int]]] = None
    pads: bool = False

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        """The first-stage patch grid ``(h, w)`` for an input of spatial ``size`` ``(H, W)``:
        rounded up when the patch embedding pads the input to whole patches, else down (the
        remainder is dropped)."""
        (h, w), (ph, pw) = (int(size[0]), int(size[1])), self.patch
        if self.pads:
            return -(-h // ph), -(-w // pw)
        return h // ph, w // pw

    def grids(self, size: tuple[int, int]) -> list[tuple[int, int]]:
        """The patch grids this layout can give for an input of ``size``, finest first."""
        out: list[tuple[int, int]] = []
        if self.feat_size is not None:
            # a model's own helper may reject odd sizes; the strides below still apply
            with contextlib.suppress(Exception):
                out.append(tuple(int(v) for v in self.feat_size(size)))  # type: ignore[arg-type]
        for k in range(self.stages):
            sh, sw = self.patch[0] * 2**k, self.patch[1] * 2**k
            for grid in (
                (size[0] // sh, size[1] // sw),
                (math.ceil(size[0] / sh), math.ceil(size[1] / sw)),
            ):
                if min(grid) >= 1 and grid not in out:
                    out.append(grid)
        return out


def _is_timm_channels_last(module: nn.Module) -> bool:
    fmt = getattr(module, "output_fmt", None)
    return fmt is not None and str(getattr(fmt, "value", fmt)) == "NHWC"


def _from_torchvision(cls: type, name: str) -> bool:
    """``cls`` is (or subclasses) torchvision's class ``name``."""
    return any(c.__module__.startswith("torchvision.") and c.__name__ == name for c in cls.__mro__)


def token_layout(module: nn.Module) -> Optional[TokenLayout]:
    """The token layout ``module`` declares, if it is a transformer taskcam knows.

    Known: the timm ViT family (``patch_embed`` and ``num_prefix_tokens``), timm channels-last
    models with a patch embedding (Swin), torchvision ``VisionTransformer`` and
    ``SwinTransformer``, and Hugging Face vision models with a ``config.patch_size``.

    Returns:
        Its :class:`TokenLayout`, or ``None`` for any other module.

    Example:
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2,
        ...                         reg_tokens=4, dynamic_img_pad=True)
        >>> lay = token_layout(vit)
        >>> lay.prefix, lay.pads, lay.grid((36, 44))
        ((5, 0), True, (5, 6))
    """
    cls = type(module)
    embed = getattr(module, "patch_embed", None)
    # timm ViT family (VisionTransformer, distilled DeiT, registers, EVA, BEiT...)
    if embed is not None and hasattr(module, "num_prefix_tokens"):
        patch = _pair(getattr(embed, "patch_size", 16))
        feat = getattr(embed, "dynamic_feat_size", None)
        if not getattr(module, "dynamic_img_size", False):
            feat = None  # a fixed-size model: its grid is the input over the patch
        # the patch embedding's own output has no prefix tokens yet
        prefix = tuple(dict.fromkeys((int(module.num_prefix_tokens), 0)))
        pads = bool(getattr(embed, "dynamic_img_pad", False))
        return TokenLayout(f"timm {cls.__name__}", patch, 1, prefix, False, feat, pads)
    # timm Swin / SwinV2 (and other channels-last timm models with a patch embedding)
    if embed is not None and _is_timm_channels_last(module):
        patch = _pair(getattr(embed, "patch_size", 4))
        return TokenLayout(f"timm {cls.__name__}", patch, _MAX_STAGES, (0,), True)
    module_path = cls.__module__
    # torchvision ViT (and subclasses of it)
    if _from_torchvision(cls, "VisionTransformer"):
        prefix = (1, 0) if getattr(module, "class_token", None) is not None else (0,)
        patch = _pair(module.patch_size)
        return TokenLayout("torchvision VisionTransformer", patch, 1, prefix, False)
    # torchvision Swin / Swin V2: features[0][0] is the patch convolution
    if module_path.startswith("torchvision.") and cls.__name__ == "SwinTransformer":
        try:
            patch = _pair(module.features[0][0].stride)
        except (AttributeError, IndexError, TypeError):
            patch = (4, 4)
        return TokenLayout("torchvision SwinTransformer", patch, _MAX_STAGES, (0,), True)
    # Hugging Face transformers vision models
    config = getattr(module, "config", None)
    if module_path.startswith("transformers.") and getattr(config, "patch_size", None):
        name = f"Hugging Face {cls.__name__}"
        nhwc = cls.__name__ == "SamVisionEncoder"  # SAM's ViT blocks give Tensor[B, h, w, C]
        return TokenLayout(name, _pair(config.patch_size), _MAX_STAGES, None, nhwc)
    if module_path.startswith("transformers.") and cls.__name__ == "Sam2HieraDetModel":
        patch = _pair(config.patch_stride)  # SAM 2's Hiera: channels-last stages
        return TokenLayout(f"Hugging Face {cls.__name__}", patch, _MAX_STAGES, (0,), True)
    return None


def _find_layout(model: nn.Module, layer: str) -> tuple[Optional[TokenLayout], bool]:
    """The layout of the innermost known transformer containing ``layer``, and whether a
    module between them declares channels-last outputs (timm's ``PatchEmbed`` of a
    dynamic-size ViT gives ``Tensor[B, h, w, C]``)."""
    parts = layer.split(".") if layer else []
    declared = False
    for depth in range(len(parts), -1, -1):
        name = ".".join(parts[:depth])
        try:
            module = model.get_submodule(name) if name else model
        except AttributeError:
            continue
        layout = token_layout(module)
        if layout is not None:
            return layout, declared
        declared = declared or _is_timm_channels_last(module)
    return None, declared


def _is_conv(model: nn.Module, layer: str) -> bool:
    try:
        return isinstance(model.get_submodule(layer), nn.Conv2d)
    except AttributeError:
        return False


def _solve_tokens(
    n: int, grids: list[tuple[int, int]], prefixes: Optional[tuple[int, ...]]
) -> Optional[tuple[int, tuple[int, int]]]:
    """``(P, (h, w))`` with ``P + h*w == n``: the first allowed prefix count that fits, or
    with ``prefixes=None`` the fewest prefix tokens (fewer than the patches)."""
    if prefixes is not None:
        for p in prefixes:
            for grid in grids:
                if p + grid[0] * grid[1] == n:
                    return p, grid
        return None
    best: Optional[tuple[int, tuple[int, int]]] = None
    for grid in grids:
        p = n - grid[0] * grid[1]
        if 0 <= p < grid[0] * grid[1] and (best is None or p < best[0]):
            best = (p, grid)
    return best


def _any_grids(size: tuple[int, int]) -> list[tuple[int, int]]:
    """Every grid an integer stride can cut ``size`` into (floor and ceil), finest first."""
    out: list[tuple[int, int]] = []
    for s in range(1, max(size) + 1):
        for grid in ((size[0] // s, size[1] // s), (-(-size[0] // s), -(-size[1] // s))):
            if min(grid) >= 1 and grid not in out:
                out.append(grid)
    return out


def _fail(layer: str, shape: tuple[int, ...], why: str) -> TaskcamError:
    return TaskcamError(
        f"layer {layer!r} outputs shape {shape}, which cannot be made a "
        f"Tensor[B, C, h, w] grid: {why}; choose another layer or pass reshape="
    )


def reshape_for_output(
    model: nn.Module,
    layer: str,
    shape: Iterable[int],
    input_size: Iterable[int],
    *,
    batch: Optional[int] = None,
) -> Optional[Reshape]:
    """The transform that turns ``layer``'s output into ``Tensor[B, C, h, w]``, from its shape.

    No forward pass: the output's ``shape`` and the input's ``(H, W)`` are given, and the model
    is only read for its token layout (see the module docstring). :func:`infer_reshape` runs
    the forward for you.

    Args:
        model: the network (or a wrapper around it: the innermost known transformer that
            contains ``layer`` is read).
        layer: the layer's dotted name in ``model``.
        shape: the layer's output shape, batch first.
        input_size: ``(H, W)`` of the model input.
        batch: the input's batch size ``B``. When given, an output whose first dimension is
            not ``B`` is refused: it holds something other than one row per image (timm
            Swin's window attention gives ``Tensor[B*nW, n, C]``, one row per window).

    Returns:
        ``None`` when the output is already ``Tensor[B, C, h, w]``, a :class:`TokensToGrid`
        for ``Tensor[B, P + h*w, C]`` tokens, or :class:`ChannelsLast` for the
        ``Tensor[B, h, w, C]`` stages of channels-last models.

    Raises:
        TaskcamError: the output cannot be made a grid (a pooled ``Tensor[B, C]``, tokens whose
            count fits no patch grid of this input); the message names the layer and shape.

    Example:
        >>> import timm
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, reg_tokens=4)
        >>> reshape_for_output(vit, "blocks.11.norm1", (1, 201, 192), (224, 224))
        TokensToGrid(grid=(14, 14), prefix=5)
    """
    shape = tuple(int(s) for s in shape)
    size = tuple(int(s) for s in input_size)
    if len(size) != 2:
        raise TaskcamError(f"input_size: expected (H, W), got {size}")
    if batch is not None and shape and shape[0] != int(batch):
        raise _fail(
            layer,
            shape,
            f"its first dimension {shape[0]} is not the input batch {int(batch)}, so its rows "
            "are not images (window attention gives Tensor[B*nW, n, C], one row per window)",
        )
    layout, declared_nhwc = _find_layout(model, layer)
    if len(shape) == 4:
        if layout is None or _is_conv(model, layer):
            return None  # a convolutional feature map, channels first in torch
        grids = layout.grids(size)  # type: ignore[arg-type]
        nhwc, nchw = shape[1:3] in grids, shape[2:4] in grids
        if layout.channels_last:
            # the model is channels-last; a channels-first map inside it (torchvision Swin's
            # permute, a patch convolution) shows its grid in the last two dimensions
            return None if nchw and not nhwc else ChannelsLast()
        if nchw:
            return None
        if not nhwc and shape[2:4] in _any_grids(size):
            return None  # a decoder's map at a stride finer than the patches (DPT's head)
        if nhwc and declared_nhwc:
            return ChannelsLast()
        raise _fail(
            layer,
            shape,
            f"{layout.source} grids for a {size[0]}x{size[1]} input "
            f"are {grids[:4]}, and no grid sits in its last two dimensions",
        )
    if len(shape) == 3:
        n = shape[1]
        if layout is not None:
            solved = _solve_tokens(n, layout.grids(size), layout.prefix)  # type: ignore[arg-type]
            if solved is None:
                prefix = "some" if layout.prefix is None else " or ".join(map(str, layout.prefix))
                raise _fail(
                    layer,
                    shape,
                    f"{layout.source} with {layout.patch[0]}x{layout.patch[1]} patches on a "
                    f"{size[0]}x{size[1]} input has {prefix} prefix token(s) and grids "
                    f"{layout.grids(size)[:4]}, and {n} tokens fit none",  # type: ignore[arg-type]
                )
        else:
            solved = _solve_tokens(n, _any_grids(size), None)  # type: ignore[arg-type]
            if solved is None:
                raise _fail(layer, shape, f"{n} tokens fit no patch grid of a {size} input")
        prefix, grid = solved
        covers = None
        if layout is not None and layout.stages == 1:  # a plain ViT: one grid, patch stride
            area = (grid[0] * layout.patch[0], grid[1] * layout.patch[1])
            covers = None if area == size else area
        return TokensToGrid(grid, prefix, covers)
    raise _fail(layer, shape, "expected tokens Tensor[B, N, C] or a map Tensor[B, C, h, w]")


def infer_reshape(model: nn.Module, layer: str, example: torch.Tensor) -> Optional[Reshape]:
    """Run ``model`` once on ``example`` and infer the transform ``layer``'s output needs.

    The model's train/eval mode is left as it was and no hook stays behind. A layer that
    returns a tuple (Hugging Face) is read through its first tensor, the hidden states.

    Args:
        model: the network.
        layer: the layer's dotted name.
        example: an input batch ``Tensor[B, 3, H, W]`` of the size the model will see.

    Returns:
        As :func:`reshape_for_output`: ``None`` for a ``Tensor[B, C, h, w]`` output, else a
        :class:`TokensToGrid` or :class:`ChannelsLast`.

    Raises:
        TaskcamError: an unknown layer, a layer not called by the forward, or an output that
            cannot be made a grid (the message names the layer and its shape).

    Example:
        >>> import timm
        >>> deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False)
        >>> infer_reshape(deit, "blocks.11.norm1", torch.zeros(1, 3, 224, 224))
        TokensToGrid(grid=(14, 14), prefix=2)
        >>> swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)
        >>> infer_reshape(swin, "layers.3.blocks.1.norm1", torch.zeros(1, 3, 224, 224))
        ChannelsLast()
    """
    from taskcam.capture import ModelState
    from taskcam.layers import resolve_layers

    ((name, module),) = resolve_layers(model, layer)
    seen: list[torch.Size] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        tensor = first_tensor(output)
        if tensor is not None and not seen:
            seen.append(tensor.shape)

    state = ModelState(model)
    handle = module.register_forward_hook(hook)
    try:
        state.eval_and_freeze(False)
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
        state.restore()
    if not seen:
        raise TaskcamError(f"layer {name!r} was not called (or returned no tensor) in a forward")
    batch = example.shape[0] if example.ndim == 4 else None
    return reshape_for_output(model, name, seen[0], example.shape[-2:], batch=batch)
