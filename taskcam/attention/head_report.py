"""The attention debugging report: what each head of each layer attends to, for one image.

:func:`attention_report` (and ``taskcam attention IMAGE --model SPEC``) writes a layers ×
heads grid of one query token's attention, per-head entropy, prefix mass and mean attention
distance (:func:`head_statistics`), the heads flagged as uniform or prefix-only, rollout and
grad-rollout next to Grad-CAM, and a JSON summary.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.attention.layout import (
    Query,
    ViTLayout,
    check_tokens,
    ordered_records,
    query_index,
    vit_layout,
)
from taskcam.attention.recording import AttentionCapture, AttentionRecord
from taskcam.attention.relevance import grad_rollout, prepare_inputs, rollout
from taskcam.errors import TaskcamError
from taskcam.explanation import Explanation

__all__ = ["attention_report", "head_statistics"]


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
    from taskcam.outputs import logits_of
    from taskcam.targets import ClassTarget

    _check_fraction("uniform_threshold", uniform_threshold)
    _check_fraction("prefix_threshold", prefix_threshold)
    out = Path(out_dir)
    size = (int(size[0]), int(size[-1]))
    label, rgb, x = _read_input(model, image, size, mean, std)
    layout = vit_layout(model)
    grid = layout.grid(size)
    q_index = query_index(query, layout, grid)
    with torch.inference_mode(False), torch.no_grad():
        with AttentionCapture(model, modules=layout.attention) as cap:
            logits = logits_of(model(x))
        records = ordered_records(cap.records, layout)
    check_tokens(records[0].attn, layout, grid)
    probs = logits.softmax(dim=1)[0]
    k = int(probs.argmax()) if target is None else int(target)
    if not 0 <= k < probs.numel():
        raise TaskcamError(f"target: class {k} does not exist (the model has {probs.numel()})")
    tgt = ClassTarget(k)
    # the same query for rollout: the class token, another prefix token by index, or a patch
    roll_query: Query = _report_query(q_index, layout, grid)
    maps = (
        rollout(model, x, query=roll_query).maps[0, 0],
        grad_rollout(model, x, [tgt], query=roll_query).maps[0, 0],
        _gradcam_map(model, layout, x, tgt).maps[0, 0],
    )
    name = class_names[k] if class_names and k < len(class_names) else str(k)
    _save_pictures(out, rgb, size, records, layout, grid, q_index, maps, name, colormap)
    layers_json, flagged = _layer_statistics(
        records, layout, grid, q_index, uniform_threshold, prefix_threshold
    )
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
        "flagged": flagged,
        "files": {"grid": "attention_grid.png", "maps": "maps.png"},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention.json").write_text(json.dumps(summary, indent=2))
    return summary


def _read_input(
    model: nn.Module,
    image: Any,
    size: tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[str, np.ndarray, torch.Tensor]:
    """The image's label for the summary, its RGB pixels and the model input
    ``Tensor[1, 3, H, W]`` on the model's device."""
    from taskcam.io import load_image, to_rgb_uint8, to_tensor

    label = str(image) if isinstance(image, (str, Path)) else "<array>"
    rgb = load_image(image) if isinstance(image, (str, Path)) else to_rgb_uint8(image)
    return label, rgb, prepare_inputs(model, to_tensor(rgb, size, mean, std))


def _save_pictures(
    out: Path,
    rgb: np.ndarray,
    size: tuple[int, int],
    records: list[AttentionRecord],
    layout: ViTLayout,
    grid: tuple[int, int],
    q_index: int,
    maps: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    name: str,
    colormap: str,
) -> None:
    """``attention_grid.png`` (the query row of every layer and head) and ``maps.png`` (the
    image, rollout, grad-rollout and Grad-CAM of class ``name``)."""
    from taskcam.render import attention_grid, overlay, save_image
    from taskcam.render import grid as image_grid

    # query row over patches per layer and head: [L, heads, h, w]
    rows = torch.stack([r.attn[0, :, q_index, layout.prefix :] for r in records])
    rows = rows.reshape(len(records), rows.shape[1], *grid)
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
    cells = [shown, *(overlay(shown, m, colormap=colormap) for m in maps)]
    labels = ["image", "rollout", f"grad-rollout {name}", f"grad-cam {name}"]
    cell = max(160, min(size))
    save_image(out / "maps.png", image_grid([cells], col_labels=labels, cell_size=cell))


def _layer_statistics(
    records: list[AttentionRecord],
    layout: ViTLayout,
    grid: tuple[int, int],
    q_index: int,
    uniform_threshold: float,
    prefix_threshold: float,
) -> tuple[list[dict[str, Any]], dict[str, list[list[int]]]]:
    """Per layer its :func:`head_statistics`, and the ``[layer, head]`` pairs flagged
    ``uniform`` and ``prefix-only``."""
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
    return layers_json, {"uniform": uniform, "prefix_only": prefix_only}
