"""What :class:`~taskcam.adapters.torchvision.traced.TracedDetector` returns: every candidate
of every image with its differentiable scores and boxes, and torchvision's detections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import nn

from taskcam.adapters.detection.candidates import Detections

__all__ = ["MaskLogits", "TracedOutput", "empty_output"]


# -- output --------------------------------------------------------------------------------------
class MaskLogits:
    """Mask R-CNN's mask logits of one forward's detections, computed when first asked for.

    The mask branch (RoI pooling of the forward's features at the detections' boxes, the mask
    head and predictor) runs only when a target reads a mask, on the features of the forward
    that made the detections, so its logits carry that forward's gradients.

    Args:
        heads: the detector's ``RoIHeads`` (with a mask branch).
        features: the backbone's feature maps of the forward.
        image_sizes: the transformed images' sizes.
        boxes: per image, the detections' boxes in transformed pixels ``Tensor[n, 4]``.
        detections: per image, the detections (candidates and classes).
    """

    def __init__(
        self,
        heads: nn.Module,
        features: dict[str, torch.Tensor],
        image_sizes: list[tuple[int, int]],
        boxes: list[torch.Tensor],
        detections: list[Detections],
    ) -> None:
        self.heads, self.features, self.image_sizes = heads, features, image_sizes
        self.boxes, self.detections = boxes, detections
        self._logits: Optional[list[dict[tuple[int, int], torch.Tensor]]] = None

    def get(self, image: int, candidate: int, class_id: int) -> Optional[torch.Tensor]:
        """``Tensor[M, M]`` (28×28 for torchvision's heads): the mask logits of the detection
        of ``class_id`` from proposal ``candidate`` in ``image``, over its box; None when this
        forward has no such detection."""
        if self._logits is None:
            heads = self.heads
            pooled = heads.mask_roi_pool(self.features, self.boxes, self.image_sizes)
            logits = heads.mask_predictor(heads.mask_head(pooled))  # [sum n, K, M, M]
            counts = [len(d) for d in self.detections]
            self._logits = [
                {
                    (int(c), int(k)): part[i, int(k)]
                    for i, (c, k) in enumerate(zip(det.candidates.tolist(), det.classes.tolist()))
                }
                for det, part in zip(self.detections, logits.split(counts))
            ]
        return self._logits[image].get((candidate, class_id))


@dataclass
class TracedOutput:
    """What :class:`TracedDetector` returns: every candidate of every image, and the detections.

    Lists hold one entry per image; ``N`` (candidates) is the number of proposals (two-stage,
    may differ between images) or of anchors (one-stage); ``K`` is the model's number of
    classes, in its own numbering (two-stage and SSD: column 0 is the background).

    Attributes:
        family: one of :data:`FAMILIES`.
        probs: ``Tensor[N, K]`` class probabilities: softmax of the class logits (two-stage,
            SSD), sigmoid (RetinaNet, FCOS).
        scores: ``Tensor[N, K]`` the score torchvision thresholds and ranks by: ``probs``,
            except FCOS: ``sqrt(probs * centerness)``.
        boxes: xyxy in ``x``'s pixels, clipped to the image: ``Tensor[N, K, 4]`` one box per
            class (two-stage) or ``Tensor[N, 4]`` (one-stage).
        objectness: ``Tensor[N]`` how much a candidate is an object: ``1 - P(background)``
            (two-stage, SSD) or the centerness (FCOS); None for RetinaNet.
        levels: ``LongTensor[N]`` index into ``feature_names`` of the level each candidate
            comes from, -1 where unknown.
        feature_names: the backbone's feature maps, in order.
        detections: torchvision's detections with their candidates; ``boxes`` in ``x``'s
            pixels, ``masks`` (Mask R-CNN, when asked) on the placement's canvas.
        tracked: two-stage with gradients on: per image, the detections' proposals mapped
            to their ``probs`` row ``Tensor[K]`` and ``boxes`` row ``Tensor[K, 4]``, which
            carry the gradients (the box head reran on those proposals only) while the full
            tensors above are constants. None otherwise. :meth:`row` reads either.
        mask_logits: Mask R-CNN: the detections' mask logits, computed on first use
            (:class:`MaskLogits`); None for other models. Not kept by a detached copy.
    """

    family: str
    probs: list[torch.Tensor]
    scores: list[torch.Tensor]
    boxes: list[torch.Tensor]
    objectness: Optional[list[torch.Tensor]]
    levels: list[torch.Tensor]
    feature_names: list[str]
    detections: list[Detections]
    tracked: Optional[list[dict[int, tuple[torch.Tensor, torch.Tensor]]]] = None
    mask_logits: Optional[MaskLogits] = field(default=None, init=False, repr=False)

    def row(
        self, image: int, candidate: int
    ) -> tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """One candidate's ``scores`` row, objectness (None for RetinaNet) and ``boxes`` row,
        from ``tracked`` (with gradients) where it has them."""
        if self.tracked is not None and candidate in self.tracked[image]:
            probs, boxes = self.tracked[image][candidate]  # two-stage: scores are probs
            return probs, 1 - probs[0], boxes
        objectness = None if self.objectness is None else self.objectness[image][candidate]
        return self.scores[image][candidate], objectness, self.boxes[image][candidate]

    @property
    def background(self) -> bool:
        """Whether class 0 is the background (two-stage and SSD)."""
        return self.family in ("rcnn", "ssd")

    @property
    def num_classes(self) -> int:
        """``K``, background included where the model has one."""
        return int(self.probs[0].shape[-1])

    def __len__(self) -> int:
        return len(self.probs)


def empty_output(family: str, feature_names: list[str]) -> TracedOutput:
    return TracedOutput(
        family=family,
        probs=[],
        scores=[],
        boxes=[],
        objectness=None if family == "retinanet" else [],
        levels=[],
        feature_names=feature_names,
        detections=[],
    )
