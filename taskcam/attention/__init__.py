"""Transformers' attention: capture that survives fused kernels, and attention explanations.

- :mod:`~taskcam.attention.discovery`: which modules of a model are attention taskcam can
  capture (:func:`find_attention_modules`, :data:`SEARCHED`), and how each kind's attention
  is recomputed from the module's own weights and input;
- :mod:`~taskcam.attention.recording`: :func:`capture_attention` records every attention
  module's per-head attention without changing the model's outputs, and with ``grad=True``
  makes it differentiable (:class:`AttentionCapture`, :class:`AttentionRecord`);
- :mod:`~taskcam.attention.layout`: the blocks, prefix tokens and patch grid of a ViT-style
  model (:func:`vit_layout`), the grid read as the CAM engine's reshapes read it;
- :mod:`~taskcam.attention.relevance`: :func:`rollout` (Abnar & Zuidema, ACL 2020),
  :func:`grad_rollout` (Chefer, Gur & Wolf, ICCV 2021) and :func:`legrad` (Bousselham et
  al. 2024), also registered as the methods ``rollout``, ``grad-rollout`` and ``legrad``;
- :mod:`~taskcam.attention.head_report`: :func:`attention_report` (``taskcam attention``) and
  :func:`head_statistics`.

Example:
    >>> import torch, torchvision
    >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64).eval()
    >>> with capture_attention(vit) as cap:
    ...     _ = vit(torch.rand(1, 3, 32, 32))
    >>> cap.attentions["encoder.layers.encoder_layer_1.self_attention"].shape
    torch.Size([1, 2, 5, 5])
    >>> rollout(vit, torch.rand(1, 3, 32, 32)).maps.shape
    torch.Size([1, 1, 32, 32])
"""

# The method registry first: it registers the attention methods of relevance.py, which subclass
# its Method (imported the other way round, relevance.py would meet the registry half-built).
import taskcam.methods  # noqa: F401  # isort: skip
from taskcam.attention.discovery import SEARCHED, find_attention_modules
from taskcam.attention.head_report import attention_report, head_statistics
from taskcam.attention.layout import Query, ViTLayout, vit_layout
from taskcam.attention.recording import AttentionCapture, AttentionRecord, capture_attention
from taskcam.attention.relevance import GradRollout, LeGrad, Rollout, grad_rollout, legrad, rollout

__all__ = [
    "SEARCHED",
    "AttentionCapture",
    "AttentionRecord",
    "GradRollout",
    "LeGrad",
    "Query",
    "Rollout",
    "ViTLayout",
    "attention_report",
    "capture_attention",
    "find_attention_modules",
    "grad_rollout",
    "head_statistics",
    "legrad",
    "rollout",
    "vit_layout",
]
