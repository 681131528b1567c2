"""The method registry: ``name -> Method``, filled from one explicit list, :data:`BUILTIN`.

``taskcam methods`` lists the registry in this order; :func:`register` adds a method of yours.
The attention methods (``rollout``, ``grad-rollout``, ``legrad``) live with the rest of the
attention code, in :mod:`taskcam.attention.relevance`, and come last.
"""

from taskcam.attention.cross_attention import DetrAttention
from taskcam.attention.relevance import GradRollout, LeGrad, Rollout
from taskcam.methods.base import (
    CamTerms,
    LayerContext,
    Method,
    available_methods,
    get_method,
    register,
    unregister,
)
from taskcam.methods.drise import DRISE, FastDRISE
from taskcam.methods.eigen import EigenCAM, EigenGradCAM
from taskcam.methods.gradient import (
    CAM,
    ODAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from taskcam.methods.guided import GuidedBackprop, GuidedGradCAM
from taskcam.methods.perturbation import AblationCAM, FastAblationCAM, FastScoreCAM, ScoreCAM
from taskcam.methods.rise import RISE

#: every method taskcam ships, registered in this order (the order ``taskcam methods`` lists)
BUILTIN: tuple[type[Method], ...] = (
    GradCAM,
    GradCAMPlusPlus,
    XGradCAM,
    HiResCAM,
    GradCAMElementWise,
    LayerCAM,
    ODAM,
    CAM,
    EigenCAM,
    EigenGradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    ScoreCAM,
    AblationCAM,
    FastScoreCAM,
    FastAblationCAM,
    RISE,
    FastDRISE,  # before drise: the attention methods and drise are listed last
    DRISE,
    Rollout,
    GradRollout,
    LeGrad,
    DetrAttention,
)

for _method in BUILTIN:
    register(_method)

__all__ = [
    "BUILTIN",
    "CAM",
    "AblationCAM",
    "CamTerms",
    "DRISE",
    "EigenCAM",
    "EigenGradCAM",
    "FastAblationCAM",
    "FastDRISE",
    "FastScoreCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "DetrAttention",
    "GradRollout",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LayerContext",
    "LeGrad",
    "RISE",
    "Method",
    "ODAM",
    "Rollout",
    "ScoreCAM",
    "XGradCAM",
    "available_methods",
    "get_method",
    "register",
    "unregister",
]
