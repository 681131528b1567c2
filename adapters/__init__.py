"""Task adapters: turn a model's outputs into the scalar targets the engine explains.

Installed as ``taskcam.adapters``; each adapter imports its task's library only when used.

- :mod:`~taskcam.adapters.classification`: class logits and probabilities, ``--targets`` specs;
- :mod:`~taskcam.adapters.segmentation`: class regions (Seg-Grad-CAM), default layers;
- :mod:`~taskcam.adapters.detection`: the detector contract (:class:`taskcam.Detector`), what
  every detector family shares (candidates, detections traced to them, D-RISE matching,
  placement, NMS, ``--targets`` for detections) and the one place a family is chosen
  (:func:`adapter_for`);
- one package per detector framework: :mod:`~taskcam.adapters.ultralytics` (YOLO by task:
  detect, segment, pose, OBB, classify; RT-DETR), :mod:`~taskcam.adapters.yolov5` (the
  original, anchor-based YOLOv5), :mod:`~taskcam.adapters.torchvision` (Faster / Mask R-CNN,
  RetinaNet, FCOS, SSD) and :mod:`~taskcam.adapters.huggingface` (``hf:DIR`` folders:
  classifiers, segmenters, the DETR family);
- :mod:`~taskcam.adapters.transformers`: a transformer classifier's default layer and the
  reshape its token output needs.
"""

from taskcam.adapters.detection.families import adapter_for, detector_for

__all__ = ["adapter_for", "detector_for"]
