"""How a detection is scored: on the unperturbed input by its own candidate's output, on
perturbed inputs by D-RISE matching.

* On the input the detections were found on (gradient methods), a detection's target reads its
  candidate's own score (or a side of its box, its objectness, its mask, a keypoint): a
  differentiable number, and exactly the one the detector ranked it by.
* On perturbed inputs (Score-CAM, Ablation-CAM, RISE, D-RISE) candidates move, so the engine
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
from typing import Any, Callable, Optional

import numpy as np
import torch

from taskcam.adapters.detection.candidates import Candidates
from taskcam.boxes import box_iou
from taskcam.errors import TaskcamError

__all__ = [
    "SIDES",
    "WHAT",
    "CandidateTarget",
    "DetectionTarget",
    "MatchTarget",
    "check_what",
    "drise_similarity",
    "keypoint_what",
]

WHAT = ("score", "x1", "y1", "x2", "y2", "objectness", "mask")
"""What a detection target can explain: its class score, one side of its box, objectness, or
(instance segmenters) its mask: the mask logits summed over the mask's own pixels. Pose models
also explain one keypoint's coordinate or visibility: ``kpt3.x``, ``kpt3.y``, ``kpt3.v``
(:func:`keypoint_what`)."""

SIDES = WHAT[1:5]
"""The box sides a target explains, in a box's ``x1, y1, x2, y2`` order."""

_KEYPOINT = re.compile(r"kpt(\d+)\.([xyv])")

Read = Callable[[Any], Candidates]
"""``read(output) -> Candidates``: a detector's candidates in one of its outputs."""


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


def drise_similarity(candidates: Candidates, box: torch.Tensor, class_id: int) -> torch.Tensor:
    """``Tensor[B]``: D-RISE similarity of the best-matching candidate with one detection.

    ``s = max_i IoU(L_t, L_i) · cos(P_t, P_i) · O_i`` (Petsiuk et al., CVPR 2021), with the
    target's class vector ``P_t`` one-hot at ``class_id``, ``P_i`` the candidate's
    :attr:`~Candidates.class_vectors` and ``O_i`` its objectness (1 when the detector has
    none). Per-class boxes are read at ``class_id``. An output without candidates scores 0.

    Args:
        candidates: the perturbed output's candidates.
        box: ``Tensor[4]`` the detection's xyxy box in input pixels.
        class_id: the detection's class (index into the candidates' class dimension).

    Example:
        >>> c = Candidates(torch.tensor([[[0.0, 0, 10, 10], [0, 0, 5, 10]]]),
        ...                torch.tensor([[[0.9, 0.1], [0.1, 0.9]]]))
        >>> round(float(drise_similarity(c, torch.tensor([0.0, 0, 10, 10]), 0)), 3)
        0.994
    """
    probs = candidates.class_vectors
    if probs.shape[-2] == 0:
        return probs.new_zeros(probs.shape[0])
    if not 0 <= class_id < probs.shape[-1]:
        raise TaskcamError(
            f"class_id {class_id} does not exist: the candidates have {probs.shape[-1]} classes"
        )
    boxes = candidates.boxes
    if boxes.ndim == 4:  # one box per class
        boxes = boxes[:, :, class_id]
    box = box.to(boxes)
    iou = box_iou(boxes, box)  # [B, N]
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
        class_id: its class in the candidates' numbering.
        layer: the layer whose map explains it, or None.

    Example:
        >>> t = MatchTarget(lambda out: out, torch.tensor([0.0, 0, 10, 10]), 0)
        >>> t(Candidates(torch.tensor([[[0.0, 0, 10, 10]]]), torch.tensor([[[1.0, 0.0]]])))
        tensor([1.])
    """

    def __init__(
        self, read: Read, box: torch.Tensor, class_id: int, layer: Optional[str] = None
    ) -> None:
        self.read = read
        self.box = box.detach().float().cpu()
        self.class_id = int(class_id)
        self.layer = layer

    def __call__(self, output: Any) -> torch.Tensor:
        return drise_similarity(self.read(output), self.box, self.class_id)

    def __repr__(self) -> str:
        box = [round(float(v), 1) for v in self.box]
        return f"MatchTarget(box={box}, class_id={self.class_id})"


class DetectionTarget:
    """Base of every detection target: one detection, traced to its candidate.

    Subclasses implement :meth:`__call__` (the candidate's own differentiable score) and
    :meth:`candidates` (an output's candidates, for D-RISE matching); the helpers below hold
    what every family's targets share.

    Attributes:
        candidate: index of the candidate (anchor, proposal, query).
        class_id: the detection's class, in the model's numbering.
        box: ``Tensor[4]`` the detection's box in input pixels (for matching).
        what: ``"score"``, a box side ``"x1" | "y1" | "x2" | "y2"``, ``"objectness"``,
            ``"mask"`` or a keypoint's ``"kptK.x|y|v"``.
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

    def candidates(self, output: Any) -> Candidates:  # pragma: no cover - abstract
        """The output's candidates, for D-RISE matching."""
        raise NotImplementedError

    # -- what the families share -----------------------------------------------------------
    def check_class(self, count: int) -> None:
        """Refuse a class beyond the ``count`` classes the output scores."""
        if self.class_id >= count:
            raise TaskcamError(
                f"class_id {self.class_id} does not exist: the model has {count} classes "
                f"(0..{count - 1})"
            )

    def absent(self, count: int, like: torch.Tensor) -> Optional[torch.Tensor]:
        """``Tensor[B]`` of zeros when this target's candidate is not among the ``count`` of
        an output (a resized input has other anchors), else None: a target that cannot be found
        scores 0, never raises mid-batch. ``like``: a ``Tensor[B, ...]`` of the output."""
        if self.candidate >= count:
            return like.new_zeros(like.shape[0])
        return None

    def side(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[...]``: the side :attr:`what` names of ``Tensor[..., 4]`` xyxy boxes."""
        return boxes[..., SIDES.index(self.what)]

    # -- perturbed inputs ------------------------------------------------------------------
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
        return MatchTarget(self.candidates, self.box, self.class_id, self.layer)

    def __repr__(self) -> str:
        extra = "" if self.what == "score" else f", what={self.what!r}"
        return f"{type(self).__name__}({self.candidate}, {self.class_id}{extra})"

    def _key(self) -> tuple:
        return (type(self).__name__, self.candidate, self.class_id, self.what)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DetectionTarget) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash(self._key())


class CandidateTarget(DetectionTarget):
    """One detection of any detector, read from its candidates (:meth:`taskcam.Detector.
    candidates`): the candidate's score for its class, a side of its box, its objectness,
    or one of its keypoints (``extras["keypoints"]``: ``Tensor[B, N, K, D]``).

    Args:
        candidate, class_id, what, box, layer: as :class:`DetectionTarget`; ``what`` may also
            be ``"objectness"`` or ``kptK.x|y|v``.
        read: ``output -> Candidates``, the detector's reading of its raw output; a subclass
            may implement :meth:`candidates` instead (the query-based families do).

    Example:
        >>> read = lambda out: Candidates(out[..., :4], out[..., 4:])
        >>> out = torch.tensor([[[0.0, 0, 10, 10, 0.2, 0.7], [5, 5, 9, 9, 0.9, 0.1]]])
        >>> CandidateTarget(0, 1, read=read)(out), CandidateTarget(1, 0, "x2", read=read)(out)
        (tensor([0.7000]), tensor([9.]))
    """

    supports = WHAT[:6]

    def __init__(self, *args: Any, read: Optional[Read] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read = read

    def accepts(self, what: str) -> bool:
        return what in self.supports or keypoint_what(what) is not None

    def candidates(self, output: Any) -> Candidates:
        if self.read is None:  # pragma: no cover - a subclass without candidates()
            raise TaskcamError(f"{type(self).__name__}: pass read= or implement candidates()")
        return self.read(output)

    def __call__(self, output: Any) -> torch.Tensor:
        c = self.candidates(output)
        scores = c.scores  # [B, N, K]
        self.check_class(scores.shape[-1])
        missing = self.absent(scores.shape[1], scores)
        if missing is not None:
            return missing
        if self.what == "score":
            return scores[:, self.candidate, self.class_id]
        if self.what == "objectness":
            if c.objectness is None:
                raise TaskcamError(
                    "what='objectness': this detector's candidates have no objectness"
                )
            return c.objectness[:, self.candidate]
        kpt = keypoint_what(self.what)
        if kpt is not None:
            points = c.extras.get("keypoints")
            if points is None or kpt[0] >= points.shape[2] or kpt[1] >= points.shape[3]:
                raise TaskcamError(
                    f"what={self.what!r}: the candidates have no such keypoint (extras"
                    "['keypoints'] Tensor[B, N, K, D] holds them)"
                )
            return points[:, self.candidate, kpt[0], kpt[1]]
        box = c.boxes[:, self.candidate]
        if box.ndim == 3:  # one box per class
            box = box[:, self.class_id]
        return self.side(box)
