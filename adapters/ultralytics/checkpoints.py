"""Loading ultralytics models: checkpoints (``.pt``), model yamls (random weights) and ONNX
exports (rebuilt in PyTorch, :mod:`taskcam.adapters.ultralytics.export`), and their task."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from torch import nn

from taskcam.adapters.ultralytics.export import load_onnx_export
from taskcam.errors import TaskcamError

__all__ = ["load_yolo", "yolo_task"]

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
        model = load_onnx_export(path)
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
