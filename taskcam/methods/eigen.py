"""Eigen methods: the first principal component of (weighted) activations."""

from __future__ import annotations

import torch

from taskcam.methods.base import CamTerms, LayerContext, Method, require_grads

__all__ = ["EigenCAM", "EigenGradCAM", "principal_projection"]


def principal_projection(x: torch.Tensor) -> torch.Tensor:
    """Project each pixel's channel vector on the first principal component.

    The activations are centred over pixels and decomposed with a thin SVD (torch, batched);
    the sign is chosen so that the projection correlates positively with the channel sum of
    ``x``, which removes the SVD's sign ambiguity.

    Args:
        x: ``Tensor[..., C, h, w]``.

    Returns:
        ``Tensor[..., h, w]``.

    Example:
        >>> a = torch.zeros(1, 4, 3, 3); a[:, :, 1, 1] = 5.0
        >>> principal_projection(a).argmax().item()
        4
    """
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    flat = torch.nan_to_num(x.reshape(-1, c, h * w).transpose(1, 2).float())  # [N, hw, C]
    flat = flat - flat.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    proj = flat @ vh[:, 0, :, None]  # [N, hw, 1]
    proj = proj[..., 0]
    ref = flat.sum(dim=2)  # channel sum of the centred activations, [N, hw]
    sign = torch.sign((proj * ref).sum(dim=1, keepdim=True))
    sign[sign == 0] = 1
    return (proj * sign).reshape(*lead, h, w).to(x.dtype)


class EigenCAM(Method):
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020): first principal component of the activations.

    Class-agnostic: every target of an image gets the same map.
    """

    name = "eigencam"
    needs_grad = False

    def terms(self, ctx: LayerContext) -> CamTerms:
        cam = principal_projection(ctx.activations)  # [B, h, w]
        return CamTerms(cam=cam[:, None].expand(-1, ctx.scores.shape[1], -1, -1))


class EigenGradCAM(Method):
    """EigenGrad-CAM: first principal component of gradient × activation (class-specific)."""

    name = "eigengradcam"

    def terms(self, ctx: LayerContext) -> CamTerms:
        return CamTerms(cam=principal_projection(require_grads(ctx) * ctx.activations[:, None]))
