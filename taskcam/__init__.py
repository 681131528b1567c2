"""taskcam: class activation maps for classifiers, detectors, segmenters and transformers.

The names a user needs without digging: the engine (:func:`explain`, :class:`Explainer`), the
target contract (:class:`Target` and its capabilities, :class:`ClassTarget`), the detector
contract (:class:`Detector`, :class:`Candidates`, :class:`Detections`), a detector's errors
against labels (:class:`Labels`, :func:`read_labels`, :func:`label_outcomes`), the method registry,
and the run path (:func:`load_model`, :class:`RunOptions`, :func:`explain_files`, imported on
first use).

Example:
    >>> import torch, torchvision, taskcam
    >>> net = torchvision.models.resnet18(weights=None)
    >>> exp = taskcam.explain(net, torch.rand(1, 3, 64, 64), [taskcam.ClassTarget(0)], "layer4")
    >>> exp.maps.shape
    torch.Size([1, 1, 64, 64])
"""

from typing import Any

from taskcam.adapters.detection import (
    Candidates,
    Detections,
    Detector,
    Labels,
    label_outcomes,
    read_labels,
)
from taskcam.engine import Explainer, Explanation, explain, normalize_maps
from taskcam.errors import TaskcamError
from taskcam.layers import default_layer, resolve_layers
from taskcam.methods import Method, available_methods, get_method, register
from taskcam.models import load_model
from taskcam.options import RunOptions
from taskcam.reshape import ChannelsLast, TokensToGrid, infer_reshape
from taskcam.targets import (
    ClassIndexTarget,
    ClassTarget,
    LayerTarget,
    MaskTarget,
    PerturbableTarget,
    Target,
)

__version__ = "0.1.0"

__all__ = [
    "Candidates",
    "ChannelsLast",
    "ClassIndexTarget",
    "ClassTarget",
    "Detections",
    "Detector",
    "Explainer",
    "Explanation",
    "Labels",
    "LayerTarget",
    "MaskTarget",
    "Method",
    "PerturbableTarget",
    "RunOptions",
    "Target",
    "TaskcamError",
    "TokensToGrid",
    "available_methods",
    "default_layer",
    "explain",
    "explain_files",
    "get_method",
    "infer_reshape",
    "label_outcomes",
    "load_model",
    "normalize_maps",
    "read_labels",
    "register",
    "resolve_layers",
]


def __getattr__(name: str) -> Any:
    """``explain_files``, imported on first use: the run path reads images and draws pictures
    (OpenCV), which ``import taskcam`` need not load."""
    if name == "explain_files":
        from taskcam.pipeline import explain_files

        return explain_files
    raise AttributeError(f"module 'taskcam' has no attribute {name!r}")
