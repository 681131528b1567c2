"""Reshape transforms: turn a transformer layer's output into ``Tensor[B, C, h, w]`` for CAMs."""

from __future__ import annotations

import torch

from taskcam.errors import TaskcamError

__all__ = ["ChannelsLast", "TokensToGrid"]


class TokensToGrid:
    """ViT tokens ``Tensor[B, P + h*w, C]`` to ``Tensor[B, C, h, w]``, dropping P prefix tokens.

    Args:
        grid: ``(h, w)`` of the patch grid.
        prefix: how many tokens come before the patch tokens (class, distillation, registers).

    Example:
        >>> TokensToGrid((2, 3), prefix=1)(torch.rand(4, 7, 16)).shape
        torch.Size([4, 16, 2, 3])
    """

    def __init__(self, grid: tuple[int, int], prefix: int = 1) -> None:
        self.grid = (int(grid[0]), int(grid[1]))
        self.prefix = int(prefix)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        if x.ndim != 3 or x.shape[1] != self.prefix + h * w:
            raise TaskcamError(
                f"tokens of shape {tuple(x.shape)} do not hold {self.prefix} prefix token(s) "
                f"and a {h}x{w} grid"
            )
        return x[:, self.prefix :].reshape(x.shape[0], h, w, x.shape[2]).permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return f"TokensToGrid(grid={self.grid}, prefix={self.prefix})"


class ChannelsLast:
    """``Tensor[B, h, w, C]`` (Swin stages in timm and torchvision) to ``Tensor[B, C, h, w]``.

    Example:
        >>> ChannelsLast()(torch.rand(2, 4, 5, 8)).shape
        torch.Size([2, 8, 4, 5])
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise TaskcamError(f"expected a channels-last Tensor[B, h, w, C], got {tuple(x.shape)}")
        return x.permute(0, 3, 1, 2)

    def __repr__(self) -> str:
        return "ChannelsLast()"
