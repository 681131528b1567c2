"""D-RISE: RISE for object detectors, one map per detection, built on the shared masking engine."""

from __future__ import annotations

import threading
from typing import Any, Optional

from taskcam.methods.rise import RISE

__all__ = ["DRISE"]


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
