"""What a detector's raw output holds (:class:`Candidates`, before NMS) and what its
post-processing keeps (:class:`Detections`, each traced to its candidate)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from taskcam.errors import TaskcamError

__all__ = ["Candidates", "Detections"]


@dataclass
class Candidates:
    """Every candidate of a batch, as the detector's raw output holds them: an anchor, a
    proposal, a grid cell or a query, before the score threshold and NMS.

    Attributes:
        boxes: ``Tensor[B, N, 4]`` xyxy in input pixels, or ``Tensor[B, N, K, 4]`` with one
            box per class (two-stage detectors).
        scores: ``Tensor[B, N, K]`` each candidate's score per class, the number the detector
            thresholds and ranks by (foreground classes; a background column, where the model
            numbers one, scores 0).
        objectness: ``Tensor[B, N]`` how much each candidate is an object at all (YOLOv5's
            objectness, ``1 - P(background)``, FCOS's centerness), or None. D-RISE weighs its
            matches by it.
        probs: ``Tensor[B, N, K]`` the class probabilities D-RISE compares when they differ from
            ``scores`` (FCOS ranks by ``sqrt(p × centerness)``, YOLOv5 by objectness × p),
            else None.
        levels: ``LongTensor[N]`` or ``[B, N]``: each candidate's pyramid level, an index into
            :meth:`taskcam.Detector.level_layers` (ODAM explains a detection at its own level),
            or None.
        extras: per-candidate outputs beside the box, ``Tensor[B, N, ...]`` by name
            (``"keypoints"`` ``[B, N, K, D]``, YOLO-seg's ``"coefficients"`` ``[B, N, nm]``,
            OBB's ``"rboxes"`` ``[B, N, 5]``); image-level tensors a family needs with them
            (YOLO-seg's ``"prototypes"`` ``[B, nm, h, w]``) may come along.
        nms: True when the detector's post-processing runs NMS over these candidates; False
            for query-based detectors (DETR, RT-DETR) and end-to-end heads (YOLOv10, YOLO26),
            whose candidates are kept without NMS, best (candidate, class) pairs first.

    Example:
        >>> c = Candidates(torch.zeros(1, 3, 4), torch.rand(1, 3, 2))
        >>> len(c), c.num_classes, c.nms
        (3, 2, True)
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    objectness: Optional[torch.Tensor] = None
    probs: Optional[torch.Tensor] = None
    levels: Optional[torch.Tensor] = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    nms: bool = True

    def __len__(self) -> int:
        return int(self.scores.shape[1])

    @property
    def num_classes(self) -> int:
        """``K``, the classes scored."""
        return int(self.scores.shape[-1])

    @property
    def class_vectors(self) -> torch.Tensor:
        """``Tensor[B, N, K]``: what D-RISE compares a detection's class with (``probs``,
        else ``scores``)."""
        return self.scores if self.probs is None else self.probs

    def check(self, source: str = "decode") -> Candidates:
        """These candidates, checked to have the documented shapes.

        Raises:
            TaskcamError: a field of another shape; the message names ``source``, the field
                and the shape received.

        Example:
            >>> Candidates(torch.zeros(1, 3, 4), torch.zeros(3, 2)).check()
            Traceback (most recent call last):
            ...
            taskcam.errors.TaskcamError: decode: scores must be Tensor[B, N, K], got (3, 2)
        """

        def bad(name: str, want: str, value: object) -> TaskcamError:
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            return TaskcamError(f"{source}: {name} must be {want}, got {got}")

        scores = self.scores
        if not isinstance(scores, torch.Tensor) or scores.ndim != 3:
            raise bad("scores", "Tensor[B, N, K]", scores)
        b, n, k = scores.shape
        boxes = self.boxes
        if not isinstance(boxes, torch.Tensor) or (
            tuple(boxes.shape) not in ((b, n, 4), (b, n, k, 4))
        ):
            raise bad("boxes", f"Tensor[{b}, {n}, 4] (xyxy, input pixels)", boxes)
        for name, want in (("objectness", (b, n)), ("probs", (b, n, k))):
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, torch.Tensor) or tuple(value.shape) != want
            ):
                raise bad(name, f"Tensor{list(want)} or None", value)
        return self


@dataclass
class Detections:
    """One image's detections after the model's post-processing, each traced back to its
    candidate.

    Attributes:
        boxes: ``Tensor[N, 4]`` xyxy in model-input pixels.
        scores: ``Tensor[N]`` the score the detector ranked each detection by.
        classes: ``LongTensor[N]`` class ids (the model's own numbering).
        candidates: ``LongTensor[N]`` index of the candidate (anchor, proposal, query) that
            produced each one.
        masks: ``BoolTensor[N, H, W]`` instance masks at input size (instance models), else None.
        levels: per detection, the name of the layer (pyramid level) that produced it, or None.
        keypoints: ``Tensor[N, K, D]`` pose models' keypoints in model-input pixels (``x, y``
            and, with ``D = 3``, the visibility in [0, 1]), else None.
        rboxes: ``Tensor[N, 5]`` oriented boxes (``cx, cy, w, h, angle`` in radians, input
            pixels) of OBB models, whose ``boxes`` are then their axis-aligned bounds; else None.
        fields: per detection, more fields for its record (JSON values, image pixels), or
            None: a promptable model's prompt (``"prompt"``, drawn when it has a
            ``"prompt_box"`` or ``"prompt_points"``), an open-vocabulary detector's phrase and
            the words that carried its score.

    Example:
        >>> d = Detections(torch.zeros(3, 4), torch.tensor([0.9, 0.8, 0.7]),
        ...                torch.tensor([0, 1, 0]), torch.tensor([12, 40, 7]))
        >>> d.select([2, 0]).candidates.tolist()
        [7, 12]
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor
    candidates: torch.Tensor
    masks: Optional[torch.Tensor] = None
    levels: Optional[list[Optional[str]]] = None
    keypoints: Optional[torch.Tensor] = None
    rboxes: Optional[torch.Tensor] = None
    fields: Optional[list[dict[str, Any]]] = None

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
            fields=None if self.fields is None else [self.fields[i] for i in keep],
        )

    @classmethod
    def empty(cls) -> Detections:
        """No detections (the CPU, no masks)."""
        return cls(
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
        )
