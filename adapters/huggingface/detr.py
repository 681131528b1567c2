"""Hugging Face DETR-family detectors (``hf:DIR``) explained query by query.

DETR (Carion et al., "End-to-End Object Detection with Transformers", ECCV 2020) predicts
``Q`` object queries, each a box (normalised ``cx, cy, w, h``) and class logits; there is no
NMS. Its ``post_process_object_detection`` keeps, per query, the best class of the softmax
(the last column, "no object", left out) above a threshold. Conditional DETR (Meng et al.,
ICCV 2021) and Deformable DETR (Zhu et al., ICLR 2021) score with sigmoids instead, and their
post-processing keeps the 100 best (query, class) pairs above the threshold. :func:`detect`
does what the model's own post-processing does and remembers each detection's query, so a
:class:`DetrTarget` reads that query's probability for its class (or a side of its box) from
any later forward: all queries of an image in one forward and one batched backward.

Example:
    >>> import transformers
    >>> config = transformers.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
    ...     backbone_config=transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 8, 8, 8],
    ...     depths=[1, 1, 1, 1], out_features=["stage4"]), d_model=16, encoder_layers=1,
    ...     decoder_layers=1, encoder_attention_heads=1, decoder_attention_heads=1,
    ...     encoder_ffn_dim=16, decoder_ffn_dim=16, num_queries=5, num_labels=2)
    >>> adapter = DetrAdapter(transformers.DetrForObjectDetection(config).eval(), conf=0.0)
    >>> adapter.preprocess.size
    (800, 1333)
    >>> x, placement = adapter.prepare(np.zeros((60, 80, 3), np.uint8))
    >>> len(adapter.detect(x)[0]), adapter.default_layers()
    (5, ['model.input_projection'])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.placement import StretchPlacement, check_image, stretched_input
from taskcam.adapters.detection.scoring import WHAT, CandidateTarget
from taskcam.boxes import cxcywh_to_xyxy
from taskcam.errors import TaskcamError
from taskcam.loaded import IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = [
    "DETR_TYPES",
    "DetrAdapter",
    "DetrTarget",
    "detr_candidates",
    "kept_queries",
]

# config model_type -> how queries are scored: a softmax over classes + "no object", or sigmoids
DETR_TYPES = {"detr": "softmax", "conditional_detr": "sigmoid", "deformable_detr": "sigmoid"}
_TOP_K = 100  # the (query, class) pairs sigmoid-scored models' post-processing ranks


def _outputs(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    logits = getattr(output, "logits", None)
    boxes = getattr(output, "pred_boxes", None)
    if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
        raise TaskcamError(
            f"a DETR-family output has logits and pred_boxes, got a {type(output).__name__}"
        )
    return logits, boxes  # [B, Q, K(+1)], [B, Q, 4]


def _probs(logits: torch.Tensor, scoring: str) -> torch.Tensor:
    """``Tensor[B, Q, K]``: each query's class probabilities ("no object" left out)."""
    if scoring == "softmax":
        return logits.softmax(-1)[..., :-1]
    return logits.sigmoid()


def kept_queries(
    probs: torch.Tensor, scoring: str, conf: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(queries, classes, scores)`` the library's ``post_process_object_detection`` keeps of
    one image's ``probs: Tensor[Q, K]``, best first: each query's best class (softmax), or the
    best 100 (query, class) pairs (sigmoid), above ``conf``."""
    nc = probs.shape[-1]
    if scoring == "softmax":
        scores, classes = probs.max(-1)
        queries = torch.arange(len(scores), device=scores.device)
    else:
        scores, flat = probs.flatten().topk(min(_TOP_K, probs.numel()))
        queries, classes = flat // nc, flat % nc
    keep = scores > conf
    order = scores[keep].argsort(descending=True)
    return queries[keep][order], classes[keep][order], scores[keep][order]


def detr_candidates(output: Any, scoring: str, size: tuple[int, int]) -> Candidates:
    """Every query of a DETR-family output: boxes in the pixels of a ``size`` (h, w) input,
    class probabilities ("no object" left out), objectness the best of them; no NMS."""
    logits, boxes = _outputs(output)
    probs = _probs(logits, scoring)
    return Candidates(cxcywh_to_xyxy(boxes, size), probs, objectness=probs.amax(dim=-1), nms=False)


class DetrTarget(CandidateTarget):
    """One query's probability for its class (softmax or sigmoid, as the model scores), or a
    side of its box in input pixels, read from the query's candidate (:func:`detr_candidates`).

    Args:
        candidate: the query; class_id, what, box: as :class:`DetectionTarget`.
        scoring: ``"softmax"`` (DETR) or ``"sigmoid"`` (Conditional, Deformable DETR).
        size: ``(h, w)`` of the model input.
    """

    supports = WHAT[:5]

    def __init__(self, *args: Any, scoring: str, size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scoring, self.size = scoring, (int(size[0]), int(size[1]))

    def candidates(self, output: Any) -> Candidates:
        return detr_candidates(output, self.scoring, self.size)


class DetrAdapter(Detector):
    """A Hugging Face DETR-family detector as the pipeline drives it (the
    :class:`~taskcam.Detector` contract).

    Args:
        model: ``DetrForObjectDetection``, ``ConditionalDetrForObjectDetection`` or
            ``DeformableDetrForObjectDetection``.
        preprocess: ``size`` is (short side, longest side): the image is resized keeping its
            aspect ratio as the library's image processor resizes it (800 and 1333 by
            default), then normalised with ``mean`` and ``std``. Read at each image, so
            ``--size/--mean/--std`` apply.
        conf: score threshold (the post-processing's default 0.5).
        class_names: names by class id.
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Optional[Preprocess] = None,
        *,
        conf: Optional[float] = None,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DETR_TYPES:
            raise TaskcamError(
                f"DetrAdapter: {type(model).__name__} ({model_type}) is not one of the DETR "
                f"family taskcam knows ({', '.join(DETR_TYPES)})"
            )
        self.model_type, self.scoring = model_type, DETR_TYPES[model_type]
        self.preprocess = preprocess or Preprocess((800, 1333), IMAGENET_MEAN, IMAGENET_STD)
        super().__init__(
            model,
            size=self.preprocess.size,
            resize="stretch",
            conf=0.5 if conf is None else float(conf),
            class_names=class_names,
        )
        self.input_size = self.preprocess.size  # (h, w) of the last prepared input

    @property
    def family(self) -> str:
        return self.model_type

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score", "x1", "y1", "x2", "y2")

    def set_size(self, dims: Sequence[int]) -> None:
        """``--size`` reaches :attr:`preprocess` (the sides read at each image) instead."""

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, StretchPlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]`` normalised, placement): resized
        keeping the aspect ratio, short side ``size[0]``, long side at most ``size[1]``."""
        check_image(image, uint8=False)
        height, width = image.shape[:2]
        short, longest = self.preprocess.size
        scale = min(short / max(1, min(height, width)), longest / max(1, height, width))
        new = (max(1, round(height * scale)), max(1, round(width * scale)))
        x, placement = stretched_input(image, new)
        x = x.to(self.device)
        mean, std = (
            x.new_tensor(v).view(1, 3, 1, 1) for v in (self.preprocess.mean, self.preprocess.std)
        )
        self.input_size = new
        return (x - mean) / std, placement

    def candidates(self, output: Any) -> Candidates:
        return detr_candidates(output, self.scoring, self.input_size)

    def select(self, candidates: Candidates) -> list[Detections]:
        out = []
        for b in range(candidates.scores.shape[0]):
            queries, classes, scores = kept_queries(
                candidates.scores[b], self.scoring, float(self.conf)
            )
            boxes = candidates.boxes[b, queries]
            out.append(Detections(boxes, scores, classes.long(), queries.long()))
        return out

    def target(self, dets: Detections, i: int, what: str) -> DetrTarget:
        return DetrTarget(
            int(dets.candidates[i]),
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            scoring=self.scoring,
            size=self.input_size,
        )

    def default_layers(self) -> list[str]:
        """The backbone's feature maps projected for the transformer encoder: DETR's and
        Conditional DETR's one ``model.input_projection``, Deformable DETR's levels fused."""
        if self.model_type == "deformable_detr":
            levels = len(self.model.model.input_proj)
            return [f"model.input_proj.{i}" for i in range(levels)]
        return ["model.input_projection"]
