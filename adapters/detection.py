"""What every detector adapter shares: detections traced to their candidates, D-RISE matching,
and the adapter interface the pipeline drives.

A detector adapter (:mod:`taskcam.adapters.yolo`, :mod:`taskcam.adapters.torchvision_detection`)
gives, for one image, the model the engine runs, the detections after NMS each with the index
of the pre-NMS *candidate* (anchor or proposal) that produced it, and one target per detection:

* on the unperturbed input (gradient methods) the target reads that candidate's own score,
  which is differentiable and exactly the number the detector ranked the detection by;
* on perturbed inputs (Score-CAM, Ablation-CAM, RISE, D-RISE) candidates move, so the engine
  asks the target for :meth:`DetectionTarget.perturbed`: the best match among the perturbed
  output's candidates by the D-RISE similarity (Petsiuk et al., CVPR 2021, "Black-box
  Explanation of Object Detectors via Saliency Maps"): IoU × cosine of the class vectors ×
  objectness.

A target may also name the layer whose map explains it (:attr:`DetectionTarget.layer`, the
pyramid level that produced the detection, as ODAM does: Zhao & Chan, ICLR 2023, "ODAM:
Gradient-based instance-specific visual explanations for object detection"); the engine then
uses that layer's map for it when several layers are hooked in one forward.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Protocol

import numpy as np
import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = [
    "Candidates",
    "DetectionTarget",
    "Detections",
    "DetectorAdapter",
    "MatchTarget",
    "Placement",
    "drise_similarity",
    "parse_detection_targets",
]

WHAT = ("score", "x1", "y1", "x2", "y2", "objectness", "mask")
"""What a detection target can explain: its class score, one side of its box, objectness, or
(instance segmenters) its mask: the mask logits summed over the mask's own pixels. Pose models
also explain one keypoint's coordinate or visibility: ``kpt3.x``, ``kpt3.y``, ``kpt3.v``
(:func:`keypoint_what`)."""

_KEYPOINT = re.compile(r"kpt(\d+)\.([xyv])")


def keypoint_what(what: str) -> Optional[tuple[int, int]]:
    """``(keypoint, 0 | 1 | 2)`` for ``"kpt3.x" | "kpt3.y" | "kpt3.v"``, None for other values.

    Example:
        >>> keypoint_what("kpt3.y"), keypoint_what("score")
        ((3, 1), None)
    """
    match = _KEYPOINT.fullmatch(what) if isinstance(what, str) else None
    return None if match is None else (int(match.group(1)), "xyv".index(match.group(2)))


def check_what(what: str) -> None:
    """Refuse a ``what`` no detector explains (:data:`WHAT` or a keypoint's ``kptK.x|y|v``)."""
    if what not in WHAT and keypoint_what(what) is None:
        raise TaskcamError(
            f"--what: expected one of {', '.join(WHAT)} or a keypoint's kptK.x, kptK.y, kptK.v "
            f"(pose models), got {what!r}"
        )


@dataclass
class Detections:
    """One image's detections after NMS, each traced back to its pre-NMS candidate.

    Attributes:
        boxes: ``Tensor[N, 4]`` xyxy in model-input pixels.
        scores: ``Tensor[N]`` the score the detector ranked each detection by.
        classes: ``LongTensor[N]`` class ids (the model's own numbering).
        candidates: ``LongTensor[N]`` index of the anchor / proposal that produced each one.
        masks: ``BoolTensor[N, H, W]`` instance masks at input size (instance models), else None.
        levels: per detection, the name of the layer (pyramid level) that produced it, or None.
        keypoints: ``Tensor[N, K, D]`` pose models' keypoints in model-input pixels (``x, y``
            and, with ``D = 3``, the visibility in [0, 1]), else None.
        rboxes: ``Tensor[N, 5]`` oriented boxes (``cx, cy, w, h, angle`` in radians, input
            pixels) of OBB models, whose ``boxes`` are then their axis-aligned bounds; else None.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    candidates: torch.Tensor
    masks: Optional[torch.Tensor] = None
    levels: Optional[list[Optional[str]]] = None
    keypoints: Optional[torch.Tensor] = None
    rboxes: Optional[torch.Tensor] = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def select(self, keep: Sequence[int]) -> Detections:
        """The detections at positions ``keep``, in that order."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.scores.device)
        return Detections(
            boxes=self.boxes[idx],
            scores=self.scores[idx],
            classes=self.classes[idx],
            candidates=self.candidates[idx],
            masks=None if self.masks is None else self.masks[idx],
            levels=None if self.levels is None else [self.levels[i] for i in keep],
            keypoints=None if self.keypoints is None else self.keypoints[idx],
            rboxes=None if self.rboxes is None else self.rboxes[idx],
        )


@dataclass
class Candidates:
    """Every pre-NMS candidate of a batch, as D-RISE compares them.

    Attributes:
        boxes: ``Tensor[B, N, 4]`` xyxy in input pixels (for per-class boxes, the box of the
            class being matched is chosen by the caller).
        probs: ``Tensor[B, N, K]`` class probabilities (foreground classes only).
        objectness: ``Tensor[B, N]`` how much each candidate is an object at all, or None.
    """

    boxes: torch.Tensor
    probs: torch.Tensor
    objectness: Optional[torch.Tensor] = None


def _iou(boxes: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., N]``: IoU of ``boxes: Tensor[..., N, 4]`` with one box ``ref: Tensor[4]``."""
    x1 = torch.maximum(boxes[..., 0], ref[0])
    y1 = torch.maximum(boxes[..., 1], ref[1])
    x2 = torch.minimum(boxes[..., 2], ref[2])
    y2 = torch.minimum(boxes[..., 3], ref[3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(
        min=0
    )
    ref_area = (ref[2] - ref[0]).clamp(min=0) * (ref[3] - ref[1]).clamp(min=0)
    return inter / (area + ref_area - inter).clamp(min=1e-9)


def drise_similarity(candidates: Candidates, box: torch.Tensor, class_id: int) -> torch.Tensor:
    """``Tensor[B]``: D-RISE similarity of the best-matching candidate with one detection.

    ``s = max_i IoU(L_t, L_i) · cos(P_t, P_i) · O_i`` (Petsiuk et al., CVPR 2021), with the
    target's class vector ``P_t`` one-hot at ``class_id`` and ``O_i`` the candidate's
    objectness (1 when the detector has none). An output without candidates scores 0.

    Args:
        candidates: the perturbed output's candidates.
        box: ``Tensor[4]`` the detection's xyxy box in input pixels.
        class_id: the detection's class (index into ``candidates.probs``' last dimension).

    Example:
        >>> c = Candidates(torch.tensor([[[0.0, 0, 10, 10], [0, 0, 5, 10]]]),
        ...                torch.tensor([[[0.9, 0.1], [0.1, 0.9]]]))
        >>> round(float(drise_similarity(c, torch.tensor([0.0, 0, 10, 10]), 0)), 3)
        0.994
    """
    probs = candidates.probs
    if probs.shape[-2] == 0:
        return probs.new_zeros(probs.shape[0])
    if not 0 <= class_id < probs.shape[-1]:
        raise TaskcamError(
            f"class_id {class_id} does not exist: the candidates have {probs.shape[-1]} classes"
        )
    box = box.to(candidates.boxes)
    iou = _iou(candidates.boxes, box)  # [B, N]
    cos = probs[..., class_id] / probs.norm(dim=-1).clamp(min=1e-12)  # [B, N]
    sim = iou * cos
    if candidates.objectness is not None:
        sim = sim * candidates.objectness
    return sim.amax(dim=-1)


class MatchTarget:
    """A detection scored on a perturbed output by D-RISE similarity (see the module doc).

    Args:
        read: ``output -> Candidates`` for the model family.
        box: ``Tensor[4]`` the detection's box (input pixels).
        class_id: its class in ``Candidates.probs``' numbering.
        layer: the layer whose map explains it, or None.
    """

    def __init__(
        self,
        read: Callable[[Any, int], Candidates],
        box: torch.Tensor,
        class_id: int,
        layer: Optional[str] = None,
    ) -> None:
        self.read = read
        self.box = box.detach().float().cpu()
        self.class_id = int(class_id)
        self.layer = layer

    def __call__(self, output: Any) -> torch.Tensor:
        return drise_similarity(self.read(output, self.class_id), self.box, self.class_id)

    def __repr__(self) -> str:
        box = [round(float(v), 1) for v in self.box]
        return f"MatchTarget(box={box}, class_id={self.class_id})"


class DetectionTarget:
    """Base of the detector adapters' targets: one detection, traced to its candidate.

    Subclasses implement :meth:`__call__` (the candidate's own differentiable score) and
    :meth:`candidates` (an output's candidates, for D-RISE matching).

    Attributes:
        candidate: index of the pre-NMS candidate.
        class_id: the detection's class, in the model's numbering.
        box: ``Tensor[4]`` the detection's box in input pixels (for matching).
        what: ``"score"``, a box side ``"x1" | "y1" | "x2" | "y2"``, ``"objectness"`` or
            ``"mask"``.
        layer: the layer whose map explains it (its pyramid level), or None for all layers.
    """

    #: what this family of targets can explain
    supports: tuple[str, ...] = WHAT[:5]

    def __init__(
        self,
        candidate: int,
        class_id: int,
        what: str = "score",
        *,
        box: Optional[torch.Tensor] = None,
        layer: Optional[str] = None,
    ) -> None:
        for name, v in (("candidate", candidate), ("class_id", class_id)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise TaskcamError(f"{name} must be a non-negative int, got {v!r}")
        if not self.accepts(what):
            raise TaskcamError(
                f"what: {type(self).__name__} explains one of {self.supports}, got {what!r}"
            )
        self.candidate = int(candidate)
        self.class_id = int(class_id)
        self.box = None if box is None else torch.as_tensor(box).detach().float().cpu()
        self.what = what
        self.layer = layer

    def accepts(self, what: str) -> bool:
        """Whether this family of targets explains ``what`` (:attr:`supports`)."""
        return what in self.supports

    def __call__(self, output: Any) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def candidates(self, output: Any, class_id: int) -> Candidates:  # pragma: no cover
        """The output's candidates for matching a detection of class ``class_id``."""
        raise NotImplementedError

    def match_class(self) -> int:
        """This detection's class in :meth:`candidates`' probability numbering."""
        return self.class_id

    def perturbed(self) -> MatchTarget:
        """The target to use on perturbed inputs: D-RISE matching of this detection."""
        if self.box is None:
            raise TaskcamError(
                f"{self!r} has no box: perturbation methods match detections by box; build "
                "the targets from detections (detection_targets)"
            )
        if self.what != "score":
            raise TaskcamError(
                f"what={self.what!r}: perturbation methods (Score-CAM, Ablation-CAM, RISE, "
                "D-RISE) explain a detection's score, matched in each perturbed output by "
                "D-RISE similarity; explain a box side, objectness or a mask with a gradient "
                "method (odam, gradcam, layercam, ...)"
            )
        return MatchTarget(self.candidates, self.box, self.match_class(), self.layer)

    def __repr__(self) -> str:
        extra = "" if self.what == "score" else f", what={self.what!r}"
        return f"{type(self).__name__}({self.candidate}, {self.class_id}{extra})"

    def _key(self) -> tuple:
        return (type(self).__name__, self.candidate, self.class_id, self.what)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DetectionTarget) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


def cxcywh_to_xyxy(boxes: torch.Tensor, size: Optional[tuple[int, int]] = None) -> torch.Tensor:
    """``Tensor[..., 4]`` ``cx, cy, w, h`` -> ``x1, y1, x2, y2``; with ``size`` (h, w) the
    boxes are normalised to [0, 1] (DETR, RT-DETR) and come back in pixels of that input.

    Example:
        >>> cxcywh_to_xyxy(torch.tensor([0.5, 0.5, 0.2, 0.4]), (10, 20)).tolist()
        [8.0, 3.0, 12.0, 7.0]
    """
    xy, wh = boxes[..., :2], boxes[..., 2:4] / 2
    out = torch.cat([xy - wh, xy + wh], dim=-1)
    if size is None:
        return out
    h, w = size
    return out * boxes.new_tensor([w, h, w, h])


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


@dataclass(frozen=True)
class StretchPlacement:
    """An image resized as a whole to the model input ``size`` (h, w), without padding, and
    how to undo it (RT-DETR stretches to a square; DETR keeps the aspect ratio).

    Example:
        >>> p = StretchPlacement(100, 200, (50, 50))
        >>> p.boxes_to_image(torch.tensor([[10.0, 10.0, 60.0, 40.0]])).tolist()
        [[40.0, 20.0, 200.0, 80.0]]
    """

    height: int
    width: int
    size: tuple[int, int]

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels, clipped to the image."""
        h, w = self.size
        scale = boxes.new_tensor([self.width / w, self.height / h] * 2)
        limit = boxes.new_tensor([self.width, self.height] * 2)
        return torch.minimum((boxes * scale).clamp(min=0), limit)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` -> ``Tensor[..., H, W]`` (bilinear)."""
        import torch.nn.functional as F

        lead = maps.shape[:-2]
        flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
        out = F.interpolate(flat, size=(self.height, self.width), mode="bilinear")
        return out.reshape(*lead, self.height, self.width)


def stretched_input(
    image: np.ndarray, size: tuple[int, int], model: nn.Module
) -> tuple[torch.Tensor, StretchPlacement]:
    """``uint8[H, W, 3]`` RGB resized (bilinear, as a whole) to ``size`` (h, w): the input
    ``Tensor[1, 3, h, w]`` in [0, 1] on ``model``'s device, and its placement.

    Raises:
        TaskcamError: not a ``uint8[H, W, 3]`` image (the message gives what was received).
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__)
        raise TaskcamError(f"image: expected a uint8[H, W, 3] array, got {got}")
    height, width = image.shape[:2]
    h, w = int(size[0]), int(size[1])
    resized = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float() / 255
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    return x.to(device), StretchPlacement(height, width, (h, w))


class Placement(Protocol):
    """How an image was placed on the model input, to bring boxes and maps back."""

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor: ...

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor: ...


class DetectorAdapter(Protocol):
    """What the pipeline needs from a detector family.

    Attributes:
        model: the module the engine runs on ``prepare``'s tensor.
        class_names: names by class id, or None.
        has_masks: optional; True when detections carry masks (``Detections.masks``) and
            targets explain ``what="mask"`` (Mask R-CNN, YOLO-seg). Absent means False.
    """

    model: nn.Module
    class_names: Optional[list[str]]

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Placement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]`` on the model's device, placement)."""
        ...

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """Detections of every image of ``x``, best first, without gradients."""
        ...

    def targets(self, dets: Detections, what: str = "score") -> list[DetectionTarget]:
        """One target per detection of one image."""
        ...

    def default_layers(self) -> list[str]:
        """The pyramid levels detections come from; per-detection choice via ``layer``."""
        ...


def parse_detection_targets(
    spec: Optional[str],
    dets: Detections,
    class_names: Optional[Sequence[str]] = None,
    *,
    existing_only: bool = False,
) -> list[int]:
    """Which detections to explain: positions into ``dets`` (best first), each once.

    Args:
        spec: ``"all"`` (or None), ``"0,2"`` (indices in the model's own ranking) or
            ``"class=NAME"`` / ``"class=ID"`` (every detection of that class).
        dets: the image's detections.
        class_names: names by class id, for ``class=NAME``.
        existing_only: drop indices beyond the detections instead of refusing them (video
            frames, whose detections come and go).

    Raises:
        TaskcamError: an index beyond the detections (naming how many there are), an unknown
            class name or id, or a malformed spec.

    Example:
        >>> d = Detections(torch.zeros(3, 4), torch.ones(3), torch.tensor([0, 1, 0]),
        ...                torch.arange(3))
        >>> parse_detection_targets("class=cat", d, ["cat", "dog"])
        [0, 2]
    """
    n = len(dets)
    text = (spec or "all").strip()
    if text == "all":
        return list(range(n))
    if text.startswith("class="):
        wanted = text[len("class=") :].strip()
        names = list(class_names or [])
        if wanted.isdigit():
            cid = int(wanted)
            if names and cid >= len(names):
                raise TaskcamError(
                    f"--targets class={wanted}: class {cid} does not exist; the model has "
                    f"{len(names)} classes (0..{len(names) - 1})"
                )
        elif wanted in names:
            cid = names.index(wanted)
        else:
            raise TaskcamError(
                f"--targets class={wanted}: no such class; the model's classes are "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        return [i for i, c in enumerate(dets.classes.tolist()) if c == cid]
    try:
        picks = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError as e:
        raise TaskcamError(
            f"--targets {spec!r}: expected all, indices like 0,2 or class=NAME"
        ) from e
    picks = list(dict.fromkeys(picks))  # "1,1" explains detection 1 once
    bad = [i for i in picks if not 0 <= i < n]
    if existing_only and picks and min(picks) >= 0:
        return [i for i in picks if i < n]
    if bad or not picks:
        raise TaskcamError(
            f"--targets {spec!r}: detection {bad[0] if bad else spec} does not exist; "
            f"the image has {n} detection(s) (0..{n - 1})"
        )
    return picks
