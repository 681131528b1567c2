"""The ``effdet`` package, imported only when an EfficientDet is explained, and what taskcam
reads from it: a model's config and input pipeline, and the COCO names of its class ids."""

from __future__ import annotations

import importlib
import warnings
from typing import Any, Optional

from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["coco_names", "effdet_module", "input_config", "is_effdet", "unwrap"]

_BENCHES = ("DetBenchPredict", "DetBenchTrain")


def effdet_module(name: str = "") -> Any:
    """``effdet`` or one of its modules (``"anchors"``, ``"data.transforms"``).

    Importing ``effdet`` scripts its bench with ``torch.jit.script``, which newer PyTorch
    warns about (a ``FutureWarning`` naming no user code): that warning is silenced here.

    Raises:
        TaskcamError: effdet is not installed (the message says how to install it).

    Example:
        >>> effdet_module("anchors").__name__
        'effdet.anchors'
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            package = importlib.import_module("effdet")
    except ImportError as e:
        raise TaskcamError(
            "EfficientDet models need Ross Wightman's effdet: pip install 'taskcam[effdet]' "
            f"({type(e).__name__}: {e})"
        ) from e
    return importlib.import_module(f"effdet.{name}") if name else package


def _is_efficientdet(model: Any) -> bool:
    return any(
        c.__name__ == "EfficientDet" and c.__module__.startswith("effdet")
        for c in type(model).__mro__
    )


def is_effdet(model: Any) -> bool:
    """Whether ``model`` is an effdet ``EfficientDet``, or a ``DetBenchPredict`` /
    ``DetBenchTrain`` wrapping one (read from class names: effdet is not imported).

    Example:
        >>> is_effdet(nn.Linear(2, 2))
        False
    """
    if type(model).__name__ in _BENCHES and type(model).__module__.startswith("effdet"):
        model = getattr(model, "model", None)
    return isinstance(model, nn.Module) and _is_efficientdet(model)


def unwrap(model: Any) -> nn.Module:
    """The ``EfficientDet`` of ``model`` (itself, or the one a bench wraps).

    Raises:
        TaskcamError: ``model`` is no EfficientDet (the message names its class).
    """
    if not is_effdet(model):
        raise TaskcamError(
            f"model: expected an effdet EfficientDet (or a DetBenchPredict wrapping one), got "
            f"a {type(model).__name__}"
        )
    return model if _is_efficientdet(model) else model.model


def input_config(config: Any) -> dict[str, Any]:
    """effdet's eval input pipeline for a model config, as its ``validate.py`` resolves it
    (``resolve_input_config`` with no overrides): ``input_size`` ``(3, h, w)``,
    ``interpolation`` (bicubic unless the config names one), ``mean`` and ``std`` (ImageNet's
    unless the config has its own, as the ``-lite`` models do) and the padding's
    ``fill_color`` (the mean, as uint8 RGB).

    Example:
        >>> cfg = effdet_module().get_efficientdet_config("tf_efficientdet_lite0")
        >>> c = input_config(cfg)
        >>> c["input_size"], c["interpolation"], c["mean"], c["fill_color"]
        ((3, 320, 320), 'bicubic', (0.5, 0.5, 0.5), (128, 128, 128))
    """
    data = effdet_module("data")
    transforms = effdet_module("data.transforms")
    resolved = data.resolve_input_config({}, model_config=config)
    resolved["mean"] = tuple(float(v) for v in resolved["mean"])
    resolved["std"] = tuple(float(v) for v in resolved["std"])
    resolved["fill_color"] = tuple(
        transforms.resolve_fill_color(resolved["fill_color"], resolved["mean"])
    )
    return resolved


def coco_names(num_classes: int) -> Optional[list[str]]:
    """Names by effdet class id for a model of ``num_classes`` classes: for effdet's COCO
    models (90 classes, output ids 1..90 = COCO category ids, gaps included) the 91 names
    ``["__background__", "person", ..., "toothbrush"]`` (torchvision's COCO category list,
    read offline); None for other class counts.

    Example:
        >>> names = coco_names(90)
        >>> len(names), names[1], names[12], names[90]
        (91, 'person', 'N/A', 'toothbrush')
    """
    if num_classes != 90:
        return None
    from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

    return list(FasterRCNN_ResNet50_FPN_Weights.DEFAULT.meta["categories"])
