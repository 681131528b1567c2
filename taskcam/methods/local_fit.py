"""D-RISE maps from far fewer masks: each detection's score fitted on how much of the regions
around its box each mask keeps, and the fit spread by the masks' own correlation.

A D-RISE map is, up to a constant, the covariance of the detection's score with each pixel's
mask value, ``Cov(s, M(x)) / p`` (Petsiuk et al., CVPR 2021). Estimated by averaging, its noise
is the score's whole variance at every pixel of the image, although the score is moved almost
only by what the masks do around the box: on NudeNet's YOLOv8n at 640 px, 250 Sobol masks
gave maps that correlated 0.70 on average (0.46-0.82) with a 4,000-mask map. :class:`LocalFit`
instead fits the score on ``J`` regression inputs, the share of each cell of two 3 × 3 grids
around the box that a mask keeps (``c_j = <w_j, M>``, ``w_j`` the cell's indicator over its
area), by ridge regression, ``s ≈ a + sum_j b_j c_j``; then
``Cov(s, M(x)) ≈ sum_j b_j Cov(c_j, M(x)) = Cov(<v, M>, M(x))`` with ``v = sum_j b_j w_j``,
which :func:`taskcam.masking.mask_covariance` computes exactly. This is the regression
estimator of survey sampling and of control variates (Cochran, "Sampling Techniques", 1977,
ch. 7; Glynn & Szechtman, "Some new perspectives on the method of control variates", 2002)
with the residual dropped: a map of much less variance, which keeps only what the regions
around the box explain (the part of the score that depends on masks far from the box, or on
interactions between regions, is left out). ``benchmarks/drise_convergence.py`` measures
what that costs against the 4,000-mask map.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from taskcam.masking import mask_covariance, split_half_reliability

__all__ = ["LocalFit", "region_grid"]


def region_grid(
    box: torch.Tensor, size: tuple[int, int], *, reach: float = 1.0, regions: int = 3
) -> torch.Tensor:
    """The ``regions × regions`` cells of the window around ``box``: the box grown by
    ``reach`` times its width and height on each side, clipped to the image.

    Args:
        box: ``Tensor[4]``, ``x1, y1, x2, y2`` in input pixels.
        size: ``(H, W)`` of the input.
        reach: how far the window reaches beyond the box, in box sizes.
        regions: cells per side.

    Returns:
        ``LongTensor[regions², 4]``: each cell's ``y1, y2, x1, x2`` (end exclusive, at least
        one pixel).

    Example:
        >>> box = torch.tensor([40.0, 40.0, 60.0, 50.0])
        >>> region_grid(box, (100, 100), reach=2, regions=2).tolist()
        [[20, 45, 0, 50], [20, 45, 50, 100], [45, 70, 0, 50], [45, 70, 50, 100]]
    """
    h, w = size
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    top, bottom = max(0.0, y1 - reach * bh), min(float(h), y2 + reach * bh)
    left, right = max(0.0, x1 - reach * bw), min(float(w), x2 + reach * bw)
    ys = torch.linspace(top, bottom, regions + 1).round().long()
    xs = torch.linspace(left, right, regions + 1).round().long()
    cells = []
    for i in range(regions):
        y_a = int(ys[i].clamp(0, h - 1))
        y_b = max(int(ys[i + 1]), y_a + 1)
        for j in range(regions):
            x_a = int(xs[j].clamp(0, w - 1))
            cells.append([y_a, y_b, x_a, max(int(xs[j + 1]), x_a + 1)])
    return torch.tensor(cells)


class LocalFit:
    """Running sums of one image's masked scores for the local-fit estimate of D-RISE maps,
    kept apart for even and odd masks so that each half gives its own map (the split-half
    reliability of :class:`taskcam.methods.rise.SplitSums`).

    Args:
        boxes: ``Tensor[T, 4]``: each target's box in input pixels.
        size: ``(H, W)`` of the input.
        grid: the masks' cells per side.
        p: the masks' keep probability.
        scales: ``(reach, regions)`` of each grid of cells around the box (see
            :func:`region_grid`); the default, the 3 × 3 cells of the box grown by half its
            size on each side and the 3 × 3 box-sized cells centred on it, held up best of the
            layouts tried on NudeNet's YOLOv8n at 640 (one grid alone was 0.77-0.96 on the same
            photos depending on its layout, ``benchmarks/drise_convergence.py``).
        ridge: the ridge penalty per mask, relative to the regression inputs' variance.
    """

    def __init__(
        self,
        boxes: torch.Tensor,
        size: tuple[int, int],
        *,
        grid: int,
        p: float,
        scales: tuple[tuple[float, int], ...] = ((0.5, 3), (1.0, 3)),
        ridge: float = 1e-2,
    ) -> None:
        self.size, self.grid, self.p, self.ridge = size, grid, p, ridge
        self.cells = torch.stack(
            [
                torch.cat([region_grid(b, size, reach=r, regions=g) for r, g in scales])
                for b in boxes
            ]
        )  # [T, J, 4]
        self.inputs: list[torch.Tensor] = []  # per batch, Tensor[n, T, J]
        self.scores: list[torch.Tensor] = []  # per batch, Tensor[n, T]
        self.count = [0, 0]
        self.device = torch.device("cpu")  # where the masks are: the map goes there

    def add(self, start: int, scores: torch.Tensor, masks: torch.Tensor) -> None:
        """Add masks ``start, start + 1, ...``: ``scores: Tensor[n, T]``, ``masks: [n, H, W]``."""
        # each cell's kept share, from the masks' integral image
        self.device = masks.device
        c = self.cells.to(masks.device)
        y1, y2, x1, x2 = c[..., 0], c[..., 1], c[..., 2], c[..., 3]  # [T, J]
        n = masks.shape[0]
        cols = F.pad(masks.float().cumsum(2), (1, 0))  # [n, H, W + 1]: sums left of x
        strips = cols[:, :, x2] - cols[:, :, x1]  # [n, H, T, J]: each row's share per cell
        rows = F.pad(strips.cumsum(1), (0, 0, 0, 0, 1, 0))  # [n, H + 1, T, J]
        top, bottom = (v[None, None].expand(n, 1, *v.shape) for v in (y1, y2))
        sums = (rows.gather(1, bottom) - rows.gather(1, top))[:, 0]  # [n, T, J]
        self.inputs.append((sums / ((y2 - y1) * (x2 - x1))).cpu())
        self.scores.append(scores.float().cpu())
        n = scores.shape[0]
        self.count[0] += (n + 1 - start % 2) // 2
        self.count[1] += n - (n + 1 - start % 2) // 2

    def _fit(self, half: Optional[int]) -> torch.Tensor:
        """``Tensor[T, J]``: each target's ridge coefficients on the masks of ``half`` (0 even,
        1 odd, ``None`` all)."""
        x, s = torch.cat(self.inputs).double(), torch.cat(self.scores).double()  # [N, T, J]
        if half is not None:
            x, s = x[half::2], s[half::2]
        x, s = x - x.mean(0), s - s.mean(0)
        n, _, j = x.shape
        gram = torch.einsum("ntj,ntk->tjk", x, x)  # [T, J, J]
        scale = gram.diagonal(dim1=1, dim2=2).mean(1).clamp(min=1e-12)  # [T]
        eye = torch.eye(j, dtype=gram.dtype)
        rhs = torch.einsum("ntj,nt->tj", x, s)[..., None]
        return torch.linalg.solve(gram + self.ridge * scale[:, None, None] * eye, rhs)[..., 0]

    def map(
        self, centered: bool = True, halves: tuple[int, ...] = (0, 1), pool: int = 1
    ) -> torch.Tensor:
        """``Tensor[T, H, W]``: ``sum_j b_j Cov(c_j, M)``, the fitted covariance of the score
        with each pixel's mask value (the D-RISE map times ``p``, as :class:`SplitSums`' map
        is), from the masks of ``halves``; ``pool > 1`` makes it at ``1 / pool`` of the size
        (cheaper, for the stop rule). (``centered`` is there for :class:`SplitSums`'
        interface: the fit has its own intercept.)"""
        coef = self._fit(None if len(halves) == 2 else halves[0]).float()  # [T, J]
        h, w = self.size
        effect = torch.zeros(coef.shape[0], h, w)
        for t, cells in enumerate(self.cells):
            for k, (y1, y2, x1, x2) in enumerate(cells.tolist()):
                effect[t, y1:y2, x1:x2] += coef[t, k] / ((y2 - y1) * (x2 - x1))
        if pool > 1:
            effect = F.avg_pool2d(effect[:, None], pool, ceil_mode=True)[:, 0]
        return mask_covariance(effect, grid=self.grid, p=self.p).to(self.device)

    def reliability(self, centered: bool = True) -> torch.Tensor:
        """``Tensor[T]``: the split-half reliability ``2 r / (1 + r)`` of each map, ``r`` the
        correlation of the maps fitted on the even and on the odd masks; 1 for a map flat
        in both halves."""
        if min(self.count) < 4:
            return torch.zeros(1)
        return split_half_reliability(self.map(halves=(0,), pool=4), self.map(halves=(1,), pool=4))
