"""DETR's own explanation of a detection: its query's decoder cross-attention over the image.

Carion et al. ("End-to-End Object Detection with Transformers", ECCV 2020, Fig. 6) show, for
each predicted object, the last decoder layer's attention of that object's query over the
encoder's feature map: it lights the object's extremities. :class:`DetrAttention` draws that
map for each detection of a Hugging Face ``DetrForObjectDetection`` or
``ConditionalDetrForObjectDetection`` (their decoders attend densely over one feature map;
Deformable DETR and RF-DETR sample a few points per level instead, and are refused). The
weights are read with the library's eager attention for that one forward, which gives the same
outputs as its default kernel, and put back afterwards.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.explanation import Explanation, normalize_maps, upsample_maps
from taskcam.methods.base import Method
from taskcam.targets import Target, target_scores

__all__ = ["DetrAttention"]

_DENSE = ("detr", "conditional_detr")
_DEFORMABLE = ("deformable_detr", "rfdetr")  # sampled points, no dense map


def _grid_and_attention(model: nn.Module, inputs: torch.Tensor) -> tuple[Any, torch.Tensor, Any]:
    """``(output, last decoder layer's cross-attention [B, heads, Q, h*w], (h, w))``."""
    grid: list[tuple[int, int]] = []
    projection = model.model.input_projection  # [B, d, h, w]: the grid the encoder flattens
    handle = projection.register_forward_hook(lambda _m, _i, out: grid.append(out.shape[-2:]))
    config = model.config
    implementation = config._attn_implementation
    try:
        config._attn_implementation = "eager"  # the only kernel that returns the weights
        with torch.no_grad():
            output = model(pixel_values=inputs, output_attentions=True)
    finally:
        config._attn_implementation = implementation
        handle.remove()
    attentions = getattr(output, "cross_attentions", None)
    if not attentions or attentions[-1] is None:
        raise TaskcamError(
            f"{type(model).__name__} returned no decoder cross-attentions with eager attention"
        )
    return output, attentions[-1], tuple(int(v) for v in grid[-1])


class DetrAttention(Method):
    """DETR's own explanation: each detection's query's cross-attention over the image.

    The last decoder layer's attention weights, averaged over heads (see the module docstring).

    Targets must name their query (``candidate``), as the DETR adapter's do. No target layer.

    Example:
        >>> import transformers, taskcam
        >>> from taskcam.adapters.huggingface.detr import DetrAdapter
        >>> config = transformers.DetrConfig(use_timm_backbone=False,
        ...     use_pretrained_backbone=False, backbone_config=transformers.ResNetConfig(
        ...     embedding_size=8, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
        ...     out_features=["stage4"]), d_model=16, encoder_layers=1, decoder_layers=1,
        ...     encoder_attention_heads=1, decoder_attention_heads=1, encoder_ffn_dim=16,
        ...     decoder_ffn_dim=16, num_queries=5, num_labels=2)
        >>> adapter = DetrAdapter(transformers.DetrForObjectDetection(config).eval(), conf=0.0)
        >>> x = torch.rand(1, 3, 64, 96)  # a normalised image
        >>> targets = adapter.targets(adapter.detect(x)[0])
        >>> taskcam.explain(adapter.model, x, [targets], method="detr-attention").maps.shape
        torch.Size([1, 5, 64, 96])
    """

    name = "detr-attention"
    needs_grad = False
    uses_layers = False
    attention = True
    needs_detections = True

    def explain_model(
        self, model: nn.Module, inputs: torch.Tensor, targets: list[list[Target]]
    ) -> Explanation:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if type(model).__module__.startswith("rfdetr."):  # RF-DETR's LWDETR has no config
            model_type = "rfdetr"
        if model_type not in _DENSE:
            why = (
                ": its decoder's deformable attention samples a few points per query and "
                "feature level instead of attending over the whole feature map, so there is no "
                "attention map over the image; explain its detections with odam, gradcam or "
                "fast-drise"
            )
            raise TaskcamError(
                f"detr-attention: reads the dense decoder cross-attention of DETR and "
                f"Conditional DETR; {type(model).__name__} ({model_type}) has none"
                f"{why if model_type in _DEFORMABLE else ''}"
            )
        output, attention, (h, w) = _grid_and_attention(model, inputs)
        weights = attention.mean(dim=1)  # [B, Q, h*w]
        rows = []
        for b, row in enumerate(targets):
            queries = [getattr(t, "candidate", None) for t in row]
            if any(not isinstance(q, int) for q in queries):
                raise TaskcamError(
                    "detr-attention: each target must name its query (candidate); build them "
                    "with the DETR adapter's targets()"
                )
            rows.append(weights[b, queries].reshape(len(queries), h, w))  # [T, h, w]
        raw = torch.stack(rows)  # [B, T, h, w]
        maps, empty = normalize_maps(upsample_maps(raw, inputs.shape[-2:]))
        scores = target_scores(output, targets)  # [B, T]
        return Explanation(
            maps=maps,
            raw={"cross-attention": raw},
            scores=scores,
            empty=empty,
            method=self.name,
            layers=[],
            output=output,
        )
