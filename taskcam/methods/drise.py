"""D-RISE: RISE for object detectors, one map per detection, built on the shared masking engine."""

from __future__ import annotations

import threading
from typing import Any, Optional

from taskcam.methods.rise import RISE

__all__ = ["DRISE", "FastDRISE"]


class DRISE(RISE):
    """D-RISE (Petsiuk et al., CVPR 2021): black-box saliency for one detection of any detector.

    "Black-box Explanation of Object Detectors via Saliency Maps". Random smooth masks as in
    RISE; each masked image is weighted by how well the detector still finds the explained
    detection: the best D-RISE similarity (IoU × class-vector cosine × objectness) between the
    detection and the masked image's candidates. The engine turns detection targets into such
    matching targets for every perturbation method (``target.perturbed()``); D-RISE only
    accepts targets that can do so, that is, targets built by a detector adapter.

    Defaults follow the paper's 16 × 16 grid and keep probability 0.5, with 1,000 masks instead
    of its 5,000 so that a CPU run takes minutes, not an hour; raise ``n_masks`` for smoother
    maps. The same seed, mask count and batch size give the same map.

    Args:
        n_masks: number of random masks per image.
        grid: cells per side of the random binary pattern.
        p: probability that a cell is kept.
        seed: seed of the mask generator.
        batch_size: masked inputs per forward (default: from ``memory_budget``).
        memory_budget: bytes for one batch.
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
    """

    name = "drise"
    needs_detections = True

    def __init__(
        self,
        n_masks: int = 1000,
        grid: int = 16,
        p: float = 0.5,
        seed: int = 0,
        batch_size: Optional[int] = None,
        memory_budget: Optional[int] = None,
        cancel: Optional[threading.Event] = None,
        **options: Any,
    ) -> None:
        super().__init__(
            n_masks=n_masks,
            grid=grid,
            p=p,
            seed=seed,
            batch_size=batch_size,
            memory_budget=memory_budget,
            cancel=cancel,
            **options,
        )


class FastDRISE(DRISE):
    """D-RISE with a quarter of the forwards: quasi-random masks and a centred estimator.

    Plain D-RISE (Petsiuk et al., CVPR 2021) weights independent random masks by the
    detection's similarity score. Much of its noise is not the detector's: the score-weighted
    sum carries the mean score times the random number of masks that kept each pixel, which
    is the same at every pixel in expectation. This mode makes two changes that leave the
    map's expectation unchanged (after min-max normalisation) and cut its variance:

    * the run's mean score is subtracted from each score (``centered``), the baseline or
      control variate of score-weighted estimators (Williams, "Simple statistical
      gradient-following algorithms", 1992; Greensmith et al., JMLR 2004);
    * the cell patterns and shifts are thresholded points of a scrambled Sobol sequence
      (``sampling="sobol"``), so each cell is kept almost exactly ``n p`` times: the
      quasi-Monte Carlo masks of Fel et al. ("Look at the Variance! Efficient Black-box
      Explanations with Sobol-based Sensitivity Analysis", NeurIPS 2021).

    With 250 masks, a quarter of ``drise``'s 1,000 forwards, its maps are about as close to
    a 4,000-mask D-RISE map as ``drise``'s 1,000-mask maps (``benchmarks/drise_convergence.py``;
    ``grid=8`` is closer still at this budget, with a coarser map). Antithetic pairs (a mask
    and its complement) measured worse than independent masks and are not used here. The same
    seed and mask count give the same map, whatever the batch size.

    Args:
        n_masks: number of masks per image: the masked forwards.
        grid: cells per side of the binary pattern.
        p: probability that a cell is kept.
        seed: seed of the Sobol scrambling.
        batch_size: masked inputs per forward (default: from ``memory_budget``).
        memory_budget: bytes for one batch.
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
        sampling: see :class:`~taskcam.methods.rise.RISE`.
        centered: see :class:`~taskcam.methods.rise.RISE`.
    """

    name = "fast-drise"  # named as fast-scorecam and fast-ablationcam are
    aliases = ("drise-fast",)

    def __init__(
        self,
        n_masks: int = 250,
        *,
        sampling: str = "sobol",
        centered: bool = True,
        **options: Any,
    ) -> None:
        # grid, p, seed, batch_size, memory_budget, cancel: as D-RISE's
        super().__init__(n_masks=n_masks, sampling=sampling, centered=centered, **options)
