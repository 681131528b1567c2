"""torchvision detectors traced stage by stage (:class:`TracedDetector`), so each detection
keeps its candidate and every candidate's scores stay differentiable; where an image lies on
what the detector's layers see (:class:`ResizePlacement`)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.fcos import FCOS
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.ssd import SSD
from torchvision.ops import MultiScaleRoIAlign

from taskcam.adapters.detection.placement import resize_maps
from taskcam.adapters.torchvision.pyramid import probe_feature_layers
from taskcam.adapters.torchvision.stages import one_stage, two_stage
from taskcam.adapters.torchvision.traced_output import TracedOutput
from taskcam.capture import ModelState
from taskcam.errors import TaskcamError

__all__ = [
    "FAMILIES",
    "ResizePlacement",
    "TracedDetector",
    "check_thresh",
    "detector_family",
    "is_torchvision_detector",
    "traced_detector",
]

FAMILIES = ("rcnn", "retinanet", "fcos", "ssd")
"""Detector families: two-stage (``GeneralizedRCNN``: Faster, Mask, Keypoint R-CNN), then the
one-stage ``RetinaNet``, ``FCOS`` and ``SSD`` (SSDlite included)."""


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
        return resize_maps(maps[..., :rows, :cols], (self.height, self.width))

    def image_to_map(self, maps: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`map_to_image`: image-grid maps placed on the canvas."""
        self._check(maps)
        rows, cols = self._region()
        if (rows, cols) == (self.height, self.width):
            return maps
        out = resize_maps(maps, (rows, cols))
        return F.pad(out, (0, self.width - cols, 0, self.height - rows))


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
        self.score_thresh = check_thresh(score_thresh)
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
        return self.run(x, masks, self.score_thresh)

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
            self._feature_layers = probe_feature_layers(self)
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
    def run(self, x: torch.Tensor, masks: bool, score_thresh: Optional[float]) -> TracedOutput:
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
                return two_stage(self, images, features, (height, width), masks, score_thresh)
            return one_stage(self, images, features, (height, width), score_thresh)
        finally:
            state.restore()
            for pool, scales, mapper in pools:  # MultiScaleRoIAlign caches these on first use
                pool.scales, pool.map_levels = scales, mapper


def check_thresh(value: Optional[float]) -> Optional[float]:
    if value is not None and (isinstance(value, bool) or not 0.0 <= float(value) <= 1.0):
        raise TaskcamError(f"score_thresh: expected a score in [0, 1] or None, got {value!r}")
    return None if value is None else float(value)


def _check_input(x: Any) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TaskcamError(f"x: expected Tensor[B, 3, H, W] in [0, 1], got {got}")
    if not x.is_floating_point():
        raise TaskcamError(f"x: expected a float tensor in [0, 1], got dtype {x.dtype}")


def traced_detector(model: nn.Module) -> TracedDetector:
    return model if isinstance(model, TracedDetector) else TracedDetector(model)
