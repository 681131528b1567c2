"""The original, anchor-based YOLOv5 (the ``yolov5`` repository, ``torch.hub``, the ``yolov5``
package on PyPI), explained detection by detection.

Unlike ultralytics' YOLOv5u (anchor-free, no objectness, read by :mod:`taskcam.adapters.yolo`),
the original ``models.yolo.Detect`` head predicts, per anchor box of each cell, ``x, y, w, h``
(input pixels), an objectness and one sigmoid score per class; YOLOv5 ranks a candidate by
``objectness × class score`` and keeps, after its ``non_max_suppression`` (best class per
candidate, per-class NMS), the best ``max_det``. :func:`detect` does the same and remembers each
detection's candidate row, so a :class:`Yolov5Target` reads that row's score, objectness or a
side of its box from any later forward.

Checkpoints are recognised by the classes they pickle (``models.yolo`` of the repository or
``yolov5.models.yolo`` of the package) and loaded with the package's classes: the ``yolov5``
package must be installed (``pip install yolov5``), which the error says when it is not.

Example:
    >>> v5 = package_module("models.yolo")
    >>> net = v5.Model(yolov5_yaml("yolov5n.yaml"), nc=3).eval()
    >>> d = detect(net, torch.rand(1, 3, 64, 64), conf=0.0, max_det=2)[0]
    >>> d.boxes.shape, Yolov5Target(int(d.candidates[0]), int(d.classes[0]))(net(
    ...     torch.rand(1, 3, 64, 64))).shape
    (torch.Size([2, 4]), torch.Size([1]))
"""

from __future__ import annotations

import copy
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.scoring import WHAT, DetectionTarget
from taskcam.adapters.ultralytics.levels import backbone_stages
from taskcam.boxes import cxcywh_to_xyxy
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = [
    "Yolov5Adapter",
    "Yolov5Target",
    "detect",
    "is_yolov5",
    "is_yolov5_checkpoint",
    "load_yolov5",
    "package_module",
    "select",
    "yolov5_candidates",
    "yolov5_yaml",
]

_TORCH_PRINT = ("precision", "threshold", "edgeitems", "linewidth", "sci_mode")
_MAX_WH = 7680  # YOLOv5's class offset for per-class NMS in one call


def _package() -> Any:
    """The ``yolov5`` package with its model classes imported, the process's print options,
    OpenCV threads and environment left as they were (importing ``yolov5.utils.general`` sets
    them for the whole process)."""
    import os

    import cv2

    if "yolov5.models.yolo" in sys.modules:
        return sys.modules["yolov5"]
    torch_print = {k: getattr(torch._tensor_str.PRINT_OPTS, k) for k in _TORCH_PRINT}
    numpy_print, threads, environ = np.get_printoptions(), cv2.getNumThreads(), dict(os.environ)
    try:
        import yolov5
        import yolov5.models.yolo  # noqa: F401 - the classes checkpoints pickle
    except ImportError as e:
        raise TaskcamError(
            "this is an original YOLOv5 checkpoint (anchors and objectness), read with the "
            "classes of the yolov5 package: pip install yolov5 (ultralytics' YOLOv5u "
            f"checkpoints need no extra package) ({type(e).__name__}: {e})"
        ) from e
    finally:
        torch.set_printoptions(**torch_print)
        np.set_printoptions(**numpy_print)
        cv2.setNumThreads(threads)
        os.environ.clear()
        os.environ.update(environ)
    return yolov5


def package_module(name: str) -> Any:
    """A module of the ``yolov5`` package (``"models.yolo"``, ``"utils.general"``), imported
    without its side effects on the process (see :func:`_package`)."""
    import importlib

    _package()
    return importlib.import_module(f"yolov5.{name}")


def yolov5_yaml(name: str) -> str:
    """The path of a model yaml shipped with the ``yolov5`` package (``yolov5n.yaml``)."""
    path = Path(_package().__file__).parent / "models" / name
    if not path.is_file():
        raise TaskcamError(f"the yolov5 package has no model yaml {name!r}")
    return str(path)


def is_yolov5_checkpoint(path: str | Path) -> bool:
    """Whether a ``.pt`` file pickles the original YOLOv5's classes (read without loading)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            data = archive.read(names[0]) if names else b""
    except (OSError, zipfile.BadZipFile):
        return False
    return b"ultralytics" not in data and (b"models.yolo" in data or b"models.common" in data)


def load_yolov5(path: str | Path) -> nn.Module:
    """The model of an original YOLOv5 checkpoint (``{"model": model.half(), ...}`` as its
    ``train.py`` saves, the EMA weights when present), float32, eval mode.

    Raises:
        TaskcamError: the ``yolov5`` package is missing (the message says to install it), or
            the file holds no YOLOv5 model.
    """
    package = _package()
    root = str(Path(package.__file__).parent)
    if root not in sys.path:  # the repository's checkpoints pickle ``models.yolo``
        sys.path.append(root)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise TaskcamError(f"{path}: cannot read this YOLOv5 checkpoint ({e})") from e
    model = ckpt.get("ema") or ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    if not is_yolov5(model):
        raise TaskcamError(f"{path}: holds no YOLOv5 model (found {type(model).__name__})")
    model = copy.deepcopy(model).float().eval()
    for m in model.modules():  # checkpoints of older releases lack attributes newer code reads
        if type(m).__name__ == "Detect" and not hasattr(m, "anchor_grid"):
            m.anchor_grid = [torch.zeros(1)] * m.nl
    return model


def is_yolov5(model: Any) -> bool:
    """Whether ``model`` is an original YOLOv5 model (a ``Detect`` head with anchors)."""
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) else None
    return head is not None and hasattr(head, "anchors") and hasattr(head, "na")


def _rows(output: Any) -> torch.Tensor:
    """``Tensor[B, A, 5 + nc]`` (x, y, w, h, objectness, class scores) of an eval output."""
    rows = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(rows, torch.Tensor) or rows.ndim != 3:
        raise TaskcamError(
            "cannot find YOLOv5 predictions Tensor[B, A, 5 + nc] in the output (a model in "
            "training mode returns per-level maps; call model.eval())"
        )
    return rows


def yolov5_candidates(output: Any) -> Candidates:
    """Every candidate row of a YOLOv5 eval output: xyxy boxes in input pixels, scores
    ``objectness × class score`` (what YOLOv5 ranks by), the class scores as D-RISE's class
    vectors and the objectness."""
    rows = _rows(output)
    return Candidates(
        cxcywh_to_xyxy(rows[..., :4]),
        rows[..., 5:] * rows[..., 4:5],
        objectness=rows[..., 4],
        probs=rows[..., 5:],
    )


def select(
    candidates: Candidates, *, conf: float = 0.25, iou: float = 0.45, max_det: int = 1000
) -> list[Detections]:
    """YOLOv5's ``non_max_suppression`` (its defaults, one label per candidate), keeping each
    detection's candidate row: candidates whose objectness passes ``conf``, each with its best
    ``objectness × class score`` above ``conf``, per-class NMS at ``iou``, the best
    ``max_det``."""
    from torchvision.ops import nms

    assert candidates.objectness is not None
    out = []
    for boxes, scores, objectness in zip(
        candidates.boxes, candidates.scores, candidates.objectness
    ):  # [A, 4], [A, nc], [A]
        cand = torch.nonzero(objectness > conf).flatten()
        score, cls = scores[cand].max(dim=1)
        keep = score > conf
        cand, score, cls = cand[keep], score[keep], cls[keep]
        kept = boxes[cand]
        order = nms(kept + cls[:, None].float() * _MAX_WH, score, iou)[:max_det]
        out.append(
            Detections(
                boxes=kept[order],
                scores=score[order],
                classes=cls[order].long(),
                candidates=cand[order].long(),
            )
        )
    return out


def detect(
    model: nn.Module, x: torch.Tensor, *, conf: float = 0.25, iou: float = 0.45, max_det: int = 1000
) -> list[Detections]:
    """YOLOv5's detections of every image of ``x`` (:func:`select`), boxes in ``x``'s pixels.
    The model's flags are restored."""
    return select(yolov5_candidates(predict(model, x)), conf=conf, iou=iou, max_det=max_det)


class Yolov5Target(DetectionTarget):
    """One YOLOv5 candidate: ``objectness × class score`` (what YOLOv5 ranks by), the
    ``objectness`` alone, or a side of its box (input pixels).

    Example:
        >>> rows = torch.tensor([[[10.0, 10, 4, 4, 0.5, 0.2, 0.8]]])  # one candidate, 2 classes
        >>> Yolov5Target(0, 1)(rows), Yolov5Target(0, 1, "objectness")(rows)
        (tensor([0.4000]), tensor([0.5000]))
    """

    supports = WHAT[:6]

    def __call__(self, output: Any) -> torch.Tensor:
        rows = _rows(output)
        self.check_class(rows.shape[-1] - 5)
        missing = self.absent(rows.shape[1], rows)
        if missing is not None:
            return missing
        row = rows[:, self.candidate]  # [B, 5 + nc]
        if self.what == "score":
            return row[:, 4] * row[:, 5 + self.class_id]
        if self.what == "objectness":
            return row[:, 4]
        return self.side(cxcywh_to_xyxy(row[:, :4]))

    def candidates(self, output: Any) -> Candidates:
        return yolov5_candidates(output)


class Yolov5Adapter(Detector):
    """The original YOLOv5 as the pipeline drives it (the :class:`~taskcam.Detector` contract).

    Args:
        model: a YOLOv5 ``DetectionModel`` / ``Model`` (:func:`load_yolov5`).
        size: the letterbox side (640 as ``detect.py``; a multiple of 32): an image's longer
            side is scaled to it and the shorter one padded up to the next multiple of the
            stride, the minimal rectangle ``detect.py`` pads a ``.pt`` model's input to
            (``letterbox(im, imgsz, stride=stride, auto=pt)``).
        conf, iou, max_det: ``detect.py``'s settings (0.25, 0.45, 1000).
        class_names: names by class id (default: ``model.names``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        size: int = 640,
        conf: Optional[float] = None,
        iou: float = 0.45,
        max_det: int = 1000,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        if not is_yolov5(model):
            raise TaskcamError(f"Yolov5Adapter: {type(model).__name__} has no YOLOv5 Detect head")
        super().__init__(
            model,
            size=int(size),
            stride=int(max(model.stride)),
            conf=0.25 if conf is None else float(conf),
            iou=iou,
            max_det=max_det,
            class_names=class_names,
        )
        self.rect = True  # detect.py's letterbox for a PyTorch model: auto=pt

    @property
    def family(self) -> str:
        return "yolov5"

    def candidates(self, output: Any) -> Candidates:
        return yolov5_candidates(output)

    def select(self, candidates: Candidates) -> list[Detections]:
        return select(candidates, conf=self.conf, iou=self.iou, max_det=self.max_det)

    def target(self, dets: Detections, i: int, what: str) -> Yolov5Target:
        return Yolov5Target(int(dets.candidates[i]), int(dets.classes[i]), what, box=dets.boxes[i])

    def default_layers(self) -> list[str]:
        """The backbone's stages at the head's strides, fused (as for ultralytics' YOLO,
        where deletion and insertion chose them over the neck outputs)."""
        try:
            return backbone_stages(self.model)
        except TaskcamError:
            return [f"model.{i}" for i in self.model.model[-1].f]
