"""Guided Backpropagation and Guided Grad-CAM: pixel-space gradients through gated ReLUs."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from taskcam.methods.base import Method

__all__ = ["GuidedBackprop", "GuidedGradCAM", "GuidedReLU"]


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return grad.clamp(min=0)


_RELUS: frozenset[Callable[..., Any]] = frozenset(
    {
        F.relu,
        F.relu_,
        F.relu6,
        torch.relu,
        torch.relu_,
        torch.Tensor.relu,
        torch.Tensor.relu_,
    }
)


# nn.ReLU6 calls F.hardtanh(x, 0., 6.): a hardtanh whose lower bound is 0 is a clipped ReLU
_HARDTANH: frozenset[Callable[..., Any]] = frozenset({F.hardtanh, F.hardtanh_})


def _clips_at_zero(args: tuple, kwargs: dict) -> bool:
    low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    return float(low) == 0.0


class GuidedReLU(TorchFunctionMode):
    """While active, every ReLU (``nn.ReLU``, ``nn.ReLU6``, ``F.relu``, ``F.relu6``, ``torch.relu``,
    a ``hardtanh`` clipping at 0, in-place
    or not) passes back only positive gradients on top of its own positive-input gate.

    Nothing of the model is replaced: the ReLU calls are intercepted through torch's function
    mode and the effect ends with the ``with`` block. Springenberg et al., "Striving for
    Simplicity: The All Convolutional Net", ICLR Workshop 2015.

    Example:
        >>> x = torch.tensor([1.0, -1.0], requires_grad=True)
        >>> with GuidedReLU():
        ...     y = (torch.relu(x) * torch.tensor([-2.0, 3.0])).sum()
        >>> torch.autograd.grad(y, x)[0]
        tensor([0., 0.])
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not (isinstance(out, torch.Tensor) and out.requires_grad):
            return out
        if func in _RELUS or (func in _HARDTANH and _clips_at_zero(args, kwargs)):
            return _PositiveGradient.apply(out)
        return out


class GuidedBackprop(Method):
    """Guided Backprop (Springenberg et al., 2015): input gradient through gated ReLUs.

    Every ReLU passes back only positive gradients. The map is the largest absolute value
    over colour channels; the full gradient image is kept as ``Explanation.pixel_grads``.
    """

    name = "guided-backprop"
    needs_grad = False
    pixel_space = True


class GuidedGradCAM(Method):
    """Guided Grad-CAM (Selvaraju et al., ICCV 2017): Guided Backprop × Grad-CAM, per pixel.

    Section 3.1 of the Grad-CAM paper: the up-sampled Grad-CAM map multiplies the guided
    gradient image."""

    name = "guided-gradcam"
    needs_grad = True
    pixel_space = True
