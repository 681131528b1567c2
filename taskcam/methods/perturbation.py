"""Perturbation methods: Score-CAM and Ablation-CAM, batched over channels."""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, ClassVar, Optional, Union

import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError
from taskcam.masking import auto_batch_size, check_batch_size, run_batches, sample_bytes
from taskcam.methods.base import CamTerms, LayerContext, Method

__all__ = ["AblationCAM", "FastAblationCAM", "FastScoreCAM", "ScoreCAM", "select_channels"]

log = logging.getLogger("taskcam")


def select_channels(acts: torch.Tensor, k: Union[int, float]) -> torch.Tensor:
    """Indices of the ``k`` channels whose activation varies most over space, per image.

    The channel subset of Faster Score-CAM (Wang et al., 2020, the Score-CAM authors' faster
    variant): low-variance channels make near-constant masks that carry little information.

    Args:
        acts: ``Tensor[B, C, h, w]``.
        k: a channel count, or a fraction of the channels when below 1 (at least 16
            channels, or all of them where the layer has fewer).

    Returns:
        ``LongTensor[B, k]``.

    Example:
        >>> a = torch.zeros(1, 3, 2, 2); a[0, 1, 0, 0] = 5.0
        >>> select_channels(a, 1).tolist()
        [[1]]
    """
    channels = acts.shape[1]
    if isinstance(k, float) and k < 1:  # a fraction, never fewer than 16 channels
        count = max(min(16, channels), round(k * channels))
    else:
        count = int(k)
    if count < 1:
        raise TaskcamError(f"top_k must give at least one channel, got {k!r}")
    count = min(count, channels)
    return acts.flatten(2).var(dim=2).topk(count, dim=1).indices


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


class _Perturbation(Method):
    """Shared settings: batching (explicit or from a memory budget), mixed precision,
    cancellation and the exact-or-fast channel choice."""

    needs_grad = False
    perturbation = True
    #: channel subset used when none is given; ``None`` means every channel (exact)
    default_top_k: ClassVar[Optional[Union[int, float]]] = None

    def __init__(
        self,
        batch_size: Optional[int] = None,
        *,
        top_k: Optional[Union[int, float]] = None,
        memory_budget: Optional[int] = None,
        amp: bool = False,
        cancel: Optional[threading.Event] = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.batch_size = check_batch_size(batch_size)
        self.top_k = top_k if top_k is not None else self.default_top_k
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k <= 0):
            raise TaskcamError(f"top_k must be a positive count or fraction, got {top_k!r}")
        self.memory_budget = memory_budget
        self.amp = amp
        self.cancel = cancel
        self._sample_bytes: dict[tuple[int, tuple[int, ...]], int] = {}
        self._channels_last = True

    def _batch(self, ctx: LayerContext, image: int) -> int:
        explicit = self.batch_size or ctx.batch_size
        if explicit:
            return explicit
        one = ctx.inputs[image : image + 1]
        key = (id(ctx.model), tuple(one.shape))
        if key not in self._sample_bytes:
            self._sample_bytes[key] = sample_bytes(ctx.model, one)
        return auto_batch_size(self._sample_bytes[key], one.device, self.memory_budget)

    def _channels(self, ctx: LayerContext) -> torch.Tensor:
        """``LongTensor[B, K]``: the channels to perturb per image (all of them when exact)."""
        acts = ctx.activations
        if self.top_k is None:
            return torch.arange(acts.shape[1], device=acts.device).expand(acts.shape[0], -1)
        return select_channels(acts, self.top_k)

    def _run(self, ctx: LayerContext, x: torch.Tensor, edit=None) -> Any:
        # Channels-last inputs take oneDNN/cuDNN's faster convolution paths (1.4x for a
        # ResNet-50 batch on a CPU); a model that .view()s its tensors cannot take them, so
        # the first failure switches back to contiguous inputs for good.
        if self._channels_last and x.ndim == 4 and x.shape[0] > 1:
            try:
                with _autocast(x.device, self.amp):
                    return ctx.run(x.contiguous(memory_format=torch.channels_last), edit)
            except RuntimeError as e:
                log.info("%s: channels-last inputs failed (%s); using contiguous", self.name, e)
                self._channels_last = False
        with _autocast(x.device, self.amp):
            return ctx.run(x, edit)

    def _channel_weights(self, ctx: LayerContext, b: int, idx: torch.Tensor) -> torch.Tensor:
        """``Tensor[T, K]``: image ``b``'s weights for channels ``idx``."""
        raise NotImplementedError  # pragma: no cover - abstract

    def terms(self, ctx: LayerContext) -> CamTerms:
        acts = ctx.activations
        n_img, channels = acts.shape[:2]
        chosen = self._channels(ctx)  # [B, K]
        weights = acts.new_zeros(n_img, ctx.scores.shape[1], channels, dtype=torch.float32)
        for b in range(n_img):
            weights[b][:, chosen[b]] = self._channel_weights(ctx, b, chosen[b])
        return CamTerms(weights=weights.to(acts.dtype))

    def _batches(self, ctx: LayerContext, image: int, n: int, evaluate) -> torch.Tensor:
        return run_batches(
            n,
            evaluate,
            batch_size=self._batch(ctx, image),
            desc=f"{self.name} {ctx.name} image {image}",
            progress=ctx.progress,
            cancel=self.cancel,
            unit="ch",
        )


class ScoreCAM(_Perturbation):
    """Score-CAM (Wang et al., CVPRW 2020): channels weighted by the score of masked inputs.

    "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks".
    Each channel, upsampled to the input and min-max normalised, masks the input; the target's
    score on the masked input, softmax-normalised over channels, weights that channel.

    Masked inputs are built per batch, never all at once; the batch size comes from a memory
    budget unless given. Channels that are constant over space all give the same all-zero
    mask, so that input is scored once for all of them (exact). A model whose layers see the
    input resized and padded onto a larger canvas (a torchvision detector run through
    taskcam's ``TracedDetector``, which has ``placement(h, w)``) gets its masks cropped from
    that canvas to the input, so each mask covers the pixels its channel saw.

    Args:
        batch_size: masked inputs per forward (default: from ``memory_budget``).
        top_k: perturb only this many channels (or this fraction), those of highest spatial
            variance; the others get weight 0. ``None``: every channel (exact).
        memory_budget: bytes for one batch (default: half the free GPU memory, or a quarter
            of free RAM up to 384 MiB).
        amp: run the masked forwards in mixed precision (float16 on GPU, bfloat16 on CPU).
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
    """

    name = "scorecam"

    def _image_scores(self, ctx: LayerContext, b: int, idx: torch.Tensor) -> torch.Tensor:
        """``Tensor[K, T]``: image ``b``'s target scores, input masked by channels ``idx``."""
        acts, x = ctx.activations[b, idx], ctx.inputs[b]  # [K, h, w], [3, H, W]
        size = x.shape[-2:]
        constant = (acts.amax(dim=(-2, -1)) - acts.amin(dim=(-2, -1))) <= 0  # [K]
        live = torch.nonzero(~constant).flatten()
        scores = torch.empty(len(idx), ctx.scores.shape[1], device=x.device)
        if constant.any():
            scores[constant] = ctx.score(self._run(ctx, torch.zeros_like(x)[None]), b).float()

        place = getattr(ctx.model, "placement", None)
        canvas = place(*size) if callable(place) else None

        def evaluate(sl: slice) -> torch.Tensor:
            up = F.interpolate(
                acts[None, live[sl]], size=size, mode="bilinear", align_corners=False
            )[0]  # [n, H, W], the canvas stretched over the input
            if canvas is not None:
                up = canvas.map_to_image(up)  # the part of the canvas the input fills
            lo = up.amin(dim=(-2, -1), keepdim=True)
            hi = up.amax(dim=(-2, -1), keepdim=True)
            masks = (up - lo) / (hi - lo).clamp(min=1e-8)
            masked = x[None] * masks[:, None].to(x.dtype)  # [n, 3, H, W]
            return ctx.score(self._run(ctx, masked), b).float()  # [n, T]

        if len(live):
            scores[live] = self._batches(ctx, b, len(live), evaluate)
        return scores

    def _channel_weights(self, ctx: LayerContext, b: int, idx: torch.Tensor) -> torch.Tensor:
        scores = self._image_scores(ctx, b, idx)  # [K, T]
        # a target the masks cannot move (absent, constant) has no evidence: zero weights,
        # not the uniform softmax that would return the mean activation as its map
        spread = scores.amax(dim=0) - scores.amin(dim=0)
        flat = (spread <= 1e-12 * scores.abs().amax(dim=0)) & (len(scores) > 1)
        return scores.softmax(dim=0).masked_fill(flat, 0.0).T


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
        batch_size: ablated copies per forward (default: from ``memory_budget``).
        tail_only: evaluate only the part of the network after the layer on the copies.
        top_k: ablate only this many channels (or this fraction), those of highest spatial
            variance; the others get weight 0. ``None``: every channel (exact).
        memory_budget: bytes for one batch.
        amp: mixed precision for the ablated forwards.
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
    """

    name = "ablationcam"

    def __init__(
        self, batch_size: Optional[int] = None, tail_only: bool = True, **options: Any
    ) -> None:
        super().__init__(batch_size, **options)
        self.tail_only = tail_only
        self.fell_back = False
        # weights are differences to the unperturbed score, which was computed contiguous:
        # another convolution path's rounding would show up as noise in small weights
        self._channels_last = False

    def _ablated(self, ctx: LayerContext, b: int, cols: torch.Tensor) -> torch.Tensor:
        """``Tensor[n, T]``: image ``b``'s target scores with channel ``cols[i]`` zeroed in
        copy ``i``."""
        n = len(cols)
        rows = torch.arange(n, device=cols.device)

        def ablate(a: torch.Tensor) -> torch.Tensor:
            a = a.expand(n, *a.shape[1:]).clone()  # [n, C, h, w]; a copy when a is one image
            a[rows, cols] = 0
            return a

        x = ctx.inputs[b, None]
        if self.tail_only and not self.fell_back:
            try:
                scores = ctx.score(self._run(ctx, x, ablate), b)
                if scores.shape[0] == n:
                    return scores.float()
            except (RuntimeError, TaskcamError) as e:
                log.info("ablationcam: tail-only evaluation failed (%s)", e)
            self.fell_back = True
            log.warning(
                "ablationcam: the network after %r cannot batch ablated copies of one image; "
                "falling back to full forwards",
                ctx.name,
            )
        return ctx.score(self._run(ctx, x.expand(n, *x.shape[1:]), ablate), b).float()

    def _batch(self, ctx: LayerContext, image: int) -> int:
        explicit = self.batch_size or ctx.batch_size
        if explicit or not self.tail_only or self.fell_back:
            return super()._batch(ctx, image)
        # only the tail sees the copies: the layer's activation bounds what one copy costs
        act = ctx.activations[image]
        per_copy = 4 * act.numel() * act.element_size()
        # the copies only run the tail: big batches amortise the prefix forward each one repeats
        return auto_batch_size(
            per_copy, act.device, self.memory_budget, cap=1024, cpu_budget=384 << 20
        )

    def _channel_weights(self, ctx: LayerContext, b: int, idx: torch.Tensor) -> torch.Tensor:
        base = ctx.scores[b].float()  # [T]
        ablated = self._batches(ctx, b, len(idx), lambda sl: self._ablated(ctx, b, idx[sl]))
        denom = torch.where(base.abs() < 1e-7, torch.full_like(base, 1e-7), base)
        return ((base - ablated) / denom).T  # [T, K]


class FastScoreCAM(ScoreCAM):
    """Fast Score-CAM (approximate): Score-CAM on the 1/16 of channels with most variance.

    Set ``top_k`` for another count or fraction; the benchmark reports the correlation to
    the exact map.
    """

    name = "fast-scorecam"
    default_top_k = 1 / 16


class FastAblationCAM(AblationCAM):
    """Fast Ablation-CAM (approximate): Ablation-CAM on the 1/16 of channels with most variance.

    Set ``top_k`` for another count or fraction.
    """

    name = "fast-ablationcam"
    default_top_k = 1 / 16
