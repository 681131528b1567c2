"""Gradient-weighted methods: Grad-CAM and its descendants, and the original CAM.

Each method is a pure function of activations ``A: Tensor[B, C, h, w]`` and gradients
``G: Tensor[B, T, C, h, w]`` plus a thin registered class.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.methods.base import (
    CamTerms,
    LayerContext,
    Method,
    per_image_class_index,
    require_grads,
)

__all__ = [
    "CAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "XGradCAM",
    "gradcam_weights",
    "gradcampp_weights",
    "xgradcam_weights",
]

_EPS = 1e-7


def gradcam_weights(grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights: the spatial mean of the gradients.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, eq. 1.

    Args:
        grads: ``Tensor[B, T, C, h, w]``.

    Returns:
        ``Tensor[B, T, C]``.

    Example:
        >>> gradcam_weights(torch.ones(1, 1, 2, 3, 3)).shape
        torch.Size([1, 1, 2])
    """
    return grads.mean(dim=(-2, -1))


def gradcampp_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights with the exponential-output closed form for alpha.

    Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional
    Networks", WACV 2018, eq. 19: ``alpha = g^2 / (2 g^2 + sum(A) g^3)``, weights
    ``sum_ij alpha * relu(g)``.

    Args:
        acts: ``Tensor[B, C, h, w]``.
        grads: ``Tensor[B, T, C, h, w]``.

    Returns:
        ``Tensor[B, T, C]``.
    """
    g2 = grads.pow(2)
    g3 = g2 * grads
    sum_a = acts.sum(dim=(-2, -1))[:, None, :, None, None]  # [B, 1, C, 1, 1]
    alpha = g2 / (2 * g2 + sum_a * g3 + _EPS)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (alpha * grads.clamp(min=0)).sum(dim=(-2, -1))


def xgradcam_weights(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM channel weights: gradients weighted by normalised activations.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    BMVC 2020, eq. 11: ``w_c = sum_ij (A_c,ij / sum A_c) * g_c,ij``.

    Args:
        acts: ``Tensor[B, C, h, w]``.
        grads: ``Tensor[B, T, C, h, w]``.

    Returns:
        ``Tensor[B, T, C]``.
    """
    norm = acts / (acts.sum(dim=(-2, -1), keepdim=True) + _EPS)  # [B, C, h, w]
    return (grads * norm[:, None]).sum(dim=(-2, -1))


class GradCAM(Method):
    """Grad-CAM (Selvaraju et al., ICCV 2017): channels weighted by mean gradient."""

    name = "gradcam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(weights=gradcam_weights(require_grads(ctx)))


class GradCAMPlusPlus(Method):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018): higher-order pixel weights for alpha."""

    name = "gradcam++"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(weights=gradcampp_weights(ctx.activations, require_grads(ctx)))


class XGradCAM(Method):
    """XGrad-CAM (Fu et al., BMVC 2020): gradients weighted by normalised activations."""

    name = "xgradcam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(weights=xgradcam_weights(ctx.activations, require_grads(ctx)))


class HiResCAM(Method):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891): ``sum_c g * A`` element-wise.

    Unlike Grad-CAM it keeps the gradient's spatial layout, so the map is faithful to the
    model's computation for any network ending in a linear layer.
    """

    name = "hirescam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(elementwise=require_grads(ctx) * ctx.activations[:, None])


class GradCAMElementWise(Method):
    """Grad-CAM element-wise: ``sum_c relu(g * A)``, the rectified HiResCAM variant."""

    name = "gradcam-elementwise"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(elementwise=(require_grads(ctx) * ctx.activations[:, None]).clamp(min=0))


class LayerCAM(Method):
    """LayerCAM (Jiang et al., IEEE TIP 2021): ``sum_c relu(g) * A`` per pixel."""

    name = "layercam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(elementwise=require_grads(ctx).clamp(min=0) * ctx.activations[:, None])


class ODAM(Method):
    """ODAM (Zhao & Chan, ICLR 2023): per-detection ``relu(sum_c g * A)``, instance-specific.

    "ODAM: Gradient-based Instance-specific Visual Explanations for Object Detection". The
    gradient of one detection's score is large only where that detection was predicted, so
    keeping it element-wise (rather than averaging it into one weight per channel, as
    Grad-CAM does) keeps the map on that instance instead of on every object of its class.
    The arithmetic is HiResCAM's; what makes it ODAM is the target (one detection's score
    traced to its candidate) and the layer (the pyramid level that produced it, which the
    detector adapters set on each target). Works on any target; meant for detections.
    """

    name = "odam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(elementwise=require_grads(ctx) * ctx.activations[:, None])


class CAM(Method):
    """CAM (Zhou et al., CVPR 2016): ``sum_c w_{k,c} A_c`` with ``w`` the classifier's weights.

    "Learning Deep Features for Discriminative Localization".
    Applies to networks where global average pooling of the target layer feeds a linear
    classifier. Targets must carry a ``class_index`` (as
    :class:`taskcam.adapters.classification.ClassTarget` does).

    Args:
        fc: the classifier ``nn.Linear`` (or its dotted name). Default: the last
            ``nn.Linear`` of the model whose input size equals the layer's channel count.
    """

    name = "cam"
    needs_grad = False

    def __init__(self, fc: Optional[Union[nn.Linear, str]] = None, **options: Any) -> None:
        super().__init__(**options)
        self.fc = fc

    def _find_fc(self, model: nn.Module, channels: int) -> nn.Linear:
        if isinstance(self.fc, str):
            try:
                fc = model.get_submodule(self.fc)
            except AttributeError as e:
                raise TaskcamError(f"cam: no classifier layer named {self.fc!r}") from e
        elif self.fc is not None:
            fc = self.fc
        else:
            linears = [
                m for m in model.modules() if isinstance(m, nn.Linear) and m.in_features == channels
            ]
            if not linears:
                raise TaskcamError(
                    f"cam: no nn.Linear with {channels} input features (the target layer's "
                    "channels) found; pass fc=... or use gradcam"
                )
            fc = linears[-1]
        if not isinstance(fc, nn.Linear) or fc.in_features != channels:
            raise TaskcamError(
                f"cam: classifier {fc!r} does not take the layer's {channels} channels"
            )
        return fc

    def terms(self, ctx: LayerContext) -> CamTerms:
        fc = self._find_fc(ctx.model, ctx.activations.shape[1])
        index = per_image_class_index(ctx.targets, self.name).to(fc.weight.device)  # [B, T]
        if int(index.max()) >= fc.out_features or int(index.min()) < 0:
            raise TaskcamError(
                f"cam: class index {int(index.max())} out of range for {fc.out_features} classes"
            )
        return CamTerms(weights=fc.weight.detach()[index].to(ctx.activations.dtype))
