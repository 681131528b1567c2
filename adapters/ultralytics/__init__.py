"""ultralytics models explained detection by detection, through the plain ``nn.Module``.

``YOLO.predict`` runs under ``torch.inference_mode`` and hides which anchor produced a box, so
this adapter works on the underlying ``DetectionModel`` / ``SegmentationModel`` instead:

1. :func:`letterbox` prepares an image exactly as ultralytics does (gray 114 padding; shared
   with every detector: :mod:`taskcam.adapters.detection.placement`): :class:`YoloAdapter`
   pads to the minimal rectangle as ``predict`` does for a PyTorch model (``auto=True``), and
   to the square for a static ONNX export (:func:`fixed_input`);
2. :func:`detect` runs the model once without gradients and applies its own NMS over the raw
   anchor candidates, so each kept detection remembers its *candidate* (anchor index);
3. :class:`YoloDetectionTarget` reads that candidate's class score (or a box side) from the
   raw predictions of any later forward, which is differentiable;
4. the engine explains all detections of an image in one forward and one batched backward, and
   :meth:`LetterboxInfo.map_to_image` brings the maps back to the original image.

The package follows ultralytics' own split by task: :mod:`~.checkpoints` (loading, the task),
:mod:`~.export` (ONNX exports rebuilt in PyTorch), :mod:`~.raw` (reading the output),
:mod:`~.levels` (the layers a detection is explained at), one module per task
(:mod:`~.detect`, :mod:`~.segment`, :mod:`~.pose`, :mod:`~.obb`, :mod:`~.classify`),
:mod:`~.rtdetr`, and :mod:`~.yolo`: :class:`YoloAdapter`, the detector contract
(:class:`taskcam.Detector`) for every YOLO task.

What this relies on in ultralytics 8.x (``ultralytics/nn/modules/head.py``), eval mode:

* ``Detect.forward`` returns ``(y, preds)`` with ``y: Tensor[B, 4 + nc, A]``: boxes as
  ``cx, cy, w, h`` in input pixels, then the sigmoid of the class logits; ``A`` runs over the
  anchors of every level, finest stride first, row-major within a level. ``preds`` is a dict
  (older releases: a list of per-level feature maps). In export mode ``y`` comes alone.
* ``Segment.forward`` returns ``((y, protos), preds)`` with ``y: Tensor[B, 4 + nc + nm, A]``
  (mask coefficients last) and ``protos: Tensor[B, nm, H/4, W/4]``; older releases returned
  ``(y, (feats, mc, protos))``, and export mode ``(y, protos)``. All of these are accepted.
* End-to-end heads (YOLOv10, YOLO26; ``head.end2end`` on) put top-k rows
  ``x1, y1, x2, y2, score, class`` first, with no anchor index, and the raw outputs of both
  branches in a dict: ``preds["one2one"]`` holds the one-to-one branch's box distances, class
  logits (and mask coefficients) per anchor, computed in eval mode from the neck outputs
  themselves, so gradients reach them. ``predict`` returns the one-to-one branch's detections
  (top-k over anchors × classes, no NMS), so that branch is what is explained: the head decodes
  ``preds["one2one"]`` into per-anchor candidates (``Tensor[B, 4 + nc (+ nm), A]``, boxes turned
  into ``cx, cy, w, h``), :func:`detect` selects from them as ``predict`` does, and targets read
  them; such targets need the model (:meth:`YoloAdapter.targets`, or ``model=`` of
  :func:`detection_targets`). The model's ``end2end`` flag is left as it is: with it off, the
  head's one-to-many output and NMS are explained, as ``predict`` would then use. Releases
  whose one-to-one outputs are a list of detached per-level maps (before 8.4) are refused with a
  message. Training mode returns a dict and is refused.

Example:
    >>> import numpy as np, torch, taskcam
    >>> model = load_yolo("yolov8n.yaml", nc=4)  # random weights
    >>> x, info = letterbox(np.zeros((200, 320, 3), np.uint8), size=256, auto=True)
    >>> x.shape  # the minimal rectangle, as predict pads it
    torch.Size([1, 3, 160, 256])
    >>> dets = detect(model, x, conf=0.0, max_det=2)
    >>> exp = taskcam.explain(model, x, detection_targets(dets), layers=default_layers(model)[:1])
    >>> info.map_to_image(exp.maps).shape
    torch.Size([1, 2, 200, 320])
"""

from taskcam.adapters.detection.candidates import Detections
from taskcam.adapters.detection.placement import PAD_VALUE, LetterboxInfo, letterbox
from taskcam.adapters.ultralytics.checkpoints import load_yolo, yolo_task
from taskcam.adapters.ultralytics.classify import YoloClassifier
from taskcam.adapters.ultralytics.detect import YoloDetectionTarget, yolo_candidates
from taskcam.adapters.ultralytics.export import fixed_input
from taskcam.adapters.ultralytics.levels import backbone_stages, candidate_layer, default_layers
from taskcam.adapters.ultralytics.obb import YoloObbTarget
from taskcam.adapters.ultralytics.pose import YoloPoseTarget
from taskcam.adapters.ultralytics.raw import raw_predictions
from taskcam.adapters.ultralytics.rtdetr import RTDETRAdapter, RTDETRTarget, is_rtdetr
from taskcam.adapters.ultralytics.segment import YoloInstanceTarget
from taskcam.adapters.ultralytics.yolo import (
    YoloAdapter,
    detect,
    detection_targets,
    yolo_target,
)
from taskcam.boxes import rotated_corners

__all__ = [
    "PAD_VALUE",
    "Detections",
    "LetterboxInfo",
    "RTDETRAdapter",
    "RTDETRTarget",
    "YoloAdapter",
    "YoloClassifier",
    "YoloDetectionTarget",
    "YoloInstanceTarget",
    "YoloObbTarget",
    "YoloPoseTarget",
    "backbone_stages",
    "candidate_layer",
    "default_layers",
    "detect",
    "detection_targets",
    "fixed_input",
    "is_rtdetr",
    "letterbox",
    "load_yolo",
    "raw_predictions",
    "rotated_corners",
    "yolo_candidates",
    "yolo_target",
    "yolo_task",
]
