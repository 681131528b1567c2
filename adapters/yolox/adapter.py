"""YOLOX (Ge et al., 2021, "YOLOX: Exceeding YOLO Series in 2021") as libreyolo packages it,
explained detection by detection: :class:`YoloxAdapter`, the :class:`~taskcam.Detector` contract
over libreyolo's ``LibreYOLOX`` (its wrapper) or ``LibreYOLOXModel`` (the ``nn.Module`` it
runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector, check_batch, model_class_names
from taskcam.adapters.detection.placement import LetterboxInfo
from taskcam.adapters.yolox.head import STRIDES, Extent, select, yolox_candidates
from taskcam.adapters.yolox.inputs import yolox_input
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = ["BACKBONE", "NECK", "YoloxAdapter", "is_yolox", "yolox_class_names", "yolox_module"]

NECK = ("backbone.C3_p3", "backbone.C3_n3", "backbone.C3_n4")
"""The PAFPN outputs YOLOX's head reads (strides 8, 16, 32), as ``LibreYOLOXModel`` names them:
each detection names its level's (ODAM's per-level maps when they are hooked)."""

BACKBONE = ("backbone.backbone.dark3", "backbone.backbone.dark4", "backbone.backbone.dark5")
"""The CSPDarknet stages that feed the PAFPN (strides 8, 16, 32): the layers explained by
default, their maps fused, as for ultralytics YOLO, whose backbone stages beat the neck
outputs by deletion/insertion on every trained model measured (docs/evaluation.md)."""

_CLASSES = ("LibreYOLOX", "LibreYOLOXModel")  # libreyolo's wrapper and its nn.Module
_INPUT_SIZES = {"n": 416, "t": 416}  # libreyolo's LibreYOLOX.INPUT_SIZES; 640 for s, m, l, x


def is_yolox(model: Any) -> bool:
    """Whether ``model`` is libreyolo's YOLOX: its ``LibreYOLOX`` wrapper or the
    ``LibreYOLOXModel`` it runs (or a subclass), told by class without importing libreyolo.

    Example:
        >>> is_yolox(nn.Conv2d(3, 8, 3))
        False
    """
    return any(
        cls.__module__.startswith("libreyolo.models.yolox") and cls.__name__ in _CLASSES
        for cls in type(model).__mro__
    )


def yolox_module(model: Any) -> nn.Module:
    """The ``nn.Module`` that runs: a ``LibreYOLOX``'s ``model``, or ``model`` itself.

    Raises:
        TaskcamError: ``model`` is not libreyolo's YOLOX (the message names its class).
    """
    if not is_yolox(model):
        raise TaskcamError(
            f"YoloxAdapter: expected libreyolo's LibreYOLOX or LibreYOLOXModel, got "
            f"{type(model).__name__}"
        )
    net = model if isinstance(model, nn.Module) else getattr(model, "model", None)
    if not isinstance(net, nn.Module):
        raise TaskcamError(f"{type(model).__name__} holds no model (its .model is {net!r})")
    return net


def yolox_class_names(model: Any, given: Optional[Sequence[str]] = None) -> Optional[list[str]]:
    """``given``, else the wrapper's ``names``, else COCO's 80 names for an 80-class module
    (libreyolo's default), else None."""
    names = model_class_names(model, given)
    if names is not None:
        return names
    head = getattr(yolox_module(model), "head", None)
    if getattr(head, "num_classes", None) == 80:
        from libreyolo.utils.general import COCO_CLASSES

        return list(COCO_CLASSES)
    return None


def _default_size(model: Any) -> int:
    """libreyolo's input side for the model: the wrapper's ``input_size`` (the larger side
    of a rectangle), else its size's default (416 for nano and tiny, else 640)."""
    size = getattr(model, "input_size", None)
    if isinstance(size, (tuple, list)):
        size = max(size)
    if isinstance(size, int):
        return size
    return _INPUT_SIZES.get(getattr(yolox_module(model), "config", "s"), 640)


class YoloxAdapter(Detector):
    """libreyolo's YOLOX as the pipeline drives it (the :class:`~taskcam.Detector` contract).

    Every grid cell of the three levels is a candidate (:func:`yolox_candidates`: boxes in
    input pixels, scores ``objectness × class probability``, the objectness that D-RISE weighs
    its matches by, the level); the detections are libreyolo's own post-processing
    (:func:`~taskcam.adapters.yolox.head.select`); the image is placed as libreyolo's
    ``predict`` places it (:func:`yolox_input`: top-left, gray 114, BGR in ``[0, 255]``).
    By default the backbone's stages are explained, fused (:data:`BACKBONE`), as for
    ultralytics YOLO; each detection names the neck output of its own level (:data:`NECK`),
    which ``--layer`` can hook for ODAM's per-level maps.

    Args:
        model: a ``LibreYOLOX`` (:attr:`detector`) or the ``LibreYOLOXModel`` it runs
            (:attr:`model`).
        class_names: names by class id (default: the wrapper's ``names``, COCO's for 80).
        size: the input side, a multiple of 32 (default: libreyolo's for the model, 416 for
            nano and tiny, 640 otherwise).
        conf, iou, max_det: libreyolo's ``predict`` settings (0.25, 0.45, 300).

    Raises:
        TaskcamError: a model that is not libreyolo's YOLOX.

    Example:
        >>> from libreyolo.models.yolox.nn import LibreYOLOXModel
        >>> ad = YoloxAdapter(LibreYOLOXModel("n", nb_classes=3), size=64, conf=0.0, max_det=2)
        >>> x, placement = ad.prepare(np.zeros((48, 64, 3), np.uint8))
        >>> dets = ad.detect(x)[0]
        >>> x.shape, len(dets), dets.levels[0] in NECK, ad.default_layers() == list(BACKBONE)
        (torch.Size([1, 3, 64, 64]), 2, True, True)
    """

    def __init__(
        self,
        model: Any,
        *,
        class_names: Optional[Sequence[str]] = None,
        size: Optional[int] = None,
        conf: Optional[float] = 0.25,
        iou: float = 0.45,
        max_det: int = 300,
    ) -> None:
        net = yolox_module(model)
        named = dict(net.named_modules())
        neck = [name for name in NECK if name in named] or None
        stages = [name for name in BACKBONE if name in named] or neck
        super().__init__(
            net,
            size=_default_size(model) if size is None else int(size),
            stride=max(self._strides(net)),
            conf=conf,
            iou=iou,
            max_det=max_det,
            class_names=yolox_class_names(model, class_names),
            layers=stages,
            level_layers=neck,
        )
        self._user = model
        self._extents: WeakIdKeyDictionary = WeakIdKeyDictionary()  # input -> its image

    @staticmethod
    def _strides(net: nn.Module) -> tuple[int, ...]:
        return tuple(int(s) for s in getattr(getattr(net, "head", None), "strides", STRIDES))

    @property
    def family(self) -> str:
        return "yolox"

    @property
    def detector(self) -> Any:
        """The user's model: the ``LibreYOLOX`` wrapper or the ``LibreYOLOXModel``."""
        return self._user

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, LetterboxInfo]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, S, S]`` BGR in ``[0, 255]`` on the
        model's device, placement), as libreyolo's ``predict`` (:func:`yolox_input`). The
        input remembers its image, so :meth:`detect` clips boxes to it as libreyolo does."""
        x, placement = yolox_input(image, int(self.size))  # type: ignore[arg-type]
        x = x.to(self.device)
        self._extents[x] = (placement.ratio, float(placement.width), float(placement.height))
        return x, placement

    def candidates(self, output: Any) -> Candidates:
        return yolox_candidates(output, self._strides(self.model))

    def select(
        self, candidates: Candidates, extents: Optional[Sequence[Optional[Extent]]] = None
    ) -> list[Detections]:
        """libreyolo's post-processing (:func:`~taskcam.adapters.yolox.head.select`) at this
        adapter's settings; ``extents`` clip each image's boxes (None: not clipped)."""
        return select(
            candidates,
            conf=self.score_threshold,
            iou=self.iou,
            max_det=self.max_det,
            extents=extents,
            agnostic=self.agnostic,
        )

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """The detections of every image of ``x``, each naming its level's neck output. Boxes
        are clipped to the image :meth:`prepare` placed on ``x`` (another input: to the whole
        input, as libreyolo clips an image of the input's size)."""
        check_batch(x)
        candidates = self.candidates(predict(self.model, x))
        whole = (1.0, float(x.shape[-1]), float(x.shape[-2]))
        extents = [self._extents.get(x, whole)] * x.shape[0]
        detections = self.select(candidates, extents)
        names = self.level_layers()
        if candidates.levels is not None and names:
            for det in detections:
                det.levels = [names[i] for i in candidates.levels[det.candidates].tolist()]
        return detections

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_extents"] = WeakIdKeyDictionary()  # inputs of this process only
        return state
