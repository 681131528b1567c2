"""Which layers explain a YOLO detection: the neck outputs its head reads (one per pyramid
level), the backbone's stages at the head's strides, and the level an anchor lies on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import nn

from taskcam.adapters.ultralytics.raw import yolo_head
from taskcam.capture import ModelState
from taskcam.errors import TaskcamError

__all__ = ["backbone_stages", "candidate_layer", "default_layers"]


def default_layers(model: nn.Module) -> list[str]:
    """Names of the modules feeding the Detect/Segment head: the neck outputs, finest first.

    ``model.model[-1].f`` indexes them (``["model.15", "model.18", "model.21"]`` for YOLOv8:
    strides 8, 16, 32). The finest one receives gradient from every candidate, since the
    coarser levels are computed from it; :func:`candidate_layer` picks the level a candidate
    was predicted on.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> default_layers(load_yolo("yolov8n.yaml"))
        ['model.15', 'model.18', 'model.21']
    """
    head = yolo_head(model)
    return [f"model.{i}" for i in head.f]


def backbone_stages(model: nn.Module) -> list[str]:
    """The backbone's last layer at each stride the head predicts at, finest first.

    The backbone is the yaml's ``backbone`` section (``model.yaml``); each layer's stride is
    measured on a blank input. For YOLOv8 that is ``["model.4", "model.6", "model.9"]``
    (strides 8, 16, 32; ``model.9`` is SPPF), for YOLO11 ``["model.4", "model.6", "model.10"]``.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> backbone_stages(load_yolo("yolov8n.yaml"))
        ['model.4', 'model.6', 'model.9']
    """
    head = yolo_head(model)
    yaml = getattr(model, "yaml", None)
    if not isinstance(yaml, dict) or not isinstance(yaml.get("backbone"), list):
        raise TaskcamError(
            f"{type(model).__name__} has no yaml with a backbone section; name the layers"
        )
    count = len(yaml["backbone"])
    strides = [int(s) for s in head.stride.tolist()]
    side = 2 * max(strides)
    heights: dict[int, int] = {}

    def record(i: int, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            heights[i] = out.shape[-2]

    hooks = [
        model.model[i].register_forward_hook(lambda _m, _i, out, i=i: record(i, out))
        for i in range(count)
    ]
    param = next(iter(model.parameters()), torch.zeros(()))
    state = ModelState(model)
    try:
        state.eval_and_freeze(False)  # batch norms keep their statistics
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
        state.restore()
    out = []
    for stride in strides:
        at = [i for i, h in heights.items() if h * stride == side]
        if not at:
            raise TaskcamError(f"the backbone of {type(model).__name__} has no stride {stride}")
        out.append(f"model.{max(at)}")
    return out


def candidate_layer(model: nn.Module, candidate: int, size: Union[int, Sequence[int]]) -> str:
    """Name of the neck output at the stride where ``candidate`` was predicted.

    Args:
        model: the YOLO model.
        candidate: an index into the anchor dimension ``A`` of :func:`raw_predictions`.
        size: the input's ``S`` or ``(H, W)``.

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> m = load_yolo("yolov8n.yaml")
        >>> candidate_layer(m, 0, 256), candidate_layer(m, 1343, 256)
        ('model.15', 'model.21')
    """
    head = yolo_head(model)
    h, w = (size, size) if isinstance(size, int) else size
    start = 0
    for i, stride in zip(head.f, head.stride.tolist()):
        count = int(h // stride) * int(w // stride)
        if candidate < start + count:
            return f"model.{i}"
        start += count
    raise TaskcamError(f"candidate {candidate} is out of range: {start} anchors at {h}x{w}")
