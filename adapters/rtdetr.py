"""RT-DETR (ultralytics ``rtdetr-*.yaml`` / ``.pt``) explained query by query.

RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024) predicts a
fixed set of ``Q`` object queries, each a box and one sigmoid score per class; there is no NMS.
ultralytics' predictor stretches the image to a square (no letterbox), keeps the (query,
class) pairs whose score passes ``conf``, best first, and scales the normalised ``cx, cy, w,
h`` boxes back to the image. :func:`detect` does the same and remembers each detection's query,
so a :class:`RTDETRTarget` reads that query's class score (or one side of its box) from any
later forward: every query of an image is explained in one forward and one batched backward.

Example:
    >>> from taskcam.adapters.yolo import load_yolo
    >>> net = load_yolo("rtdetr-l.yaml", nc=3)
    >>> adapter = RTDETRAdapter(net, size=96)
    >>> x, placement = adapter.prepare(np.zeros((60, 80, 3), np.uint8))
    >>> dets = adapter.detect(x)[0]
    >>> x.shape, len(adapter.targets(dets)) == len(dets)
    (torch.Size([1, 3, 96, 96]), True)
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection import (
    Candidates,
    Detections,
    DetectionTarget,
    StretchPlacement,
    cxcywh_to_xyxy,
    model_class_names,
    stretched_input,
)
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = ["RTDETRAdapter", "RTDETRTarget", "detect", "is_rtdetr"]

_SIDES = ("x1", "y1", "x2", "y2")


def is_rtdetr(model: Any) -> bool:
    """Whether ``model`` is an ultralytics model whose head is an ``RTDETRDecoder``."""
    layers = getattr(model, "model", None)
    return isinstance(layers, nn.Sequential) and type(layers[-1]).__name__ == "RTDETRDecoder"


def _queries(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(boxes Tensor[B, Q, 4] cx, cy, w, h in [0, 1], scores Tensor[B, Q, nc] sigmoid)``
    from an RT-DETR output in eval mode: ``(top-k predictions, raw decoder outputs)`` in
    recent ultralytics releases (the raw last-layer boxes and logits are read), or the
    per-query ``Tensor[B, Q, 4 + nc]`` of older ones."""
    if isinstance(output, (tuple, list)) and len(output) == 2:
        raw = output[1]
        if isinstance(raw, (tuple, list)) and len(raw) >= 2:
            boxes, logits = raw[0], raw[1]
            if isinstance(boxes, torch.Tensor) and boxes.ndim == 4:  # [layers, B, Q, 4]
                boxes, logits = boxes[-1], logits[-1]
            if isinstance(boxes, torch.Tensor) and boxes.ndim == 3:
                return boxes, logits.sigmoid()
        output = output[0]
    if isinstance(output, torch.Tensor) and output.ndim == 3 and output.shape[-1] > 6:
        return output[..., :4], output[..., 4:]
    if isinstance(output, dict):
        raise TaskcamError("the RT-DETR output is a training-mode tuple; call model.eval()")
    got = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
    raise TaskcamError(f"cannot find RT-DETR query boxes and scores in a {got} output")


def detect(
    model: nn.Module, x: torch.Tensor, *, conf: float = 0.25, max_det: int = 300
) -> list[Detections]:
    """RT-DETR's detections of every image of ``x``, as ultralytics' predictor keeps them:
    the (query, class) pairs scoring above ``conf``, best first, at most ``max_det``; boxes in
    ``x``'s pixels; ``candidates`` are the queries. The model's flags are restored.
    """
    boxes, scores = _queries(predict(model, x))
    nc = scores.shape[-1]
    out = []
    for b in range(scores.shape[0]):
        flat = scores[b].flatten()  # [Q * nc], query-major as the decoder ranks them
        order = flat.argsort(descending=True)
        order = order[flat[order] > conf][:max_det]
        query, cls = order // nc, order % nc
        out.append(
            Detections(
                boxes=cxcywh_to_xyxy(boxes[b, query], tuple(x.shape[-2:])),
                scores=flat[order],
                classes=cls.long(),
                candidates=query.long(),
            )
        )
    return out


class RTDETRTarget(DetectionTarget):
    """One RT-DETR query's sigmoid score for its class, or one side of its box (input pixels).

    Args:
        candidate: the query (``Detections.candidates``).
        class_id: the class.
        what: ``"score"`` or ``"x1" | "y1" | "x2" | "y2"``.
        box: the detection's box (input pixels), for D-RISE matching by perturbation methods.
        size: ``(h, w)`` of the model input, to put boxes in pixels.

    Example:
        >>> t = RTDETRTarget(1, 2, size=(10, 10))
        >>> t(torch.cat([torch.rand(1, 3, 4), torch.tensor([[[.1, .2, .3], [.4, .5, .6],
        ...                                                  [.7, .8, .9]]])], -1))
        tensor([0.6000])
    """

    def __init__(self, *args: Any, size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, output: Any) -> torch.Tensor:
        boxes, scores = _queries(output)
        if self.class_id >= scores.shape[-1]:
            raise TaskcamError(
                f"class_id {self.class_id} does not exist: the model has {scores.shape[-1]}"
            )
        if self.candidate >= scores.shape[1]:
            return scores.new_zeros(scores.shape[0])
        if self.what == "score":
            return scores[:, self.candidate, self.class_id]
        box = cxcywh_to_xyxy(boxes[:, self.candidate], self.size)  # [B, 4]
        return box[:, _SIDES.index(self.what)]

    def candidates(self, output: Any, class_id: int) -> Candidates:
        boxes, scores = _queries(output)
        return Candidates(cxcywh_to_xyxy(boxes, self.size), scores, objectness=scores.amax(dim=-1))


class RTDETRAdapter:
    """RT-DETR as the pipeline drives it (a ``DetectorAdapter``).

    Args:
        model: an ultralytics ``RTDETRDetectionModel``.
        size: the square input side (640 for ultralytics' checkpoints).
        conf: score threshold (ultralytics' default 0.25).
        max_det: detections kept per image.
        class_names: names by class id (default: ``model.names``).
    """

    task = "detect"

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 640,
        conf: Optional[float] = None,
        max_det: int = 300,
        class_names: Optional[list[str]] = None,
    ) -> None:
        if not is_rtdetr(model):
            raise TaskcamError(f"RTDETRAdapter: {type(model).__name__} has no RTDETRDecoder head")
        self.model, self.size, self.max_det = model, int(size), int(max_det)
        self.conf = 0.25 if conf is None else float(conf)
        self.class_names = model_class_names(model, class_names)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, StretchPlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, S, S]`` in [0, 1], placement)."""
        return stretched_input(image, (self.size, self.size), self.model)

    def detect(self, x: torch.Tensor) -> list[Detections]:
        return detect(self.model, x, conf=self.conf, max_det=self.max_det)

    def targets(self, dets: Detections, what: str = "score") -> list[RTDETRTarget]:
        size = (self.size, self.size)
        return [
            RTDETRTarget(int(q), int(k), what, box=box, size=size)
            for q, k, box in zip(dets.candidates.tolist(), dets.classes.tolist(), dets.boxes)
        ]

    def default_layers(self) -> list[str]:
        """The feature maps the decoder reads (the neck's three outputs), their maps fused."""
        head = self.model.model[-1]
        return [f"model.{i}" for i in head.f]
