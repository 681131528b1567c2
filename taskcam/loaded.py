"""A loaded model and how to feed it: the value every run path, adapter and zoo entry shares.

Imports nothing from taskcam, so that the model specs (:mod:`taskcam.models`), the zoo and the
adapters can all build and read it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "Preprocess",
    "SharedModules",
    "imagenet_class_names",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """How images are turned into model input: resize to ``size`` (h, w), then normalise."""

    size: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


@dataclass
class LoadedModel:
    """A model ready to explain, with what the CLI needs to feed and describe it.

    For a transformer classifier (timm ViT / DeiT / Swin, torchvision ViT / Swin, a Hugging
    Face vision transformer from a factory), :func:`taskcam.models.load_model` fills
    ``layers`` with the default target layer (:func:`taskcam.layers.default_layer`) and
    ``reshape`` with the transform its output needs at the preprocessing size
    (:func:`taskcam.reshape.infer_reshape`).

    Attributes:
        model: the network, in eval mode.
        spec: the ``--model`` spec it was loaded from.
        task: ``classify``, ``detect`` or ``segment``.
        preprocess: input size and normalisation.
        class_names: names by class id, or None.
        layers: preferred target layers; None: found automatically.
        reshape: turns the default layer's token output into a grid, or None.
        adapter: the detector adapter (YOLO's is made at load; torchvision's on demand by
            :func:`taskcam.adapters.adapter_for`), else None.

    Example:
        >>> LoadedModel(nn.Linear(2, 2), "pkg.mod:net").is_detector
        False
    """

    model: nn.Module
    spec: str
    task: str = "classify"
    preprocess: Preprocess = field(default_factory=Preprocess)
    class_names: Optional[list[str]] = None
    layers: Optional[list[str]] = None
    reshape: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    adapter: Optional[Any] = None

    @property
    def is_detector(self) -> bool:
        """Explained detection by detection: detectors, and instance segmenters (YOLO-seg,
        whose instances are detections with masks)."""
        return self.task == "detect" or self.adapter is not None


def imagenet_class_names() -> list[str]:
    """The 1,000 ImageNet class names, read offline from torchvision's weights metadata.

    Example:
        >>> imagenet_class_names()[285]
        'Egyptian cat'
    """
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


class SharedModules(nn.Module):
    """A view of another model: it holds that model's children (and direct parameters) under
    their own names, so layer names, state dict keys and ``.to()`` are the model's, while a
    subclass's ``forward`` calls the model itself (``self.wrapped``) and turns its output
    into what taskcam reads (Hugging Face segmenters' logits, a YOLO classifier's logits).

    Example:
        >>> class Doubled(SharedModules):
        ...     def forward(self, x):
        ...         return 2 * self.wrapped(x)
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> [name for name, _ in Doubled(net).named_modules()]
        ['', '0']
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "wrapped", model)  # not a child: its children are ours
        for name, child in model.named_children():
            self.add_module(name, child)
        for name, param in model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        if hasattr(model, "config"):  # Hugging Face models: read for their token layout
            self.config = model.config

    # The view's mode flag is the model's own (which its forward may read), so that restoring
    # a run's saved flags puts the user's model back in its mode, not only this view.
    @property  # type: ignore[override]
    def training(self) -> bool:
        wrapped = self.__dict__.get("wrapped")
        return self.__dict__.get("_training", True) if wrapped is None else wrapped.training

    @training.setter
    def training(self, mode: bool) -> None:
        wrapped = self.__dict__.get("wrapped")
        if wrapped is None:  # nn.Module.__init__, before the model is there
            self.__dict__["_training"] = mode
        else:
            wrapped.training = mode

    def _apply(self, fn: Any, recurse: bool = True) -> SharedModules:
        super()._apply(fn, recurse)
        for name, buf in self.wrapped.named_buffers(recurse=False):  # not shared: moved there
            self.wrapped._buffers[name] = fn(buf)
        return self

    def extra_repr(self) -> str:
        return f"wraps {type(self.wrapped).__name__}"
