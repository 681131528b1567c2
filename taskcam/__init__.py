"""taskcam: class activation maps for classifiers, detectors, segmenters and transformers.

Example:
    >>> import torch, torchvision, taskcam
    >>> from taskcam.targets import ClassTarget
    >>> net = torchvision.models.resnet18(weights=None)
    >>> exp = taskcam.explain(net, torch.rand(1, 3, 64, 64), [ClassTarget(0)], "layer4")
    >>> exp.maps.shape
    torch.Size([1, 1, 64, 64])
"""

from taskcam.engine import Explainer, Explanation, explain, normalize_maps
from taskcam.errors import TaskcamError
from taskcam.layers import default_layer, resolve_layers
from taskcam.methods import Method, available_methods, get_method, register
from taskcam.reshape import ChannelsLast, TokensToGrid, infer_reshape
from taskcam.targets import (
    ClassIndexTarget,
    LayerTarget,
    MaskTarget,
    PerturbableTarget,
    Target,
)

__version__ = "0.1.0"

__all__ = [
    "ChannelsLast",
    "ClassIndexTarget",
    "Explainer",
    "Explanation",
    "LayerTarget",
    "MaskTarget",
    "Method",
    "PerturbableTarget",
    "Target",
    "TaskcamError",
    "TokensToGrid",
    "available_methods",
    "default_layer",
    "explain",
    "get_method",
    "infer_reshape",
    "normalize_maps",
    "register",
    "resolve_layers",
]
