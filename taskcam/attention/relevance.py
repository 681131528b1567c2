"""Attention explanations of ViT-style models: rollout, gradient-weighted rollout and LeGrad.

For timm ``VisionTransformer`` and its relatives, timm ``Eva`` (EVA-02, DINOv3, the RoPE
ViTs) and torchvision ``VisionTransformer``: :func:`rollout` (Abnar & Zuidema, ACL 2020),
:func:`grad_rollout` (Chefer, Gur & Wolf, ICCV 2021, the generic rule without LRP) and
:func:`legrad` (Bousselham et al. 2024). Each returns a :class:`taskcam.Explanation` whose
``maps`` are ``Tensor[B, T, H, W]`` in [0, 1] at the input size; the patch grid and the
number of prefix tokens (class, distillation, register tokens) are read from the model (see
:func:`taskcam.attention.vit_layout`). Gradients w.r.t. the attention are taken through the
real model, fused attention included (see :mod:`taskcam.attention.recording`).

The same computations are registered methods, :class:`Rollout` (``rollout``),
:class:`GradRollout` (``grad-rollout``) and :class:`LeGrad` (``legrad``), so
``taskcam.explain(vit, x, targets, method="legrad")`` and ``taskcam explain --method rollout``
run them; they need no target layer.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, Optional

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
from taskcam.attention.recording import AttentionCapture
from taskcam.capture import ModelState
from taskcam.errors import TaskcamError
from taskcam.explanation import Explanation, normalize_maps, upsample_maps
from taskcam.methods.base import Method
from taskcam.outputs import logits_of
from taskcam.targets import ClassTarget, Target, per_image_targets, target_scores

__all__ = [
    "GradRollout",
    "LeGrad",
    "Rollout",
    "grad_rollout",
    "legrad",
    "prepare_inputs",
    "rollout",
]


def _targets(output: Any, targets: Any, batch: int) -> list[list[Any]]:
    """Targets per image: as given, or each image's top-1 class in ``output`` (read from the
    explained forward itself, so no extra pass)."""
    if targets is not None:
        return per_image_targets(targets, batch)
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
    return matrix[:, query_index(query, layout, grid), p:]


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


def prepare_inputs(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``inputs`` as ``Tensor[B, 3, H, W]`` on ``model``'s device (one image gets a batch
    dimension).

    Raises:
        TaskcamError: ``model`` is not an ``nn.Module`` or ``inputs`` not a 3- or 4-D tensor;
            the message names the argument and what it got.

    Example:
        >>> prepare_inputs(torch.nn.Linear(2, 2), torch.zeros(3, 8, 8)).shape
        torch.Size([1, 3, 8, 8])
    """
    if not isinstance(model, nn.Module):
        raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        raise TaskcamError(f"inputs: expected a torch.Tensor, got {type(inputs).__name__}")
    x = inputs[None] if inputs.ndim == 3 else inputs
    if x.ndim != 4:
        raise TaskcamError(f"inputs: expected Tensor[B, 3, H, W], got {tuple(inputs.shape)}")
    dev = next((p.device for p in model.parameters()), x.device)
    return x.to(dev)


def _check_rollout_options(head_fusion: Any, discard_ratio: Any) -> None:
    """Rollout's settings, checked; the message names the one that is wrong and its value."""
    if head_fusion not in ("mean", "max", "min"):
        raise TaskcamError(f"head_fusion: expected mean, max or min, got {head_fusion!r}")
    if (
        isinstance(discard_ratio, bool)
        or not isinstance(discard_ratio, numbers.Real)
        or not 0.0 <= discard_ratio < 1.0
    ):
        raise TaskcamError(f"discard_ratio: expected a fraction in [0, 1), got {discard_ratio!r}")


def _check_last_layers(last_layers: Any, depth: Optional[int] = None) -> None:
    """LeGrad's ``last_layers``: ``None`` or an int from 1 to ``depth`` (any ``depth`` when
    the model is not known yet)."""
    if last_layers is None:
        return
    if isinstance(last_layers, bool) or not isinstance(last_layers, numbers.Integral):
        bad = True
    else:
        bad = last_layers < 1 or (depth is not None and last_layers > depth)
    if not bad:
        return
    if depth is None:
        raise TaskcamError(
            "last_layers: expected an int >= 1 (the number of last blocks summed) or None for "
            f"every layer, got {last_layers!r}"
        )
    raise TaskcamError(
        f"last_layers: expected an int in 1..{depth} (the model has {depth} blocks) or "
        f"None for every layer, got {last_layers!r}"
    )


def _check_query(query: Any) -> None:
    """A query's form (its range depends on the input's grid, checked when explaining)."""
    if isinstance(query, str):
        ok = query in ("cls", "mean")
    elif isinstance(query, bool):
        ok = False
    elif isinstance(query, int):
        ok = query >= 0
    else:
        ok = (
            isinstance(query, Sequence)
            and len(query) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in query)
        )
    if not ok:
        raise TaskcamError(
            "query: expected 'cls', 'mean', a patch (row, col) or a token index >= 0, "
            f"got {query!r}"
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
    _check_rollout_options(head_fusion, discard_ratio)
    x = prepare_inputs(model, inputs)
    layout = vit_layout(model)
    grid = layout.grid(x.shape[-2:])
    with torch.inference_mode(False), torch.no_grad():
        per_image = None if targets is None else per_image_targets(targets, x.shape[0])
        with AttentionCapture(model, modules=layout.attention) as cap:
            output = model(x)
        records = ordered_records(cap.records, layout)
        check_tokens(records[0].attn, layout, grid)
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
    attention included: see :mod:`taskcam.attention.recording`). The query's row of ``R`` over
    the patch tokens is the map.

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
        >>> from taskcam.targets import ClassTarget
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64, num_classes=5)
        >>> grad_rollout(vit, torch.rand(1, 3, 32, 32), [ClassTarget(0), ClassTarget(3)]).maps.shape
        torch.Size([1, 2, 32, 32])
    """
    x = prepare_inputs(model, inputs)
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
                records = ordered_records(cap.records, layout)
                check_tokens(records[0].attn, layout, grid)
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
    x = prepare_inputs(model, inputs)
    layout = vit_layout(model)
    _check_last_layers(last_layers, len(layout.blocks))
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
                records = ordered_records(cap.records, layout)
                check_tokens(records[0].attn, layout, grid)
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


# --------------------------------------------------------------------------------------------
# the registered methods: settings checked once, the functions above do the work


class Rollout(Method):
    """Attention rollout (Abnar & Zuidema, ACL 2020): every layer's attention, multiplied.

    "Quantifying Attention Flow in Transformers". The heads' attention is fused per layer,
    the residual path added as the identity, and the layers multiplied in order; the query
    token's row over the patches is the map (see :func:`rollout`). Rollout does not depend
    on the class: every target of an image gets the same map. Needs no target layer and no
    gradient; ViT-style models only.

    Args:
        head_fusion: ``mean`` (the paper), ``max`` or ``min`` over heads.
        discard_ratio: per layer and query row, this fraction of the weakest patch attention
            is set to 0 (the denoised variant); 0 is the paper's rollout.
        query: ``"cls"``, ``"mean"``, a patch ``(row, col)`` or a token index.

    Raises:
        TaskcamError: a setting outside those values (the message names it and its value).

    Example:
        >>> import torchvision, taskcam
        >>> from taskcam.targets import ClassTarget
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64, num_classes=4)
        >>> x = torch.rand(1, 3, 32, 32)
        >>> taskcam.explain(vit, x, [ClassTarget(2)], method="rollout").maps.shape
        torch.Size([1, 1, 32, 32])
    """

    name = "rollout"
    needs_grad = False
    uses_layers = False
    attention = True

    def __init__(
        self,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        query: Query = "cls",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        _check_rollout_options(head_fusion, discard_ratio)
        _check_query(query)
        self.head_fusion, self.discard_ratio, self.query = head_fusion, discard_ratio, query

    def explain_model(
        self, model: nn.Module, inputs: torch.Tensor, targets: list[list[Target]]
    ) -> Explanation:
        """:func:`rollout` of ``inputs`` with this method's settings."""
        return rollout(
            model,
            inputs,
            targets,
            head_fusion=self.head_fusion,
            discard_ratio=self.discard_ratio,
            query=self.query,
        )

    def __repr__(self) -> str:
        return (
            f"Rollout(head_fusion={self.head_fusion!r}, discard_ratio={self.discard_ratio!r}, "
            f"query={self.query!r})"
        )


class GradRollout(Method):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021), the generic rule.

    "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", without LRP: each layer's attention, weighted by the target's gradient
    w.r.t. it and rectified, is accumulated as ``R += mean_h (∇A ⊙ A)⁺ R`` (see
    :func:`grad_rollout`). Class-specific; needs no target layer; ViT-style models only.

    Args:
        query: ``"cls"``, ``"mean"``, a patch ``(row, col)`` or a token index.

    Raises:
        TaskcamError: a query of another form (the message names it).

    Example:
        >>> import torchvision, taskcam
        >>> from taskcam.targets import ClassTarget
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64, num_classes=4)
        >>> x, targets = torch.rand(1, 3, 32, 32), [ClassTarget(0), ClassTarget(3)]
        >>> taskcam.explain(vit, x, targets, method="grad-rollout").maps.shape
        torch.Size([1, 2, 32, 32])
    """

    name = "grad-rollout"
    uses_layers = False
    attention = True

    def __init__(self, query: Query = "cls", **options: Any) -> None:
        super().__init__(**options)
        _check_query(query)
        self.query = query

    def explain_model(
        self, model: nn.Module, inputs: torch.Tensor, targets: list[list[Target]]
    ) -> Explanation:
        """:func:`grad_rollout` of ``inputs`` with this method's settings."""
        return grad_rollout(model, inputs, targets, query=self.query)

    def __repr__(self) -> str:
        return f"GradRollout(query={self.query!r})"


class LeGrad(Method):
    """LeGrad (Bousselham et al. 2024): every layer's attention gradient of the target's score.

    "LeGrad: An Explainability Method for Vision Transformers via Feature Formation
    Sensitivity". The model's own head is applied to each block's tokens; the rectified
    gradient of the target's score there w.r.t. that block's attention, averaged over heads
    and queries, is the layer's map, and the maps are summed over layers (see
    :func:`legrad`). Class-specific; needs no target layer; ViT-style models only.

    Args:
        last_layers: sum over the last this many blocks only (at most the model's depth,
            checked when explaining); ``None`` (default) sums every layer, as in the paper.

    Raises:
        TaskcamError: ``last_layers`` neither ``None`` nor an int >= 1 (names the value).

    Example:
        >>> import taskcam
        >>> from timm.models.vision_transformer import VisionTransformer
        >>> from taskcam.targets import ClassTarget
        >>> vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2,
        ...                         num_heads=2, num_classes=3)
        >>> x = torch.rand(2, 3, 32, 32)
        >>> taskcam.explain(vit, x, [ClassTarget(1)], method="legrad", last_layers=1).maps.shape
        torch.Size([2, 1, 32, 32])
    """

    name = "legrad"
    uses_layers = False
    attention = True

    def __init__(self, last_layers: Optional[int] = None, **options: Any) -> None:
        super().__init__(**options)
        _check_last_layers(last_layers)
        self.last_layers = last_layers

    def explain_model(
        self, model: nn.Module, inputs: torch.Tensor, targets: list[list[Target]]
    ) -> Explanation:
        """:func:`legrad` of ``inputs`` with this method's settings."""
        return legrad(model, inputs, targets, last_layers=self.last_layers)

    def __repr__(self) -> str:
        return f"LeGrad(last_layers={self.last_layers!r})"
