"""Why a detector hit, missed or invented an object: each of the user's labels and each
detection gets an outcome, and every outcome a target to explain.

* ``hit``: a detection of the label's class overlaps it (:mod:`~taskcam.adapters.detection.
  matching`); explained as any detection.
* ``false_positive``: a detection no label matches; explained as any detection, and flagged.
* ``missed``: no detection hits the label. What was there is explained: among the candidates
  (before the score threshold and NMS) whose box overlaps the label at the matching IoU, the
  one scoring the label's class highest, and why it was dropped:

  - ``wrong_class``: another class scored higher there and passed the threshold (the detector
    saw an object and named it otherwise; for detectors that keep a candidate once per class,
    such as torchvision's, the label's class also stayed below it): at the overlapping
    candidate where that class scored highest, its score for the label's class, for the
    other class, and the contrast (the other class's score minus the label class's) are
    explained;
  - ``below_conf``: its score is not above the detector's threshold;
  - ``suppressed``: it passed the threshold but the model's NMS dropped it for a kept
    detection of its class that overlaps it more than the NMS IoU (``suppressed_by``); or it
    was kept and hits another label;
  - ``no_candidate``: no candidate overlaps the label enough: the label class's score summed
    over the candidates centred inside the label box is explained.

  Query-based detectors (DETR, RT-DETR) and end-to-end heads have no NMS: their best query for
  the label's box and class is explained the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.matching import MATCH_IOU, Match, check_iou, match_labels
from taskcam.adapters.detection.placement import Placement
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = [
    "OUTCOMES",
    "REASONS",
    "ContrastTarget",
    "ErrorAnalysis",
    "Outcome",
    "RegionTarget",
    "analyse_input",
    "label_outcomes",
]

OUTCOMES = ("hit", "missed", "false_positive")
"""What happened to a label (hit, missed) or a detection no label matches (false_positive)."""

REASONS = ("below_conf", "suppressed", "wrong_class", "no_candidate")
"""Why a label was missed (see the module doc)."""


class ContrastTarget:
    """``target(output) - versus(output)``: why the detector preferred one class to another at
    the same candidate (a missed label's ``wrong_class``: the winning class's score minus the
    label class's).

    Example:
        >>> from taskcam.adapters.detection.scoring import CandidateTarget
        >>> read = lambda out: Candidates(out[..., :4], out[..., 4:])
        >>> out = torch.tensor([[[0.0, 0, 10, 10, 0.2, 0.7]]])
        >>> ContrastTarget(CandidateTarget(0, 1, read=read), CandidateTarget(0, 0, read=read))(out)
        tensor([0.5000])
    """

    what = "contrast"

    def __init__(self, target: Any, versus: Any) -> None:
        self.target, self.versus = target, versus
        self.class_id = target.class_id
        self.box = target.box
        self.layer = getattr(target, "layer", None)

    def __call__(self, output: Any) -> torch.Tensor:
        return self.target(output) - self.versus(output)

    def perturbed(self) -> ContrastTarget:
        """Both scores matched by D-RISE similarity on perturbed inputs."""
        return ContrastTarget(self.target.perturbed(), self.versus.perturbed())

    def __repr__(self) -> str:
        return f"ContrastTarget({self.target!r} - {self.versus!r})"


class RegionTarget:
    """One class's score summed over a fixed set of candidates (a missed label that no
    candidate overlaps: the candidates centred inside its box).

    Args:
        read: ``output -> Candidates``, the detector's reading of its raw output.
        indices: the candidates summed.
        class_id: the class scored.
        box: ``Tensor[4]`` the region's bounds in input pixels (for baselines and pictures).
        layer: the layer whose map explains it, or None.

    Example:
        >>> read = lambda out: Candidates(out[..., :4], out[..., 4:])
        >>> out = torch.tensor([[[0.0, 0, 4, 4, 0.2, 0.1], [4, 4, 8, 8, 0.3, 0.6]]])
        >>> RegionTarget(read, [0, 1], 0, torch.tensor([0.0, 0, 8, 8]))(out)
        tensor([0.5000])
    """

    what = "score"

    def __init__(
        self,
        read: Any,
        indices: list[int],
        class_id: int,
        box: torch.Tensor,
        layer: Optional[str] = None,
    ) -> None:
        if not indices:
            raise TaskcamError("RegionTarget: indices must name at least one candidate")
        self.read, self.indices, self.class_id = read, list(indices), int(class_id)
        self.box = box.detach().float().cpu()
        self.layer = layer

    def __call__(self, output: Any) -> torch.Tensor:
        scores = self.read(output).scores  # [B, N, K]
        idx = [i for i in self.indices if i < scores.shape[1]]  # a resized input: fewer
        if not idx or self.class_id >= scores.shape[-1]:
            return scores.new_zeros(scores.shape[0])
        return scores[:, idx, self.class_id].sum(dim=1)

    def perturbed(self) -> RegionTarget:
        """Itself: the same candidates' scores on a perturbed output."""
        return self

    def __repr__(self) -> str:
        return f"RegionTarget({len(self.indices)} candidates, class_id={self.class_id})"


@dataclass
class Outcome:
    """One label's or one detection's outcome, and the targets that explain it.

    Attributes:
        outcome: one of :data:`OUTCOMES`.
        detection: the detection's index in the model's ranking (hit, false positive), or None.
        label: the label's index in the image's labels (hit, missed), or None.
        label_box: the label's xyxy box in image pixels, or None.
        label_class: the label's class id, or None.
        reason: a missed label's :data:`REASONS`, else None.
        candidate: the candidate explained for a missed label (None for ``no_candidate``).
        candidate_score: its score for the label's class (``no_candidate``: the class's score
            summed over the candidates centred in the label box, what is explained).
        suppressed_by: ``suppressed``: the detection that took its place, else None.
        suppressed_iou: that detection's IoU with the candidate.
        versus_class, versus_score: ``wrong_class``: the class that scored higher, its score.
        box: ``Tensor[4]`` the box explained, in input pixels (a missed label's candidate's,
            or the region's bounds).
        targets: ``(role, target)`` pairs: ``"score"`` (the detection's, or a missed label's
            class score), then for ``wrong_class`` ``"versus"`` and ``"contrast"``.
    """

    outcome: str
    detection: Optional[int] = None
    label: Optional[int] = None
    label_box: Optional[list[float]] = None
    label_class: Optional[int] = None
    reason: Optional[str] = None
    candidate: Optional[int] = None
    candidate_score: Optional[float] = None
    suppressed_by: Optional[int] = None
    suppressed_iou: Optional[float] = None
    versus_class: Optional[int] = None
    versus_score: Optional[float] = None
    box: Optional[torch.Tensor] = None
    targets: list[tuple[str, Any]] = field(default_factory=list)

    def fields(self, names: Optional[list[str]] = None) -> dict[str, Any]:
        """What this outcome adds to a record (``results.json``: ``outcome``, ``label``,
        ``label_box``, ``label_class`` and, for missed labels, ``reason``,
        ``candidate_score``, ``suppressed_by``)."""

        def name(k: int) -> str:
            return names[k] if names and 0 <= k < len(names) else str(k)

        out: dict[str, Any] = {"outcome": self.outcome}
        if self.label is not None and self.label_class is not None:
            out["label"] = self.label
            out["label_box"] = [round(float(v), 2) for v in (self.label_box or [])]
            out["label_class"] = name(self.label_class)
        if self.reason is not None:
            out["reason"] = self.reason
            out["candidate_score"] = round(float(self.candidate_score or 0.0), 4)
        if self.suppressed_by is not None:
            out["suppressed_by"] = self.suppressed_by
            out["suppressed_iou"] = round(float(self.suppressed_iou or 0.0), 4)
        if self.versus_class is not None:
            out["versus_score"] = round(float(self.versus_score or 0.0), 4)
        return out


@dataclass
class ErrorAnalysis:
    """One image explained against its labels.

    Attributes:
        x: the prepared input ``Tensor[1, 3, h, w]``.
        placement: how the image lies on it.
        detections: the detector's kept detections.
        match: how they pair with the labels.
        outcomes: one per detection (hit or false positive, in the model's ranking), then one
            per missed label (in the labels' order).
    """

    x: torch.Tensor
    placement: Placement
    detections: Detections
    match: Match
    outcomes: list[Outcome]

    @property
    def counts(self) -> dict[str, int]:
        """``{"hit": labels hit, "missed": labels missed, "false_positive": detections no
        label matches}``."""
        return {
            "hit": self.match.hits,
            "missed": len(self.match.missed),
            "false_positive": len(self.match.false_positives),
        }

    @property
    def missed(self) -> list[Outcome]:
        """The missed labels' outcomes."""
        return [o for o in self.outcomes if o.outcome == "missed"]


def label_outcomes(
    detector: Any,
    image: np.ndarray,
    labels: Any,
    *,
    iou: float = MATCH_IOU,
    what: str = "score",
) -> ErrorAnalysis:
    """Every label and detection of one image with its outcome and the targets that explain it
    (see the module doc).

    Args:
        detector: a :class:`taskcam.Detector` (any family's adapter).
        image: ``uint8[H, W, 3]`` RGB.
        labels: the image's :class:`~taskcam.adapters.detection.labels.Labels` (boxes in image
            pixels, classes in the detector's numbering).
        iou: the IoU a detection needs to hit a label of its class, and a candidate to count
            as overlapping a missed one.
        what: what the detections' targets explain (a missed label's explain its score).

    Returns:
        An :class:`ErrorAnalysis`; explain its targets with :func:`taskcam.explain` on ``x``.

    Example:
        >>> from taskcam.adapters import adapter_for
        >>> from taskcam.adapters.detection.labels import Labels
        >>> from taskcam.models import load_model
        >>> from taskcam.data import make_sample
        >>> yolo = adapter_for(load_model("zoo:shapes-yolo"))
        >>> sample = make_sample(5, seed=123)  # a cross, a square and a circle
        >>> right = Labels(torch.tensor(sample.boxes), torch.tensor(sample.labels))
        >>> label_outcomes(yolo, sample.image, right).counts
        {'hit': 3, 'missed': 0, 'false_positive': 0}
        >>> wrong = Labels(torch.tensor(sample.boxes), torch.tensor([3, 1, 2]))  # not a circle
        >>> result = label_outcomes(yolo, sample.image, wrong)
        >>> [(o.label, o.reason, yolo.class_names[o.versus_class]) for o in result.missed]
        [(2, 'wrong_class', 'circle')]
    """
    x, placement = detector.prepare(image)
    return analyse_input(detector, x, placement, labels, iou=iou, what=what)


def analyse_input(
    detector: Any,
    x: torch.Tensor,
    placement: Placement,
    labels: Any,
    *,
    iou: float = MATCH_IOU,
    what: str = "score",
    detections: Optional[Detections] = None,
) -> ErrorAnalysis:
    """:func:`label_outcomes` on an input already prepared (``detections``: its detections,
    when the caller has them)."""
    iou = check_iou(iou)
    dets = detections if detections is not None else detector.detect(x)[0]
    label_boxes = torch.as_tensor(labels.boxes, dtype=torch.float32).reshape(-1, 4).cpu()
    label_classes = torch.as_tensor(labels.classes, dtype=torch.long).reshape(-1).cpu()
    names = detector.class_names
    count = len(names) if names else None
    bad = [int(k) for k in label_classes if k < 0 or (count is not None and k >= count)]
    if bad:
        raise TaskcamError(
            f"labels: class id {bad[0]} does not exist: {detector.describe()} has {count} classes"
        )
    image_boxes = placement.boxes_to_image(dets.boxes.float()).cpu()
    match = match_labels(image_boxes, dets.scores, dets.classes, label_boxes, label_classes, iou)
    outcomes = []
    for i in range(len(dets)):
        j = match.label_of[i]
        outcome = Outcome("hit" if j >= 0 else "false_positive", detection=i, box=dets.boxes[i])
        if j >= 0:
            outcome.label, outcome.label_class = j, int(label_classes[j])
            outcome.label_box = label_boxes[j].tolist()
        outcome.targets = [("score", detector.target(dets, i, what))]
        outcomes.append(outcome)
    if match.missed:
        candidates = detector.candidates(predict(detector.model, x))
        miss = _MissedLabel(detector, candidates, placement, dets, iou)
        for j in match.missed:
            outcomes.append(miss.outcome(j, label_boxes[j], int(label_classes[j])))
    return ErrorAnalysis(x, placement, dets, match, outcomes)


class _MissedLabel:
    """What was there where a label was missed (one image's candidates, see the module doc)."""

    def __init__(
        self,
        detector: Any,
        candidates: Candidates,
        placement: Placement,
        dets: Detections,
        iou: float,
    ) -> None:
        self.detector, self.candidates, self.placement = detector, candidates, placement
        self.dets, self.iou = dets, iou
        self.conf = float(detector.score_threshold)
        # a single-label detector keeps a candidate for its best class only
        self.single_label = candidates.nms and not detector.multi_label

    def boxes(self, k: int) -> torch.Tensor:
        """``Tensor[N, 4]`` every candidate's box for class ``k``, in input pixels."""
        boxes = self.candidates.boxes[0].detach()
        return (boxes if boxes.ndim == 2 else boxes[:, k]).float()

    def target(self, candidate: int, k: int) -> Any:
        """The detector's own target for class ``k``'s score at ``candidate``."""
        box = self.boxes(k)[candidate]
        score = self.candidates.scores[0, candidate, k].detach()
        one = Detections(
            box[None], score[None], torch.tensor([k]), torch.tensor([candidate]), levels=None
        )
        levels, names = self.candidates.levels, self.detector.level_layers()
        if levels is not None and names:
            level = int((levels if levels.ndim == 1 else levels[0])[candidate])
            one.levels = [names[level] if 0 <= level < len(names) else None]
        return self.detector.target(one, 0, "score")

    def outcome(self, j: int, label_box: torch.Tensor, k: int) -> Outcome:
        """Label ``j`` (class ``k``, ``label_box`` in image pixels), missed."""
        from torchvision.ops import box_iou

        out = Outcome("missed", label=j, label_box=label_box.tolist(), label_class=k)
        scores = self.candidates.scores[0].detach().float()  # [N, K]
        in_image = self.placement.boxes_to_image(self.boxes(k)).cpu()  # [N, 4]
        overlap = box_iou(in_image, label_box[None].float())[:, 0]  # [N]
        near = torch.nonzero(overlap >= self.iou).flatten()
        if len(near) == 0:
            return self._no_candidate(out, in_image, label_box, k)
        c = int(near[int(scores[near, k].argmax())])
        s = float(scores[c, k])
        # the strongest other class over the candidates there
        others = scores[near].clone()
        others[:, k] = -1.0
        best_at = int(others.max(dim=1).values.argmax())
        best, other = (float(v) for v in others[best_at].max(dim=0))
        other = int(other)
        wrong = other != k and best > self.conf and best > s
        if wrong and (self.single_label or s <= self.conf):
            c = int(near[best_at])  # both classes explained at the candidate that won
        else:
            wrong = False
        out.candidate, out.candidate_score, out.box = c, float(scores[c, k]), self.boxes(k)[c]
        mine = self.target(c, k)
        out.targets = [("score", mine)]
        if wrong:
            versus = self.target(c, other)
            out.reason, out.versus_class, out.versus_score = "wrong_class", other, best
            out.targets += [("versus", versus), ("contrast", ContrastTarget(versus, mine))]
        elif s <= self.conf:
            out.reason = "below_conf"
        else:
            out.reason = "suppressed"
            out.suppressed_by, out.suppressed_iou = self._suppressor(c, k, s)
        return out

    def _suppressor(self, c: int, k: int, score: float) -> tuple[Optional[int], Optional[float]]:
        """The kept detection that took candidate ``c``'s place: itself when it was kept (it
        hits another label), else the kept detection of its class (any class with agnostic
        NMS) scoring at least as high that overlaps it most (NMS drops a candidate above the
        NMS IoU with a better one)."""
        from torchvision.ops import box_iou

        dets = self.dets
        if len(dets) == 0:
            return None, None
        own = (dets.candidates.cpu() == c) & (dets.classes.cpu() == k)
        if own.any():
            return int(torch.nonzero(own)[0]), 1.0
        same = dets.classes.cpu() == k
        if getattr(self.detector, "agnostic", False):
            same = torch.ones_like(same)
        rivals = same & (dets.scores.detach().cpu().float() >= score - 1e-6)
        if not rivals.any():
            return None, None
        overlap = box_iou(dets.boxes.detach().float().cpu(), self.boxes(k)[c][None].cpu())[:, 0]
        overlap = torch.where(rivals, overlap, torch.full_like(overlap, -1.0))
        i = int(overlap.argmax())
        return i, float(overlap[i])

    def _no_candidate(
        self, out: Outcome, in_image: torch.Tensor, label_box: torch.Tensor, k: int
    ) -> Outcome:
        """Nothing overlaps enough: the class's score summed over the candidates centred in the
        label box (the nearest candidate when none is)."""
        centres = (in_image[:, :2] + in_image[:, 2:]) / 2  # [N, 2]
        x1, y1, x2, y2 = (float(v) for v in label_box)
        inside = ((centres[:, 0] >= x1) & (centres[:, 0] <= x2) & (centres[:, 1] >= y1)) & (
            centres[:, 1] <= y2
        )
        idx = torch.nonzero(inside).flatten()
        if len(idx) == 0:
            middle = label_box.new_tensor([(x1 + x2) / 2, (y1 + y2) / 2])
            idx = (centres - middle).norm(dim=1).argmin()[None]
        boxes = self.boxes(k)[idx]
        bounds = torch.cat([boxes[:, :2].amin(dim=0), boxes[:, 2:].amax(dim=0)])
        scores = self.candidates.scores[0, idx, k].detach()
        out.reason, out.candidate_score, out.box = "no_candidate", float(scores.sum()), bounds
        out.targets = [("score", RegionTarget(self.detector.candidates, idx.tolist(), k, bounds))]
        return out
