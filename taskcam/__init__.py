"""taskcam: class activation maps for classifiers, detectors, segmenters and transformers.

The names a user needs without digging: the engine (:func:`explain`, :class:`Explainer`), the
target contract (:class:`Target` and its capabilities, :class:`ClassTarget`), the detector
contract (:class:`Detector`, :class:`Candidates`, :class:`Detections`), a detector's errors
against labels (:class:`Labels`, :func:`read_labels`, :func:`label_outcomes`), the method registry,
and the run path (:func:`load_model`, :class:`RunOptions`, :func:`explain_files`). Each name is
imported on first use: ``import taskcam`` loads neither torch nor OpenCV, so ``taskcam --help``
answers at once.

Example:
    >>> import torch, torchvision, taskcam
    >>> net = torchvision.models.resnet18(weights=None)
    >>> exp = taskcam.explain(net, torch.rand(1, 3, 64, 64), [taskcam.ClassTarget(0)], "layer4")
    >>> exp.maps.shape
    torch.Size([1, 1, 64, 64])
"""

from typing import TYPE_CHECKING, Any

from taskcam.errors import TaskcamError

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time each name loads on first use
    from taskcam.adapters.detection import (
        Candidates,
        Detections,
        Detector,
        Labels,
        label_outcomes,
        read_labels,
    )
    from taskcam.engine import Explainer, Explanation, explain, normalize_maps
    from taskcam.layers import default_layer, resolve_layers
    from taskcam.methods import Method, available_methods, get_method, register
    from taskcam.models import load_model
    from taskcam.options import RunOptions
    from taskcam.pipeline import explain_files
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


# Each public name's module: ``import taskcam`` (and so ``taskcam --help``) loads no torch; a
# name imports its module the first time it is used.
_HOME = {
    "taskcam.adapters.detection": (
        "Candidates",
        "Detections",
        "Detector",
        "Labels",
        "label_outcomes",
        "read_labels",
    ),
    "taskcam.engine": ("Explainer", "Explanation", "explain", "normalize_maps"),
    "taskcam.layers": ("default_layer", "resolve_layers"),
    "taskcam.methods": ("Method", "available_methods", "get_method", "register"),
    "taskcam.models": ("load_model",),
    "taskcam.options": ("RunOptions",),
    "taskcam.pipeline": ("explain_files",),
    "taskcam.reshape": ("ChannelsLast", "TokensToGrid", "infer_reshape"),
    "taskcam.targets": (
        "ClassIndexTarget",
        "ClassTarget",
        "LayerTarget",
        "MaskTarget",
        "PerturbableTarget",
        "Target",
    ),
}
_MODULE_OF = {name: module for module, names in _HOME.items() for name in names}


def __getattr__(name: str) -> Any:
    """A public name, imported on first use: ``import taskcam`` stays light (no torch, no
    OpenCV, no model library) so the command line starts at once."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'taskcam' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
