"""The one place a detector's adapter is chosen: :func:`detector_for` recognises a model's
family by its library (cheaply, by class and module names, without importing any library the
model does not come from) and :func:`adapter_for` keeps a loaded model's adapter.

Families, in the order they are recognised: a :class:`~taskcam.Detector` already (a user's
wrapped detector or a black box, returned as it is); ultralytics RT-DETR and YOLO (detect,
segment, pose, OBB); the original YOLOv5; Hugging Face DETR, Conditional DETR and Deformable
DETR; EfficientDet (``effdet``); RF-DETR (``rfdetr``); YOLOX (``libreyolo``); torchvision
detectors (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS, SSD).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

from taskcam.adapters.detection.detector import Detector
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess

__all__ = ["adapter_for", "detector_for", "family_of"]

FAMILIES = ("rtdetr", "yolo", "yolov5", "detr", "effdet", "rfdetr", "yolox", "torchvision")
"""The families taskcam wraps, as :func:`family_of` names them."""


def family_of(model: Any) -> Optional[str]:
    """The family of ``model`` (one of :data:`FAMILIES`), or None for a model taskcam does not
    wrap (a :class:`~taskcam.Detector` is its own: ``"detector"``).

    Example:
        >>> import torchvision
        >>> family_of(torchvision.models.resnet18(weights=None)) is None
        True
    """
    if isinstance(model, Detector):
        return "detector"
    module = type(model).__module__
    if module.startswith("ultralytics."):
        from taskcam.adapters.ultralytics.rtdetr import is_rtdetr

        return "rtdetr" if is_rtdetr(model) else "yolo"
    if module.startswith(("yolov5.", "models.")):
        from taskcam.adapters.yolov5 import is_yolov5

        if is_yolov5(model):
            return "yolov5"
    if module.startswith("transformers."):
        from taskcam.adapters.huggingface.detr import DETR_TYPES

        if getattr(getattr(model, "config", None), "model_type", None) in DETR_TYPES:
            return "detr"
    if module.startswith("effdet."):
        from taskcam.adapters.effdet import is_effdet

        if is_effdet(model):
            return "effdet"
    if module.startswith("rfdetr."):
        from taskcam.adapters.rfdetr import is_rfdetr

        if is_rfdetr(model):
            return "rfdetr"
    if module.startswith("libreyolo."):
        from taskcam.adapters.yolox import is_yolox

        if is_yolox(model):
            return "yolox"
    from taskcam.adapters.torchvision.traced import is_torchvision_detector

    return "torchvision" if is_torchvision_detector(model) else None


def detector_for(
    model: Any,
    *,
    size: Optional[int] = None,
    preprocess: Optional[Preprocess] = None,
    class_names: Optional[Sequence[str]] = None,
    name: Optional[str] = None,
) -> Detector:
    """The adapter of ``model``'s family (see the module doc).

    Args:
        model: a detector of a family taskcam wraps, or a :class:`~taskcam.Detector`.
        size: the input side of the families that take one (YOLO, YOLOv5, RT-DETR; default
            640).
        preprocess: Hugging Face DETR: the processor's sizes, mean and std.
        class_names: names by class id (default: the model's own, where it has them).
        name: how messages name the model (its ``--model`` spec).

    Raises:
        TaskcamError: a model of no family taskcam wraps; the message names its class and how
            to wrap it.

    Example:
        >>> from torchvision.models.detection import ssdlite320_mobilenet_v3_large
        >>> type(detector_for(ssdlite320_mobilenet_v3_large(weights=None,
        ...      weights_backbone=None))).__name__
        'TorchvisionDetectionAdapter'
    """
    family = family_of(model)
    side = {} if size is None else {"size": int(size)}
    if family == "detector":
        return model
    if family == "rtdetr":
        from taskcam.adapters.ultralytics.rtdetr import RTDETRAdapter

        return RTDETRAdapter(model, class_names=class_names, **side)
    if family == "yolo":
        from taskcam.adapters.ultralytics.yolo import YoloAdapter

        return YoloAdapter(model, class_names=class_names, **side)
    if family == "yolov5":
        from taskcam.adapters.yolov5 import Yolov5Adapter

        return Yolov5Adapter(model, class_names=class_names, **side)
    if family == "detr":
        from taskcam.adapters.huggingface.detr import DetrAdapter

        return DetrAdapter(model, preprocess, class_names=class_names)
    if family == "effdet":
        from taskcam.adapters.effdet import EffDetAdapter

        return EffDetAdapter(model, class_names=class_names, **side)
    if family == "rfdetr":
        from taskcam.adapters.rfdetr import RFDETRAdapter

        return RFDETRAdapter(model, class_names=class_names, **side)
    if family == "yolox":
        from taskcam.adapters.yolox import YoloxAdapter

        return YoloxAdapter(model, class_names=class_names, **side)
    if family == "torchvision":
        from taskcam.adapters.torchvision.detectors import TorchvisionDetectionAdapter

        return TorchvisionDetectionAdapter(model, class_names=class_names)
    raise TaskcamError(
        f"{name or 'model'}: a {type(model).__name__} is not a detector taskcam knows "
        "(ultralytics YOLO or RT-DETR, the original YOLOv5, a torchvision detector, a Hugging "
        "Face DETR, EfficientDet, RF-DETR, YOLOX); wrap it in taskcam.Detector(model, decode) "
        "to explain its detections"
    )


def adapter_for(loaded: LoadedModel, conf: Optional[float] = None) -> Detector:
    """The detector adapter of a loaded detector, made once (:func:`detector_for`) and kept on
    ``loaded.adapter``.

    Args:
        loaded: a model with ``loaded.is_detector``.
        conf: the score threshold detections must reach (default: the model's own).

    Raises:
        TaskcamError: ``conf`` outside [0, 1], or a model of no family taskcam wraps (the
            message names its spec and class).

    Example:
        >>> from taskcam.models import load_model
        >>> type(adapter_for(load_model("zoo:shapes-fasterrcnn"), conf=0.3)).__name__
        'TorchvisionDetectionAdapter'
    """
    adapter = loaded.adapter
    if adapter is None:
        adapter = detector_for(
            loaded.model,
            size=max(loaded.preprocess.size),
            preprocess=loaded.preprocess,
            class_names=loaded.class_names,
            name=loaded.spec,
        )
        loaded.adapter = adapter
    if conf is not None:
        if not 0.0 <= conf <= 1.0:
            raise TaskcamError(f"--conf: expected a score in [0, 1], got {conf}")
        adapter.conf = conf
    return adapter
