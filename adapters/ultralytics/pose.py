"""The pose task of ultralytics YOLO (``-pose``): a detection's keypoints are outputs of its own
anchor, so one keypoint's coordinate or visibility is explained like its score."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.detection.scoring import keypoint_what
from taskcam.adapters.ultralytics.detect import YoloDetectionTarget
from taskcam.adapters.ultralytics.raw import kpt_shape, yolo_head
from taskcam.errors import TaskcamError

__all__ = ["YoloPoseTarget"]


class YoloPoseTarget(YoloDetectionTarget):
    """One person (or object) of a YOLO pose model: its class score, a box side, or one
    keypoint's ``x``/``y`` (input pixels) or visibility: ``what="kpt3.x"``.

    The pose head (Jocher et al.'s YOLOv8-pose, after YOLO-Pose: Maji et al., CVPRW 2022)
    predicts each anchor's keypoints beside its box, so a keypoint's coordinate is one
    differentiable output of the detection's own anchor.

    Args:
        candidate, class_id, what, box, layer: as :class:`YoloDetectionTarget`; ``what`` may
            also be ``kptK.x | kptK.y | kptK.v``.
        model: the pose model (needed: its head says how many classes and keypoints there are).

    Raises:
        TaskcamError: no model, a keypoint index the model lacks (the message names how many
            it has) or a visibility the model does not predict.
    """

    def __init__(self, *args: Any, model: Optional[nn.Module] = None, **kwargs: Any) -> None:
        if model is None:
            raise TaskcamError("YoloPoseTarget needs the pose model (model=)")
        self.kpt_shape = kpt_shape(yolo_head(model))
        if self.kpt_shape is None:
            raise TaskcamError(f"YoloPoseTarget: {type(model).__name__} has no pose head")
        super().__init__(*args, model=model, **kwargs)

    def accepts(self, what: str) -> bool:
        kpt = keypoint_what(what)
        if kpt is None:
            return super().accepts(what)
        assert self.kpt_shape is not None
        count, dims = self.kpt_shape
        if kpt[0] >= count:
            raise TaskcamError(
                f"what={what!r}: keypoint {kpt[0]} does not exist: the model has {count} "
                f"keypoints (kpt0..kpt{count - 1})"
            )
        if kpt[1] >= dims:
            raise TaskcamError(f"what={what!r}: the model predicts no keypoint visibility")
        return True

    def __call__(self, output: Any) -> torch.Tensor:
        preds = self.parse(output)[0]
        kpt = keypoint_what(self.what)
        if kpt is None:
            return self.score(preds)
        missing = self.absent(preds.shape[2], preds)
        if missing is not None:
            return missing
        assert self.kpt_shape is not None and self.head is not None
        row = 4 + int(self.head.nc) + kpt[0] * self.kpt_shape[1] + kpt[1]
        return preds[:, row, self.candidate]  # [B]
