"""RISE: a black-box saliency method built on the shared masking engine."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.masking import (
    auto_batch_size,
    check_batch_size,
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

    Args:
        n_masks: number of random masks per image.
        grid: cells per side of the random binary pattern.
        p: probability that a cell is kept.
        seed: seed of the mask generator.
        batch_size: masked inputs per forward (default: from ``memory_budget``).
        memory_budget: bytes for one batch.
        cancel: a ``threading.Event``; when set, the run stops before its next batch.
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
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not isinstance(n_masks, int) or n_masks < 1:
            raise TaskcamError(f"rise: n_masks must be a positive integer, got {n_masks!r}")
        check_batch_size(batch_size)
        self.n_masks, self.grid, self.p, self.seed = n_masks, grid, p, seed
        self.batch_size, self.memory_budget, self.cancel = batch_size, memory_budget, cancel

    def saliency(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        score: Callable[[Any, int], torch.Tensor],
        *,
        progress: bool = False,
    ) -> torch.Tensor:
        size = tuple(inputs.shape[-2:])
        batch = self.batch_size or auto_batch_size(
            sample_bytes(model, inputs[:1]), inputs.device, self.memory_budget
        )
        maps = []
        for b in range(inputs.shape[0]):
            generator = torch.Generator().manual_seed(self.seed)

            def evaluate(sl: slice, b: int = b, generator=generator) -> torch.Tensor:
                """One batch's share of the weighted mask sum, ``Tensor[1, T, H, W]``."""
                n = sl.stop - sl.start
                masks = rise_masks(n, size, grid=self.grid, p=self.p, generator=generator)
                masks = masks.to(inputs.device, inputs.dtype)  # [n, 1, H, W]
                s = score(model(inputs[b, None] * masks), b)  # [n, T]
                return torch.einsum("nt,nhw->thw", s, masks[:, 0].float())[None]

            parts = run_batches(
                self.n_masks,
                evaluate,
                batch_size=batch,
                desc=f"rise image {b}",
                progress=progress,
                cancel=self.cancel,
            )  # [batches, T, H, W]
            maps.append(parts.sum(0) / (self.n_masks * self.p))
        return torch.stack(maps)
