"""Task adapters: turn a model's outputs into the scalar targets the engine explains.

Installed as ``taskcam.adapters``; each adapter imports its task's library only when used.

- :mod:`~taskcam.adapters.classification`: class logits and probabilities, ``--targets`` specs;
- :mod:`~taskcam.adapters.segmentation`: class regions (Seg-Grad-CAM), default layers;
- :mod:`~taskcam.adapters.detection`: what every detector adapter shares (detections traced to
  their candidates, D-RISE matching, ``--targets`` for detections);
- :mod:`~taskcam.adapters.yolo`, :mod:`~taskcam.adapters.yolov5` (the original, anchor-based
  YOLOv5), :mod:`~taskcam.adapters.rtdetr`, :mod:`~taskcam.adapters.detr` and
  :mod:`~taskcam.adapters.torchvision_detection`: the detector families, chosen for a loaded
  model by :func:`adapter_for`;
- :mod:`~taskcam.adapters.huggingface`: ``hf:DIR`` folders (classifiers, segmenters);
- :mod:`~taskcam.adapters.transformers`: a transformer classifier's default layer and the
  reshape its token output needs.
"""

from __future__ import annotations

from typing import Any, Optional

from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel

__all__ = ["adapter_for"]


def adapter_for(loaded: LoadedModel, conf: Optional[float] = None) -> Any:
    """The detector adapter of a loaded detector: ultralytics YOLO (detection and instance
    segmentation) or a torchvision detector. It is made once and kept on ``loaded.adapter``.

    Args:
        loaded: a model with ``loaded.is_detector``.
        conf: the score threshold detections must reach (default: the model's own).

    Raises:
        TaskcamError: ``conf`` outside [0, 1], or a model that is neither an ultralytics YOLO
            nor a torchvision detector (the message names its class).

    Example:
        >>> from taskcam.models import load_model
        >>> type(adapter_for(load_model("zoo:shapes-fasterrcnn"), conf=0.3)).__name__
        'TorchvisionDetectionAdapter'
    """
    adapter = loaded.adapter
    if adapter is None:
        model = loaded.model
        if type(model).__module__.startswith("ultralytics."):
            from taskcam.adapters.rtdetr import RTDETRAdapter, is_rtdetr
            from taskcam.adapters.yolo import YoloAdapter

            family = RTDETRAdapter if is_rtdetr(model) else YoloAdapter
            adapter = family(
                model, size=max(loaded.preprocess.size), class_names=loaded.class_names
            )
        elif type(model).__module__.startswith(("yolov5.", "models.")):
            from taskcam.adapters.yolov5 import Yolov5Adapter

            adapter = Yolov5Adapter(
                model, size=max(loaded.preprocess.size), class_names=loaded.class_names
            )
        else:
            from taskcam.adapters.torchvision_detection import (
                TorchvisionDetectionAdapter,
                is_torchvision_detector,
            )

            if not is_torchvision_detector(model):
                raise TaskcamError(
                    f"{loaded.spec}: a {type(model).__name__} is neither an ultralytics YOLO "
                    "nor a torchvision detector; taskcam cannot trace its detections"
                )
            adapter = TorchvisionDetectionAdapter(model, class_names=loaded.class_names)
        loaded.adapter = adapter
    if conf is not None:
        if not 0.0 <= conf <= 1.0:
            raise TaskcamError(f"--conf: expected a score in [0, 1], got {conf}")
        adapter.conf = conf
    return adapter
