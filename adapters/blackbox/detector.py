"""Any detector as a black box: an ONNX file run by ONNX Runtime, or a Python callable from
images to boxes and class scores, explained by the methods that only run the model (D-RISE,
``fast-drise``, RISE).

A black box has no PyTorch graph to hook or differentiate, so the gradient and layer methods
(Grad-CAM, ODAM, Score-CAM, ...) cannot explain it; the run refuses them and says why. D-RISE
(Petsiuk et al., "Black-box Explanation of Object Detectors via Saliency Maps", CVPR 2021)
needs only the detector's outputs on masked copies of the image: each detection is found in
every copy by the similarity of boxes and class vectors, and the masks are weighed by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from taskcam.adapters.blackbox.decoders import end2end_decode, scores_decode, ultralytics_decode
from taskcam.adapters.blackbox.runtime import CallableModel, OnnxRuntimeModel, onnx_metadata
from taskcam.adapters.detection.candidates import Candidates
from taskcam.adapters.detection.detector import Detector
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel

__all__ = ["BLACK_BOX_METHODS", "BlackBox", "load_onnx"]

BLACK_BOX_METHODS = ("fast-drise", "drise", "rise")
"""The methods that explain a black box: they run the model on perturbed copies of the image
and read no layer."""


class BlackBox(Detector):
    """A detector taskcam runs but never differentiates (the contract: :class:`Detector`).

    Args:
        model: an ``nn.Module`` whose forward never needs gradients
            (:class:`~taskcam.adapters.blackbox.runtime.OnnxRuntimeModel`), or any callable
            ``fn(Tensor[B, 3, h, w]) -> output`` (wrapped in a
            :class:`~taskcam.adapters.blackbox.runtime.CallableModel`).
        decode: ``output -> Candidates`` (default: :func:`scores_decode`: the output is
            ``(boxes, scores[, objectness])``).
        nms: with the default decode, whether the output's boxes still go through NMS (False:
            they are the model's final detections).
        rect: letterbox to the minimal rectangle instead of the square (as ultralytics
            predicts a dynamic export).
        **settings: the rest of :class:`Detector`'s settings (``size``, ``resize``,
            ``stride``, ``mean``, ``std``, ``conf``, ``iou``, ``max_det``, ``agnostic``,
            ``class_names``).

    Example:
        >>> import numpy as np
        >>> def service(x):  # a detector known only by its answers: one box, two class scores
        ...     bright = x.mean(dim=(1, 2, 3))
        ...     boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0]]).expand(len(x), 1, 4)
        ...     return boxes, torch.stack([bright, 1 - bright], dim=-1)[:, None]
        >>> box = BlackBox(service, size=32, resize="stretch", conf=0.1, nms=False)
        >>> x, _ = box.prepare(np.full((32, 32, 3), 200, np.uint8))
        >>> dets = box.detect(x)[0]
        >>> dets.classes.tolist(), round(float(dets.scores[0]), 3), box.default_layers()
        ([0], 0.784, [])
    """

    black_box = True

    def __init__(
        self,
        model: Union[nn.Module, Callable[[torch.Tensor], Any]],
        decode: Optional[Callable[[Any], Candidates]] = None,
        *,
        nms: bool = True,
        rect: bool = False,
        name: Optional[str] = None,
        **settings: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            model = CallableModel(model)
        super().__init__(model, decode or scores_decode(nms), **settings)
        self.rect = bool(rect)
        self.name = name

    @classmethod
    def from_onnx(
        cls,
        path: Union[str, Path],
        decode: Optional[Callable[[Any], Candidates]] = None,
        *,
        device: Union[str, torch.device] = "cpu",
        **settings: Any,
    ) -> BlackBox:
        """An ONNX detector run by ONNX Runtime. Without ``decode``, the file must be an
        ultralytics export: its metadata gives the classes, the size, the stride and how to
        read its output, and the settings default to ``yolo predict``'s (``conf=0.25``,
        ``iou=0.7``, ``max_det=300``, the minimal rectangle for a dynamic export).

        Raises:
            TaskcamError: a missing or unreadable file, no ``decode`` for a file that is not
                an ultralytics export, or an export of a task boxes cannot explain (OBB,
                classification).

        Example:
            >>> import glob, os, nudenet
            >>> path = glob.glob(os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx"))[0]
            >>> box = BlackBox.from_onnx(path)
            >>> box.size, box.rect, box.class_names[1]
            (320, True, 'FACE_FEMALE')
        """
        model = OnnxRuntimeModel(path, device=device)
        if decode is not None:
            return cls(model, decode, name=f"onnx:{path}", **settings)
        meta = onnx_metadata(model.metadata(), path)
        if meta["task"] not in ("detect", "segment", "pose"):
            raise TaskcamError(
                f"onnx:{path}: the export is a {meta['task']!r} model; a black box explains "
                "the boxes of detect, segment and pose exports"
            )
        nc = len(meta["names"])
        dynamic = isinstance(model.session.get_outputs()[0].shape[0], str)  # as ultralytics
        fixed = model.fixed_size
        if not dynamic and fixed is not None and fixed[0] != fixed[1]:
            raise TaskcamError(
                f"onnx:{path}: a static export of a {fixed[0]}x{fixed[1]} input; taskcam "
                "letterboxes to a square (or a dynamic export's minimal rectangle): export it "
                "square or with dynamic=True"
            )
        defaults = {
            "size": max(meta["imgsz"]),
            "stride": meta["stride"],
            "conf": 0.25,
            "iou": 0.7,
            "max_det": 300,
            "class_names": meta["names"],
            "rect": dynamic,
        }
        read = end2end_decode(nc) if meta["end2end"] else ultralytics_decode(nc)
        return cls(model, read, name=f"onnx:{path}", **{**defaults, **settings})

    @property
    def family(self) -> str:
        return "black box"

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score",)

    def describe(self) -> str:
        return f"{self.name or type(self.detector).__name__} (a black box)"

    def default_layers(self) -> list[str]:
        """None: a black box has no layers; its methods perturb the image."""
        return []

    def set_size(self, dims: Sequence[int]) -> None:
        """``--size``, refused for an ONNX file whose input size is fixed."""
        fixed = getattr(self.model, "fixed_size", None)
        if fixed is not None and (max(int(d) for d in dims) != max(fixed) or len(set(fixed)) > 1):
            raise TaskcamError(
                f"--size {','.join(str(d) for d in dims)}: {self.describe()} takes a fixed "
                f"{fixed[0]}x{fixed[1]} input"
            )
        super().set_size(dims)


def load_onnx(rest: str, weights: Optional[str]) -> LoadedModel:
    """``--model onnx:PATH``: an ultralytics ONNX export run by ONNX Runtime as a black box
    (:meth:`BlackBox.from_onnx`); the file holds its weights, so ``--weights`` is refused.

    Example:
        >>> import glob, os, nudenet
        >>> path = glob.glob(os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx"))[0]
        >>> loaded = load_onnx(path, None)
        >>> loaded.task, loaded.preprocess.size, loaded.adapter.black_box
        ('detect', (320, 320), True)
    """
    from taskcam.models import loaded_detector

    if weights is not None:
        raise TaskcamError(f"--model onnx:{rest} holds its weights already; drop --weights")
    return loaded_detector(BlackBox.from_onnx(rest), f"onnx:{rest}")
