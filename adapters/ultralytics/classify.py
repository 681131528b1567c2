"""ultralytics classifiers (``yolov8n-cls``, ``yolo11n-cls``) as taskcam explains them: by
their class logits."""

from __future__ import annotations

import torch

from taskcam.loaded import SharedModules

__all__ = ["YoloClassifier"]


class YoloClassifier(SharedModules):
    """An ultralytics ``ClassificationModel`` (``yolov8n-cls``, ``yolo11n-cls``) whose output
    is its class logits ``Tensor[B, K]``: in eval mode the model itself returns
    ``(softmax, logits)``, and CAMs explain the logits. Layer names are the model's own
    (``model.8``: the last stage before the ``Classify`` head, ``model.9``).

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> net = YoloClassifier(load_yolo("yolov8n-cls.yaml", nc=3))
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, H, W] in [0, 1]
        out = self.wrapped(x)
        return out[1] if isinstance(out, (tuple, list)) else out
