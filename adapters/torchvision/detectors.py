"""torchvision detectors explained per detection: Faster / Mask R-CNN, RetinaNet, FCOS, SSD.

The package: :mod:`~.traced` (the detector traced stage by stage, and the placement),
:mod:`~.stages` (the two-stage and one-stage paths), :mod:`~.postprocess` (torchvision's
post-processing keeping candidates), :mod:`~.pyramid` (the layer of each feature map),
:mod:`~.traced_output` (what the traced detector returns) and :mod:`~.detectors` (targets, and
the detector contract, :class:`taskcam.Detector`).

A torchvision detector's ``forward`` returns boxes after NMS and forgets which proposal or
anchor produced each one, so this adapter runs the detector's own stages itself:

1. :class:`~.traced.TracedDetector` wraps the detector without changing it. Its children *are* the
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

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.placement import check_image
from taskcam.adapters.detection.scoring import WHAT, DetectionTarget
from taskcam.adapters.torchvision.traced import (
    ResizePlacement,
    TracedDetector,
    check_thresh,
    traced_detector,
)
from taskcam.adapters.torchvision.traced_output import TracedOutput
from taskcam.errors import TaskcamError

__all__ = [
    "TorchvisionDetectionAdapter",
    "TorchvisionDetectionTarget",
    "default_layers",
    "detect",
    "detection_targets",
    "traced_candidates",
]


def default_layers(model: nn.Module) -> list[str]:
    """The pyramid levels' layers of a torchvision detector (see
    :meth:`TracedDetector.default_layers`); names are the detector's own.

    Example:
        >>> from torchvision.models.detection import retinanet_resnet50_fpn
        >>> det = retinanet_resnet50_fpn(weights=None, weights_backbone=None)
        >>> default_layers(det)[3:]
        ['backbone.fpn.extra_blocks.p6', 'backbone.fpn.extra_blocks.p7']
    """
    return traced_detector(model).default_layers()


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
    traced = traced_detector(model)
    thresh = check_thresh(conf) if conf is not None else traced.score_thresh
    with torch.no_grad():
        out = traced.run(x, masks, thresh)
    layers = traced.feature_layers()
    names = out.feature_names
    dets = out.detections
    for det, levels in zip(dets, out.levels):
        det.levels = [
            layers.get(names[i]) if 0 <= i < len(names) else None
            for i in levels[det.candidates].tolist()
        ]
    return dets


def traced_candidates(out: TracedOutput) -> Candidates:
    """Every candidate of a :class:`TracedOutput` in the contract's form, as D-RISE compares
    them: class columns in the model's numbering (the background column, where the model has
    one, set to 0: D-RISE compares foreground class vectors); two-stage boxes one per class;
    objectness ``1 - P(background)`` (two-stage, SSD) or the best class score (RetinaNet, FCOS:
    a candidate is as much an object as its best detection score, as for YOLO). Images with
    fewer candidates are padded with empty ones (similarity 0).
    """
    scores, probs, boxes, objectness = [], [], [], []
    for b in range(len(out)):
        p, s = out.probs[b], out.scores[b]
        if out.background:
            assert out.objectness is not None
            p = torch.cat([torch.zeros_like(p[:, :1]), p[:, 1:]], dim=1)
            s = torch.cat([torch.zeros_like(s[:, :1]), s[:, 1:]], dim=1)
            obj = out.objectness[b]
        else:
            obj = out.scores[b].amax(dim=-1)
        scores.append(s)
        probs.append(p)
        boxes.append(out.boxes[b])
        objectness.append(obj)
    pad = nn.utils.rnn.pad_sequence
    return Candidates(
        boxes=pad(boxes, batch_first=True),
        scores=pad(scores, batch_first=True),
        objectness=pad(objectness, batch_first=True),
        probs=pad(probs, batch_first=True),
    )


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

    def _output(self, output: Any) -> TracedOutput:
        if not isinstance(output, TracedOutput):
            raise TaskcamError(
                f"{type(self).__name__} reads a TracedOutput, got a {type(output).__name__}: "
                "explain the TracedDetector (adapter.model), not the torchvision detector"
            )
        k = output.num_classes
        self.check_class(k)
        if output.background and self.class_id == 0:
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
        out = self._output(output)
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
                values.append(self.side(box))
        return torch.stack(values)

    def _mask_score(self, out: TracedOutput, image: int, like: torch.Tensor) -> torch.Tensor:
        """The detection's mask logits summed over its mask; 0 when the output lacks it."""
        assert out.mask_logits is not None
        logits = out.mask_logits.get(image, self.candidate, self.class_id)  # [M, M]
        if logits is None:
            return like.new_zeros(())
        return (logits * (logits.detach() > 0)).sum()

    def candidates(self, output: Any) -> Candidates:
        """The output's candidates for D-RISE matching (:func:`traced_candidates`)."""
        return traced_candidates(self._output(output))


def _supported(family: str, masks: bool = False) -> tuple[str, ...]:
    """What a torchvision detector of ``family`` explains: score, box sides, objectness (not
    RetinaNet), mask (Mask R-CNN)."""
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
    return [[_target(d, i, what) for i in range(len(d))] for d in dets]


def _target(dets: Detections, i: int, what: str) -> TorchvisionDetectionTarget:
    return TorchvisionDetectionTarget(
        int(dets.candidates[i]),
        int(dets.classes[i]),
        what,
        box=dets.boxes[i],
        layer=dets.levels[i] if dets.levels else None,
    )


class TorchvisionDetectionAdapter(Detector):
    """torchvision detectors as the pipeline drives them (the :class:`~taskcam.Detector`
    contract).

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
        traced = model if isinstance(model, TracedDetector) else TracedDetector(model)
        super().__init__(traced, resize="none", conf=conf, class_names=class_names)

    @property
    def conf(self) -> Optional[float]:
        """Score threshold of :meth:`detect` (None: the model's own)."""
        return self.model.score_thresh

    @conf.setter
    def conf(self, value: Optional[float]) -> None:
        self.model.score_thresh = check_thresh(value)

    @property
    def score_threshold(self) -> float:
        """:attr:`conf`, else the detector's own threshold."""
        if self.conf is not None:
            return float(self.conf)
        own = getattr(self.detector, "roi_heads", self.detector)
        return float(getattr(own, "score_thresh", 0.0))

    @property
    def multi_label(self) -> bool:
        """torchvision's post-processing keeps (candidate, class) pairs."""
        return True

    @property
    def detector(self) -> nn.Module:
        return self.model.detector

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def has_masks(self) -> bool:
        """Whether detections have masks (Mask R-CNN), so ``what="mask"`` can explain them."""
        heads = getattr(self.detector, "roi_heads", None)
        return heads is not None and heads.has_mask()

    @property
    def explains(self) -> tuple[str, ...]:
        return _supported(self.family, self.has_masks)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, ResizePlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, H, W]`` in [0, 1], placement).

        The image keeps its size: the detector's transform resizes it.
        """
        check_image(image)
        height, width = image.shape[:2]
        if height < 1 or width < 1:
            raise TaskcamError(f"image: expected a non-empty image, got {image.shape}")
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0
        return x.to(self.device), self.model.placement(height, width)

    def candidates(self, output: Any) -> Candidates:
        if not isinstance(output, TracedOutput):
            raise TaskcamError(
                f"a torchvision detector's candidates are read from a TracedOutput, got a "
                f"{type(output).__name__}: run the TracedDetector (adapter.model)"
            )
        return traced_candidates(output)

    def select(self, candidates: Candidates) -> list[Detections]:
        """torchvision's post-processing needs more than the candidates (the transformed
        image's size, its small-box rule), so it runs inside the traced forward: use
        :meth:`detect`."""
        raise TaskcamError(
            "a torchvision detector selects its detections inside its traced forward "
            "(TracedDetector): call detect(x)"
        )

    def detect(self, x: torch.Tensor) -> list[Detections]:
        return detect(self.model, x)

    def target(self, dets: Detections, i: int, what: str) -> DetectionTarget:
        return _target(dets, i, what)

    def default_layers(self) -> list[str]:
        return self.model.default_layers()

    def level_layers(self) -> list[str]:
        return self.model.level_layers()
