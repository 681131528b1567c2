"""Model internals as pictures: a convolution's filters, a layer's feature maps, and a ViT's
attention as a layers × heads grid."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.io import ImageLike, to_rgb_uint8
from taskcam.render.annotation import draw_box
from taskcam.render.overlays import colorize, colormap_id, grid, overlay, resize_image

__all__ = ["attention_grid", "feature_map_grid", "filter_grid"]


def filter_grid(
    conv: nn.Conv2d | torch.Tensor,
    *,
    max_filters: int = 64,
    scale: int = 8,
    pad: int = 2,
    symmetric: bool = False,
) -> np.ndarray:
    """Draw a convolution's filters, the classic first-layer picture.

    Each filter ``[in_ch, kh, kw]`` becomes one tile: with 3 input channels its weights are the
    tile's RGB, otherwise the mean over input channels is shown as gray. Each filter is normalised
    on its own to [0, 1]: ``(w - min) / (max - min)`` (``symmetric=True``: ``w / (2 max|w|) + 0.5``
    so that a zero weight is mid-gray); a constant filter is mid-gray. Tiles are enlarged ``scale``
    times with nearest neighbour and laid out in a near-square grid on a white background.

    Args:
        conv: an ``nn.Conv2d`` or its weight ``Tensor[O, I, kh, kw]``.
        max_filters: draw only the first ``max_filters`` filters.
        scale: integer enlargement of each tile.
        pad: pixels between tiles and around the grid.
        symmetric: normalise around zero instead of min-max.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: ``conv`` is not a Conv2d or a 4-D weight (the message names the shape), or
            ``max_filters``/``scale``/``pad`` is out of range.

    Example:
        >>> conv = torch.nn.Conv2d(3, 16, 7)
        >>> filter_grid(conv, scale=4, pad=1).shape  # 4 x 4 tiles of 28 x 28
        (117, 117, 3)
    """
    if isinstance(conv, nn.Conv2d):
        weight = conv.weight
    elif isinstance(conv, torch.Tensor):
        weight = conv
    else:
        raise TaskcamError(
            f"conv must be a torch.nn.Conv2d or a weight tensor, got {type(conv).__name__}"
        )
    if weight.dim() != 4 or weight.numel() == 0:
        raise TaskcamError(
            f"conv weight must be a non-empty [out_ch, in_ch, kh, kw] tensor, "
            f"got shape {tuple(weight.shape)}"
        )
    check_positive(max_filters, "max_filters")
    check_positive(scale, "scale")
    check_positive(pad, "pad", allow_zero=True)

    w = weight.detach()[:max_filters].float().cpu()  # [N, I, kh, kw]
    if w.shape[1] == 3:
        tiles = w.permute(0, 2, 3, 1)  # [N, kh, kw, 3]
    else:
        tiles = w.mean(dim=1, keepdim=True).permute(0, 2, 3, 1).expand(-1, -1, -1, 3)
    tiles = torch.nan_to_num(tiles, nan=0.0)
    flat = tiles.reshape(tiles.shape[0], -1)
    if symmetric:
        m = flat.abs().amax(dim=1).view(-1, 1, 1, 1)
        norm = torch.where(
            m > 0, tiles / (2 * m).clamp_min(1e-12) + 0.5, torch.full_like(tiles, 0.5)
        )
    else:
        lo = flat.amin(dim=1).view(-1, 1, 1, 1)
        span = (flat.amax(dim=1) - flat.amin(dim=1)).view(-1, 1, 1, 1)
        norm = torch.where(
            span > 0, (tiles - lo) / span.clamp_min(1e-12), torch.full_like(tiles, 0.5)
        )
    u8 = (norm.clamp(0, 1) * 255).round().to(torch.uint8).numpy()  # [N, kh, kw, 3]
    u8 = u8.repeat(scale, axis=1).repeat(scale, axis=2)  # nearest-neighbour enlargement
    return _tile_grid(list(u8), pad=pad)


def feature_map_grid(
    model: nn.Module,
    layer: str | nn.Module,
    image_tensor: torch.Tensor,
    *,
    max_maps: int = 64,
    colormap: str | int = "viridis",
    tile: int = 64,
    pad: int = 2,
) -> np.ndarray:
    """Show a layer's output channels for one image, strongest first.

    The model runs once in eval mode under ``torch.no_grad`` with a forward hook on ``layer``;
    the hook is removed and every module's train/eval flag restored afterwards, even on error.
    Channels are ordered by mean activation (descending), the first ``max_maps`` are each
    normalised to [0, 1] (a constant map is 0), coloured and laid out in a near-square grid. If the
    layer runs more than once in a forward pass, its first output is shown.

    Args:
        model: the network.
        layer: a submodule of ``model`` or its dotted name (``"layer3.1.conv2"``).
        image_tensor: the preprocessed input ``Tensor[1, 3, H, W]`` (or ``[3, H, W]``); moved to
            the model's device and floating dtype.
        max_maps: show at most this many channels.
        colormap: an OpenCV colormap name (see :data:`COLORMAPS`).
        tile: height in pixels of each map tile; the width follows the map's aspect ratio.
        pad: pixels between tiles and around the grid.

    Returns:
        ``np.ndarray[H', W', 3]`` uint8 RGB.

    Raises:
        TaskcamError: unknown layer name, a module that is not part of ``model``, a layer that
            does not run or whose output is not ``[1, C, h, w]`` (the message names layer and
            shape), or a bad ``image_tensor`` shape.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU())
        >>> feature_map_grid(net, "0", torch.rand(1, 3, 16, 16), tile=14, pad=1).shape
        (46, 46, 3)
    """
    cmap = colormap_id(colormap)
    check_positive(max_maps, "max_maps")
    check_positive(tile, "tile")
    check_positive(pad, "pad", allow_zero=True)
    module, name = _resolve_layer(model, layer)
    if not isinstance(image_tensor, torch.Tensor):
        raise TaskcamError(
            f"image_tensor must be a torch.Tensor [1, 3, H, W], got {type(image_tensor).__name__}"
        )
    x = image_tensor.unsqueeze(0) if image_tensor.dim() == 3 else image_tensor
    if x.dim() != 4 or x.shape[0] != 1:
        raise TaskcamError(
            f"image_tensor must be [1, C, H, W] (one image), got shape {tuple(image_tensor.shape)}"
        )
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(param.device, dtype=param.dtype if param.is_floating_point() else None)

    captured: list[object] = []

    def hook(_mod: nn.Module, _inp: object, out: object) -> None:
        if not captured:
            captured.append(out.detach() if isinstance(out, torch.Tensor) else out)

    modes = [(m, m.training) for m in model.modules()]
    handle = module.register_forward_hook(hook)
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        for m, flag in modes:
            m.training = flag

    if not captured:
        raise TaskcamError(f"layer '{name}' did not run in the forward pass")
    out = captured[0]
    if not isinstance(out, torch.Tensor):
        raise TaskcamError(
            f"layer '{name}' output must be a tensor [1, C, h, w], got {type(out).__name__}"
        )
    if out.dim() != 4 or out.shape[0] != 1:
        raise TaskcamError(
            f"layer '{name}' output must be [1, C, h, w], got shape {tuple(out.shape)}"
        )

    maps = torch.nan_to_num(out[0].float(), nan=0.0, posinf=0.0, neginf=0.0)  # [C, h, w]
    order = torch.argsort(maps.mean(dim=(1, 2)), descending=True, stable=True)[:max_maps]
    maps = maps[order]
    lo = maps.amin(dim=(1, 2), keepdim=True)
    span = maps.amax(dim=(1, 2), keepdim=True) - lo
    maps = torch.where(span > 0, (maps - lo) / span.clamp_min(1e-12), torch.zeros_like(maps))
    maps_np = maps.cpu().numpy()  # [K, h, w] in [0, 1]

    h, w = maps_np.shape[1:]
    th, tw = tile, max(1, round(tile * w / h))
    tiles = [colorize(resize_image(m, th, tw), cmap) for m in maps_np]
    return _tile_grid(tiles, pad=pad)


def attention_grid(
    image: ImageLike,
    maps: np.ndarray | torch.Tensor,
    *,
    layer_labels: Sequence[str] | None = None,
    colormap: str | int = "jet",
    alpha: float = 0.5,
    marker: tuple[int, int] | None = None,
    cell: int = 112,
    mean_column: bool = True,
) -> np.ndarray:
    """Draw attention maps as a layers × heads grid of overlays (the last column their mean).

    Each cell is the image with one head's map over the patch grid overlaid, the map
    normalised on its own (min-max; a constant map shows as 0). With ``marker``, the query
    patch ``(row, col)`` is outlined in every cell.

    Args:
        image: the (resized) model input picture, any form :func:`taskcam.io.to_rgb_uint8`
            accepts.
        maps: ``[L, heads, h, w]`` attention of one query over the patch grid.
        layer_labels: one label per layer (default ``L0``, ``L1``, ...).
        colormap: OpenCV colormap name.
        alpha: heatmap weight in the overlays.
        marker: the query patch ``(row, col)``, or ``None``.
        cell: side of each cell in pixels.
        mean_column: append a column with the heads' mean.

    Returns:
        ``np.ndarray[H, W, 3]`` uint8 RGB.

    Raises:
        TaskcamError: ``maps`` is not 4-D or the label count does not match.

    Example:
        >>> img = np.zeros((32, 32, 3), np.uint8)
        >>> attention_grid(img, np.random.rand(2, 3, 4, 4), cell=32).shape[1] > 4 * 32
        True
    """
    if isinstance(maps, torch.Tensor):
        maps = maps.detach().float().cpu().numpy()
    arr = np.nan_to_num(np.asarray(maps, dtype=np.float32))
    if arr.ndim != 4 or 0 in arr.shape:
        raise TaskcamError(f"maps must be [layers, heads, h, w], got shape {arr.shape}")
    n_layers, n_heads, gh, gw = arr.shape
    if layer_labels is None:
        layer_labels = [f"L{i}" for i in range(n_layers)]
    if len(layer_labels) != n_layers:
        raise TaskcamError(f"layer_labels has {len(layer_labels)} labels for {n_layers} layers")
    check_positive(cell, "cell")
    picture = resize_image(to_rgb_uint8(image), cell, cell)
    if mean_column:
        arr = np.concatenate([arr, arr.mean(axis=1, keepdims=True)], axis=1)
    lo = arr.min(axis=(2, 3), keepdims=True)
    span = arr.max(axis=(2, 3), keepdims=True) - lo
    norm = np.where(span > 0, (arr - lo) / np.where(span > 0, span, 1.0), 0.0)
    box = None
    if marker is not None:
        r, c = int(marker[0]), int(marker[1])
        box = [c * cell / gw, r * cell / gh, (c + 1) * cell / gw - 1, (r + 1) * cell / gh - 1]
    rows = []
    for layer in norm:
        row = []
        for m in layer:
            hm = cv2.resize(m, (cell, cell), interpolation=cv2.INTER_NEAREST)
            out = overlay(picture, hm, colormap=colormap, alpha=alpha)
            row.append(draw_box(out, box, thickness=1) if box is not None else out)
        rows.append(row)
    cols = [f"head {k}" for k in range(n_heads)] + (["mean"] if mean_column else [])
    return grid(rows, row_labels=list(layer_labels), col_labels=cols)


def _tile_grid(tiles: list[np.ndarray], *, pad: int, background: int = 255) -> np.ndarray:
    """Same-size ``[h, w, 3]`` uint8 tiles -> near-square grid (``ceil(sqrt(n))`` columns)."""
    n = len(tiles)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    th, tw = tiles[0].shape[:2]
    canvas = np.full((rows * th + (rows + 1) * pad, cols * tw + (cols + 1) * pad, 3), background)
    canvas = canvas.astype(np.uint8)
    for k, t in enumerate(tiles):
        r, c = divmod(k, cols)
        y, x = pad + r * (th + pad), pad + c * (tw + pad)
        canvas[y : y + th, x : x + tw] = t
    return canvas


def _resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[nn.Module, str]:
    if isinstance(layer, str):
        try:
            return model.get_submodule(layer), layer
        except AttributeError as e:
            raise TaskcamError(f"model has no layer named '{layer}'") from e
    if isinstance(layer, nn.Module):
        for name, m in model.named_modules():
            if m is layer:
                return m, name or "<model>"
        raise TaskcamError(f"layer {type(layer).__name__} is not a submodule of the model")
    raise TaskcamError(f"layer must be a dotted name or an nn.Module, got {type(layer).__name__}")


def check_positive(value: int, name: str, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < (0 if allow_zero else 1):
        kind = "a non-negative" if allow_zero else "a positive"
        raise TaskcamError(f"{name} must be {kind} int, got {value!r}")
