"""ultralytics YOLO as taskcam drives it: :class:`YoloAdapter` (the detector contract, every
task: detect, segment, pose, OBB), :func:`detect` and :func:`detection_targets`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector, check_batch
from taskcam.adapters.detection.scoring import WHAT
from taskcam.adapters.ultralytics.checkpoints import yolo_task
from taskcam.adapters.ultralytics.detect import YoloDetectionTarget, is_obb, yolo_candidates
from taskcam.adapters.ultralytics.export import fixed_input
from taskcam.adapters.ultralytics.levels import backbone_stages, candidate_layer, default_layers
from taskcam.adapters.ultralytics.obb import YoloObbTarget, obb_detections
from taskcam.adapters.ultralytics.pose import YoloPoseTarget
from taskcam.adapters.ultralytics.raw import kpt_shape, yolo_head
from taskcam.adapters.ultralytics.segment import YoloInstanceTarget, instance_masks
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = ["YoloAdapter", "detect", "detection_targets", "yolo_target"]


def yolo_target(
    dets: Detections, i: int, what: str = "score", model: Optional[nn.Module] = None
) -> YoloDetectionTarget:
    """The target of detection ``i``, of its task's kind: a pose model's person
    (:class:`YoloPoseTarget`), an oriented box (:class:`YoloObbTarget`), an instance with its
    mask (:class:`YoloInstanceTarget`) or a box (:class:`YoloDetectionTarget`). ``model`` is
    needed for pose, OBB and end-to-end heads."""
    c, k, box = int(dets.candidates[i]), int(dets.classes[i]), dets.boxes[i]
    level = dets.levels[i] if dets.levels else None
    if dets.keypoints is not None:
        return YoloPoseTarget(c, k, what, box=box, layer=level, model=model)
    if dets.rboxes is not None:
        return YoloObbTarget(c, k, what, box=box, layer=level, model=model)
    if dets.masks is None:
        return YoloDetectionTarget(c, k, what, box=box, layer=level, model=model)
    region = dets.masks[i] if what == "mask" else None
    return YoloInstanceTarget(c, k, what, box=box, layer=level, model=model, region=region)


def detection_targets(
    dets: Sequence[Detections], what: str = "score", model: Optional[nn.Module] = None
) -> list[list[YoloDetectionTarget]]:
    """One target per detection, one list per image (:func:`yolo_target`).

    Each target keeps its detection's box (for perturbation methods) and the neck level that
    predicted it when ``dets`` has ``levels`` (so that the engine explains it with that level
    when several are hooked). ``model`` is needed for end-to-end heads (YOLOv10, YOLO26):
    their targets decode the head's one-to-one outputs with it.

    The engine needs the same, non-zero number of targets for every image: pass
    ``max_det`` to :func:`detect` and drop images without detections, or explain images
    one at a time.

    Example:
        >>> d = Detections(torch.zeros(1, 4), torch.ones(1), torch.tensor([2]), torch.tensor([7]))
        >>> detection_targets([d])
        [[YoloDetectionTarget(7, 2)]]
    """
    return [[yolo_target(d, i, what, model) for i in range(len(d))] for d in dets]


def detect(
    model: nn.Module,
    x: torch.Tensor,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 100,
) -> list[Detections]:
    """Detect without gradients, keeping each detection's anchor candidate.

    Like ultralytics' ``predict``. For most heads, its default (single-label) NMS: each
    anchor keeps its best class, anchors scoring above ``conf`` go through per-class NMS
    (``torchvision.ops.batched_nms``), and the best ``max_det`` remain. For an end-to-end head
    (YOLOv10, YOLO26, ``end2end`` on), no NMS: the ``max_det`` best (anchor, class) pairs of
    its one-to-one branch that score above ``conf``, so an anchor can appear once per class.
    OBB models: ultralytics' own rotated NMS. The model's train/eval flags are restored
    afterwards.

    Args:
        model: a YOLO ``DetectionModel``, ``SegmentationModel``, ``PoseModel`` or ``OBBModel``.
        x: ``Tensor[B, 3, H, W]`` in [0, 1] (see :func:`letterbox`).
        conf: minimum class score.
        iou: NMS IoU threshold (unused by end-to-end heads).
        max_det: detections kept per image.

    Returns:
        One :class:`Detections` per image, best score first.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> d = detect(m, torch.rand(1, 3, 64, 64), conf=0.0, max_det=3)[0]
        >>> d.boxes.shape, d.candidates.dtype
        (torch.Size([3, 4]), torch.int64)
    """
    return YoloAdapter(model, conf=conf, iou=iou, max_det=max_det)._selected(x)


class YoloAdapter(Detector):
    """ultralytics YOLO as the pipeline drives it (the :class:`~taskcam.Detector` contract),
    for every task: boxes, instances with masks (``-seg``), people with keypoints (``-pose``)
    and oriented boxes (``-obb``).

    Args:
        model: a ``DetectionModel`` / ``SegmentationModel`` / ``PoseModel`` / ``OBBModel``
            (see :func:`load_yolo`).
        size: the letterbox input side: an image's longer side is scaled to it and, as
            ``yolo predict`` does, the shorter one padded only up to the next multiple of the
            stride (the minimal rectangle), except for a model rebuilt from a static ONNX
            export, which ultralytics predicts at its fixed square (:func:`fixed_input`).
        conf, iou, max_det: detection settings, as ultralytics' ``predict`` (end-to-end heads
            select without NMS and ignore ``iou``).
        class_names: names by class id (default: ``model.names``).

    Example:
        >>> import numpy as np
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> ad = YoloAdapter(load_yolo("yolov8n.yaml", nc=4), size=128, conf=0.0, max_det=2)
        >>> x, placement = ad.prepare(np.zeros((90, 160, 3), np.uint8))
        >>> x.shape  # 160 x 90 scaled to 128 x 72, padded to 128 x 96: the minimal rectangle
        torch.Size([1, 3, 96, 128])
        >>> dets = ad.detect(x)[0]
        >>> ad.default_layers()
        ['model.4', 'model.6', 'model.9']
        >>> [t.layer for t in ad.targets(dets)][:1] in (["model.15"], ["model.18"], ["model.21"])
        True
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 640,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 100,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        head = yolo_head(model)
        self.task = yolo_task(model)
        super().__init__(
            model,
            size=size,
            stride=int(max(head.stride.tolist())) if hasattr(head, "stride") else 32,
            conf=conf,
            iou=iou,
            max_det=max_det,
            class_names=class_names,
        )
        self.rect = not fixed_input(model)  # as ultralytics' predictor pads
        self._stages: Optional[list[str]] = None

    @property
    def family(self) -> str:
        return f"ultralytics {self.task}"

    @property
    def has_masks(self) -> bool:
        """Whether detections have masks (a segmentation model), so ``what="mask"`` works."""
        return self.task == "segment"

    @property
    def kpt_shape(self) -> Optional[tuple[int, int]]:
        """``(K, D)`` keypoints of a pose model, else None."""
        return kpt_shape(yolo_head(self.model))

    @property
    def explains(self) -> tuple[str, ...]:
        if self.task == "obb":
            return ("score",)
        return WHAT[:5] + (("mask",) if self.has_masks else ())

    def candidates(self, output: Any) -> Candidates:
        return yolo_candidates(output, yolo_head(self.model))

    def select(
        self, candidates: Candidates, size: Optional[tuple[int, int]] = None
    ) -> list[Detections]:
        """ultralytics' own selection (see :func:`detect`), each detection with its anchor;
        instances get their masks at the input ``size`` (default: 4× the prototypes', the
        input of ultralytics' heads), people their keypoints, oriented boxes their angles."""
        model, conf = self.model, float(self.conf)
        head = yolo_head(model)
        if kpt_shape(head) is not None and not candidates.nms:
            raise TaskcamError(
                f"{type(model).__name__}: an end-to-end pose head (YOLO26-pose) is not supported "
                "yet; YOLOv8 and YOLO11 pose models are"
            )
        if is_obb(head):
            if not candidates.nms:
                raise TaskcamError(
                    f"{type(model).__name__}: an end-to-end OBB head (YOLO26-obb) is not "
                    "supported yet; YOLOv8 and YOLO11 OBB models are"
                )
            count = candidates.scores.shape[0]
            return [
                obb_detections(candidates, b, conf, self.iou, self.max_det) for b in range(count)
            ]
        out = super().select(candidates)
        coeffs, protos = candidates.extras.get("coefficients"), candidates.extras.get("prototypes")
        if coeffs is not None and protos is not None:
            if size is None:
                size = (4 * protos.shape[-2], 4 * protos.shape[-1])
            for b, det in enumerate(out):
                det.masks = instance_masks(coeffs[b][det.candidates], protos[b], det.boxes, size)
        return out

    def _selected(self, x: torch.Tensor) -> list[Detections]:
        """:func:`detect`: the model's output -> candidates -> ultralytics' selection."""
        check_batch(x)
        return self.select(self.candidates(predict(self.model, x)), size=tuple(x.shape[-2:]))

    def detect(self, x: torch.Tensor) -> list[Detections]:
        dets = self._selected(x)
        size = tuple(x.shape[-2:])
        for d in dets:
            d.levels = [candidate_layer(self.model, int(c), size) for c in d.candidates]
        return dets

    def target(self, dets: Detections, i: int, what: str) -> YoloDetectionTarget:
        return yolo_target(dets, i, what, self.model)

    def default_layers(self) -> list[str]:
        """The backbone's stages at the head's strides (:func:`backbone_stages`), their maps
        fused: chosen over the neck outputs by deletion and insertion of each detection's
        score (``benchmarks/detection_faithfulness.py``). Each target still names its neck
        level, so hooking the neck outputs (``--layer model.15,model.18,model.21`` for
        YOLOv8) explains it at that level, as ODAM does. Models without a yaml backbone keep
        the neck outputs."""
        if self._stages is None:
            try:
                self._stages = backbone_stages(self.model)
            except TaskcamError:
                self._stages = default_layers(self.model)
        return list(self._stages)

    def level_layers(self) -> list[str]:
        """The neck outputs the head reads, finest first: each detection's own level."""
        return default_layers(self.model)
