"""ultralytics ONNX exports (``yolo export format=onnx``) rebuilt as the PyTorch model they were
exported from, so gradient methods can explain them."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["export_metadata", "fixed_input", "load_onnx_export"]

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


def load_onnx_export(path: Path) -> nn.Module:
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
    model = _rebuild_export(path, task, names, imgsz, _export_weights(proto))
    model.args["exported"], model.args["dynamic"] = "onnx", _dynamic(proto)
    return model


def fixed_input(model: nn.Module) -> bool:
    """Whether ultralytics predicts ``model`` at its fixed square input: a model rebuilt from a
    static ONNX export (:func:`load_onnx_export`), which ultralytics runs at the export's
    shape. PyTorch checkpoints and yaml models, and dynamic exports, are predicted on the
    minimal rectangle instead (``LetterBox(auto=True)``).

    Example:
        >>> from taskcam.adapters.ultralytics import load_yolo
        >>> fixed_input(load_yolo("yolov8n.yaml"))
        False
    """
    args = getattr(model, "args", None)
    return isinstance(args, dict) and args.get("exported") == "onnx" and not args.get("dynamic")


def _dynamic(proto: Any) -> bool:
    """Whether ultralytics runs the export with dynamic shapes: its ``dynamic`` export argument
    (metadata ``args``), else a named (symbolic) batch dimension of its first output, as
    ultralytics' ONNX backend reads it."""
    meta = {p.key: p.value for p in proto.metadata_props}
    try:
        args = ast.literal_eval(meta.get("args", "{}"))
    except (ValueError, SyntaxError):
        args = {}
    if isinstance(args, dict) and "dynamic" in args:
        return bool(args["dynamic"])
    dims = proto.graph.output[0].type.tensor_type.shape.dim if proto.graph.output else []
    return bool(dims) and dims[0].WhichOneof("value") == "dim_param"


def _export_metadata(path: Path, proto: Any) -> tuple[str, dict, Any]:
    """``(task, names, imgsz)`` from an ultralytics export's metadata, checked."""
    task, names, imgsz = export_metadata({p.key: p.value for p in proto.metadata_props}, path)
    if task not in ("detect", "segment"):
        raise TaskcamError(
            f"{path}: the export is a {task!r} model; the YOLO adapter explains detect and "
            "segment models only"
        )
    return task, names, imgsz


def export_metadata(meta: dict[str, str], where: Any, hint: str = "") -> tuple[str, dict, Any]:
    """``(task, names {id: name}, imgsz as written)`` from an ultralytics export's metadata
    (the ``metadata_props`` ultralytics writes into the file), checked: what the PyTorch
    rebuild (:func:`load_onnx_export`) and the black box (``onnx:PATH``) both read.

    Args:
        meta: the file's metadata, key -> value.
        where: how messages name the file.
        hint: appended to the "not an ultralytics export" message (what to do instead).

    Raises:
        TaskcamError: no ``task`` and ``names`` (not an ultralytics export; the message lists
            the keys found), or names and size that do not parse.

    Example:
        >>> export_metadata({"task": "detect", "names": "{0: 'cat'}", "imgsz": "[320, 320]"}, "m")
        ('detect', {0: 'cat'}, [320, 320])
    """
    if "task" not in meta or "names" not in meta:
        raise TaskcamError(
            f"{where}: not an ultralytics export (its metadata has no 'task' and 'names'; "
            f"found {sorted(meta) or 'none'}){hint}"
        )
    try:
        names = ast.literal_eval(meta["names"])  # {0: 'person', ...}
        imgsz = ast.literal_eval(meta.get("imgsz", "640"))  # [640, 640]
    except (ValueError, SyntaxError):
        names = imgsz = None
    if not isinstance(names, dict) or not isinstance(imgsz, (int, list, tuple)):
        raise TaskcamError(
            f"{where}: unreadable ultralytics metadata: names={meta['names'][:80]!r}, "
            f"imgsz={meta.get('imgsz')!r} (expected a dict of class names and a size)"
        )
    return meta["task"], names, imgsz


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
