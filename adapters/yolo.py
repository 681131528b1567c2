"""Ultralytics YOLO adapter: detections and instances explained through the plain ``nn.Module``.

``YOLO.predict`` runs under ``torch.inference_mode`` and hides which anchor produced a box, so
this adapter works on the underlying ``DetectionModel`` / ``SegmentationModel`` instead:

1. :func:`letterbox` prepares an image exactly as ultralytics does (gray 114 padding);
2. :func:`detect` runs the model once without gradients and applies its own NMS over the raw
   anchor candidates, so each kept detection remembers its *candidate* (anchor index);
3. :class:`YoloDetectionTarget` reads that candidate's class score (or a box side) from the
   raw predictions of any later forward, which is differentiable;
4. the engine explains all detections of an image in one forward and one batched backward, and
   :meth:`LetterboxInfo.map_to_image` brings the maps back to the original image.

What this relies on in ultralytics 8.x (``ultralytics/nn/modules/head.py``), eval mode:

* ``Detect.forward`` returns ``(y, preds)`` with ``y: Tensor[B, 4 + nc, A]``: boxes as
  ``cx, cy, w, h`` in input pixels, then the sigmoid of the class logits; ``A`` runs over the
  anchors of every level, finest stride first, row-major within a level. ``preds`` is a dict
  (older releases: a list of per-level feature maps). In export mode ``y`` comes alone.
* ``Segment.forward`` returns ``((y, protos), preds)`` with ``y: Tensor[B, 4 + nc + nm, A]``
  (mask coefficients last) and ``protos: Tensor[B, nm, H/4, W/4]``; older releases returned
  ``(y, (feats, mc, protos))``, and export mode ``(y, protos)``. All of these are accepted.
* End-to-end heads (YOLOv10, YOLO26; ``head.end2end`` on) put top-k rows
  ``x1, y1, x2, y2, score, class`` first, with no anchor index, and the raw outputs of both
  branches in a dict: ``preds["one2one"]`` holds the one-to-one branch's box distances, class
  logits (and mask coefficients) per anchor, computed in eval mode from the neck outputs
  themselves, so gradients reach them. ``predict`` returns the one-to-one branch's detections
  (top-k over anchors × classes, no NMS), so that branch is what is explained: the head decodes
  ``preds["one2one"]`` into per-anchor candidates (``Tensor[B, 4 + nc (+ nm), A]``, boxes turned
  into ``cx, cy, w, h``), :func:`detect` selects from them as ``predict`` does, and targets read
  them; such targets need the model (:meth:`YoloAdapter.targets`, or ``model=`` of
  :func:`detection_targets`). The model's ``end2end`` flag is left as it is: with it off, the
  head's one-to-many output and NMS are explained, as ``predict`` would then use. Releases
  whose one-to-one outputs are a list of detached per-level maps (before 8.4) are refused with a
  message. Training mode returns a dict and is refused.

Example:
    >>> import numpy as np, taskcam
    >>> model = load_yolo("yolov8n.yaml", nc=4)  # random weights
    >>> x, info = letterbox(np.zeros((200, 320, 3), np.uint8), size=256)
    >>> dets = detect(model, x, conf=0.0, max_det=2)
    >>> exp = taskcam.explain(model, x, detection_targets(dets), layers=default_layers(model)[:1])
    >>> info.map_to_image(exp.maps).shape
    torch.Size([1, 2, 200, 320])
"""

from __future__ import annotations

import ast
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskcam.adapters.detection import (
    Candidates,
    Detections,
    DetectionTarget,
    cxcywh_to_xyxy,
    keypoint_what,
    model_class_names,
)
from taskcam.errors import TaskcamError
from taskcam.loaded import SharedModules

__all__ = [
    "Detections",
    "LetterboxInfo",
    "YoloAdapter",
    "YoloDetectionTarget",
    "YoloClassifier",
    "YoloInstanceTarget",
    "YoloObbTarget",
    "YoloPoseTarget",
    "backbone_stages",
    "candidate_layer",
    "default_layers",
    "detect",
    "detection_targets",
    "letterbox",
    "load_yolo",
    "raw_predictions",
    "rotated_corners",
    "yolo_task",
]

PAD_VALUE = 114
"""Gray level of ultralytics' letterbox padding."""
_TASKS = ("detect", "segment", "pose", "obb")  # what YoloAdapter explains box by box
_LOADABLE = (*_TASKS, "classify")  # what load_yolo builds (classifiers: YoloClassifier)


# -- loading -------------------------------------------------------------------------------------
def _ultralytics() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        import ultralytics  # noqa: F401
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise TaskcamError("YOLO models need ultralytics (pip install 'taskcam[yolo]')") from e


def yolo_task(model: Any, tasks: Sequence[str] = _TASKS) -> str:
    """The task of a loaded ultralytics model, checked to be one of ``tasks`` (by default
    ``"detect"``, ``"segment"`` or ``"pose"``: those the detection adapter explains).

    Args:
        model: an ultralytics ``BaseModel`` (``DetectionModel``, ``ClassificationModel``...).
        tasks: the tasks accepted.

    Raises:
        TaskcamError: another task (obb, a classifier where detections are wanted); the
            message names it.
    """
    _ultralytics()
    from ultralytics.nn.tasks import guess_model_task

    # The architecture decides, from the yaml's head module when there is one: ``model.task``
    # and ``model.args`` may hold ultralytics' default train args ("detect").
    cfg = getattr(model, "yaml", None)
    task = _rtdetr_task(cfg) or guess_model_task(cfg if isinstance(cfg, dict) else model)
    if task not in tasks:
        raise TaskcamError(
            f"{type(model).__name__} is a {task!r} model; taskcam explains ultralytics "
            f"{', '.join(tasks)} models here"
        )
    return task


def load_yolo(path_or_yaml: Union[str, Path], *, nc: Optional[int] = None) -> nn.Module:
    """The ``nn.Module`` of an ultralytics detection or segmentation model, float32, eval mode.

    Args:
        path_or_yaml: a local ``.pt`` checkpoint; an ONNX file exported by ultralytics, whose
            PyTorch model is rebuilt from the export's weights (needs ``onnx``); or a model yaml
            (a local file or one bundled with ultralytics such as ``"yolov8n-seg.yaml"``,
            built with random weights).
        nc: number of classes for a yaml (default: the yaml's own); for a ``.pt`` it must
            match the checkpoint if given.

    Returns:
        A ``DetectionModel`` or ``SegmentationModel``; ``model.names`` maps class ids to names.

    Raises:
        TaskcamError: a missing file, an unknown suffix, a task other than detect/segment,
            an ONNX file that is not an ultralytics export of a known architecture, or ``nc``
            that disagrees with a checkpoint.

    Example:
        >>> type(load_yolo("yolov8n-seg.yaml", nc=3)).__name__
        'SegmentationModel'
    """
    _ultralytics()
    from ultralytics.nn.tasks import (
        ClassificationModel,
        DetectionModel,
        OBBModel,
        PoseModel,
        RTDETRDetectionModel,
        SegmentationModel,
        guess_model_task,
        load_checkpoint,
        yaml_model_load,
    )

    path = Path(path_or_yaml)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        try:
            cfg = yaml_model_load(path)
        except (FileNotFoundError, OSError) as e:
            raise TaskcamError(
                f"YOLO model yaml {str(path_or_yaml)!r} not found (neither a local file nor "
                "one bundled with ultralytics)"
            ) from e
        task = _rtdetr_task(cfg) or guess_model_task(cfg)
        if task not in _LOADABLE:
            raise TaskcamError(
                f"{path_or_yaml}: the yaml builds a {task!r} model; taskcam explains "
                f"ultralytics {', '.join(_LOADABLE)} models"
            )
        cls = {
            "segment": SegmentationModel,
            "pose": PoseModel,
            "obb": OBBModel,
            "classify": ClassificationModel,
        }.get(task, RTDETRDetectionModel if _rtdetr_task(cfg) else DetectionModel)
        scales = cfg.get("scales")
        if isinstance(scales, dict) and scales and not cfg.get("scale"):
            # rtdetr-l.yaml: a scale ultralytics' guess (yolov8n...) does not read, so it logs
            suffix = path.stem.rsplit("-", 1)[-1]
            cfg["scale"] = suffix if suffix in scales else next(iter(scales))
        if nc is not None:
            cfg["nc"] = nc  # set here rather than overridden (and logged) by ultralytics
        model = cls(cfg, nc=nc, verbose=False)
        model.task = task
        model.names = {i: str(i) for i in range(_head_classes(model))}
    elif suffix == ".pt":
        if not path.is_file():
            raise TaskcamError(f"YOLO weights {str(path_or_yaml)!r} not found")
        try:
            model, _ = load_checkpoint(str(path))
        except Exception as e:  # noqa: BLE001 - torch.load and ultralytics raise many types
            raise TaskcamError(
                f"{path_or_yaml}: not an ultralytics checkpoint ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:300]})"
            ) from e
        try:
            yolo_task(model, _LOADABLE)
        except TaskcamError as e:
            raise TaskcamError(f"{path_or_yaml}: {e}") from None
        head_nc = _head_classes(model)
        if nc is not None and nc != head_nc:
            raise TaskcamError(f"nc={nc} but the checkpoint {path_or_yaml} has {head_nc} classes")
    elif suffix == ".onnx":
        model = _load_onnx_export(path)
        if nc is not None and nc != model.model[-1].nc:
            raise TaskcamError(
                f"nc={nc} but the export {path_or_yaml} has {model.model[-1].nc} classes"
            )
    else:
        raise TaskcamError(
            "path_or_yaml: expected a .pt checkpoint, an ultralytics .onnx export or a .yaml "
            f"model, got {str(path_or_yaml)!r}"
        )
    # an end-to-end head keeps its flag: its one-to-one branch is what predict returns
    return model.float().eval()


# The architectures an ONNX export is matched against, per task; each with scales n, s, m, l, x.
_ONNX_FAMILIES = {
    "detect": (
        "yolov8{}.yaml",
        "yolo11{}.yaml",
        "yolov5{}u.yaml",
        "yolo26{}.yaml",
        "yolo12{}.yaml",
    ),
    "segment": ("yolov8{}-seg.yaml", "yolo11{}-seg.yaml", "yolo26{}-seg.yaml"),
}


def _load_onnx_export(path: Path) -> nn.Module:
    """Rebuild the PyTorch model of an ultralytics ONNX export (``yolo export format=onnx``).

    Gradients need PyTorch, and an export keeps what it takes to rebuild one: ultralytics
    writes the task, class names and input size into the file's metadata, and names each
    weight after its module (``model.0.conv.weight``), with batch norms folded into the
    convolutions. Each architecture of the export's task whose first convolution and layer
    count fit is built, fused the way ultralytics fuses before exporting, and kept when its
    parameter names and shapes equal the export's; the export's weights are then loaded.
    """
    if not path.is_file():
        raise TaskcamError(f"YOLO ONNX export {str(path)!r} not found")
    try:
        import onnx
    except ImportError as e:
        raise TaskcamError(f"{path}: reading an ONNX export needs onnx (pip install onnx)") from e
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends vary by version
        raise TaskcamError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e
    task, names, imgsz = _export_metadata(path, proto)
    return _rebuild_export(path, task, names, imgsz, _export_weights(proto))


def _export_metadata(path: Path, proto: Any) -> tuple[str, dict, Any]:
    """``(task, names, imgsz)`` from an ultralytics export's metadata, checked."""
    meta = {p.key: p.value for p in proto.metadata_props}
    if "task" not in meta or "names" not in meta:
        raise TaskcamError(
            f"{path}: not an ultralytics export (its metadata has no 'task' and 'names'; "
            f"found {sorted(meta) or 'none'})"
        )
    task = meta["task"]
    if task not in ("detect", "segment"):
        raise TaskcamError(
            f"{path}: the export is a {task!r} model; the YOLO adapter explains detect and "
            "segment models only"
        )
    try:
        names = ast.literal_eval(meta["names"])  # {0: 'person', ...}
        imgsz = ast.literal_eval(meta.get("imgsz", "640"))  # [640, 640]
    except (ValueError, SyntaxError):
        names = imgsz = None
    if not isinstance(names, dict) or not isinstance(imgsz, (int, list, tuple)):
        raise TaskcamError(
            f"{path}: unreadable ultralytics metadata: names={meta['names'][:80]!r}, "
            f"imgsz={meta.get('imgsz')!r} (expected a dict of class names and a size)"
        )
    return task, names, imgsz


def _export_weights(proto: Any) -> dict[str, np.ndarray]:
    """The export's ``model.*`` tensors by module name, each convolution's bias named after
    its weight."""
    from onnx import numpy_helper

    tensors = {init.name: numpy_helper.to_array(init) for init in proto.graph.initializer}
    # Equal tensors (zero biases, say) are stored once: exporters name them again through an
    # Identity node, and simplifiers point each convolution at the one copy. So a
    # convolution's bias is named after its weight, whatever tensor it reads.
    for node in proto.graph.node:
        if node.op_type == "Identity" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    for node in proto.graph.node:
        inputs = list(node.input)
        if node.op_type != "Conv" or len(inputs) != 3 or inputs[2] not in tensors:
            continue
        if inputs[1].endswith(".weight"):
            tensors[inputs[1].removesuffix("weight") + "bias"] = tensors[inputs[2]]
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _rebuild_export(
    path: Path, task: str, names: dict, imgsz: Any, weights: dict[str, np.ndarray]
) -> nn.Module:
    """The fused ultralytics architecture whose parameters are the export's, weights loaded."""
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel, yaml_model_load

    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    first = shapes.get("model.0.conv.weight")
    indices = [int(k.split(".")[1]) for k in shapes if k.split(".")[1].isdigit()]
    layers = 1 + max(indices, default=-1)
    tried = []
    for family in _ONNX_FAMILIES[task]:
        for scale in "nsmlx":
            name = family.format(scale)
            try:
                cfg = yaml_model_load(name)
            except (FileNotFoundError, OSError):  # a family newer than this ultralytics
                break
            _, width, max_channels = cfg["scales"][scale]
            c_out, kernel = cfg["backbone"][0][3][:2]
            c_out = math.ceil(min(c_out, max_channels) * width / 8) * 8
            if len(cfg["backbone"]) + len(cfg["head"]) != layers or first is None:
                continue
            if first[0] != c_out or first[2] != kernel:
                continue
            tried.append(name)
            cls = SegmentationModel if task == "segment" else DetectionModel
            cfg["nc"] = len(names)
            model = cls(cfg, nc=len(names), verbose=False).eval()
            model.fuse(verbose=False)
            if {k: tuple(v.shape) for k, v in model.state_dict().items()} != shapes:
                continue
            model.load_state_dict(
                {k: torch.from_numpy(v.astype(np.float32)) for k, v in weights.items()}
            )
            model.task = task
            model.names = {int(k): str(v) for k, v in names.items()}
            model.args = {"task": task, "imgsz": imgsz}
            return model
    compared = ", ".join(tried) or "none has its first convolution and layer count"
    raise TaskcamError(
        f"{path}: no ultralytics {task} architecture has this export's weights "
        f"({len(shapes)} named tensors in {layers} layers; compared: {compared})"
    )


def default_layers(model: nn.Module) -> list[str]:
    """Names of the modules feeding the Detect/Segment head: the neck outputs, finest first.

    ``model.model[-1].f`` indexes them (``["model.15", "model.18", "model.21"]`` for YOLOv8:
    strides 8, 16, 32). The finest one receives gradient from every candidate, since the
    coarser levels are computed from it; :func:`candidate_layer` picks the level a candidate
    was predicted on.

    Example:
        >>> default_layers(load_yolo("yolov8n.yaml"))
        ['model.15', 'model.18', 'model.21']
    """
    head = _head(model)
    return [f"model.{i}" for i in head.f]


def backbone_stages(model: nn.Module) -> list[str]:
    """The backbone's last layer at each stride the head predicts at, finest first.

    The backbone is the yaml's ``backbone`` section (``model.yaml``); each layer's stride is
    measured on a blank input. For YOLOv8 that is ``["model.4", "model.6", "model.9"]``
    (strides 8, 16, 32; ``model.9`` is SPPF), for YOLO11 ``["model.4", "model.6", "model.10"]``.

    Example:
        >>> backbone_stages(load_yolo("yolov8n.yaml"))
        ['model.4', 'model.6', 'model.9']
    """
    head = _head(model)
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
    training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()  # batch norms keep their statistics
        with torch.no_grad():
            model(torch.zeros(1, 3, side, side, device=param.device, dtype=param.dtype))
    finally:
        for h in hooks:
            h.remove()
        for m, flag in training:
            m.training = flag
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
        >>> m = load_yolo("yolov8n.yaml")
        >>> candidate_layer(m, 0, 256), candidate_layer(m, 1343, 256)
        ('model.15', 'model.21')
    """
    head = _head(model)
    h, w = (size, size) if isinstance(size, int) else size
    start = 0
    for i, stride in zip(head.f, head.stride.tolist()):
        count = int(h // stride) * int(w // stride)
        if candidate < start + count:
            return f"model.{i}"
        start += count
    raise TaskcamError(f"candidate {candidate} is out of range: {start} anchors at {h}x{w}")


def _rtdetr_task(cfg: Any) -> Optional[str]:
    """``"detect"`` for an RT-DETR yaml (its ``RTDETRDecoder`` head), which ultralytics'
    task guess does not name; else None."""
    head = cfg.get("head") if isinstance(cfg, dict) else None
    last = head[-1] if isinstance(head, list) and head else None
    return "detect" if isinstance(last, list) and "RTDETRDecoder" in map(str, last) else None


def _head_classes(model: nn.Module) -> int:
    """How many classes the model's head predicts (a ``Classify`` head: its linear layer's)."""
    head = model.model[-1]
    if isinstance(getattr(head, "nc", None), int):
        return int(head.nc)
    return int(head.linear.out_features)


class YoloClassifier(SharedModules):
    """An ultralytics ``ClassificationModel`` (``yolov8n-cls``, ``yolo11n-cls``) whose output
    is its class logits ``Tensor[B, K]``: in eval mode the model itself returns
    ``(softmax, logits)``, and CAMs explain the logits. Layer names are the model's own
    (``model.8``: the last stage before the ``Classify`` head, ``model.9``).

    Example:
        >>> net = YoloClassifier(load_yolo("yolov8n-cls.yaml", nc=3))
        >>> net(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, 3, H, W] in [0, 1]
        out = self.wrapped(x)
        return out[1] if isinstance(out, (tuple, list)) else out


def _head(model: nn.Module) -> nn.Module:
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not hasattr(layers[-1], "f"):
        raise TaskcamError(f"{type(model).__name__} is not an ultralytics YOLO model")
    return layers[-1]


# -- letterbox -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LetterboxInfo:
    """How :func:`letterbox` placed an image on the ``S × S`` input, to undo it.

    Attributes:
        height, width: the original image's size.
        size: the input side ``S``.
        ratio: the scale applied, ``min(S / height, S / width)``.
        left, top: the padding before the resized image, in input pixels.
        new_width, new_height: the resized image's size inside the input.
    """

    height: int
    width: int
    size: int
    ratio: float
    left: int
    top: int
    new_width: int
    new_height: int

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> original-image pixels, clipped to the image."""
        offset = boxes.new_tensor([self.left, self.top, self.left, self.top])
        out = (boxes - offset) / self.ratio
        limit = boxes.new_tensor([self.width, self.height, self.width, self.height])
        return torch.minimum(out.clamp(min=0), limit)

    def boxes_to_input(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in original-image pixels -> input pixels."""
        offset = boxes.new_tensor([self.left, self.top, self.left, self.top])
        return boxes * self.ratio + offset

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., S, S]`` -> ``Tensor[..., height, width]``: crop the padding, resize.

        Bilinear resizing keeps maps in [0, 1] in [0, 1].
        """
        if maps.shape[-2:] != (self.size, self.size):
            raise TaskcamError(
                f"maps: expected Tensor[..., {self.size}, {self.size}], got {tuple(maps.shape)}"
            )
        crop = maps[
            ..., self.top : self.top + self.new_height, self.left : self.left + self.new_width
        ]
        lead = crop.shape[:-2]
        flat = crop.reshape(-1, 1, *crop.shape[-2:]).float()
        out = F.interpolate(
            flat, size=(self.height, self.width), mode="bilinear", align_corners=False
        )
        return out.reshape(*lead, self.height, self.width).to(maps.dtype)


def letterbox(
    image: np.ndarray, size: int = 640, stride: int = 32
) -> tuple[torch.Tensor, LetterboxInfo]:
    """Resize keeping the aspect ratio and pad to ``size × size``, as ultralytics does.

    Same arithmetic as ``ultralytics.data.augment.LetterBox(auto=False)``: scale
    ``r = min(S / h, S / w)``, bilinear resize to ``round(w r) × round(h r)``, gray 114 padding
    split evenly (the odd pixel goes bottom/right).

    Args:
        image: ``uint8[H, W, 3]`` RGB.
        size: the input side ``S``; a multiple of ``stride``.
        stride: the model's largest stride.

    Returns:
        ``(x, info)``: ``x: Tensor[1, 3, S, S]`` float in [0, 1], and the placement.

    Example:
        >>> x, info = letterbox(np.zeros((200, 320, 3), np.uint8), size=256)
        >>> x.shape, info.top, info.new_height
        (torch.Size([1, 3, 256, 256]), 48, 160)
    """
    import cv2

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        got = getattr(image, "shape", type(image).__name__)
        raise TaskcamError(f"image: expected a uint8[H, W, 3] array, got {got}")
    if image.dtype != np.uint8:
        raise TaskcamError(f"image: expected dtype uint8, got {image.dtype}")
    if not isinstance(size, int) or size <= 0 or size % stride:
        raise TaskcamError(f"size: expected a positive multiple of stride {stride}, got {size!r}")
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    if (new_w, new_h) != (w, h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    padded = cv2.copyMakeBorder(
        image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3
    )
    x = torch.from_numpy(np.ascontiguousarray(padded)).permute(2, 0, 1)[None].float() / 255.0
    return x, LetterboxInfo(h, w, size, r, left, top, new_w, new_h)


# -- raw outputs ---------------------------------------------------------------------------------
def _split(
    output: Any, head: Optional[nn.Module] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(preds Tensor[B, 4 + nc (+ nm), A], protos Tensor[B, nm, h, w] or None)``."""
    preds, protos, _ = _parse(output, head)
    return preds, protos


def _parse(
    output: Any, head: Optional[nn.Module] = None
) -> tuple[torch.Tensor, Optional[torch.Tensor], bool]:
    """:func:`_split` plus whether the candidates are an end-to-end head's one-to-one branch."""
    if isinstance(output, dict):
        raise TaskcamError(
            "the YOLO output is a dict of raw head outputs (a model in training mode); call "
            "model.eval() first"
        )
    raw = None  # the head's raw outputs, when they come along
    if isinstance(output, torch.Tensor):
        preds, protos = output, None
    elif isinstance(output, (tuple, list)) and output:
        first = output[0]
        rest = output[1] if len(output) > 1 else None
        raw = rest if isinstance(rest, dict) else None
        if isinstance(first, (tuple, list)):  # ((y, protos), preds): Segment, 8.3+
            preds, protos = first[0], first[1] if len(first) > 1 else None
        elif isinstance(rest, torch.Tensor) and rest.ndim == 4:  # (y, protos): Segment export
            preds, protos = first, rest
        elif (
            isinstance(rest, (tuple, list))
            and len(rest) == 3
            and isinstance(rest[2], torch.Tensor)
            and rest[2].ndim == 4
        ):  # (y, (feats, mc, protos)): Segment before 8.3
            preds, protos = first, rest[2]
        else:  # (y, preds dict or per-level feature list): Detect
            preds, protos = first, None
    else:
        raise TaskcamError(f"cannot find YOLO predictions in a {type(output).__name__} output")
    if not isinstance(preds, torch.Tensor) or preds.ndim != 3:
        got = tuple(preds.shape) if isinstance(preds, torch.Tensor) else type(preds).__name__
        raise TaskcamError(f"YOLO predictions must be Tensor[B, 4 + nc, A], got {got}")
    nm = 0 if protos is None else protos.shape[1]
    if raw is not None and "one2one" in raw and not _per_anchor(preds, raw["one2one"], nm):
        return _one_to_one(raw["one2one"], head), protos, True
    # top-k rows of x1, y1, x2, y2, score, class (+ mask coefficients); a small input with
    # many classes can have fewer anchors than rows without being one
    if preds.shape[1] > preds.shape[2] and preds.shape[2] == 6 + nm:
        raise TaskcamError(
            f"YOLO predictions of shape {tuple(preds.shape)} look like end-to-end top-k output "
            "without the head's raw one-to-one outputs (an export-mode head), so no anchor "
            "is known; run the model with its head's export flag off"
        )
    return preds, protos, False


def _per_anchor(preds: torch.Tensor, one2one: Any, nm: int) -> bool:
    """Whether ``preds`` holds one column per anchor (the head's ``end2end`` is off) rather
    than top-k rows of ``6 + nm`` values."""
    if isinstance(one2one, dict) and isinstance(one2one.get("scores"), torch.Tensor):
        _, nc, anchors = one2one["scores"].shape  # [B, nc, A]
        return preds.shape[1:] == (4 + nc + nm, anchors)
    if isinstance(one2one, (list, tuple)):  # older releases: per-level [B, no, h, w] maps
        anchors = sum(t.shape[2] * t.shape[3] for t in one2one if t.ndim == 4)
        return preds.shape[2] == anchors and preds.shape[1] != 6 + nm
    return True


def _one_to_one(one2one: Any, head: Optional[nn.Module]) -> torch.Tensor:
    """``Tensor[B, 4 + nc (+ nm), A]``: an end-to-end head's one-to-one branch per anchor,
    decoded by the head itself, boxes as ``cx, cy, w, h``; differentiable."""
    if not isinstance(one2one, dict):
        raise TaskcamError(
            "this ultralytics release computes an end-to-end head's one-to-one branch on "
            "detached features and returns it as per-level maps, so its detections cannot be "
            "explained; upgrade ultralytics (8.4 or later), or set model.model[-1].end2end = "
            "False to explain the one-to-many branch (with NMS)"
        )
    if head is None:
        raise TaskcamError(
            "the model has an end-to-end head (YOLOv10, YOLO26): decoding its one-to-one "
            "predictions needs the model; build targets with YoloAdapter.targets or "
            "detection_targets(dets, model=model), or pass model= to raw_predictions"
        )
    decoded = head._inference(one2one)  # [B, 4 + nc (+ nm), A]
    if not (getattr(head, "end2end", True) or getattr(head, "xyxy", False)):
        return decoded  # boxes came out as cx, cy, w, h already
    x1, y1, x2, y2 = decoded[:, :4].unbind(1)
    boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=1)
    return torch.cat([boxes, decoded[:, 4:]], dim=1)


def raw_predictions(output: Any, model: Optional[nn.Module] = None) -> torch.Tensor:
    """``Tensor[B, 4 + nc (+ nm), A]``: every anchor's candidate in a YOLO model's eval output.

    Rows are ``cx, cy, w, h`` in input pixels, the ``nc`` sigmoid class scores, then (segment
    models) the ``nm`` mask coefficients. Columns are the ``A`` anchors of all levels, finest
    stride first. Gradients flow through it. For an end-to-end head (YOLOv10, YOLO26) these
    are its one-to-one branch's candidates, the ones ``predict`` selects from.

    Args:
        output: what ``model(x)`` returned in eval mode (tuple forms of ultralytics 8.x, see
            the module docstring).
        model: the model that produced ``output``; needed for end-to-end heads, whose head
            decodes its one-to-one outputs.

    Example:
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> raw_predictions(m(torch.rand(1, 3, 64, 64))).shape
        torch.Size([1, 8, 84])
    """
    return _split(output, None if model is None else _head(model))[0]


def _num_classes(
    preds: torch.Tensor, protos: Optional[torch.Tensor], head: Optional[nn.Module] = None
) -> int:
    if head is not None and isinstance(getattr(head, "nc", None), int):
        return int(head.nc)  # a pose head's keypoints follow the classes too
    return preds.shape[1] - 4 - (0 if protos is None else protos.shape[1])


# -- detection -----------------------------------------------------------------------------------
def _masks(
    coeffs: torch.Tensor, protos: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """``BoolTensor[N, H, W]``: sigmoid(coeffs @ protos) > 0.5, upsampled, cropped to the box."""
    nm, ph, pw = protos.shape
    logits = (coeffs @ protos.reshape(nm, -1)).reshape(-1, 1, ph, pw)  # [N, 1, h, w]
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]
    ys = torch.arange(size[0], device=boxes.device, dtype=boxes.dtype)[None, :, None]
    xs = torch.arange(size[1], device=boxes.device, dtype=boxes.dtype)[None, None, :]
    x1, y1, x2, y2 = (boxes[:, i, None, None] for i in range(4))
    inside = (xs >= x1) & (xs < x2) & (ys >= y1) & (ys < y2)
    return (logits > 0) & inside  # sigmoid > 0.5 <=> logit > 0


def detect(
    model: nn.Module,
    x: torch.Tensor,
    *,
    conf: float = 0.25,
    iou: float = 0.7,
    max_det: int = 100,
) -> list[Detections]:
    """Detect without gradients, keeping each detection's anchor candidate.

    Like ultralytics' ``predict``. For most heads, its default (single-label) NMS: each
    anchor keeps its best class, anchors scoring above ``conf`` go through per-class NMS
    (``torchvision.ops.batched_nms``), and the best ``max_det`` remain. For an end-to-end head
    (YOLOv10, YOLO26, ``end2end`` on), no NMS: the ``max_det`` best (anchor, class) pairs of
    its one-to-one branch that score above ``conf``, so an anchor can appear once per class.
    The model's train/eval flags are restored afterwards.

    Args:
        model: a YOLO ``DetectionModel`` or ``SegmentationModel``.
        x: ``Tensor[B, 3, H, W]`` in [0, 1] (see :func:`letterbox`).
        conf: minimum class score.
        iou: NMS IoU threshold (unused by end-to-end heads).
        max_det: detections kept per image.

    Returns:
        One :class:`Detections` per image, best score first.

    Example:
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> d = detect(m, torch.rand(1, 3, 64, 64), conf=0.0, max_det=3)[0]
        >>> d.boxes.shape, d.candidates.dtype
        (torch.Size([3, 4]), torch.int64)
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise TaskcamError(f"x: expected Tensor[B, 3, H, W], got {got}")
    if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0 or max_det < 1:
        raise TaskcamError(
            f"conf, iou in [0, 1] and max_det >= 1 expected, got {conf}, {iou}, {max_det}"
        )
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            preds, protos, end2end = _parse(model(x), _head(model))
    finally:
        for m, flag in flags:
            m.training = flag
    head = _head(model)
    nc = _num_classes(preds, protos, head)
    kpt_shape = _kpt_shape(head)
    if kpt_shape is not None and end2end:
        raise TaskcamError(
            f"{type(model).__name__}: an end-to-end pose head (YOLO26-pose) is not supported "
            "yet; YOLOv8 and YOLO11 pose models are"
        )
    if type(head).__name__ == "OBB" or getattr(head, "ne", 0):
        if end2end:
            raise TaskcamError(
                f"{type(model).__name__}: an end-to-end OBB head (YOLO26-obb) is not "
                "supported yet; YOLOv8 and YOLO11 OBB models are"
            )
        return [_obb_detections(p, nc, conf, iou, max_det) for p in preds]
    select = _top_pairs if end2end else _nms
    out: list[Detections] = []
    for b in range(preds.shape[0]):
        p = preds[b].T  # [A, 4 + nc (+ nm)]
        cand, cls = select(p, nc, conf, iou, max_det)
        boxes = cxcywh_to_xyxy(p[cand, :4])
        det = Detections(
            boxes=boxes,
            scores=p[cand, 4 + cls],
            classes=cls.long(),
            candidates=cand.long(),
        )
        if protos is not None:
            det.masks = _masks(p[cand, 4 + nc :], protos[b], boxes, tuple(x.shape[-2:]))
        if kpt_shape is not None:  # [n, K, D]: x, y (, visibility) in input pixels
            det.keypoints = p[cand, 4 + nc : 4 + nc + kpt_shape[0] * kpt_shape[1]].reshape(
                len(cand), *kpt_shape
            )
        out.append(det)
    return out


def rotated_corners(rboxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4, 2]``: the corners of rotated boxes ``Tensor[..., 5]`` (cx, cy, w, h,
    angle in radians), in order around the box.

    Example:
        >>> rotated_corners(torch.tensor([5.0, 5.0, 4.0, 2.0, 0.0])).tolist()
        [[7.0, 6.0], [3.0, 6.0], [3.0, 4.0], [7.0, 4.0]]
    """
    centre, w, h, angle = rboxes[..., :2], rboxes[..., 2], rboxes[..., 3], rboxes[..., 4]
    cos, sin = angle.cos(), angle.sin()
    along = torch.stack([w / 2 * cos, w / 2 * sin], dim=-1)  # half the width's vector
    across = torch.stack([-h / 2 * sin, h / 2 * cos], dim=-1)
    return torch.stack(
        [centre + along + across, centre - along + across, centre - along - across,
         centre + along - across],
        dim=-2,
    )  # fmt: skip


def _rotated_bounds(rboxes: torch.Tensor) -> torch.Tensor:
    """``Tensor[..., 4]`` xyxy: the axis-aligned box around each rotated box."""
    corners = rotated_corners(rboxes)
    return torch.cat([corners.amin(dim=-2), corners.amax(dim=-2)], dim=-1)


def _obb_detections(p: torch.Tensor, nc: int, conf: float, iou: float, max_det: int) -> Detections:
    """One image's oriented boxes as ultralytics' rotated NMS keeps them (its own function,
    asked for the kept candidates), ``p: Tensor[4 + nc + 1, A]`` (x, y, w, h, classes,
    angle); ``boxes`` are the rotated boxes' axis-aligned bounds, ``rboxes`` the boxes."""
    from ultralytics.utils.nms import non_max_suppression

    (rows,), (kept,) = non_max_suppression(
        p[None], conf, iou, nc=nc, max_det=max_det, rotated=True, return_idxs=True
    )  # rows: [n, 7] x, y, w, h, score, class, angle
    rboxes = torch.cat([rows[:, :4], rows[:, -1:]], dim=1)
    return Detections(
        boxes=_rotated_bounds(rboxes),
        scores=rows[:, 4],
        classes=rows[:, 5].long(),
        candidates=kept.long(),
        rboxes=rboxes,
    )


def _kpt_shape(head: nn.Module) -> Optional[tuple[int, int]]:
    """``(K, D)`` of a pose head (17 keypoints of x, y, visibility for COCO), else None."""
    shape = getattr(head, "kpt_shape", None)
    return None if shape is None else (int(shape[0]), int(shape[1]))


def _nms(
    p: torch.Tensor, nc: int, conf: float, iou: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidates, classes)`` kept by single-label per-class NMS over ``p: [A, 4 + nc...]``."""
    from torchvision.ops import batched_nms

    score, cls = p[:, 4 : 4 + nc].max(dim=1)  # [A]
    cand = torch.nonzero(score > conf if conf > 0 else score >= 0).flatten()
    keep = batched_nms(cxcywh_to_xyxy(p[cand, :4]), score[cand], cls[cand], iou)[:max_det]
    cand = cand[keep]
    return cand, cls[cand]


def _top_pairs(
    p: torch.Tensor, nc: int, conf: float, iou: float, max_det: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(candidates, classes)``: the best (anchor, class) pairs above ``conf``, best first.

    The selection of an end-to-end head: the ``k = min(max_det, A)`` anchors with the best
    class score, then the best ``k`` of their ``k × nc`` pairs (the same pairs as the best
    ``k`` over all anchors, found with less sorting), then those above ``conf``.
    """
    scores = p[:, 4 : 4 + nc]  # [A, nc]
    k = min(max_det, scores.shape[0])
    anchors = scores.amax(dim=1).topk(k).indices  # [k]
    best, pairs = scores[anchors].flatten().topk(k)  # [k]
    keep = best > conf if conf > 0 else best >= 0
    pairs = pairs[keep]
    return anchors[pairs // nc], pairs % nc


# -- targets -------------------------------------------------------------------------------------
class YoloDetectionTarget(DetectionTarget):
    """One candidate's class score, or one side of its box, from a YOLO model's output.

    Args:
        candidate: the anchor index (``Detections.candidates``).
        class_id: the class whose score is explained.
        what: ``"score"`` (the sigmoid class score) or a box side ``"x1" | "y1" | "x2" | "y2"``
            in input pixels.
        box: the detection's box (input pixels), needed by perturbation methods, which match
            it by D-RISE similarity (:meth:`perturbed`).
        layer: the neck level that predicted it (:func:`candidate_layer`), or None.
        model: the YOLO model; needed for an end-to-end head (YOLOv10, YOLO26), whose
            one-to-one outputs its head decodes into candidates (:func:`raw_predictions`).
            It takes no part in equality or ``repr``.

    A candidate beyond the output's anchors (a resized input) scores 0, as the engine's
    contract asks. Flips and rescales move anchors, so ``aug_smooth`` does not suit these
    targets. YOLOv8-style heads have no objectness; for D-RISE matching a candidate's
    objectness is its best class score.

    Example:
        >>> m = load_yolo("yolov8n.yaml", nc=4)
        >>> YoloDetectionTarget(5, 2)(m(torch.rand(2, 3, 64, 64))).shape
        torch.Size([2])
    """

    def __init__(
        self,
        candidate: int,
        class_id: int,
        what: str = "score",
        *,
        box: Optional[torch.Tensor] = None,
        layer: Optional[str] = None,
        model: Optional[nn.Module] = None,
    ) -> None:
        super().__init__(candidate, class_id, what, box=box, layer=layer)
        self.head = None if model is None else _head(model)

    def _preds(self, output: Any) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        preds, protos = _split(output, self.head)
        nc = _num_classes(preds, protos, self.head)
        if self.class_id >= nc:
            raise TaskcamError(f"class_id {self.class_id} does not exist: the model has {nc}")
        return preds, protos

    def _score(self, preds: torch.Tensor) -> torch.Tensor:
        if self.candidate >= preds.shape[2]:
            return preds.new_zeros(preds.shape[0])
        column = preds[:, :, self.candidate]  # [B, C]
        if self.what == "score":
            return column[:, 4 + self.class_id]
        side = ("x1", "y1", "x2", "y2").index(self.what)
        return cxcywh_to_xyxy(column[:, :4])[:, side]

    def __call__(self, output: Any) -> torch.Tensor:
        return self._score(self._preds(output)[0])

    def candidates(self, output: Any, class_id: int) -> Candidates:
        preds, protos = self._preds(output)
        nc = _num_classes(preds, protos, self.head)
        probs = preds[:, 4 : 4 + nc].transpose(1, 2)  # [B, A, nc]
        boxes = cxcywh_to_xyxy(preds[:, :4].transpose(1, 2))  # [B, A, 4]
        return Candidates(boxes, probs, objectness=probs.amax(dim=-1))


class YoloInstanceTarget(YoloDetectionTarget):
    """One instance of a YOLO segmentation model: its candidate's class score, or its mask.

    The class score is what ranks the instance and decides that it exists. Its mask is a
    linear mix of prototypes shared by all instances (YOLACT: Bolya et al., "YOLACT: Real-time
    Instance Segmentation", ICCV 2019): ``what="mask"`` explains the mask's logits
    ``coefficients · prototypes``, upsampled to the input as the mask is drawn, summed over
    the instance's own pixels (``region``: its mask at detection time, inside its box), as
    Seg-Grad-CAM sums a class region. Box sides work as in the parent class.

    Args:
        candidate, class_id, what, box, layer, model: as :class:`YoloDetectionTarget`; ``what``
            may also be ``"mask"``.
        region: ``BoolTensor[H, W]``, the instance's mask on the input grid (needed for
            ``"mask"``: :func:`detect` gives it as ``Detections.masks``).

    Raises:
        TaskcamError: when called on a detection model's output (no mask prototypes); a
            ``"mask"`` target without a region.
    """

    supports = (*YoloDetectionTarget.supports, "mask")

    def __init__(self, *args: Any, region: Optional[torch.Tensor] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.what == "mask" and (region is None or region.ndim != 2):
            got = None if region is None else tuple(region.shape)
            raise TaskcamError(
                f"what='mask': the instance's mask BoolTensor[H, W] is needed as region, got {got}"
            )
        self.region = None if region is None else region.detach().bool()

    def __call__(self, output: Any) -> torch.Tensor:
        preds, protos = self._preds(output)
        if protos is None:
            raise TaskcamError(
                "YoloInstanceTarget needs a segmentation model's output (mask prototypes); "
                "use YoloDetectionTarget for detection models"
            )
        if self.what != "mask":
            return self._score(preds)
        if self.candidate >= preds.shape[2]:
            return preds.new_zeros(preds.shape[0])
        assert self.region is not None
        nc = _num_classes(preds, protos)
        coeffs = preds[:, 4 + nc :, self.candidate]  # [B, nm]
        logits = torch.einsum("bm,bmhw->bhw", coeffs, protos)[:, None]  # [B, 1, h, w]
        region = self.region.to(logits.device)
        logits = F.interpolate(logits, size=region.shape, mode="bilinear", align_corners=False)
        return (logits[:, 0] * region).sum(dim=(1, 2))  # [B]


class YoloPoseTarget(YoloDetectionTarget):
    """One person (or object) of a YOLO pose model: its class score, a box side, or one
    keypoint's ``x``/``y`` (input pixels) or visibility: ``what="kpt3.x"``.

    The pose head (Jocher et al.'s YOLOv8-pose, after YOLO-Pose: Maji et al., CVPRW 2022)
    predicts each anchor's keypoints beside its box, so a keypoint's coordinate is one
    differentiable output of the detection's own anchor.

    Args:
        candidate, class_id, what, box, layer: as :class:`YoloDetectionTarget`; ``what`` may
            also be ``kptK.x | kptK.y | kptK.v``.
        model: the pose model (needed: its head says how many classes and keypoints there are).

    Raises:
        TaskcamError: no model, a keypoint index the model lacks (the message names how many
            it has) or a visibility the model does not predict.
    """

    def __init__(self, *args: Any, model: Optional[nn.Module] = None, **kwargs: Any) -> None:
        if model is None:
            raise TaskcamError("YoloPoseTarget needs the pose model (model=)")
        self.kpt_shape = _kpt_shape(_head(model))
        if self.kpt_shape is None:
            raise TaskcamError(f"YoloPoseTarget: {type(model).__name__} has no pose head")
        super().__init__(*args, model=model, **kwargs)

    def accepts(self, what: str) -> bool:
        kpt = keypoint_what(what)
        if kpt is None:
            return super().accepts(what)
        assert self.kpt_shape is not None
        count, dims = self.kpt_shape
        if kpt[0] >= count:
            raise TaskcamError(
                f"what={what!r}: keypoint {kpt[0]} does not exist: the model has {count} "
                f"keypoints (kpt0..kpt{count - 1})"
            )
        if kpt[1] >= dims:
            raise TaskcamError(f"what={what!r}: the model predicts no keypoint visibility")
        return True

    def __call__(self, output: Any) -> torch.Tensor:
        preds, _ = self._preds(output)
        kpt = keypoint_what(self.what)
        if kpt is None:
            return self._score(preds)
        if self.candidate >= preds.shape[2]:
            return preds.new_zeros(preds.shape[0])
        assert self.kpt_shape is not None and self.head is not None
        row = 4 + int(self.head.nc) + kpt[0] * self.kpt_shape[1] + kpt[1]
        return preds[:, row, self.candidate]  # [B]


class YoloObbTarget(YoloDetectionTarget):
    """One oriented box of a YOLO OBB model: its candidate's class score (what ultralytics'
    rotated NMS ranks by). Its D-RISE candidates are the axis-aligned bounds of the rotated
    boxes. The model is needed (its head says how many classes there are).
    """

    supports = ("score",)

    def candidates(self, output: Any, class_id: int) -> Candidates:
        preds, _ = self._preds(output)
        assert self.head is not None
        nc = int(self.head.nc)
        rboxes = torch.cat([preds[:, :4], preds[:, 4 + nc : 5 + nc]], dim=1).transpose(1, 2)
        probs = preds[:, 4 : 4 + nc].transpose(1, 2)  # [B, A, nc]
        return Candidates(_rotated_bounds(rboxes), probs, objectness=probs.amax(dim=-1))


def detection_targets(
    dets: Sequence[Detections], what: str = "score", model: Optional[nn.Module] = None
) -> list[list[YoloDetectionTarget]]:
    """One target per detection, one list per image (instance targets for segment models).

    Each target keeps its detection's box (for perturbation methods) and the neck level that
    predicted it when ``dets`` has ``levels`` (so that the engine explains it with that level
    when several are hooked). ``model`` is needed for end-to-end heads (YOLOv10, YOLO26):
    their targets decode the head's one-to-one outputs with it.

    The engine needs the same, non-zero number of targets for every image: pass
    ``max_det`` to :func:`detect` and drop images without detections, or explain images
    one at a time.

    Example:
        >>> d = Detections(torch.zeros(1, 4), torch.ones(1), torch.tensor([2]), torch.tensor([7]))
        >>> detection_targets([d])
        [[YoloDetectionTarget(7, 2)]]
    """
    out = []
    for det in dets:
        levels = det.levels or [None] * len(det)
        row: list[YoloDetectionTarget] = []
        for i, (c, k, box, level) in enumerate(
            zip(det.candidates.tolist(), det.classes.tolist(), det.boxes, levels)
        ):
            if det.keypoints is not None:
                row.append(YoloPoseTarget(c, k, what, box=box, layer=level, model=model))
                continue
            if det.rboxes is not None:
                row.append(YoloObbTarget(c, k, what, box=box, layer=level, model=model))
                continue
            if det.masks is None:
                row.append(YoloDetectionTarget(c, k, what, box=box, layer=level, model=model))
                continue
            region = det.masks[i] if what == "mask" else None
            row.append(
                YoloInstanceTarget(c, k, what, box=box, layer=level, model=model, region=region)
            )
        out.append(row)
    return out


class YoloAdapter:
    """The YOLO family as the pipeline drives it (a ``DetectorAdapter``).

    Args:
        model: a ``DetectionModel`` / ``SegmentationModel`` (see :func:`load_yolo`).
        size: the letterbox input side.
        conf, iou, max_det: detection settings, as ultralytics' ``predict`` (end-to-end heads
            select without NMS and ignore ``iou``).
        class_names: names by class id (default: ``model.names``).

    Example:
        >>> ad = YoloAdapter(load_yolo("yolov8n.yaml", nc=4), size=128, conf=0.0, max_det=2)
        >>> x, placement = ad.prepare(np.zeros((90, 160, 3), np.uint8))
        >>> dets = ad.detect(x)[0]
        >>> ad.default_layers()
        ['model.4', 'model.6', 'model.9']
        >>> [t.layer for t in ad.targets(dets)][:1] in (["model.15"], ["model.18"], ["model.21"])
        True
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 640,
        conf: float = 0.25,
        iou: float = 0.7,
        max_det: int = 100,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        head = _head(model)
        self.model = model
        self.task = yolo_task(model)
        self.stride = int(max(head.stride.tolist())) if hasattr(head, "stride") else 32
        self.size, self.conf, self.iou, self.max_det = size, conf, iou, max_det
        self.class_names = model_class_names(model, class_names)
        self._stages: Optional[list[str]] = None

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, LetterboxInfo]:
        device = next(iter(self.model.parameters()), torch.zeros(())).device
        x, info = letterbox(image, self.size, self.stride)
        return x.to(device), info

    def detect(self, x: torch.Tensor) -> list[Detections]:
        dets = detect(self.model, x, conf=self.conf, iou=self.iou, max_det=self.max_det)
        size = tuple(x.shape[-2:])
        for d in dets:
            d.levels = [candidate_layer(self.model, int(c), size) for c in d.candidates]
        return dets

    @property
    def has_masks(self) -> bool:
        """Whether detections have masks (a segmentation model), so ``what="mask"`` works."""
        return self.task == "segment"

    @property
    def kpt_shape(self) -> Optional[tuple[int, int]]:
        """``(K, D)`` keypoints of a pose model, else None."""
        return _kpt_shape(_head(self.model))

    def targets(self, dets: Detections, what: str = "score") -> list[YoloDetectionTarget]:
        if keypoint_what(what) is not None and self.kpt_shape is None:
            raise TaskcamError(
                f"what={what!r}: this YOLO {type(self.model).__name__} has no keypoints; a "
                "-pose model's detections have them"
            )
        if what == "mask" and not self.has_masks:
            raise TaskcamError(
                f"what='mask': this YOLO {type(self.model).__name__} detects boxes without "
                "masks; a -seg model's instances have masks"
            )
        return detection_targets([dets], what, self.model)[0]

    def default_layers(self) -> list[str]:
        """The backbone's stages at the head's strides (:func:`backbone_stages`), their maps
        fused: chosen over the neck outputs by deletion and insertion of each detection's
        score (``benchmarks/detection_faithfulness.py``). Each target still names its neck
        level, so hooking the neck outputs (``--layer model.15,model.18,model.21`` for
        YOLOv8) explains it at that level, as ODAM does. Models without a yaml backbone keep
        the neck outputs."""
        if self._stages is None:
            try:
                self._stages = backbone_stages(self.model)
            except TaskcamError:
                self._stages = default_layers(self.model)
        return list(self._stages)
