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
    split_half_reliability,
)
from taskcam.methods.base import Method
from taskcam.methods.local_fit import LocalFit

__all__ = ["RISE", "SplitSums"]


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
        stop: stop sampling an image once every target's map is this reproducible: the
            split-half reliability of :class:`SplitSums` (the expected correlation with a
            map of as many new masks), asked after a batch from ``min_masks`` masks on, at
            most once every 16 masks; ``n_masks`` is then the most masks used. ``None``
            (default) uses all masks. The masks an image used are the explanation's
            ``forwards``.
        min_masks: the fewest masks before ``stop`` is asked.
        local: for targets with a box (detections), estimate each map by the local fit of
            :class:`taskcam.methods.local_fit.LocalFit` instead of the score-weighted mean.
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
        stop: Optional[float] = None,
        min_masks: int = 32,
        local: bool = False,
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
        if stop is not None and not 0 < stop <= 1:
            raise TaskcamError(f"{self.name}: stop must be in (0, 1], got {stop!r}")
        if not isinstance(min_masks, int) or min_masks < 2:
            raise TaskcamError(f"{self.name}: min_masks must be an integer >= 2, got {min_masks!r}")
        self.stop, self.min_masks, self.local = stop, min_masks, bool(local)
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
        boxes: Optional[list[list[Any]]] = None,
    ) -> torch.Tensor:
        """``Tensor[B, T, H, W]``; ``boxes``: per image, each target's box in input pixels
        (or ``None``), which ``local`` needs."""
        size = tuple(inputs.shape[-2:])
        batch = (
            self.batch_size
            or batch_size
            or auto_batch_size(
                getattr(model, "per_sample", None) or sample_bytes(model, inputs[:1]),
                inputs.device,
                self.memory_budget,
            )
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
            sums = self._sums(None if boxes is None else boxes[b], size)

            def evaluate(sl: slice, b=b, generator=generator, patterns=patterns, sums=sums):
                """Scores one batch of masked copies into ``sums``."""
                if patterns is None:
                    n = sl.stop - sl.start
                    masks = rise_masks(n, size, grid=self.grid, p=self.p, generator=generator)
                else:
                    masks = patterns_to_masks(patterns[0][sl], patterns[1][sl], size)
                masks = masks.to(inputs.device, inputs.dtype)  # [n, 1, H, W]
                s = score(model(inputs[b, None] * masks), b).float()  # [n, T]
                sums.add(sl.start, s, masks[:, 0].float())
                return s.new_zeros(0)

            asked = [0]

            def converged(done: int, sums=sums, asked=asked) -> bool:
                # asked from min_masks on, at most once every 16 masks (a local fit's check
                # costs a few forwards' time)
                if self.stop is None or done < self.min_masks or done - asked[0] < 16:
                    return False
                asked[0] = done
                return bool((sums.reliability(self.centered) >= self.stop).all())

            run_batches(
                self.n_masks,
                evaluate,
                batch_size=batch,
                desc=f"{self.name} image {b}",
                progress=progress,
                cancel=self.cancel,
                until=converged,
            )
            maps.append(sums.map(self.centered) / self.p)
        return torch.stack(maps)

    def _sums(self, boxes: Optional[list[Any]], size: tuple[int, int]) -> Any:
        """The running sums of one image: a local fit when asked for and every target has a
        box, else the score-weighted sums."""
        if not self.local or not boxes or any(b is None for b in boxes):
            return SplitSums()
        return LocalFit(
            torch.stack([torch.as_tensor(b).float() for b in boxes]),
            size,
            grid=self.grid,
            p=self.p,
        )


class SplitSums:
    """Running sums of one image's masked scores, kept apart for even and odd masks.

    The map of all masks is ``sum_i w_i M_i / n`` with ``w_i`` the score, or the score less
    the mean score (centred); the two halves give two independent maps of the same
    expectation, whose correlation ``r`` estimates how reproducible the whole map is: the
    split-half reliability ``2 r / (1 + r)`` (Spearman 1910; Brown 1910), the expected
    correlation of this map with another drawn with as many new masks.
    """

    def __init__(self) -> None:
        self.part: list[Any] = [0.0, 0.0]  # sum_i s_i M_i: Tensor[T, H, W] per half
        self.masks: list[Any] = [0.0, 0.0]  # sum_i M_i: Tensor[H, W]
        self.scores: list[Any] = [0.0, 0.0]  # sum_i s_i: Tensor[T]
        self.count = [0, 0]

    def add(self, start: int, scores: torch.Tensor, masks: torch.Tensor) -> None:
        """Add masks ``start, start + 1, ...``: ``scores: Tensor[n, T]``, ``masks: [n, H, W]``."""
        parity = (torch.arange(start, start + scores.shape[0]) % 2).to(scores.device)
        for half in (0, 1):
            rows = parity == half
            if not bool(rows.any()):
                continue
            s, m = scores[rows], masks[rows]
            self.part[half] = self.part[half] + torch.einsum("nt,nhw->thw", s, m)
            self.masks[half] = self.masks[half] + m.sum(0)
            self.scores[half] = self.scores[half] + s.sum(0)
            self.count[half] += int(rows.sum())

    def map(self, centered: bool, halves: tuple[int, ...] = (0, 1)) -> torch.Tensor:
        """``Tensor[T, H, W]``: the mean of ``w_i M_i`` over the masks of ``halves``."""
        n = sum(self.count[h] for h in halves)
        part = sum(self.part[h] for h in halves)
        if centered:  # sum_i (s_i - mean) M_i = sum_i s_i M_i - mean * sum_i M_i
            mean = sum(self.scores[h] for h in halves) / n
            part = part - mean[:, None, None] * sum(self.masks[h] for h in halves)
        return part / n

    def reliability(self, centered: bool) -> torch.Tensor:
        """``Tensor[T]``: each target's split-half reliability; 1 for a target whose halves
        are both flat (its score never moved: there is nothing more to learn)."""
        if min(self.count) < 2:
            return torch.zeros(1)
        return split_half_reliability(self.map(centered, (0,)), self.map(centered, (1,)))
