"""Detectors explained as black boxes: ``--model onnx:PATH`` (an ONNX file run by ONNX
Runtime; an ultralytics export is read by its metadata) and :class:`BlackBox` around any
callable from images to boxes and class scores. Only the methods that run the model on
perturbed images explain them (:data:`BLACK_BOX_METHODS`: D-RISE, ``fast-drise``, RISE); the
gradient and layer methods are refused with the reason.

- :mod:`~taskcam.adapters.blackbox.runtime`: the ONNX Runtime session and the callable as
  modules without parameters;
- :mod:`~taskcam.adapters.blackbox.decoders`: their outputs read as candidates;
- :mod:`~taskcam.adapters.blackbox.detector`: :class:`BlackBox` and the ``onnx:`` loader.
"""

from taskcam.adapters.blackbox.decoders import end2end_decode, scores_decode, ultralytics_decode
from taskcam.adapters.blackbox.detector import BLACK_BOX_METHODS, BlackBox, load_onnx
from taskcam.adapters.blackbox.runtime import CallableModel, OnnxRuntimeModel, onnx_metadata

__all__ = [
    "BLACK_BOX_METHODS",
    "BlackBox",
    "CallableModel",
    "OnnxRuntimeModel",
    "end2end_decode",
    "load_onnx",
    "onnx_metadata",
    "scores_decode",
    "ultralytics_decode",
]
