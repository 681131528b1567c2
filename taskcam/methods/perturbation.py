"""Perturbation methods: Score-CAM and Ablation-CAM, batched over channels."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from taskcam.errors import TaskcamError
from taskcam.methods.base import CamTerms, LayerContext, Method, register

__all__ = ["AblationCAM", "ScoreCAM"]

log = logging.getLogger("taskcam")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _check_batch_size(batch_size: Optional[int]) -> Optional[int]:
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise TaskcamError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


class _Perturbation(Method):
    needs_grad = False
    perturbation = True
    default_batch = 32

    def __init__(self, batch_size: Optional[int] = None, **options: Any) -> None:
        super().__init__(**options)
        self.batch_size = _check_batch_size(batch_size)

    def _batch(self, ctx: LayerContext) -> int:
        return self.batch_size or ctx.batch_size or self.default_batch

    def _bar(self, ctx: LayerContext, total: int, image: int) -> tqdm:
        return tqdm(
            total=total,
            desc=f"{self.name} {ctx.name} image {image}",
            unit="ch",
            disable=not ctx.progress,
            leave=False,
        )


@register
class ScoreCAM(_Perturbation):
    """Score-CAM (Wang et al., CVPRW 2020): channels weighted by the score of masked inputs.

    "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks".
    Each channel, upsampled to the input and min-max normalised, masks the input; the target's
    score on the masked input, softmax-normalised over channels, weights that channel. Masked
    inputs are built per batch, never all at once.

    Args:
        batch_size: masked inputs per forward (default 32).
    """

    name = "scorecam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        acts, x = ctx.activations, ctx.inputs
        size = x.shape[-2:]
        n_img, channels = acts.shape[:2]
        weights = []
        for b in range(n_img):
            scores = []
            with self._bar(ctx, channels, b) as bar:
                for sl in _chunks(channels, self._batch(ctx)):
                    up = F.interpolate(
                        acts[b, None, sl], size=size, mode="bilinear", align_corners=False
                    )[0]  # [n, H, W]
                    lo = up.amin(dim=(-2, -1), keepdim=True)
                    hi = up.amax(dim=(-2, -1), keepdim=True)
                    masks = (up - lo) / (hi - lo).clamp(min=1e-8)
                    masked = x[b, None] * masks[:, None].to(x.dtype)  # [n, 3, H, W]
                    scores.append(ctx.score(ctx.run(masked), b))  # [n, T]
                    bar.update(masks.shape[0])
            scores = torch.cat(scores)  # [C, T]
            # a target the masks cannot move (absent, constant) has no evidence: zero weights,
            # not the uniform softmax that would return the mean activation as its map
            flat = (scores.amax(dim=0) - scores.amin(dim=0)) <= 1e-12 * scores.abs().amax(dim=0)
            weights.append(scores.softmax(dim=0).masked_fill(flat, 0.0).T)  # [T, C]
        return CamTerms(weights=torch.stack(weights).to(acts.dtype))


@register
class AblationCAM(_Perturbation):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): channels weighted by the score drop.

    "Ablation-CAM: Visual Explanation for Deep Convolutional Network via Gradient-free
    Localization". Each channel is zeroed in turn; its weight is the relative drop of the
    target's score, ``(y - y_k) / y``.

    By default only the network's tail runs on the ablated copies: the image goes through
    the layers before the target layer once per batch, and the hook expands that one
    activation into ``n`` ablated copies. Where the tail cannot take a batch larger than
    its input (it concatenates with an earlier tensor, say), each batch falls back to full
    forwards and ``fell_back`` is set and logged. The maps are the same either way.

    Args:
        batch_size: ablated copies per forward (default 32).
        tail_only: evaluate only the part of the network after the layer on the copies.
    """

    name = "ablationcam"

    def __init__(
        self, batch_size: Optional[int] = None, tail_only: bool = True, **options: Any
    ) -> None:
        super().__init__(batch_size, **options)
        self.tail_only = tail_only
        self.fell_back = False

    def _ablated(self, ctx: LayerContext, b: int, sl: slice) -> torch.Tensor:
        """``Tensor[n, T]``: image ``b``'s target scores with channels ``sl`` zeroed, one each."""
        n = sl.stop - sl.start
        device = ctx.activations.device
        rows = torch.arange(n, device=device)
        cols = torch.arange(sl.start, sl.stop, device=device)

        def ablate(a: torch.Tensor) -> torch.Tensor:
            a = a.expand(n, *a.shape[1:]).clone()  # [n, C, h, w]; a copy when a is one image
            a[rows, cols] = 0
            return a

        x = ctx.inputs[b, None]
        if self.tail_only and not self.fell_back:
            try:
                scores = ctx.score(ctx.run(x, edit=ablate), b)
                if scores.shape[0] == n:
                    return scores
            except (RuntimeError, TaskcamError) as e:
                log.info("ablationcam: tail-only evaluation failed (%s)", e)
            self.fell_back = True
            log.warning(
                "ablationcam: the network after %r cannot batch ablated copies of one image; "
                "falling back to full forwards",
                ctx.name,
            )
        return ctx.score(ctx.run(x.expand(n, *x.shape[1:]), edit=ablate), b)

    def terms(self, ctx: LayerContext) -> CamTerms:
        acts = ctx.activations
        n_img, channels = acts.shape[:2]
        weights = []
        for b in range(n_img):
            base = ctx.scores[b].float()  # [T]
            scores = []
            with self._bar(ctx, channels, b) as bar:
                for sl in _chunks(channels, self._batch(ctx)):
                    scores.append(self._ablated(ctx, b, sl))  # [n, T]
                    bar.update(sl.stop - sl.start)
            ablated = torch.cat(scores)  # [C, T]
            denom = torch.where(base.abs() < 1e-7, torch.full_like(base, 1e-7), base)
            weights.append(((base - ablated) / denom).T)  # [T, C]
        return CamTerms(weights=torch.stack(weights).to(acts.dtype))
