"""Faithfulness and localisation metrics for saliency maps, batched in torch.

Every faithfulness metric takes a *score function* ``score_fn(images) -> Tensor[N]`` rather
than a model and a class index, so the same code measures a classifier's class probability,
one detection's confidence or one segmentation region's mean logit.

- :func:`deletion` and :func:`insertion` (RISE, Petsiuk et al., BMVC 2018),
- :func:`road` (Rong et al., ICML 2022) with noisy linear imputation (:func:`linear_impute`),
- :func:`pointing_game` (Zhang et al., ECCV 2016) and :func:`energy_pointing_game`
  (Wang et al., CVPR-W 2020) against boxes or masks (:func:`boxes_to_masks`),
- :func:`spearman` and :func:`randomization_check` (Adebayo et al., NeurIPS 2018).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from taskcam.boxes import boxes_to_masks
from taskcam.errors import TaskcamError
from taskcam.masking import check_batch_size, run_batches

__all__ = [
    "ExplainFn",
    "MetricCurve",
    "RandomizationStep",
    "ScoreFn",
    "boxes_to_masks",
    "deletion",
    "energy_pointing_game",
    "insertion",
    "linear_impute",
    "perturbation_start",
    "pointing_game",
    "randomization_check",
    "road",
    "spearman",
]

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
"""``score_fn(images: Tensor[N, C, H, W]) -> Tensor[N]``; called under ``torch.no_grad()``."""

ExplainFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``explain_fn(model, images) -> Tensor[B, H, W]``: one saliency map per image."""

Baseline = Union[str, torch.Tensor]

_BASELINES = ("blur", "mean", "zero")
_ROAD_ORDERS = ("morf", "lerf")
_RANDOMIZATION_ORDERS = ("cascade", "independent")
_DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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


@dataclass(frozen=True, eq=False)
class RandomizationStep:
    """One measurement of :func:`randomization_check`.

    Attributes:
        layer: the module randomised last before this measurement (in ``"cascade"`` order it
            and every module before it in the list are random; in ``"independent"`` order
            only it).
        correlation: ``Tensor[B]`` Spearman correlation of each image's map to its map from the
            unchanged model.
    """

    layer: str
    correlation: torch.Tensor


# -- input checks -------------------------------------------------------------------------------
def _shape(x: object) -> object:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__


def _check_image(image: object, saliency: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise TaskcamError(f"image: expected one image Tensor[C, H, W], got {_shape(image)}")
    if not image.is_floating_point():
        raise TaskcamError(f"image: expected a floating-point tensor, got {image.dtype}")
    if not isinstance(saliency, torch.Tensor) or tuple(saliency.shape) != tuple(image.shape[-2:]):
        raise TaskcamError(
            f"saliency: expected Tensor[H, W] at the image's size {tuple(image.shape[-2:])}, "
            f"got {_shape(saliency)} for an image of shape {tuple(image.shape)}"
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
            f"got {_shape(out)}"
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
def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
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
        return _gaussian_blur(image, sigma)
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
    image, sal = _check_image(image, saliency)
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


# -- ROAD ---------------------------------------------------------------------------------------
def _neighbour_sum(v: torch.Tensor) -> torch.Tensor:
    """``Tensor[S, H, W]``: each pixel's weighted sum of its in-image neighbours, 1/6 for the
    direct and 1/12 for the diagonal ones (the ROAD imputation's weights)."""
    p = F.pad(v, (1, 1, 1, 1))  # zeros outside the image add nothing
    direct = p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]
    diagonal = p[..., :-2, :-2] + p[..., :-2, 2:] + p[..., 2:, :-2] + p[..., 2:, 2:]
    return direct.mul_(1 / 6).add_(diagonal, alpha=1 / 12)


def _solve_imputation(
    x: torch.Tensor, removed: torch.Tensor, limit: torch.Tensor, max_iter: int
) -> tuple[torch.Tensor, bool]:
    """Conjugate gradients, Jacobi-preconditioned, for ``S`` imputation systems at once.

    Unknown ``u`` lives on the removed pixels; row ``p`` of the system reads
    ``degree[p] * u[p] - sum_q w[p, q] u[q] = sum_q w[p, q] x[q]`` with ``q`` over the
    neighbours, unknown on the left, known on the right. The matrix is symmetric and, when
    some pixel is known, positive definite. A system leaves the batch once its largest
    residual is at most ``limit``, so each costs only its own iterations.

    Args:
        x: ``Tensor[S, H, W]`` values (those at removed pixels are ignored).
        removed: ``Tensor[S, H, W]`` 1.0 where removed, else 0.0.
        limit: ``Tensor[S]`` residual at which a system has converged.
        max_iter: iteration cap.

    Returns:
        ``(values, converged)``: ``Tensor[S, H, W]`` solutions on removed pixels (0 elsewhere)
        and whether every system converged.
    """
    s, h, w = x.shape
    known = 1.0 - removed
    degree = _neighbour_sum(torch.ones(1, h, w, dtype=x.dtype, device=x.device))  # [1, H, W]
    inv_degree = torch.where(degree > 0, 1.0 / degree.clamp(min=1e-12), 0.0)
    count = known.sum(dim=(1, 2), keepdim=True)  # [S, 1, 1]
    known_mean = (x * known).sum(dim=(1, 2), keepdim=True) / count.clamp(min=1)
    # start from the known pixels' mean; with none known that constant is the answer
    u = removed * torch.where(count > 0, known_mean, x.mean(dim=(1, 2), keepdim=True))
    r = removed * (_neighbour_sum(x * known) - degree * u + _neighbour_sum(u))
    z = r * inv_degree
    p = z.clone()
    rz = (r * z).sum(dim=(1, 2))
    out = u.clone()
    index = torch.arange(s, device=x.device)
    for step in range(max_iter + 1):
        done = r.abs().amax(dim=(1, 2)) <= limit
        if bool(done.any()):
            out[index[done]] = u[done]
            keep = ~done
            if not bool(keep.any()):
                return out, True
            index, u, r, p, rz, removed, limit = (
                t[keep] for t in (index, u, r, p, rz, removed, limit)
            )
        if step == max_iter:
            break
        ap = removed * (degree * p - _neighbour_sum(p))
        p_ap = (p * ap).sum(dim=(1, 2))
        alpha = torch.where(p_ap > 0, rz / torch.where(p_ap > 0, p_ap, 1.0), 0.0)[:, None, None]
        u = u.addcmul_(alpha, p)
        r = r.addcmul_(alpha, ap, value=-1.0)
        z = r * inv_degree
        rz_new = (r * z).sum(dim=(1, 2))
        beta = torch.where(rz > 0, rz_new / torch.where(rz > 0, rz, 1.0), 0.0)[:, None, None]
        p = z.addcmul_(beta, p)
        rz = rz_new
    out[index] = u
    return out, False


def linear_impute(
    images: torch.Tensor, removed: torch.Tensor, *, tol: float = 1e-6, max_iter: int = 2000
) -> torch.Tensor:
    """Fill removed pixels by linear imputation, the noise-free part of ROAD's imputer (Rong et
    al., "A Consistent and Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

    Each removed pixel must equal the weighted mean of its 8 neighbours (weight 1/6 for the 4
    direct, 1/12 for the 4 diagonal ones, normalised over the neighbours inside the image),
    whose values are either known (fixed) or themselves unknown. That sparse, symmetric
    positive definite system is solved per image and channel by conjugate gradients with a
    diagonal preconditioner, all systems batched, in the images' precision (at least
    float32). A system stops when its largest residual is below ``tol`` times the image's
    largest absolute value; after ``max_iter`` iterations the solver gives up with a warning.
    When no pixel of an image is known, its removed pixels get each channel's mean.

    Args:
        images: ``Tensor[N, C, H, W]`` (or ``[C, H, W]``).
        removed: ``BoolTensor[N, H, W]`` (or ``[H, W]``, shared by every image).
        tol: relative residual at which the solver stops.
        max_iter: iteration cap.

    Returns:
        ``Tensor[N, C, H, W]`` (``[C, H, W]`` for one image): known pixels unchanged, removed
        ones imputed.

    Example:
        >>> ramp = torch.arange(5.0).expand(1, 5, 5)  # value = column index
        >>> hole = torch.zeros(5, 5, dtype=torch.bool)
        >>> hole[1:4, 1:4] = True
        >>> linear_impute(ramp, hole)[0, 2].tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0]
    """
    if not isinstance(images, torch.Tensor) or images.ndim not in (3, 4):
        raise TaskcamError(f"images: expected Tensor[N, C, H, W], got {_shape(images)}")
    single = images.ndim == 3
    x_in = images[None] if single else images
    n, c, h, w = x_in.shape
    if not isinstance(removed, torch.Tensor) or removed.dtype != torch.bool:
        raise TaskcamError(f"removed: expected a BoolTensor[N, H, W], got {_shape(removed)}")
    mask = removed[None] if removed.ndim == 2 else removed
    if mask.ndim != 3 or mask.shape[-2:] != (h, w) or mask.shape[0] not in (1, n):
        raise TaskcamError(
            f"removed: expected BoolTensor[{n}, {h}, {w}] or [{h}, {w}] for images of shape "
            f"{tuple(images.shape)}, got {tuple(removed.shape)}"
        )
    max_iter = positive_int(max_iter, "max_iter")
    dtype = torch.promote_types(x_in.dtype, torch.float32)
    x = x_in.detach().to(dtype).reshape(n * c, h, w)  # one system per image and channel
    gone = mask.to(x.device)[:, None].expand(n, c, h, w).reshape(n * c, h, w)
    scale = x_in.detach().abs().amax(dim=(1, 2, 3)).to(dtype).clamp(min=1e-12)  # [N]
    values, converged = _solve_imputation(
        x, gone.to(dtype), tol * scale.repeat_interleave(c), max_iter
    )
    if not converged:
        warnings.warn(
            f"linear_impute: not converged to tol={tol} after max_iter={max_iter} "
            "iterations; the imputed values are approximate",
            RuntimeWarning,
            stacklevel=2,
        )
    out = torch.where(gone, values, x).view(n, c, h, w).to(images.dtype)
    return out[0] if single else out


def road(
    score_fn: ScoreFn,
    image: torch.Tensor,
    saliency: torch.Tensor,
    *,
    fractions: Sequence[float] = _DEFAULT_FRACTIONS,
    order: str = "morf",
    batch_size: int = 32,
    seed: int = 0,
    noise: float = 0.01,
    tol: float = 1e-6,
    max_iter: int = 2000,
    progress: bool = False,
) -> MetricCurve:
    """ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML 2022).

    For each fraction, that share of the pixels is removed, the most relevant first
    (``"morf"``; a faithful map makes the score fall fast, lower AUC is better) or the least
    relevant first (``"lerf"``; the score should hold up, higher AUC is better), and refilled
    by noisy linear imputation: :func:`linear_impute`, then Gaussian noise of std
    ``noise * image.std()`` on the imputed pixels only (so ``noise=0.01`` on an
    ImageNet-normalised image is close to the paper's absolute 0.01). The imputation hides
    the removed region's shape, so the model cannot read the mask itself. Ties in the
    saliency keep the pixels' row-major order in either direction.

    Args:
        score_fn: ``Tensor[N, C, H, W] -> Tensor[N]``, called under ``torch.no_grad()``.
        image: ``Tensor[C, H, W]`` one image, floating point, as ``score_fn`` expects it.
        saliency: ``Tensor[H, W]`` its map at the image's size.
        fractions: increasing shares of pixels to remove, in [0, 1]; ``round(f * H * W)``
            pixels are removed for share ``f``.
        order: ``"morf"`` (most relevant first) or ``"lerf"`` (least relevant first).
        batch_size: images imputed and scored at once.
        seed: seeds the noise (drawn on the CPU, the same for any device and batch size).
        noise: noise std relative to the image's std; 0 turns the noise off.
        tol: solver tolerance, see :func:`linear_impute`.
        max_iter: solver iteration cap.
        progress: show a progress bar.

    Returns:
        A :class:`MetricCurve` whose ``fractions`` are 0 (the clean image's score) followed by
        ``fractions``; ``auc`` integrates over that range, ``mean`` averages the points.

    Example:
        >>> image = torch.rand(3, 8, 8)
        >>> curve = road(lambda x: x.mean(dim=(1, 2, 3)), image, image[0], fractions=(0.5,))
        >>> curve.fractions.tolist()
        [0.0, 0.5]
    """
    image, sal = _check_image(image, saliency)
    if order not in _ROAD_ORDERS:
        raise TaskcamError(f"order: expected one of {_ROAD_ORDERS}, got {order!r}")
    check_batch_size(batch_size)
    try:
        fr = [float(f) for f in fractions]
    except (TypeError, ValueError):
        raise TaskcamError(
            f"fractions: expected a sequence of numbers, got {fractions!r}"
        ) from None
    if not fr or any(not 0 <= f <= 1 for f in fr) or any(a >= b for a, b in zip(fr, fr[1:])):
        raise TaskcamError(
            f"fractions: expected strictly increasing values in [0, 1], got {tuple(fractions)}"
        )
    if not noise >= 0:
        raise TaskcamError(f"noise must be >= 0, got {noise!r}")
    if fr[0] != 0.0:
        fr = [0.0, *fr]
    c, h, w = image.shape
    n_pixels = h * w
    rank = pixel_ranks(sal, descending=order == "morf").view(1, h, w)
    k = torch.tensor([round(f * n_pixels) for f in fr], device=image.device)
    std = noise * float(image.double().std()) if n_pixels * c > 1 else 0.0
    generator = torch.Generator().manual_seed(seed)

    def evaluate(sl: slice) -> torch.Tensor:
        removed = rank < k[sl].view(-1, 1, 1)  # [n, H, W]
        imputed = linear_impute(
            image.expand(removed.shape[0], c, h, w), removed, tol=tol, max_iter=max_iter
        )
        # one draw per point, in order, so the noise does not depend on batch_size
        draws = torch.stack([torch.randn((c, h, w), generator=generator) for _ in k[sl]])
        draws = draws.to(device=image.device, dtype=image.dtype)
        imputed = imputed + (std * draws) * removed[:, None]
        return call_score(score_fn, imputed)

    with torch.no_grad():
        scores = run_batches(
            len(fr), evaluate, batch_size=batch_size, desc="road", progress=progress, unit="image"
        )
    return metric_curve(torch.tensor(fr, dtype=torch.float64), scores)


# -- localisation -------------------------------------------------------------------------------
def _maps_and_regions(saliency: object, region: object) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Tensor[B, H, W], BoolTensor[B, H, W])`` with a single map or region broadcast."""
    if not isinstance(saliency, torch.Tensor) or saliency.ndim not in (2, 3):
        raise TaskcamError(
            f"saliency: expected Tensor[B, H, W] or Tensor[H, W], got {_shape(saliency)}"
        )
    sal = saliency.detach()
    sal = torch.nan_to_num(sal[None] if sal.ndim == 2 else sal, nan=0.0).float()
    h, w = sal.shape[-2:]
    if not isinstance(region, torch.Tensor):
        raise TaskcamError(
            "region: expected boxes Tensor[B, 4] or a BoolTensor[B, H, W] mask, got "
            f"{type(region).__name__}"
        )
    if region.dtype == torch.bool:
        mask = region[None] if region.ndim == 2 else region
        if mask.ndim != 3 or tuple(mask.shape[-2:]) != (h, w):
            raise TaskcamError(
                f"region: a mask must be BoolTensor[B, H, W] or [H, W] at the saliency's size "
                f"{(h, w)}, got {tuple(region.shape)} for saliency of shape {tuple(saliency.shape)}"
            )
    elif region.ndim in (1, 2) and region.shape[-1] == 4:
        mask = boxes_to_masks(region, h, w)
    else:
        raise TaskcamError(
            "region: expected boxes Tensor[B, 4] / Tensor[4] (x1, y1, x2, y2) or a "
            f"BoolTensor[B, H, W] / [H, W] mask, got {region.dtype} {tuple(region.shape)}"
        )
    mask = mask.to(sal.device)
    if sal.shape[0] != mask.shape[0] and 1 not in (sal.shape[0], mask.shape[0]):
        raise TaskcamError(
            f"region: {mask.shape[0]} regions for {sal.shape[0]} saliency maps; give one "
            "region per map, or one for all"
        )
    batch = max(sal.shape[0], mask.shape[0])
    return sal.expand(batch, h, w), mask.expand(batch, h, w)


def pointing_game(
    saliency: torch.Tensor, region: torch.Tensor, *, tolerance: float = 15
) -> torch.Tensor:
    """The pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016).

    A map scores a hit when its maximum falls inside the region or within ``tolerance``
    pixels of it (Euclidean distance between pixel centres, the same as dilating the region
    by a disk of that radius; the paper used 15). When several pixels share the maximum, the
    first in row-major order is the one that points. A constant map (an all-zero, empty map
    included) points nowhere and is a miss; so is an empty region.

    Args:
        saliency: ``Tensor[B, H, W]`` or ``Tensor[H, W]``.
        region: boxes ``Tensor[B, 4]`` / ``[4]`` in ``xyxy`` pixel coordinates (rasterised by
            :func:`boxes_to_masks`: a pixel is in when its centre is in ``[x1, x2) × [y1, y2)``)
            or masks ``BoolTensor[B, H, W]`` / ``[H, W]``. Non-bool tensors are read as boxes.
            One map or one region is shared by all of the other's batch.
        tolerance: radius in pixels, >= 0.

    Returns:
        ``BoolTensor[B]`` hits (``B = 1`` for a single map and region).

    Example:
        >>> sal = torch.zeros(10, 10)
        >>> sal[2, 3] = 1.0
        >>> pointing_game(sal, torch.tensor([3, 2, 4, 3]), tolerance=0).tolist()
        [True]
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise TaskcamError(f"tolerance must be a number >= 0, got {tolerance!r}")
    sal, mask = _maps_and_regions(saliency, region)
    batch, h, w = sal.shape
    flat = sal.reshape(batch, -1)
    peak = flat.argmax(dim=1)  # the first maximum, row-major
    constant = flat.amax(dim=1) <= flat.amin(dim=1)
    py, px = (peak // w).view(-1, 1, 1), (peak % w).view(-1, 1, 1)
    ys = torch.arange(h, device=sal.device).view(1, -1, 1)
    xs = torch.arange(w, device=sal.device).view(1, 1, -1)
    near = (ys - py) ** 2 + (xs - px) ** 2 <= float(tolerance) ** 2  # [B, H, W]
    return (mask & near).flatten(1).any(dim=1) & ~constant


def energy_pointing_game(saliency: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The energy-based pointing game (Wang et al., "Score-CAM: Score-Weighted Visual
    Explanations for Convolutional Neural Networks", CVPR Workshops 2020).

    The share of the map's energy inside the region: the sum of the saliency (negative values
    clipped to 0) over the region's pixels, divided by its sum over the image. A map with no
    positive value gives 0, never NaN.

    Args:
        saliency: ``Tensor[B, H, W]`` or ``Tensor[H, W]``.
        region: boxes or masks, as in :func:`pointing_game`.

    Returns:
        ``Tensor[B]`` in [0, 1] (float32).

    Example:
        >>> sal = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
        >>> energy_pointing_game(sal, torch.tensor([1, 0, 2, 2])).tolist()
        [0.75]
    """
    sal, mask = _maps_and_regions(saliency, region)
    sal = sal.double().clamp(min=0)
    total = sal.sum(dim=(1, 2))
    inside = (sal * mask).sum(dim=(1, 2))
    return torch.where(total > 0, inside / torch.where(total > 0, total, 1.0), 0.0).float()


# -- randomisation sanity check ---------------------------------------------------------------
def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, N]`` float64 ranks of each row, tied values sharing their mean rank."""
    batch, n = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.long().cumsum(dim=1) - 1 + n * torch.arange(batch, device=x.device)[:, None]
    position = torch.arange(n, dtype=torch.float64, device=x.device).expand(batch, n)
    mean_position = torch.zeros(batch * n, dtype=torch.float64, device=x.device).scatter_reduce(
        0, group.flatten(), position.flatten(), reduce="mean", include_self=False
    )
    ranks = torch.empty(batch, n, dtype=torch.float64, device=x.device)
    return ranks.scatter_(1, order, mean_position[group])


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between pairs of maps, computed in torch.

    The Pearson correlation of the two maps' ranks, tied values sharing the mean of their
    ranks (as in Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, who compare
    maps this way). A constant map has no ranking: its correlation is 0, never NaN.

    Args:
        a: ``Tensor[B, H, W]``, ``Tensor[B, N]`` (flattened maps) or ``Tensor[N]``.
        b: the same shape as ``a``.

    Returns:
        ``Tensor[B]`` in [-1, 1] (float32; ``B = 1`` for ``Tensor[N]`` inputs).

    Example:
        >>> spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 30.0, 20.0]]))
        tensor([0.5000])
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise TaskcamError(
            f"spearman: a and b must be tensors of the same shape, got {_shape(a)} and {_shape(b)}"
        )
    if a.ndim == 0 or a.numel() == 0:
        raise TaskcamError(f"spearman: expected Tensor[B, H, W] or Tensor[B, N], got {_shape(a)}")
    if a.ndim == 1:
        a, b = a[None], b[None]
    b = b.to(a.device)
    ra = _average_ranks(torch.nan_to_num(a.detach().flatten(1).double(), nan=0.0))
    rb = _average_ranks(torch.nan_to_num(b.detach().flatten(1).double(), nan=0.0))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    cov = (ra * rb).sum(dim=1)
    var = (ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)
    rho = torch.where(var > 0, cov / torch.where(var > 0, var, 1.0).sqrt(), 0.0)
    return rho.clamp(-1.0, 1.0).float()


def _rng_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (1 << 63)


def _randomize(module: nn.Module, seed: int, recurse: bool) -> None:
    """Re-initialise the parameters ``module`` owns (and, with ``recurse``, those of every
    submodule) in place; buffers such as BatchNorm's running statistics are kept."""
    owners = [m for m in (module.modules() if recurse else [module]) if _owns_parameters(m)]
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for i in cuda:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(seed)
        for owner in owners:
            own = {name for name, p in owner._parameters.items() if p is not None}
            reset = getattr(owner, "reset_parameters", None)
            if callable(reset):
                kept = {k: v.clone() for k, v in owner.state_dict().items() if k not in own}
                reset()
                current = owner.state_dict()
                for key, value in kept.items():  # undo what reset did beyond own parameters
                    current[key].copy_(value)
                continue
            for name in sorted(own):
                p = owner._parameters[name]
                assert p is not None
                std = float(p.detach().double().std()) if p.numel() > 1 else 0.0
                if not math.isfinite(std) or std <= 0:
                    std = 1.0
                draw = torch.randn(p.shape, generator=generator, dtype=torch.float64) * std
                p.copy_(draw.to(device=p.device, dtype=p.dtype))


def _owns_parameters(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def _as_maps(maps: object, expected: Optional[torch.Size]) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim < 2:
        raise TaskcamError(
            f"explain_fn must return saliency maps Tensor[B, H, W], got {_shape(maps)}"
        )
    if expected is not None and maps.shape != expected:
        raise TaskcamError(
            f"explain_fn returned {tuple(maps.shape)} on a randomised model but "
            f"{tuple(expected)} on the original one"
        )
    return maps.detach().clone()  # a view of a parameter would change with it


def _measured(n: int, max_steps: Optional[int], cascade: bool) -> list[int]:
    """Indices of the modules after which maps are compared."""
    if max_steps is None or max_steps >= n:
        return list(range(n))
    if max_steps == 1:
        return [n - 1] if cascade else [0]
    return sorted({round(i * (n - 1) / (max_steps - 1)) for i in range(max_steps)})


def randomization_check(
    model: nn.Module,
    explain_fn: ExplainFn,
    images: torch.Tensor,
    *,
    order: str = "cascade",
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
    max_steps: Optional[int] = None,
    progress: bool = False,
) -> list[RandomizationStep]:
    """The model parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency
    Maps", NeurIPS 2018).

    A method whose maps barely change when the model's weights are replaced by random ones
    does not explain the model. This works on deep copies: the user's ``model`` keeps its
    parameters, buffers and train/eval mode (the copies start in the same mode).

    The modules randomised are, by default, every module that owns parameters itself
    (``module._parameters`` non-empty), in reverse registration order, head first; or the
    modules named in ``layers``, in that order, each with all of its submodules. A module is
    re-initialised with its own ``reset_parameters()`` when it has one, else each parameter
    it owns is drawn from a normal distribution with mean 0 and that parameter's own std.
    Buffers, BatchNorm running statistics included, are kept as they are. Each module's
    randomness comes from ``seed`` and its place in the list (the global RNG is left as it
    was), so a module gets the same values in either order.

    ``order="cascade"`` randomises the modules cumulatively, head to input, and compares the
    maps after each step; ``"independent"`` randomises each module alone on the otherwise
    intact copy. ``explain_fn(model_copy, images)`` must return the maps for the same
    targets every time; it may need gradients (it runs outside ``torch.no_grad()``).

    Args:
        model: the model; never modified.
        explain_fn: ``(model, images) -> Tensor[B, H, W]``, e.g. a wrapper around
            :func:`taskcam.explain`.
        images: passed to ``explain_fn`` unchanged.
        order: ``"cascade"`` or ``"independent"``.
        seed: seeds the re-initialisation.
        layers: dotted module names to randomise instead of the default list.
        max_steps: compare maps at most this many times, at modules spread evenly over the
            list, the first and last included (only the last for ``max_steps=1`` in cascade
            order); in cascade order every module up to a measured one is still randomised.
        progress: show a progress bar.

    Returns:
        One :class:`RandomizationStep` per measurement, head first.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 1, 1))
        >>> steps = randomization_check(net, lambda m, x: m(x)[:, 0], torch.rand(2, 3, 8, 8))
        >>> [s.layer for s in steps], steps[0].correlation.shape
        (['1', '0'], torch.Size([2]))
    """
    if not isinstance(model, nn.Module):
        raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
    if order not in _RANDOMIZATION_ORDERS:
        raise TaskcamError(f"order: expected one of {_RANDOMIZATION_ORDERS}, got {order!r}")
    if max_steps is not None:
        positive_int(max_steps, "max_steps")
    try:
        work = copy.deepcopy(model)
    except Exception as e:  # a model holding something deepcopy cannot copy
        raise TaskcamError(f"model: cannot be deep-copied ({type(e).__name__}: {e})") from e
    named = dict(work.named_modules())
    if layers is None:
        chosen = [(name, m) for name, m in named.items() if _owns_parameters(m)][::-1]
        recurse = False
    else:
        if isinstance(layers, str):
            layers = [layers]
        missing = [name for name in layers if name not in named]
        if missing:
            raise TaskcamError(f"layers: no module named {missing}; some names: {list(named)[1:8]}")
        chosen = [(name, named[name]) for name in layers]
        recurse = True
    if not chosen:
        raise TaskcamError("model: no module owns parameters, nothing to randomise")
    cascade = order == "cascade"
    measured = set(_measured(len(chosen), max_steps, cascade))
    original = _as_maps(explain_fn(work, images), None)
    steps: list[RandomizationStep] = []
    todo = range(len(chosen)) if cascade else sorted(measured)
    for i in tqdm(todo, desc="randomization", unit="layer", disable=not progress, leave=False):
        name, module = chosen[i]
        saved = None
        if not cascade:
            saved = {k: v.clone() for k, v in module.state_dict().items()}
        _randomize(module, _rng_seed(seed, i), recurse)
        if i in measured:
            maps = _as_maps(explain_fn(work, images), original.shape)
            steps.append(RandomizationStep(layer=name, correlation=spearman(original, maps)))
        if saved is not None:
            current = module.state_dict()
            with torch.no_grad():
                for key, value in saved.items():
                    current[key].copy_(value)
    return steps
