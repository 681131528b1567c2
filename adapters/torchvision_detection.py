"""torchvision detectors explained per detection: Faster / Mask R-CNN, RetinaNet, FCOS, SSD.

A torchvision detector's ``forward`` returns boxes after NMS and forgets which proposal or
anchor produced each one, so this adapter runs the detector's own stages itself:

1. :class:`TracedDetector` wraps the detector without changing it. Its children *are* the
   detector's children, so layer names are the detector's own (``backbone.fpn.layer_blocks.0``)
   and hooks on them fire. ``forward(x)`` takes ``Tensor[B, 3, H, W]`` in [0, 1], runs
   ``transform -> backbone -> rpn -> roi_heads`` (two-stage) or ``transform -> backbone ->
   head -> anchors`` (one-stage) in eval mode, and returns a :class:`TracedOutput`: every
   candidate's differentiable class scores and boxes in ``x``'s pixels, and the detections of
   torchvision's own postprocess (same thresholds, small-box removal, per-class NMS and
   ``detections_per_img``), each with the index of its candidate. They equal
   ``detector(list(x))``'s boxes, scores and labels.
2. :class:`TorchvisionDetectionTarget` reads one candidate's score for its class (or one side
   of its box, or its objectness) from any later forward. Gradient methods do one forward of
   the same input, so proposals and anchors are those of :func:`detect` and the index holds;
   perturbation methods match the detection by D-RISE similarity instead
   (:meth:`~taskcam.adapters.detection.DetectionTarget.perturbed`).
3. Each detection names the pyramid level that produced it, as ODAM does (Zhao & Chan,
   ICLR 2023, "ODAM: Gradient-based instance-specific visual explanations for object
   detection"): for two-stage models the level ``MultiScaleRoIAlign`` pooled its proposal from
   (the FPN paper's level mapper: Lin et al., CVPR 2017, "Feature Pyramid Networks for Object
   Detection", Eq. 1), for one-stage models the level its anchor lies on.

Layer names to pass (relative to :class:`TracedDetector`, identical to the detector's):

* FPN models (Faster / Mask R-CNN, RetinaNet, FCOS, whatever the FPN's level names):
  ``backbone.fpn.layer_blocks.{i}`` for the ``i``-th backbone level, and for RetinaNet / FCOS
  ``backbone.fpn.extra_blocks.p6`` / ``.p7``;
* SSD300-VGG16: ``backbone.features`` (conv4_3, before its L2 normalisation) and
  ``backbone.extra.{i}``; SSDlite: ``backbone.features.{0,1}`` and ``backbone.extra.{i}``;
* a backbone that returns one tensor: ``backbone``.

:meth:`TracedDetector.default_layers` finds them for any backbone by following each feature
map back to the module that computed it.

Example:
    >>> import torch, taskcam
    >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
    >>> det = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
    ...     num_classes=3, min_size=128, max_size=128, box_detections_per_img=2).eval()
    >>> adapter = TorchvisionDetectionAdapter(det)
    >>> x = torch.rand(1, 3, 96, 128)
    >>> dets = adapter.detect(x)[0]
    >>> exp = taskcam.explain(adapter.model, x, [adapter.targets(dets)],
    ...                       layers=adapter.default_layers())
    >>> exp.maps.shape
    torch.Size([1, 2, 96, 128])
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.roi_heads import maskrcnn_inference, paste_masks_in_image
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, batched_nms, clip_boxes_to_image, remove_small_boxes

from taskcam.adapters.detection import WHAT, Candidates, Detections, DetectionTarget
from taskcam.capture import ModelState
from taskcam.errors import TaskcamError

__all__ = [
    "FAMILIES",
    "ResizePlacement",
    "TorchvisionDetectionAdapter",
    "TorchvisionDetectionTarget",
    "TracedDetector",
    "TracedOutput",
    "default_layers",
    "detect",
    "detection_targets",
    "detector_family",
    "is_torchvision_detector",
]

FAMILIES = ("rcnn", "retinanet", "fcos", "ssd")
"""Detector families: two-stage (``GeneralizedRCNN``: Faster, Mask, Keypoint R-CNN), then the
one-stage ``RetinaNet``, ``FCOS`` and ``SSD`` (SSDlite included)."""

_SIDES = ("x1", "y1", "x2", "y2")
_PROBE_SIZE = 256  # input side for finding the layers of a backbone without a fixed size
_MIN_BOX = 1e-2  # torchvision's roi_heads drops boxes smaller than this (transformed pixels)


# -- families ------------------------------------------------------------------------------------
def _family(model: Any) -> Optional[str]:
    if isinstance(model, GeneralizedRCNN):
        return "rcnn"
    if isinstance(model, RetinaNet):
        return "retinanet"
    if isinstance(model, FCOS):
        return "fcos"
    if isinstance(model, SSD):
        return "ssd"
    return None


def is_torchvision_detector(model: Any) -> bool:
    """Whether ``model`` is a detector this adapter traces (or a :class:`TracedDetector`).

    Example:
        >>> import torchvision
        >>> is_torchvision_detector(torchvision.models.resnet18(weights=None))
        False
    """
    return isinstance(model, TracedDetector) or _family(model) is not None


def detector_family(model: Any) -> str:
    """The family of a torchvision detector: one of :data:`FAMILIES`.

    Raises:
        TaskcamError: ``model`` is not a torchvision detector (the message names its type).

    Example:
        >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
        >>> detector_family(ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None))
        'ssd'
    """
    if isinstance(model, TracedDetector):
        return model.family
    family = _family(model)
    if family is None:
        raise TaskcamError(
            f"model: expected a torchvision detector (GeneralizedRCNN such as FasterRCNN or "
            f"MaskRCNN, RetinaNet, FCOS or SSD), got {type(model).__name__}"
        )
    return family


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


# -- placement -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResizePlacement:
    """Where an image lies in what the detector's layers see, to bring maps back exactly.

    ``x`` is the image itself (in [0, 1]), so boxes are already in its pixels. The detector's
    transform resizes it to ``new_height × new_width`` and pads bottom and right to
    ``padded_height × padded_width`` (a multiple of ``size_divisible``); a layer's grid covers
    that padded canvas, and the engine stretches it over ``x``'s size. :meth:`map_to_image`
    undoes the stretch (identity when nothing was padded).

    Attributes:
        height, width: the image's (and ``x``'s) size.
        new_height, new_width: its size after the transform's resize.
        padded_height, padded_width: the batched tensor's size.
    """

    height: int
    width: int
    new_height: int
    new_width: int
    padded_height: int
    padded_width: int

    def _region(self) -> tuple[int, int]:
        """Rows and columns of an ``x``-sized map that show the image (the rest is padding)."""
        rows = round(self.height * self.new_height / self.padded_height)
        cols = round(self.width * self.new_width / self.padded_width)
        return max(min(rows, self.height), 1), max(min(cols, self.width), 1)

    def _check(self, maps: torch.Tensor) -> None:
        if maps.shape[-2:] != (self.height, self.width):
            raise TaskcamError(
                f"maps: expected Tensor[..., {self.height}, {self.width}], got {tuple(maps.shape)}"
            )

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels (the same), clipped."""
        limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(boxes.clamp(min=0), limit)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., height, width]`` on the padded canvas -> on the image: crop, resize."""
        self._check(maps)
        rows, cols = self._region()
        if (rows, cols) == (self.height, self.width):
            return maps
        return _resize(maps[..., :rows, :cols], (self.height, self.width))

    def image_to_map(self, maps: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`map_to_image`: image-grid maps placed on the canvas."""
        self._check(maps)
        rows, cols = self._region()
        if (rows, cols) == (self.height, self.width):
            return maps
        out = _resize(maps, (rows, cols))
        return F.pad(out, (0, self.width - cols, 0, self.height - rows))


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``Tensor[..., h, w]`` (values in [0, 1] stay in [0, 1])."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size).to(maps.dtype)


# -- the traced detector -------------------------------------------------------------------------
class TracedDetector(nn.Module):
    """A torchvision detector run stage by stage, keeping each detection's candidate.

    The wrapper registers the detector's children as its own (``transform``, ``backbone``,
    ``rpn``, ``roi_heads`` or ``head``, ``anchor_generator``), so module names, hooks,
    parameters and ``state_dict`` are the detector's; the detector itself is ``.detector``
    and is never modified. Thresholds are read from the detector at every call.

    Args:
        detector: a ``GeneralizedRCNN`` (Faster / Mask / Keypoint R-CNN), ``RetinaNet``,
            ``FCOS`` or ``SSD`` / SSDlite from ``torchvision.models.detection``.
        score_thresh: overrides the detector's score threshold (None: the detector's own).

    Raises:
        TaskcamError: ``detector`` is not a torchvision detector.

    Example:
        >>> from torchvision.models.detection import fcos_resnet50_fpn
        >>> det = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
        ...                         min_size=64, max_size=64)
        >>> traced = TracedDetector(det)
        >>> out = traced(torch.rand(1, 3, 64, 64))
        >>> out.scores[0].shape, out.boxes[0].shape
        (torch.Size([86, 3]), torch.Size([86, 4]))
    """

    def __init__(self, detector: nn.Module, *, score_thresh: Optional[float] = None) -> None:
        if isinstance(detector, TracedDetector):
            score_thresh = detector.score_thresh if score_thresh is None else score_thresh
            detector = detector.detector
        family = detector_family(detector)
        super().__init__()
        for name, child in detector.named_children():
            self.add_module(name, child)
        self.__dict__["detector"] = detector  # not a child: names stay the detector's
        self.training = detector.training
        self.family = family
        self.score_thresh = _check_thresh(score_thresh)
        self._feature_layers: Optional[dict[str, Optional[str]]] = None

    def extra_repr(self) -> str:
        return f"family={self.family!r}"

    # -- public -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, masks: bool = False) -> TracedOutput:
        """Candidates and detections of ``x: Tensor[B, 3, H, W]`` in [0, 1].

        Runs in eval mode whatever the modules' flags (they are put back afterwards).

        Args:
            x: images in [0, 1]; the detector's transform normalises and resizes them.
            masks: Mask R-CNN: also compute the detections' masks (no gradient needed).
        """
        return self._run(x, masks, self.score_thresh)

    def placement(self, height: int, width: int) -> ResizePlacement:
        """How the transform places a ``height × width`` image (see :class:`ResizePlacement`).

        Example:
            >>> from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn
            >>> det = fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None,
            ...                                         min_size=100, max_size=200)
            >>> p = TracedDetector(det).placement(120, 160)
            >>> (p.new_height, p.new_width), (p.padded_height, p.padded_width)
            ((100, 133), (128, 160))
        """
        t = self.transform
        if getattr(t, "fixed_size", None) is not None:
            new_w, new_h = int(t.fixed_size[0]), int(t.fixed_size[1])
        else:
            scale = min(t.min_size[-1] / min(height, width), t.max_size / max(height, width))
            new_h = math.floor(float(height) * scale)
            new_w = math.floor(float(width) * scale)
        div = float(getattr(t, "size_divisible", 1) or 1)
        pad_h = int(math.ceil(new_h / div) * div)
        pad_w = int(math.ceil(new_w / div) * div)
        return ResizePlacement(height, width, new_h, new_w, pad_h, pad_w)

    def feature_layers(self) -> dict[str, Optional[str]]:
        """Feature map name -> the module (dotted name) whose output it is, or None.

        Found once by running the backbone on a blank image and following each feature map
        back through the autograd graph to the nearest module output: FPN levels come from
        ``fpn.layer_blocks.{i}`` whatever their names, RetinaNet's P6/P7 from
        ``fpn.extra_blocks.p6/p7``, SSD300's conv4_3 (L2-normalised outside any module)
        from ``backbone.features``. The outermost of nested modules with the same output
        is named; modules called more than once are skipped.
        """
        if self._feature_layers is None:
            self._feature_layers = _probe_feature_layers(self)
        return dict(self._feature_layers)

    def default_layers(self) -> list[str]:
        """The layers explained by default.

        Two-stage models whose backbone is a torchvision body + FPN (Faster / Mask R-CNN): the
        body's stages that feed the FPN (``backbone.body.layer2..4`` for ResNet-50), their maps
        fused. Chosen over the FPN levels by deletion and insertion of each detection's score
        (``benchmarks/detection_faithfulness.py`` on ``zoo:shapes-fasterrcnn``: 0.862 against
        0.727). Each target still names its FPN level, so hooking :meth:`level_layers` gives
        ODAM's per-level maps. One-stage models and SSD: :meth:`level_layers` (not measured:
        no trained weights of theirs can be loaded offline).

        Raises:
            TaskcamError: no module outputs the feature maps (pass layers yourself).
        """
        body = getattr(getattr(self, "backbone", None), "body", None)
        stages = getattr(body, "return_layers", None)
        if self.family == "rcnn" and isinstance(stages, dict) and stages:
            names = {name for name, _ in self.named_modules()}
            out = [f"backbone.body.{k}" for k in stages if f"backbone.body.{k}" in names]
            if out:
                return out
        return self.level_layers()

    def level_layers(self) -> list[str]:
        """The layers of the pyramid levels detections come from, finest first.

        Two-stage: the levels its box ``MultiScaleRoIAlign`` pools from (not the RPN-only
        ``pool`` level); one-stage: every level the head sees.

        Raises:
            TaskcamError: no module outputs the feature maps (pass layers yourself).
        """
        layers = self.feature_layers()
        names = list(layers)
        if self.family == "rcnn":
            pool = self.roi_heads.box_roi_pool
            if isinstance(pool, MultiScaleRoIAlign):
                names = [n for n in names if n in pool.featmap_names]
        out: list[str] = []
        for n in names:
            layer = layers[n]
            if layer is not None and layer not in out:
                out.append(layer)
        if not out:
            raise TaskcamError(
                f"no module of {type(self.detector).__name__}'s backbone outputs its feature "
                f"maps {list(layers)}; pass layers= (a module whose output is a tensor)"
            )
        return out

    # -- internals --------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, masks: bool, score_thresh: Optional[float]) -> TracedOutput:
        _check_input(x)
        state = ModelState(self)
        pools = [
            (m, m.scales, m.map_levels) for m in self.modules() if isinstance(m, MultiScaleRoIAlign)
        ]
        try:
            state.eval_and_freeze(False)
            height, width = int(x.shape[-2]), int(x.shape[-1])
            images, _ = self.transform(list(x))
            features = self.backbone(images.tensors)
            if isinstance(features, torch.Tensor):
                features = OrderedDict([("0", features)])
            if self.family == "rcnn":
                return self._two_stage(images, features, (height, width), masks, score_thresh)
            return self._one_stage(images, features, (height, width), score_thresh)
        finally:
            state.restore()
            for pool, scales, mapper in pools:  # MultiScaleRoIAlign caches these on first use
                pool.scales, pool.map_levels = scales, mapper

    def _two_stage(
        self,
        images: Any,
        features: dict[str, torch.Tensor],
        size: tuple[int, int],
        with_masks: bool,
        score_thresh: Optional[float],
    ) -> TracedOutput:
        heads = self.roi_heads
        proposals, _ = self.rpn(images, features)  # detached boxes, transformed pixels
        pool = heads.box_roi_pool
        counts = [len(p) for p in proposals]
        # The box head runs on every proposal (1000 per image for R50-FPN), but only the
        # detections' rows are ever explained. With gradients on, it runs on all of them
        # without gradients (for the detections and for matching), then again with gradients
        # on the detections' proposals only (``tracked``): a backward crosses K rows of the
        # head instead of 1000, with the same gradients.
        tracking = torch.is_grad_enabled()
        with torch.no_grad() if tracking else nullcontext():
            class_logits, box_regression = self._box_head(features, proposals, images)
        boxes_all = heads.box_coder.decode(box_regression, proposals)  # [sum N, K, 4]
        probs_all = F.softmax(class_logits, -1)  # [sum N, K]
        levels_all = _roi_levels(pool, list(features), proposals)
        thresh = heads.score_thresh if score_thresh is None else score_thresh

        out = _empty_output(self.family, list(features))
        kept_boxes_t: list[torch.Tensor] = []
        for boxes_t, probs, levels, image_size in zip(
            boxes_all.split(counts, 0), probs_all.split(counts, 0), levels_all, images.image_sizes
        ):
            # torchvision's RoIHeads.postprocess_detections, remembering each row's proposal
            boxes_t = clip_boxes_to_image(boxes_t, image_size)  # [N, K, 4]
            n, k = probs.shape
            labels = torch.arange(k, device=probs.device).view(1, -1).expand_as(probs)
            fg_boxes = boxes_t[:, 1:].reshape(-1, 4)
            fg_scores = probs[:, 1:].reshape(-1)
            fg_labels = labels[:, 1:].reshape(-1)
            rows = torch.where(fg_scores > thresh)[0]
            rows = rows[remove_small_boxes(fg_boxes[rows], min_size=_MIN_BOX)]
            keep = batched_nms(fg_boxes[rows], fg_scores[rows], fg_labels[rows], heads.nms_thresh)
            rows = rows[keep[: heads.detections_per_img]]
            kept_boxes_t.append(fg_boxes[rows])
            candidates = torch.div(rows, k - 1, rounding_mode="floor")
            out.detections.append(
                Detections(
                    boxes=resize_boxes(fg_boxes[rows], image_size, size),
                    scores=fg_scores[rows],
                    classes=fg_labels[rows],
                    candidates=candidates,
                )
            )
            out.probs.append(probs)
            out.scores.append(probs)
            boxes = resize_boxes(boxes_t.reshape(-1, 4), image_size, size).reshape(n, k, 4)
            out.boxes.append(boxes)
            assert out.objectness is not None
            out.objectness.append(1 - probs[:, 0])
            out.levels.append(levels)
        if tracking:
            out.tracked = self._tracked(features, proposals, images, out.detections, size)
        if heads.has_mask():
            out.mask_logits = MaskLogits(
                heads, features, images.image_sizes, kept_boxes_t, out.detections
            )
        if with_masks and heads.has_mask():
            self._masks(features, images.image_sizes, kept_boxes_t, out.detections, size)
        return out

    def _box_head(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], images: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RoI pooling, box head and predictor: class logits and box deltas per proposal."""
        heads = self.roi_heads
        pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
        return heads.box_predictor(heads.box_head(pooled))

    def _tracked(
        self,
        features: dict[str, torch.Tensor],
        proposals: list[torch.Tensor],
        images: Any,
        dets: list[Detections],
        size: tuple[int, int],
    ) -> list[dict[int, tuple[torch.Tensor, torch.Tensor]]]:
        """The box head again, with gradients, on the detections' proposals only."""
        heads = self.roi_heads
        kept = [torch.unique(d.candidates) for d in dets]
        chosen = [p[i] for p, i in zip(proposals, kept)]
        logits, regression = self._box_head(features, chosen, images)
        probs = F.softmax(logits, -1).split([len(i) for i in kept])  # [R, K] per image
        boxes = heads.box_coder.decode(regression, chosen).split([len(i) for i in kept])
        tracked = []
        for cands, p, box, image_size in zip(kept, probs, boxes, images.image_sizes):
            n, k = p.shape
            box = clip_boxes_to_image(box, image_size).reshape(-1, 4)  # [R * K, 4]
            box = resize_boxes(box, image_size, size).reshape(n, k, 4)
            tracked.append({int(c): (p[i], box[i]) for i, c in enumerate(cands.tolist())})
        return tracked

    def _masks(
        self,
        features: dict[str, torch.Tensor],
        image_sizes: list[tuple[int, int]],
        boxes_t: list[torch.Tensor],
        dets: list[Detections],
        size: tuple[int, int],
    ) -> None:
        """Mask R-CNN's mask branch on the detections, pasted as torchvision pastes them."""
        heads = self.roi_heads
        mask_features = heads.mask_head(heads.mask_roi_pool(features, boxes_t, image_sizes))
        logits = heads.mask_predictor(mask_features)
        probs = maskrcnn_inference(logits, [d.classes for d in dets])
        placement = self.placement(*size)
        for det, prob in zip(dets, probs):
            if len(det) == 0:
                det.masks = torch.zeros(0, *size, dtype=torch.bool, device=prob.device)
                continue
            pasted = paste_masks_in_image(prob, det.boxes, size)[:, 0]  # [n, H, W]
            det.masks = placement.image_to_map(pasted) > 0.5

    def _one_stage(
        self,
        images: Any,
        features: dict[str, torch.Tensor],
        size: tuple[int, int],
        score_thresh: Optional[float],
    ) -> TracedOutput:
        d = self.detector
        feats = list(features.values())
        head = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        counts = _anchors_per_level(self.anchor_generator, feats, head["cls_logits"].shape[1])
        thresh = d.score_thresh if score_thresh is None else score_thresh
        out = _empty_output(self.family, list(features))
        ssd_probs = F.softmax(head["cls_logits"], dim=-1) if self.family == "ssd" else None
        for b, image_size in enumerate(images.image_sizes):
            regression, image_anchors = head["bbox_regression"][b], anchors[b]
            objectness: Optional[torch.Tensor] = None
            if ssd_probs is not None:
                probs = scores = ssd_probs[b]
                objectness = 1 - probs[:, 0]
                boxes_t = d.box_coder.decode_single(regression, image_anchors)
                boxes_t = clip_boxes_to_image(boxes_t, image_size)
                det = _ssd_postprocess(d, probs, boxes_t, thresh)
            else:
                probs_l = [torch.sigmoid(lg) for lg in head["cls_logits"][b].split(counts)]
                if self.family == "fcos":
                    ctr_l = [torch.sigmoid(c) for c in head["bbox_ctrness"][b].split(counts)]
                    scores_l = [torch.sqrt(p * c) for p, c in zip(probs_l, ctr_l)]
                    objectness = torch.cat(ctr_l)[:, 0]
                    boxes_t = d.box_coder.decode(regression, image_anchors)
                else:
                    scores_l = probs_l
                    boxes_t = d.box_coder.decode_single(regression, image_anchors)
                boxes_t = clip_boxes_to_image(boxes_t, image_size)
                probs, scores = torch.cat(probs_l), torch.cat(scores_l)
                det = _dense_postprocess(
                    d, self.family, scores_l, regression, image_anchors, counts, image_size, thresh
                )
            det.boxes = resize_boxes(det.boxes, image_size, size)
            out.detections.append(det)
            out.probs.append(probs)
            out.scores.append(scores)
            out.boxes.append(resize_boxes(boxes_t, image_size, size))
            if out.objectness is not None and objectness is not None:
                out.objectness.append(objectness)
            out.levels.append(_levels_from_counts(counts, probs.shape[0], probs.device))
        return out


def _check_thresh(value: Optional[float]) -> Optional[float]:
    if value is not None and (isinstance(value, bool) or not 0.0 <= float(value) <= 1.0):
        raise TaskcamError(f"score_thresh: expected a score in [0, 1] or None, got {value!r}")
    return None if value is None else float(value)


def _check_input(x: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TaskcamError(f"x: expected Tensor[B, 3, H, W] in [0, 1], got {got}")
    if not x.is_floating_point():
        raise TaskcamError(f"x: expected a float tensor in [0, 1], got dtype {x.dtype}")


def _empty_output(family: str, feature_names: list[str]) -> TracedOutput:
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


def _roi_levels(
    pool: nn.Module, names: list[str], proposals: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Per image ``LongTensor[N]``: index into ``names`` of the level each proposal is pooled
    from (``MultiScaleRoIAlign``'s level mapper), -1 for other poolers."""
    counts = [len(p) for p in proposals]
    device = proposals[0].device
    total = sum(counts)
    if not isinstance(pool, MultiScaleRoIAlign):
        return list(torch.full((total,), -1, dtype=torch.long, device=device).split(counts))
    used = [i for i, n in enumerate(names) if n in pool.featmap_names]
    if len(used) == 1 or pool.map_levels is None:
        local = torch.zeros(total, dtype=torch.long, device=device)
    else:
        local = pool.map_levels(proposals)
    index = torch.tensor(used, dtype=torch.long, device=device)
    return list(index[local].split(counts))


def _anchors_per_level(generator: nn.Module, feats: list[torch.Tensor], total: int) -> list[int]:
    """Candidates per level: ``H_l × W_l × A_l``, as the head concatenates them."""
    cells = [int(f.shape[-2] * f.shape[-1]) for f in feats]
    per_cell = getattr(generator, "num_anchors_per_location", None)
    if callable(per_cell):
        a = per_cell()
        if len(a) == len(cells) and sum(c * k for c, k in zip(cells, a)) == total:
            return [c * k for c, k in zip(cells, a)]
    if total % sum(cells) == 0:  # RetinaNet's own rule: the same A on every level
        a_all = total // sum(cells)
        return [c * a_all for c in cells]
    raise TaskcamError(
        f"cannot split {total} candidates over feature maps of {cells} cells"
    )  # pragma: no cover - torchvision heads always match


def _levels_from_counts(counts: list[int], total: int, device: torch.device) -> torch.Tensor:
    levels = torch.arange(len(counts), device=device)
    return levels.repeat_interleave(torch.tensor(counts, device=device))[:total]


def _dense_postprocess(
    d: nn.Module,
    family: str,
    scores_l: list[torch.Tensor],
    regression: torch.Tensor,
    anchors: torch.Tensor,
    counts: list[int],
    image_size: tuple[int, int],
    thresh: float,
) -> Detections:
    """RetinaNet's / FCOS's ``postprocess_detections`` for one image, keeping anchor indices.

    Per level: scores above the threshold, the best ``topk_candidates``, their boxes decoded
    and clipped; then per-class NMS over all levels and the best ``detections_per_img``.
    Boxes stay in transformed pixels.
    """
    start = 0
    all_boxes, all_scores, all_labels, all_anchors = [], [], [], []
    for scores, reg, anc, count in zip(
        scores_l, regression.split(counts), anchors.split(counts), counts
    ):
        k = scores.shape[-1]
        flat = scores.flatten()
        keep = flat > thresh
        flat = flat[keep]
        idx = torch.where(keep)[0]
        flat, order = flat.topk(min(int(idx.numel()), int(d.topk_candidates)))
        idx = idx[order]
        anchor = torch.div(idx, k, rounding_mode="floor")
        if family == "fcos":
            boxes = d.box_coder.decode(reg[anchor], anc[anchor])
        else:
            boxes = d.box_coder.decode_single(reg[anchor], anc[anchor])
        all_boxes.append(clip_boxes_to_image(boxes, image_size))
        all_scores.append(flat)
        all_labels.append(idx % k)
        all_anchors.append(anchor + start)
        start += count
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    labels, cands = torch.cat(all_labels), torch.cat(all_anchors)
    keep = batched_nms(boxes, scores, labels, d.nms_thresh)[: d.detections_per_img]
    return Detections(boxes[keep], scores[keep], labels[keep], cands[keep])


def _ssd_postprocess(
    d: nn.Module, probs: torch.Tensor, boxes: torch.Tensor, thresh: float
) -> Detections:
    """SSD's ``postprocess_detections`` for one image, keeping anchor indices.

    Every foreground class: scores above the threshold, the best ``topk_candidates``; then
    per-class NMS and the best ``detections_per_img``. ``boxes: Tensor[N, 4]`` are the
    decoded, clipped anchor boxes in transformed pixels, and so are the detections'.
    """
    all_scores, all_labels, all_anchors = [], [], []
    for label in range(1, probs.shape[-1]):
        score = probs[:, label]
        keep = score > thresh
        idx = torch.where(keep)[0]
        score, order = score[keep].topk(min(int(idx.numel()), int(d.topk_candidates)))
        all_scores.append(score)
        all_anchors.append(idx[order])
        all_labels.append(torch.full_like(idx[order], label))
    scores, labels, cands = torch.cat(all_scores), torch.cat(all_labels), torch.cat(all_anchors)
    keep = batched_nms(boxes[cands], scores, labels, d.nms_thresh)[: d.detections_per_img]
    cands = cands[keep]
    return Detections(boxes[cands], scores[keep], labels[keep], cands)


def _probe_feature_layers(traced: TracedDetector) -> dict[str, Optional[str]]:
    """See :meth:`TracedDetector.feature_layers`."""
    backbone = traced.backbone
    outputs: dict[str, tuple[torch.Tensor, Any]] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                outputs[name] = (output, output.grad_fn)

        return hook

    param = next(iter(traced.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    fixed = getattr(traced.transform, "fixed_size", None)
    width, height = (int(fixed[0]), int(fixed[1])) if fixed else (_PROBE_SIZE, _PROBE_SIZE)
    handles = [
        module.register_forward_hook(hook_for(f"backbone.{name}" if name else "backbone"))
        for name, module in backbone.named_modules()
    ]
    state = ModelState(traced)
    try:
        state.eval_and_freeze(False)
        with torch.enable_grad():
            probe = torch.zeros(1, 3, height, width, device=device, dtype=dtype)
            features = backbone(probe.requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
        state.restore()
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    by_tensor: dict[int, str] = {}
    by_node: dict[Any, str] = {}
    # outermost first: a container returning its last child's output is named, not the child
    for name in sorted(outputs, key=lambda n: n.count(".")):
        if calls.get(name, 0) != 1:
            continue
        tensor, node = outputs[name]
        by_tensor.setdefault(id(tensor), name)
        if node is not None:
            by_node.setdefault(node, name)
    found: dict[str, Optional[str]] = {}
    for key, feature in features.items():
        name = by_tensor.get(id(feature))
        if name is None and isinstance(feature, torch.Tensor):
            name = _nearest_module(feature.grad_fn, by_node)
        found[key] = name
    return found


def _nearest_module(node: Any, by_node: dict[Any, str], limit: int = 256) -> Optional[str]:
    """Breadth-first walk back through the autograd graph to the nearest module output."""
    queue, seen = [node], set()
    while queue and len(seen) < limit:
        current = queue.pop(0)
        if current is None or current in seen:
            continue
        seen.add(current)
        if current in by_node:
            return by_node[current]
        queue.extend(nxt for nxt, _ in current.next_functions)
    return None


def _traced(model: nn.Module) -> TracedDetector:
    return model if isinstance(model, TracedDetector) else TracedDetector(model)


def default_layers(model: nn.Module) -> list[str]:
    """The pyramid levels' layers of a torchvision detector (see
    :meth:`TracedDetector.default_layers`); names are the detector's own.

    Example:
        >>> from torchvision.models.detection import retinanet_resnet50_fpn
        >>> det = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
        >>> default_layers(det)[3:]
        ['backbone.fpn.extra_blocks.p6', 'backbone.fpn.extra_blocks.p7']
    """
    return _traced(model).default_layers()


def detect(
    model: nn.Module, x: torch.Tensor, *, conf: Optional[float] = None, masks: bool = True
) -> list[Detections]:
    """Detections of every image of ``x``, traced to their candidates, without gradients.

    The same as ``model(list(x))`` (boxes in ``x``'s pixels, scores, labels) plus, per
    detection, its candidate, the layer of its pyramid level (``levels``) and, for Mask R-CNN,
    its mask on the placement's canvas. The model's flags are restored afterwards.

    Args:
        model: a torchvision detector or a :class:`TracedDetector`.
        x: ``Tensor[B, 3, H, W]`` in [0, 1].
        conf: score threshold (default: the model's own).
        masks: compute Mask R-CNN's masks.

    Example:
        >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
        >>> det = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
        ...                                     num_classes=3, detections_per_img=2)
        >>> d = detect(det, torch.rand(1, 3, 80, 120))[0]
        >>> d.boxes.shape, d.levels[0].startswith("backbone.")
        (torch.Size([2, 4]), True)
    """
    traced = _traced(model)
    thresh = _check_thresh(conf) if conf is not None else traced.score_thresh
    with torch.no_grad():
        out = traced._run(x, masks, thresh)
    layers = traced.feature_layers()
    names = out.feature_names
    dets = out.detections
    for det, levels in zip(dets, out.levels):
        det.levels = [
            layers.get(names[i]) if 0 <= i < len(names) else None
            for i in levels[det.candidates].tolist()
        ]
    return dets


# -- targets -------------------------------------------------------------------------------------
class TorchvisionDetectionTarget(DetectionTarget):
    """One candidate's score for its class, one side of its box, or its objectness.

    Reads a :class:`TracedOutput` (the output of :class:`TracedDetector`, the module the
    engine runs), one value per image; differentiable.

    Args:
        candidate: the proposal (two-stage) or anchor (one-stage) index,
            ``Detections.candidates``.
        class_id: the class, in the model's numbering (two-stage and SSD: 1..K-1).
        what: ``"score"`` (what torchvision ranks by: the softmax probability, RetinaNet's
            sigmoid, FCOS's ``sqrt(sigmoid * centerness)``), a box side ``"x1" | "y1" | "x2"
            | "y2"`` in input pixels, ``"objectness"``: ``1 - P(background)`` (two-stage,
            SSD) or the centerness (FCOS), RetinaNet has none; or (Mask R-CNN) ``"mask"``: the
            detection's mask logits (its class's ``M×M`` logits over its box) summed over the
            pixels its mask covers (logit > 0, i.e. probability > 0.5), the mask score of
            Mask R-CNN (He et al., "Mask R-CNN", ICCV 2017) as Seg-Grad-CAM sums a region.
        box: the detection's box (input pixels), for perturbation methods.
        layer: the layer of its pyramid level, or None.

    A candidate beyond an output's candidates scores 0. On perturbed inputs the detection is
    matched by D-RISE similarity over :meth:`candidates`.

    Raises:
        TaskcamError: (when called) an output that is not a :class:`TracedOutput`, a class
            beyond the model's, the background class, or objectness on RetinaNet.

    Example:
        >>> from torchvision.models.detection import fcos_resnet50_fpn
        >>> det = TracedDetector(fcos_resnet50_fpn(weights=None, weights_backbone=None,
        ...                      num_classes=3, min_size=64, max_size=64))
        >>> TorchvisionDetectionTarget(5, 2)(det(torch.rand(2, 3, 64, 64))).shape
        torch.Size([2])
    """

    supports = WHAT

    def _output(self, output: Any, class_id: int) -> TracedOutput:
        if not isinstance(output, TracedOutput):
            raise TaskcamError(
                f"{type(self).__name__} reads a TracedOutput, got a {type(output).__name__}: "
                "explain the TracedDetector (adapter.model), not the torchvision detector"
            )
        k = output.num_classes
        if class_id >= k:
            raise TaskcamError(
                f"class_id {class_id} does not exist: the model has {k} classes (0..{k - 1})"
            )
        if output.background and class_id == 0:
            raise TaskcamError(
                f"class_id 0 is the background of this {output.family} model; its "
                f"detections are classes 1..{k - 1}"
            )
        if self.what == "objectness" and output.objectness is None:
            raise TaskcamError(
                f"what='objectness': a {output.family} model has no objectness; explain one "
                f"of {_supported(output.family)}"
            )
        if self.what == "mask" and output.mask_logits is None:
            raise TaskcamError(
                f"what='mask': this {output.family} model has no mask branch (Mask R-CNN has "
                "one); explain its detections' score, box sides or objectness"
            )
        return output

    def __call__(self, output: Any) -> torch.Tensor:
        out = self._output(output, self.class_id)
        values = []
        for b in range(len(out)):
            scores = out.scores[b]
            if self.candidate >= scores.shape[0]:
                values.append(scores.new_zeros(()))
                continue
            if self.what == "mask":
                values.append(self._mask_score(out, b, scores))
                continue
            row, objectness, box = out.row(b, self.candidate)
            if self.what == "score":
                values.append(row[self.class_id])
            elif self.what == "objectness":
                assert objectness is not None
                values.append(objectness)
            else:
                if box.ndim == 2:  # two-stage: one box per class
                    box = box[self.class_id]
                values.append(box[_SIDES.index(self.what)])
        return torch.stack(values)

    def _mask_score(self, out: TracedOutput, image: int, like: torch.Tensor) -> torch.Tensor:
        """The detection's mask logits summed over its mask; 0 when the output lacks it."""
        assert out.mask_logits is not None
        logits = out.mask_logits.get(image, self.candidate, self.class_id)  # [M, M]
        if logits is None:
            return like.new_zeros(())
        return (logits * (logits.detach() > 0)).sum()

    def candidates(self, output: Any, class_id: int) -> Candidates:
        """The output's candidates for D-RISE matching of a detection of class ``class_id``.

        ``class_id`` is in the model's numbering; so are ``probs``' columns, the background
        column set to 0 (D-RISE compares foreground class vectors). Two-stage boxes are the
        boxes for ``class_id``. Objectness is ``1 - P(background)`` (two-stage, SSD) or the
        best class score (RetinaNet, FCOS: a candidate is as much an object as its best
        detection score, as in the YOLO adapter). Images with fewer candidates are padded
        with empty ones (similarity 0).
        """
        out = self._output(output, class_id)
        probs, boxes, objectness = [], [], []
        for b in range(len(out)):
            p = out.probs[b]
            box = out.boxes[b]
            if box.ndim == 3:
                box = box[:, class_id]
            if out.background:
                assert out.objectness is not None
                p = torch.cat([torch.zeros_like(p[:, :1]), p[:, 1:]], dim=1)
                obj = out.objectness[b]
            else:
                obj = out.scores[b].amax(dim=-1)
            probs.append(p)
            boxes.append(box)
            objectness.append(obj)
        pad = nn.utils.rnn.pad_sequence
        return Candidates(
            boxes=pad(boxes, batch_first=True),
            probs=pad(probs, batch_first=True),
            objectness=pad(objectness, batch_first=True),
        )


def _supported(family: str, masks: bool = False) -> tuple[str, ...]:
    return (WHAT[:6] if family != "retinanet" else WHAT[:5]) + (("mask",) if masks else ())


def detection_targets(
    dets: Sequence[Detections], what: str = "score"
) -> list[list[TorchvisionDetectionTarget]]:
    """One target per detection, one list per image, each with its box and level's layer.

    The engine needs the same, non-zero number of targets for every image: select
    detections per image or explain images one at a time.

    Example:
        >>> d = Detections(torch.zeros(1, 4), torch.ones(1), torch.tensor([2]), torch.tensor([7]))
        >>> detection_targets([d])
        [[TorchvisionDetectionTarget(7, 2)]]
    """
    out = []
    for det in dets:
        levels = det.levels or [None] * len(det)
        out.append(
            [
                TorchvisionDetectionTarget(int(c), int(k), what, box=box, layer=level)
                for c, k, box, level in zip(
                    det.candidates.tolist(), det.classes.tolist(), det.boxes, levels
                )
            ]
        )
    return out


# -- adapter -------------------------------------------------------------------------------------
class TorchvisionDetectionAdapter:
    """torchvision detectors as the pipeline drives them (a ``DetectorAdapter``).

    Args:
        model: a torchvision detector (or a :class:`TracedDetector`); left as it was.
        conf: score threshold (None: the model's own).
        class_names: names by class id, the model's numbering (torchvision's COCO weights:
            ``weights.meta["categories"]``, background first).

    Attributes:
        model: the :class:`TracedDetector` the engine runs; layer names are the detector's.
        detector: the torchvision detector.

    Example:
        >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
        >>> det = ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
        ...                                     num_classes=3, detections_per_img=2)
        >>> adapter = TorchvisionDetectionAdapter(det)
        >>> x, placement = adapter.prepare(np.zeros((90, 160, 3), np.uint8))
        >>> x.shape
        torch.Size([1, 3, 90, 160])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        conf: Optional[float] = None,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        self.model = TracedDetector(model) if not isinstance(model, TracedDetector) else model
        self.detector = self.model.detector
        self.family = self.model.family
        self.conf = conf
        self.class_names = list(class_names) if class_names is not None else None

    @property
    def conf(self) -> Optional[float]:
        """Score threshold of :meth:`detect` (None: the model's own)."""
        return self.model.score_thresh

    @conf.setter
    def conf(self, value: Optional[float]) -> None:
        self.model.score_thresh = _check_thresh(value)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, ResizePlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, H, W]`` in [0, 1], placement).

        The image keeps its size: the detector's transform resizes it.
        """
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            got = getattr(image, "shape", type(image).__name__)
            raise TaskcamError(f"image: expected a uint8[H, W, 3] array, got {got}")
        if image.dtype != np.uint8:
            raise TaskcamError(f"image: expected dtype uint8, got {image.dtype}")
        height, width = image.shape[:2]
        if height < 1 or width < 1:
            raise TaskcamError(f"image: expected a non-empty image, got {image.shape}")
        param = next(iter(self.model.parameters()), None)
        device = param.device if param is not None else torch.device("cpu")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        return x.to(device), self.model.placement(height, width)

    def detect(self, x: torch.Tensor) -> list[Detections]:
        return detect(self.model, x)

    @property
    def has_masks(self) -> bool:
        """Whether detections have masks (Mask R-CNN), so ``what="mask"`` can explain them."""
        heads = getattr(self.detector, "roi_heads", None)
        return heads is not None and heads.has_mask()

    def targets(self, dets: Detections, what: str = "score") -> list[TorchvisionDetectionTarget]:
        supported = _supported(self.family, self.has_masks)
        if what in WHAT and what not in supported:
            lacks = "no objectness" if what == "objectness" else "no masks (Mask R-CNN has)"
            raise TaskcamError(
                f"what={what!r}: a {type(self.detector).__name__} ({self.family}) has {lacks}; "
                f"explain one of {supported}"
            )
        return detection_targets([dets], what)[0]

    def default_layers(self) -> list[str]:
        return self.model.default_layers()
