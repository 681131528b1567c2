"""RISE: a black-box saliency method built on the shared masking engine."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.masking import (
    SAMPLINGS,
    auto_batch_size,
    check_batch_size,
    mask_patterns,
    patterns_to_masks,
    rise_masks,
    run_batches,
    sample_bytes,
)
from taskcam.methods.base import Method

__all__ = ["RISE"]


class RISE(Method):
    """RISE (Petsiuk et al., BMVC 2018): the score-weighted average of random masks.

    "RISE: Randomized Input Sampling for Explanation of Black-box Models". Each image is
    multiplied by ``n_masks`` smooth random masks; the map is ``sum_i score_i * M_i / (N p)``.
    Needs no target layer and no gradient; use probability targets (``SoftmaxTarget``) for
    the paper's definition. Masks are generated per batch from ``seed``: the same seed, mask
    count and batch size give the same map.

    Two settings cut the number of masks a stable map needs (neither changes what the map
    converges to, since maps are min-max normalised and every pixel is kept with
    probability ``p`` on average):

    * ``centered=True`` subtracts the mean score of the run from every mask's score, the
      map becoming ``sum_i (score_i - mean) * M_i / (N p)``: the mean score times the
      random per-pixel mask count ``sum_i M_i`` is pure noise (its expectation is the same at
      every pixel), and it dominates when the target's score hardly moves under most masks,
      as a detection's does. This is the baseline (control variate) that cuts the variance of
      score-weighted sampling estimators (Williams, "Simple statistical gradient-following
      algorithms", 1992; Greensmith et al., JMLR 2004).
    * ``sampling`` other than ``"random"`` draws all masks' cell patterns at once, stratified
      across masks (:func:`taskcam.masking.mask_patterns`): ``"antithetic"`` pairs each mask
      with its complement, ``"sobol"`` thresholds a scrambled Sobol sequence (Fel et al.,
      NeurIPS 2021), ``"sobol-antithetic"`` does both. Those masks do not depend on the batch
      size.

    Args:
        n_masks: number of random masks per image.
        grid: cells per side of the random binary pattern.
        p: probability that a cell is kept.
        seed: seed of the mask generator.
        batch_size: masked inputs per forward (default: from ``memory_budget``).
        memory_budget: bytes for one batch.
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
        sampling: how cell patterns are drawn, one of ``"random"`` (the paper's),
            ``"antithetic"``, ``"sobol"``, ``"sobol-antithetic"`` (the antithetic ones need
            ``p = 0.5``).
        centered: subtract the run's mean score from every score (see above).
    """

    name = "rise"
    needs_grad = False
    perturbation = True
    uses_layers = False

    def __init__(
        self,
        n_masks: int = 4000,
        grid: int = 8,
        p: float = 0.5,
        seed: int = 0,
        batch_size: Optional[int] = None,
        memory_budget: Optional[int] = None,
        cancel: Optional[threading.Event] = None,
        sampling: str = "random",
        centered: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(n_masks, int) or n_masks < 1:
            raise TaskcamError(f"{self.name}: n_masks must be a positive integer, got {n_masks!r}")
        if sampling not in SAMPLINGS:
            raise TaskcamError(
                f"{self.name}: sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}"
            )
        if sampling.endswith("antithetic") and p != 0.5:
            raise TaskcamError(
                f"{self.name}: sampling={sampling!r} pairs each mask with its complement, "
                f"which needs p=0.5, got p={p!r}"
            )
        check_batch_size(batch_size)
        self.sampling, self.centered = sampling, bool(centered)
        self.n_masks, self.grid, self.p, self.seed = n_masks, grid, p, seed
        self.batch_size, self.memory_budget, self.cancel = batch_size, memory_budget, cancel

    def saliency(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        score: Callable[[Any, int], torch.Tensor],
        *,
        progress: bool = False,
        batch_size: Optional[int] = None,
    ) -> torch.Tensor:
        size = tuple(inputs.shape[-2:])
        batch = (
            self.batch_size
            or batch_size
            or auto_batch_size(sample_bytes(model, inputs[:1]), inputs.device, self.memory_budget)
        )
        maps = []
        for b in range(inputs.shape[0]):
            generator = torch.Generator().manual_seed(self.seed)
            patterns = None
            if self.sampling != "random":
                patterns = mask_patterns(
                    self.n_masks,
                    grid=self.grid,
                    p=self.p,
                    sampling=self.sampling,
                    generator=generator,
                )
            score_sum: list[torch.Tensor] = []

            def evaluate(sl: slice, b=b, generator=generator, patterns=patterns, sums=score_sum):
                """One batch's share of the weighted mask sum, ``Tensor[1, T (+1), H, W]``;
                with ``centered`` the last channel is the batch's plain mask sum."""
                if patterns is None:
                    n = sl.stop - sl.start
                    masks = rise_masks(n, size, grid=self.grid, p=self.p, generator=generator)
                else:
                    masks = patterns_to_masks(patterns[0][sl], patterns[1][sl], size)
                masks = masks.to(inputs.device, inputs.dtype)  # [n, 1, H, W]
                s = score(model(inputs[b, None] * masks), b)  # [n, T]
                m = masks[:, 0].float()  # [n, H, W]
                part = torch.einsum("nt,nhw->thw", s, m)
                if not self.centered:
                    return part[None]
                sums.append(s.sum(0))
                return torch.cat([part, m.sum(0, keepdim=True)])[None]

            parts = run_batches(
                self.n_masks,
                evaluate,
                batch_size=batch,
                desc=f"{self.name} image {b}",
                progress=progress,
                cancel=self.cancel,
            ).sum(0)  # [T (+1), H, W]
            if self.centered:  # sum_i (s_i - mean) M_i = sum_i s_i M_i - mean * sum_i M_i
                mean = torch.stack(score_sum).sum(0) / self.n_masks  # [T]
                parts = parts[:-1] - mean[:, None, None] * parts[-1:]
            maps.append(parts / (self.n_masks * self.p))
        return torch.stack(maps)
