"""The method registry: ``name -> Method``; importing this package registers every method."""

from taskcam.methods.base import (
    CamTerms,
    LayerContext,
    Method,
    Target,
    available_methods,
    get_method,
    register,
)
from taskcam.methods.eigen import EigenCAM, EigenGradCAM  # noqa: E402,F401
from taskcam.methods.gradient import (  # noqa: F401  (registration)
    CAM,
    ODAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from taskcam.methods.guided import GuidedBackprop, GuidedGradCAM  # noqa: E402,F401
from taskcam.methods.perturbation import AblationCAM, ScoreCAM  # noqa: E402,F401
from taskcam.methods.rise import RISE  # noqa: F401

# isort: split
from taskcam.methods.drise import DRISE  # noqa: F401  (registered last, after RISE)

__all__ = [
    "CAM",
    "AblationCAM",
    "CamTerms",
    "DRISE",
    "EigenCAM",
    "EigenGradCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LayerContext",
    "RISE",
    "Method",
    "ODAM",
    "ScoreCAM",
    "Target",
    "XGradCAM",
    "available_methods",
    "get_method",
    "register",
]
