"""The detector contract, :class:`Detector`: what taskcam needs from a detector to explain
each of its detections, and the base every detector adapter builds on.

A run calls, for each image:

1. :meth:`Detector.prepare`: the image -> the input tensor, and the placement that brings
   boxes and maps back to the image's pixels (:mod:`taskcam.adapters.detection.placement`);
2. :meth:`Detector.detect`: the input -> the kept detections, each with the index of the
   candidate that produced it. By default this is the model's output without gradients, read
   as :class:`~taskcam.adapters.detection.candidates.Candidates` by :meth:`Detector.candidates`
   (boxes in input pixels, per-class scores, optional objectness, pyramid levels, extras),
   then :meth:`Detector.select`, the model's own post-processing (NMS, or for query-based
   detectors and end-to-end heads the best (candidate, class) pairs without NMS);
3. :meth:`Detector.targets`: one target per detection (``--what``: its score, a side of its
   box, its objectness, its mask, one of its keypoints), read from the candidate's own output
   on gradient passes and matched by D-RISE similarity on perturbed ones;
4. :meth:`Detector.default_layers` (and :meth:`Detector.level_layers`, the pyramid levels a
   detection names as its own), :attr:`Detector.class_names`, :attr:`Detector.conf`.

Any PyTorch detector joins with a decode function: ``Detector(model, decode)`` where
``decode(output) -> Candidates``; the built-in families (ultralytics, YOLOv5, torchvision,
Hugging Face DETR) subclass it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.nms import nms_keep, top_pairs
from taskcam.adapters.detection.placement import (
    Placement,
    check_image,
    letterbox,
    stretched_input,
)
from taskcam.adapters.detection.scoring import (
    WHAT,
    CandidateTarget,
    DetectionTarget,
    check_what,
    keypoint_what,
)
from taskcam.capture import model_device, predict
from taskcam.errors import TaskcamError
from taskcam.layers import default_layer

__all__ = ["RESIZES", "Decode", "Detector", "check_batch", "check_settings", "model_class_names"]

Decode = Callable[[Any], Candidates]
"""``decode(output) -> Candidates``: a detector's raw output read as candidates."""

RESIZES = ("letterbox", "stretch", "none")
"""How :meth:`Detector.prepare` places an image: ultralytics' letterbox (square, or with
:attr:`Detector.rect` the minimal rectangle ``predict`` pads a PyTorch model's input to), a
resize of the whole image to ``size``, or the image as it is (the model resizes it itself)."""


def model_class_names(model: Any, given: Optional[Sequence[str]] = None) -> Optional[list[str]]:
    """``given`` as a list, else the model's ``names`` (ultralytics and YOLOv5 keep a dict
    ``{id: name}`` or a list) in id order, else None.

    Example:
        >>> model_class_names(type("M", (), {"names": {1: "dog", 0: "cat"}})())
        ['cat', 'dog']
    """
    if given is not None:
        return list(given)
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    return None


def check_batch(x: Any) -> torch.Tensor:
    """``x`` when it is a batch ``Tensor[B, C, H, W]``, else an error naming what it is."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TaskcamError(f"x: expected Tensor[B, 3, H, W], got {got}")
    return x


def check_settings(conf: Optional[float], iou: float, max_det: int) -> None:
    """Refuse post-processing settings out of range: ``conf`` (None: the model's own) and
    ``iou`` in [0, 1], ``max_det`` >= 1; the message names all three.

    Example:
        >>> check_settings(0.25, 1.5, 100)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: conf, iou in [0, 1] and max_det >= 1 expected, got 0.25, ...
    """
    in_range = conf is None or (not isinstance(conf, bool) and 0.0 <= float(conf) <= 1.0)
    if not in_range or not 0.0 <= iou <= 1.0 or isinstance(max_det, bool) or max_det < 1:
        raise TaskcamError(
            f"conf, iou in [0, 1] and max_det >= 1 expected, got {conf}, {iou}, {max_det}"
        )


class Detector:
    """A detector explained detection by detection (the contract: see the module doc).

    Used as it is, it wraps a PyTorch detector taskcam does not know: ``decode`` reads the
    model's raw output as candidates, and the model's own post-processing is described by
    ``conf``, ``iou``, ``max_det`` and ``agnostic`` (single-label NMS; candidates with
    ``nms=False`` are kept without NMS, best pairs first). The detector's families subclass
    it and override what they do their own way.

    Args:
        model: the ``nn.Module`` the engine runs on :meth:`prepare`'s tensor (its forward
            takes ``Tensor[B, 3, h, w]``).
        decode: ``output -> Candidates``, differentiable (gradient methods differentiate a
            candidate's score through it); needed unless a subclass implements
            :meth:`candidates`.
        size: the input side (``letterbox``: a square, a multiple of ``stride``), or
            ``(h, w)`` for ``stretch``.
        resize: how an image is placed on the input (:data:`RESIZES`).
        stride: the model's largest stride (``letterbox``).
        mean, std: normalisation applied to the ``[0, 1]`` input (None: none).
        conf: the score a detection must pass.
        iou: the NMS IoU threshold.
        max_det: detections kept per image.
        agnostic: one NMS over all classes instead of one per class.
        class_names: names by class id (default: the model's ``names``, where it has them).
        layers: the layers explained by default (None: the last feature map the model
            computes, :func:`taskcam.default_layer`, which for many detectors is a head's
            output: name your neck or backbone layers).
        level_layers: the layers of the pyramid levels that :attr:`Candidates.levels` index;
            a detection then names its level's layer (ODAM's per-level maps when those are
            hooked).
        keypoints: ``(K, D)`` when ``Candidates.extras["keypoints"]`` holds ``K`` keypoints
            of ``D`` values (``x, y`` and a visibility), so ``--what kptK.x|y|v`` is explained.

    Raises:
        TaskcamError: a model that is not an ``nn.Module``, an unknown ``resize``, or
            post-processing settings out of range (:func:`check_settings`).

    Example:
        >>> class Tiny(nn.Module):  # one box and two class scores per cell of an 8×8 grid
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        ...         self.head = nn.Conv2d(8, 6, 1)
        ...     def forward(self, x):
        ...         return self.head(torch.relu(self.body(x))).flatten(2).transpose(1, 2)
        >>> def decode(out):  # [B, 64, 6]: x1, y1, x2, y2 (fractions of 32 px), two logits
        ...     return Candidates(out[..., :4].sigmoid() * 32, out[..., 4:].sigmoid())
        >>> torch.manual_seed(0) and None
        >>> det = Detector(Tiny().eval(), decode, size=32, conf=0.0, max_det=3,
        ...                layers=["body"])
        >>> x, placement = det.prepare(np.zeros((20, 32, 3), np.uint8))
        >>> dets = det.detect(x)[0]  # NMS at iou=0.45, at most 3
        >>> 0 < len(dets) <= 3 and len(det.targets(dets)) == len(dets), det.default_layers()
        (True, ['body'])
    """

    #: ``"detect"``, or ``"segment"`` for instance segmenters whose detections are regions
    task: str = "detect"
    #: ``letterbox`` pads to the minimal rectangle (ultralytics' and YOLOv5's predict for a
    #: PyTorch model) instead of the square ``size × size`` (the default: a fixed input)
    rect: bool = False
    #: the model is run, never differentiated nor hooked (an ONNX Runtime session, a plain
    #: callable): only the methods that read no layer (``rise``, ``drise``, ``fast-drise``)
    #: explain it (:class:`taskcam.adapters.blackbox.BlackBox`)
    black_box: bool = False

    def __init__(
        self,
        model: nn.Module,
        decode: Optional[Decode] = None,
        *,
        size: Union[int, tuple[int, int]] = 640,
        resize: str = "letterbox",
        stride: int = 32,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        conf: Optional[float] = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
        agnostic: bool = False,
        class_names: Optional[Sequence[str]] = None,
        layers: Optional[Sequence[str]] = None,
        level_layers: Optional[Sequence[str]] = None,
        keypoints: Optional[tuple[int, int]] = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
        if resize not in RESIZES:
            raise TaskcamError(f"resize: expected one of {', '.join(RESIZES)}, got {resize!r}")
        check_settings(conf, iou, max_det)
        self.model = model
        self.decode = decode
        self.size = size
        self.resize = resize
        self.stride = int(stride)
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        self.conf = conf
        self.iou, self.max_det, self.agnostic = iou, max_det, agnostic
        self.class_names = model_class_names(model, class_names)
        self._layers = None if layers is None else list(layers)
        self._level_layers = None if level_layers is None else list(level_layers)
        self._keypoints = keypoints

    # -- what it is ------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The detector family, as messages name it."""
        return "decoded"

    @property
    def detector(self) -> nn.Module:
        """The user's model (families that run it through a wrapper return the model)."""
        return self.model

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return model_device(self.model)

    @property
    def has_masks(self) -> bool:
        """Whether detections carry masks (``Detections.masks``) and ``what="mask"`` works."""
        return False

    @property
    def kpt_shape(self) -> Optional[tuple[int, int]]:
        """``(K, D)``: the keypoints each detection has (pose models), else None."""
        return self._keypoints

    @property
    def explains(self) -> tuple[str, ...]:
        """What a detection's target can explain (``--what``), keypoints aside."""
        return WHAT[:6]

    @property
    def score_threshold(self) -> float:
        """The score a detection must pass, as a number (:attr:`conf`, 0 when None)."""
        return 0.0 if self.conf is None else float(self.conf)

    @property
    def multi_label(self) -> bool:
        """Whether one candidate can be kept once per class (torchvision's detectors, whose
        post-processing selects (candidate, class) pairs), rather than for its best class
        only (single-label NMS, the default)."""
        return False

    def describe(self) -> str:
        """How messages name this detector: ``a FasterRCNN (rcnn)``."""
        return f"a {type(self.detector).__name__} ({self.family})"

    def set_size(self, dims: Sequence[int]) -> None:
        """Take ``--size`` (one side, or ``h, w``): a letterbox's side is the larger one; a
        stretch takes ``h, w``; an image kept as it is has no size to set."""
        if self.resize == "letterbox":
            self.size = max(int(d) for d in dims)
        elif self.resize == "stretch":
            h, w = int(dims[0]), int(dims[-1])
            self.size = h if h == w else (h, w)

    # -- the contract ----------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Placement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]`` on the model's device, placement).

        Raises:
            TaskcamError: not an RGB ``uint8[H, W, 3]`` array, or a ``size`` the placement
                cannot take (the message names both).
        """
        check_image(image)
        if self.resize == "letterbox":
            side = int(self.size)  # type: ignore[arg-type]
            x, placement = letterbox(image, side, self.stride, auto=self.rect)
        else:
            if self.resize == "stretch":
                size = self.size if isinstance(self.size, tuple) else (self.size, self.size)
            else:
                size = image.shape[:2]
            x, placement = stretched_input(image, (int(size[0]), int(size[1])))
        if self.mean is not None or self.std is not None:
            mean = x.new_tensor(self.mean or (0.0, 0.0, 0.0)).view(1, 3, 1, 1)
            std = x.new_tensor(self.std or (1.0, 1.0, 1.0)).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.to(self.device), placement

    def candidates(self, output: Any) -> Candidates:
        """Every candidate in one of the model's outputs, differentiably.

        Raises:
            TaskcamError: no ``decode`` was given, or it returned something other than
                :class:`Candidates` of the documented shapes.
        """
        if self.decode is None:
            raise TaskcamError(
                f"{type(self).__name__}: pass decode= (raw output -> taskcam.Candidates) or "
                "implement candidates()"
            )
        found = self.decode(output)
        if not isinstance(found, Candidates):
            raise TaskcamError(f"decode must return taskcam.Candidates, got {type(found).__name__}")
        return found.check("decode")

    def select(self, candidates: Candidates) -> list[Detections]:
        """The detections the model's own post-processing keeps, one :class:`Detections` per
        image, best first, each with its candidate: single-label NMS at :attr:`iou` over the
        candidates above :attr:`conf` (one NMS for all classes with :attr:`agnostic`), or the
        best (candidate, class) pairs when the candidates have no NMS. Keypoints
        (``extras["keypoints"]``) come along."""
        conf = 0.0 if self.conf is None else float(self.conf)
        points = candidates.extras.get("keypoints")
        out = []
        for b in range(candidates.scores.shape[0]):
            scores, boxes = candidates.scores[b], candidates.boxes[b]
            if boxes.ndim == 3:  # one box per class: NMS on each candidate's best class's box
                flat = boxes[torch.arange(len(boxes)), scores.max(dim=1).indices]
            else:
                flat = boxes
            if candidates.nms:
                cand, cls = nms_keep(
                    flat, scores, conf, self.iou, self.max_det, agnostic=self.agnostic
                )
            else:
                cand, cls = top_pairs(scores, conf, self.max_det)
            det = Detections(
                boxes=boxes[cand] if boxes.ndim == 2 else boxes[cand, cls],
                scores=scores[cand, cls],
                classes=cls.long(),
                candidates=cand.long(),
            )
            if points is not None:
                det.keypoints = points[b, cand]
            out.append(det)
        return out

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """The detections of every image of ``x``, best first, without gradients: the model's
        output (in eval mode, its state put back) -> :meth:`candidates` -> :meth:`select`,
        each detection naming its pyramid level's layer where the candidates have levels."""
        check_batch(x)
        candidates = self.candidates(predict(self.model, x))
        detections = self.select(candidates)
        names = self.level_layers()
        if candidates.levels is not None and names:
            for b, det in enumerate(detections):
                levels = candidates.levels if candidates.levels.ndim == 1 else candidates.levels[b]
                det.levels = [
                    names[i] if 0 <= i < len(names) else None
                    for i in levels[det.candidates].tolist()
                ]
        return detections

    def targets(self, dets: Detections, what: str = "score") -> list[DetectionTarget]:
        """One target per detection of one image (:meth:`target`), each explaining ``what``.

        Raises:
            TaskcamError: a ``what`` this detector cannot explain (:meth:`check_what`).
        """
        self.check_what(what)
        return [self.target(dets, i, what) for i in range(len(dets))]

    def target(self, dets: Detections, i: int, what: str) -> DetectionTarget:
        """The target of detection ``i``: a :class:`CandidateTarget` reading
        :meth:`candidates` (families return their own)."""
        return CandidateTarget(
            int(dets.candidates[i]),
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            layer=dets.levels[i] if dets.levels else None,
            read=self.candidates,
        )

    def check_what(self, what: str) -> None:
        """Refuse a ``what`` this detector's detections cannot explain, naming the detector
        and what it does explain."""
        check_what(what)
        if keypoint_what(what) is not None:
            if self.kpt_shape is None:
                raise TaskcamError(
                    f"what={what!r}: {self.describe()} has no keypoints; pose models' "
                    "detections have them (YOLO -pose)"
                )
            return
        if what not in self.explains:
            lacks = {"mask": "has no masks", "objectness": "has no objectness"}
            hint = "; instance segmenters (Mask R-CNN, YOLO -seg) have masks" * (what == "mask")
            raise TaskcamError(
                f"what={what!r}: {self.describe()} {lacks.get(what, f'does not explain {what!r}')}"
                f"; explain one of {self.explains}{hint}"
            )

    def default_layers(self) -> list[str]:
        """The layers explained by default: ``layers`` as given, else the last feature map
        the model computes from a blank image (:func:`taskcam.default_layer`)."""
        if self._layers is None:
            side = self.size if isinstance(self.size, tuple) else (self.size, self.size)
            x, _ = self.prepare(np.zeros((int(side[0]), int(side[1]), 3), np.uint8))
            self._layers = [default_layer(self.model, x)]
        return list(self._layers)

    def level_layers(self) -> list[str]:
        """The layer of each pyramid level that :attr:`Candidates.levels` index (none by
        default)."""
        return list(self._level_layers or [])
