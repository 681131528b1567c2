"""EfficientDet from ``effdet`` (Ross Wightman's, on timm) explained detection by detection.

EfficientDet (Tan, Pang & Le, CVPR 2020, "EfficientDet: Scalable and Efficient Object
Detection") predicts, per anchor of each pyramid level (3..7), one sigmoid score per class and a
box relative to the anchor. The package:

- :mod:`~.library`: effdet imported on first use, the model's input pipeline and COCO names;
- :mod:`~.placement`: effdet's eval preprocessing (resize, pad at the bottom and right with
  the mean colour, normalise) and the way back to image pixels;
- :mod:`~.outputs`: the per-level outputs read as candidates (every anchor, decoded with
  effdet's own anchors and box coder), and one anchor's target;
- :mod:`~.postprocess`: ``DetBenchPredict``'s post-processing (top-k over all levels,
  per-class NMS, the best 100) keeping each detection's anchor;
- :mod:`~.adapter`: :class:`EffDetAdapter`, the :class:`taskcam.Detector` contract;
- :mod:`~.loader`: ``--model effdet:NAME`` (:func:`load_effdet`).
"""

from taskcam.adapters.effdet.adapter import EffDetAdapter
from taskcam.adapters.effdet.library import is_effdet
from taskcam.adapters.effdet.loader import load_effdet

__all__ = ["EffDetAdapter", "is_effdet", "load_effdet"]
