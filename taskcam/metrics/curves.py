"""Deletion and insertion curves (RISE: Petsiuk et al., BMVC 2018) and what every metric of
:mod:`taskcam.metrics` shares: score functions, curves, input checks, pixel rankings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError
from taskcam.masking import check_batch_size, run_batches

__all__ = [
    "Baseline",
    "MetricCurve",
    "ScoreFn",
    "call_score",
    "check_image",
    "deletion",
    "insertion",
    "metric_curve",
    "perturbation_start",
    "pixel_ranks",
    "positive_int",
    "shape_of",
    "step_counts",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""``score_fn(images: Tensor[N, C, H, W]) -> Tensor[N]``; called under ``torch.no_grad()``."""


Baseline = Union[str, torch.Tensor]


_BASELINES = ("blur", "mean", "zero")


@dataclass(frozen=True, eq=False)
class MetricCurve:
    """A score curve over the fraction of pixels perturbed.

    Attributes:
        fractions: ``Tensor[S+1]`` fractions of the image's pixels perturbed, from 0 upwards.
        scores: ``Tensor[S+1]`` the score function at each fraction (float32, on the CPU).
        auc: the area under the curve, trapezoid rule over ``fractions``.
    """

    fractions: torch.Tensor
    scores: torch.Tensor
    auc: float

    @property
    def mean(self) -> float:
        """The plain mean of ``scores`` over all points (the first, clean one included)."""
        return float(self.scores.double().mean())


# -- input checks -------------------------------------------------------------------------------
def shape_of(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def check_image(image: object, saliency: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise TaskcamError(f"image: expected one image Tensor[C, H, W], got {shape_of(image)}")
    if not image.is_floating_point():
        raise TaskcamError(f"image: expected a floating-point tensor, got {image.dtype}")
    if not isinstance(saliency, torch.Tensor) or tuple(saliency.shape) != tuple(image.shape[-2:]):
        raise TaskcamError(
            f"saliency: expected Tensor[H, W] at the image's size {tuple(image.shape[-2:])}, "
            f"got {shape_of(saliency)} for an image of shape {tuple(image.shape)}"
        )
    sal = torch.nan_to_num(saliency.detach().float(), nan=0.0).to(image.device)
    return image.detach(), sal


def positive_int(value: object, name: str) -> int:
    """``value`` when it is an ``int`` >= 1, else an error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TaskcamError(f"{name} must be a positive integer, got {value!r}")
    return value


def call_score(score_fn: ScoreFn, images: torch.Tensor) -> torch.Tensor:
    """``score_fn(images)`` detached on the CPU, checked to be ``Tensor[N]``."""
    out = score_fn(images)
    n = images.shape[0]
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (n,):
        raise TaskcamError(
            f"score_fn must return Tensor[{n}] (one score per image) for {n} images, "
            f"got {shape_of(out)}"
        )
    return out.detach().float().cpu()


def metric_curve(fractions: torch.Tensor, scores: torch.Tensor) -> MetricCurve:
    """A :class:`MetricCurve` of ``scores`` over ``fractions``, its trapezoid AUC computed."""
    fractions = fractions.double()
    auc = float(torch.trapezoid(scores.double(), fractions)) if len(fractions) > 1 else 0.0
    return MetricCurve(fractions=fractions.float(), scores=scores.float(), auc=auc)


def step_counts(n_pixels: int, steps: int) -> torch.Tensor:
    """``LongTensor[steps + 1]``: ``round(i * n_pixels / steps)`` pixels perturbed at step
    ``i`` (halves round up), from 0 to ``n_pixels``."""
    return torch.div(
        torch.arange(steps + 1) * (2 * n_pixels) + steps, 2 * steps, rounding_mode="floor"
    )


def pixel_ranks(saliency: torch.Tensor, descending: bool) -> torch.Tensor:
    """``LongTensor[H*W]``: each pixel's place in the ranking (0 = perturbed first); ties keep
    the pixels' row-major order."""
    order = torch.sort(saliency.flatten(), descending=descending, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    return rank


# -- deletion and insertion -------------------------------------------------------------------
def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """``Tensor[C, H, W]`` blurred by a separable Gaussian of std ``sigma`` pixels; the kernel
    reaches ``ceil(3 * sigma)`` pixels (at most the image's size - 1) and the image is
    reflected at its borders."""
    c = image.shape[0]
    x = image[None]  # [1, C, H, W]
    for axis in (-1, -2):
        radius = min(math.ceil(3 * sigma), x.shape[axis] - 1)
        if radius <= 0:
            continue
        t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
        if axis == -1:
            x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
            weight = kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1)
        else:
            x = F.pad(x, (0, 0, radius, radius), mode="reflect")
            weight = kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1)
        x = F.conv2d(x, weight, groups=c)
    return x[0]


def perturbation_start(
    image: torch.Tensor, baseline: Baseline, blur_sigma: Optional[float] = None
) -> torch.Tensor:
    """What perturbed pixels of ``image`` (``Tensor[C, H, W]``) become: its blur, its channel
    means, zeros or a given ``Tensor[C, H, W]`` (see :func:`deletion`'s ``baseline``)."""
    if isinstance(baseline, torch.Tensor):
        if baseline.shape != image.shape:
            raise TaskcamError(
                f"baseline: a tensor baseline must have the image's shape {tuple(image.shape)}, "
                f"got {tuple(baseline.shape)}"
            )
        return baseline.detach().to(device=image.device, dtype=image.dtype)
    if baseline == "zero":
        return torch.zeros_like(image)
    if baseline == "mean":
        return image.mean(dim=(1, 2), keepdim=True).expand_as(image).clone()
    if baseline == "blur":
        if blur_sigma is None:
            sigma = max(0.5, 0.025 * max(image.shape[-2:]))
        elif isinstance(blur_sigma, (int, float)) and blur_sigma > 0:
            sigma = float(blur_sigma)
        else:
            raise TaskcamError(f"blur_sigma must be a positive number, got {blur_sigma!r}")
        return gaussian_blur(image, sigma)
    raise TaskcamError(
        f"baseline: expected one of {_BASELINES} or a Tensor[C, H, W] like the image, "
        f"got {baseline!r}"
    )


def _perturbation_curve(
    score_fn: ScoreFn,
    image: torch.Tensor,
    saliency: torch.Tensor,
    *,
    steps: int,
    baseline: Baseline,
    batch_size: int,
    blur_sigma: Optional[float],
    progress: bool,
    insert: bool,
) -> MetricCurve:
    image, sal = check_image(image, saliency)
    steps = positive_int(steps, "steps")
    check_batch_size(batch_size)
    base = perturbation_start(image, baseline, blur_sigma)
    h, w = sal.shape
    n_pixels = h * w
    rank = pixel_ranks(sal, descending=True).view(1, 1, h, w)
    k = step_counts(n_pixels, steps)  # pixels perturbed at each step, 0..HW
    k_dev = k.to(image.device)
    start, end = (base, image) if insert else (image, base)

    def evaluate(sl: slice) -> torch.Tensor:
        changed = rank < k_dev[sl].view(-1, 1, 1, 1)  # [n, 1, H, W]
        return call_score(score_fn, torch.where(changed, end, start))

    with torch.no_grad():
        scores = run_batches(
            steps + 1,
            evaluate,
            batch_size=batch_size,
            desc="insertion" if insert else "deletion",
            progress=progress,
            unit="image",
        )
    return metric_curve(k.double() / n_pixels, scores)


def deletion(
    score_fn: ScoreFn,
    image: torch.Tensor,
    saliency: torch.Tensor,
    *,
    steps: int = 32,
    baseline: Baseline = "blur",
    batch_size: int = 32,
    blur_sigma: Optional[float] = None,
    progress: bool = False,
) -> MetricCurve:
    """The deletion curve of RISE (Petsiuk et al., "RISE: Randomized Input Sampling for
    Explanation of Black-box Models", BMVC 2018).

    Pixels are ranked by saliency, highest first (equal values keep their row-major order).
    Step ``i`` of ``steps`` replaces the top ``round(i * H * W / steps)`` pixels, in every
    channel, by the baseline image, so the curve starts at the clean image's score and ends
    at the baseline's. A faithful map makes the score fall early: lower AUC is better.

    Args:
        score_fn: ``Tensor[N, C, H, W] -> Tensor[N]``, called under ``torch.no_grad()``.
        image: ``Tensor[C, H, W]`` one image, floating point, as ``score_fn`` expects it.
        saliency: ``Tensor[H, W]`` its map at the image's size.
        steps: number of equal increments; the curve has ``steps + 1`` points.
        baseline: what removed pixels become: ``"blur"`` (a Gaussian blur of the image),
            ``"mean"`` (each channel's mean), ``"zero"`` (RISE's choice for deletion), or a
            ``Tensor[C, H, W]``.
        batch_size: perturbed images per ``score_fn`` call.
        blur_sigma: std of the blur in pixels; default ``max(0.5, 0.025 * max(H, W))``. The
            kernel reaches ``ceil(3 * blur_sigma)`` pixels; borders are reflected.
        progress: show a progress bar.

    Returns:
        A :class:`MetricCurve`; ``fractions[i]`` is the exact share of pixels replaced.

    Example:
        >>> image = torch.rand(3, 8, 8)
        >>> curve = deletion(lambda x: x.mean(dim=(1, 2, 3)), image, image[0], steps=4)
        >>> curve.fractions.tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return _perturbation_curve(
        score_fn,
        image,
        saliency,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        blur_sigma=blur_sigma,
        progress=progress,
        insert=False,
    )


def insertion(
    score_fn: ScoreFn,
    image: torch.Tensor,
    saliency: torch.Tensor,
    *,
    steps: int = 32,
    baseline: Baseline = "blur",
    batch_size: int = 32,
    blur_sigma: Optional[float] = None,
    progress: bool = False,
) -> MetricCurve:
    """The insertion curve of RISE (Petsiuk et al., "RISE: Randomized Input Sampling for
    Explanation of Black-box Models", BMVC 2018).

    The mirror of :func:`deletion`: it starts from the baseline image (RISE used a blurred
    copy) and step ``i`` puts back the top ``round(i * H * W / steps)`` pixels of the
    original, so the curve runs from the baseline's score to the clean image's. A faithful
    map makes the score rise early: higher AUC is better. Arguments as in :func:`deletion`.

    Returns:
        A :class:`MetricCurve`; ``fractions[i]`` is the exact share of pixels restored.

    Example:
        >>> image = torch.rand(3, 8, 8)
        >>> curve = insertion(lambda x: x.mean(dim=(1, 2, 3)), image, image[0], baseline="zero")
        >>> curve.scores[0].item(), len(curve.scores)
        (0.0, 33)
    """
    return _perturbation_curve(
        score_fn,
        image,
        saliency,
        steps=steps,
        baseline=baseline,
        batch_size=batch_size,
        blur_sigma=blur_sigma,
        progress=progress,
        insert=True,
    )
