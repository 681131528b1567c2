"""RF-DETR, Roboflow's real-time DETR (the ``rfdetr`` package), explained detection by detection.

RF-DETR (Robinson et al., "RF-DETR: Neural Architecture Search for Real-Time Detection
Transformers", 2025) is LW-DETR (Chen et al., "LW-DETR: A Transformer Replacement to YOLO for
Real-Time Detection", 2024) on a DINOv2 backbone: one object query per candidate, no NMS.

- :class:`RFDETRAdapter` (:mod:`~taskcam.adapters.rfdetr.adapter`): an ``rfdetr`` model
  (``RFDETRNano``, ..., or its ``LWDETR`` module) as a :class:`~taskcam.Detector`, with
  ``predict``'s preprocessing, selection and class names; one target per kept detection,
  reading its own query;
- :func:`load_rfdetr` (:mod:`~taskcam.adapters.rfdetr.loading`): ``--model rfdetr:NAME``
  (``nano``, ``small``, ``medium``, ``base``, ``large``) with rfdetr's pretrained weights,
  random weights (``--weights none``, offline) or a checkpoint;
- :func:`is_rfdetr`: how :func:`taskcam.adapters.detection.families.family_of` recognises one.

``--method detr-attention`` is refused: RF-DETR's decoder attends by deformable attention, a
few sampled points per query and level, so there is no dense attention map over the image.
"""

from taskcam.adapters.rfdetr.adapter import RFDETRAdapter, is_rfdetr
from taskcam.adapters.rfdetr.loading import load_rfdetr

__all__ = ["RFDETRAdapter", "is_rfdetr", "load_rfdetr"]
