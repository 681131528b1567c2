"""RT-DETR (ultralytics ``rtdetr-*.yaml`` / ``.pt``) explained query by query.

RT-DETR (Zhao et al., "DETRs Beat YOLOs on Real-time Object Detection", CVPR 2024) predicts a
fixed set of ``Q`` object queries, each a box and one sigmoid score per class; there is no NMS.
ultralytics' predictor stretches the image to a square (no letterbox), keeps the (query,
class) pairs whose score passes ``conf``, best first, and scales the normalised ``cx, cy, w,
h`` boxes back to the image. :class:`RTDETRAdapter` does the same and remembers each
detection's query, so a :class:`RTDETRTarget` reads that query's class score (or one side of its
box) from any later forward: every query of an image is explained in one forward and one batched
backward.

Example:
    >>> import numpy as np
    >>> from taskcam.adapters.ultralytics import load_yolo
    >>> net = load_yolo("rtdetr-l.yaml", nc=3)
    >>> adapter = RTDETRAdapter(net, size=96)
    >>> x, placement = adapter.prepare(np.zeros((60, 80, 3), np.uint8))
    >>> dets = adapter.detect(x)[0]
    >>> x.shape, len(adapter.targets(dets)) == len(dets)
    (torch.Size([1, 3, 96, 96]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.scoring import WHAT, CandidateTarget
from taskcam.boxes import cxcywh_to_xyxy
from taskcam.errors import TaskcamError

__all__ = ["RTDETRAdapter", "RTDETRTarget", "is_rtdetr", "ranked_pairs", "rtdetr_candidates"]


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


def ranked_pairs(
    scores: torch.Tensor, conf: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(queries, classes, scores)``: every (query, class) pair of ``scores: Tensor[Q, nc]``
    above ``conf``, best first, at most ``max_det``, as ultralytics' RT-DETR predictor keeps
    them (no NMS).

    Example:
        >>> [t.tolist() for t in ranked_pairs(torch.tensor([[0.1, 0.9], [0.6, 0.3]]), 0.25, 5)]
        [[0, 1, 1], [1, 0, 1], [0.8999999761581421, 0.6000000238418579, 0.30000001192092896]]
    """
    nc = scores.shape[-1]
    flat = scores.flatten()  # [Q * nc], query-major as the decoder ranks them
    order = flat.argsort(descending=True)
    order = order[flat[order] > conf][:max_det]
    return order // nc, order % nc, flat[order]


def rtdetr_candidates(output: Any, size: tuple[int, int]) -> Candidates:
    """Every query of an RT-DETR output: boxes in the pixels of a ``size`` (h, w) input,
    sigmoid class scores, objectness the best class score; no NMS."""
    boxes, scores = _queries(output)
    return Candidates(
        cxcywh_to_xyxy(boxes, size), scores, objectness=scores.amax(dim=-1), nms=False
    )


class RTDETRTarget(CandidateTarget):
    """One RT-DETR query's sigmoid score for its class, or one side of its box (input pixels),
    read from the query's candidate (:func:`rtdetr_candidates`).

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

    supports = WHAT[:5]

    def __init__(self, *args: Any, size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = (int(size[0]), int(size[1]))

    def candidates(self, output: Any) -> Candidates:
        return rtdetr_candidates(output, self.size)


class RTDETRAdapter(Detector):
    """RT-DETR as the pipeline drives it (the :class:`~taskcam.Detector` contract).

    Args:
        model: an ultralytics ``RTDETRDetectionModel``.
        size: the square input side (640 for ultralytics' checkpoints).
        conf: score threshold (ultralytics' default 0.25).
        max_det: detections kept per image.
        class_names: names by class id (default: ``model.names``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 640,
        conf: Optional[float] = None,
        max_det: int = 300,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        if not is_rtdetr(model):
            raise TaskcamError(f"RTDETRAdapter: {type(model).__name__} has no RTDETRDecoder head")
        super().__init__(
            model,
            size=int(size),
            resize="stretch",
            conf=0.25 if conf is None else float(conf),
            max_det=int(max_det),
            class_names=class_names,
        )

    @property
    def family(self) -> str:
        return "rtdetr"

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score", "x1", "y1", "x2", "y2")

    def set_size(self, dims: Sequence[int]) -> None:
        """``--size``: RT-DETR stretches to a square, of the larger side."""
        self.size = max(int(d) for d in dims)

    def candidates(self, output: Any) -> Candidates:
        return rtdetr_candidates(output, (self.size, self.size))

    def select(self, candidates: Candidates) -> list[Detections]:
        out = []
        for b in range(candidates.scores.shape[0]):
            query, cls, score = ranked_pairs(candidates.scores[b], self.conf, self.max_det)
            out.append(Detections(candidates.boxes[b, query], score, cls.long(), query.long()))
        return out

    def target(self, dets: Detections, i: int, what: str) -> RTDETRTarget:
        size = (self.size, self.size)
        return RTDETRTarget(
            int(dets.candidates[i]), int(dets.classes[i]), what, box=dets.boxes[i], size=size
        )

    def default_layers(self) -> list[str]:
        """The feature maps the decoder reads (the neck's three outputs), their maps fused."""
        head = self.model.model[-1]
        return [f"model.{i}" for i in head.f]
