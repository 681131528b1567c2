"""YOLOX (Ge et al., 2021, "YOLOX: Exceeding YOLO Series in 2021"), as libreyolo packages it,
explained detection by detection.

libreyolo is used rather than the ``yolox`` package on PyPI, whose only release (0.3.0, 2022)
is a source archive that does not build beside our torch (see ``docs/yolox.md``).

- :func:`is_yolox`: libreyolo's ``LibreYOLOX`` wrapper or the ``LibreYOLOXModel`` it runs;
- :class:`YoloxAdapter`: the :class:`~taskcam.Detector` contract for it: every grid cell a
  candidate scored ``objectness × class probability`` (:mod:`~taskcam.adapters.yolox.head`),
  libreyolo's own post-processing and preprocessing (:mod:`~taskcam.adapters.yolox.inputs`),
  the backbone's stages explained by default, each detection naming its level's neck output;
- :func:`load_yolox`: ``--model yolox:NAME`` (:mod:`~taskcam.adapters.yolox.loading`).

Example:
    >>> import numpy as np
    >>> loaded = load_yolox("nano", "none")
    >>> x, placement = loaded.adapter.prepare(np.zeros((60, 80, 3), np.uint8))
    >>> x.shape, is_yolox(loaded.model), loaded.adapter.default_layers()[0]
    (torch.Size([1, 3, 416, 416]), True, 'backbone.backbone.dark3')
"""

from taskcam.adapters.yolox.adapter import YoloxAdapter, is_yolox
from taskcam.adapters.yolox.loading import load_yolox

__all__ = ["YoloxAdapter", "is_yolox", "load_yolox"]
