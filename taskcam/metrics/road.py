"""ROAD: RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy for
Attribution Methods", ICML 2022), with its noisy linear imputation."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError
from taskcam.masking import check_batch_size, run_batches
from taskcam.metrics.curves import (
    MetricCurve,
    ScoreFn,
    call_score,
    check_image,
    metric_curve,
    pixel_ranks,
    positive_int,
    shape_of,
)

__all__ = ["linear_impute", "road"]

_ROAD_ORDERS = ("morf", "lerf")


_DEFAULT_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


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
        raise TaskcamError(f"images: expected Tensor[N, C, H, W], got {shape_of(images)}")
    single = images.ndim == 3
    x_in = images[None] if single else images
    n, c, h, w = x_in.shape
    if not isinstance(removed, torch.Tensor) or removed.dtype != torch.bool:
        raise TaskcamError(f"removed: expected a BoolTensor[N, H, W], got {shape_of(removed)}")
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
    image, sal = check_image(image, saliency)
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
