"""EfficientDet (``effdet``) as the pipeline drives it: the :class:`~taskcam.Detector` contract.

EfficientDet (Tan, Pang & Le, CVPR 2020, "EfficientDet: Scalable and Efficient Object
Detection") is a one-stage, anchor-based detector: an EfficientNet backbone, a BiFPN over
pyramid levels 3..7, and class and box heads shared by the levels. effdet (Ross Wightman's,
on timm) builds it for one input size (its config's ``image_size``: the BiFPN's resampling and
the anchors are fixed for it).

Every anchor is a candidate (:mod:`~taskcam.adapters.effdet.outputs`); the kept ones are
``DetBenchPredict``'s own detections (:mod:`~taskcam.adapters.effdet.postprocess`), each
traced to its anchor and its level: hooking the BiFPN's outputs explains each detection at its
own level (as ODAM does: Zhao & Chan, ICLR 2023); by default the backbone's stages that feed the
BiFPN are explained, their maps fused, as for YOLO and Faster R-CNN.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector, check_batch
from taskcam.adapters.detection.scoring import WHAT
from taskcam.adapters.effdet.library import coco_names, effdet_module, input_config, unwrap
from taskcam.adapters.effdet.outputs import EffDetTarget, effdet_candidates
from taskcam.adapters.effdet.placement import ResizePadPlacement, resize_pad
from taskcam.adapters.effdet.postprocess import EVAL_CONF, NMS_IOU, effdet_select
from taskcam.capture import predict
from taskcam.errors import TaskcamError

__all__ = ["EffDetAdapter"]


def _names(given: Optional[Sequence[str]], num_classes: int) -> Optional[list[str]]:
    """Names by effdet class id (index 0: the background)."""
    if given is None:
        return coco_names(num_classes)
    names = [str(n) for n in given]
    if len(names) == num_classes:  # one per class, without the background
        return ["__background__", *names]
    if len(names) != num_classes + 1:
        raise TaskcamError(
            f"class_names: expected {num_classes} names (or {num_classes + 1}, the background "
            f"first) for this EfficientDet's {num_classes} classes, got {len(names)}"
        )
    return names


def _size(value: Union[int, Sequence[int]]) -> tuple[int, int]:
    dims = [int(value)] if isinstance(value, (int, np.integer)) else [int(v) for v in value]
    return dims[0], dims[-1]


class EffDetAdapter(Detector):
    """An effdet EfficientDet explained detection by detection.

    Args:
        model: an ``effdet.EfficientDet``, or a ``DetBenchPredict`` / ``DetBenchTrain``
            wrapping one (the model inside is run); left as it was.
        class_names: names by class id in effdet's numbering (from 1): ``K`` names, or
            ``K + 1`` with the background first (default: COCO's for a 90-class model, whose
            ids are COCO category ids).
        size: the input side or ``(h, w)``; only the config's ``image_size`` is accepted
            (None: it), since effdet builds the model for that size.
        conf: detections scoring less are dropped (default: 0.001, where effdet's evaluator
            stops reading its detections).
        max_det: detections kept per image (default: the config's ``max_det_per_image``).

    Attributes:
        model: the ``EfficientDet`` the engine runs (layer names are its own:
            ``fpn.cell.2.fnode.3``).
        config: its effdet config.

    Raises:
        TaskcamError: no EfficientDet, a ``size`` other than the model's, or class names that
            do not fit its classes.

    Example:
        >>> effdet = effdet_module()
        >>> net = effdet.create_model("tf_efficientdet_d0", pretrained_backbone=False,
        ...                           image_size=(128, 128))
        >>> adapter = EffDetAdapter(net)
        >>> x, placement = adapter.prepare(np.zeros((60, 90, 3), np.uint8))
        >>> x.shape, adapter.class_names[1], adapter.default_layers()[-1], adapter.level_layers()[0]
        (torch.Size([1, 3, 128, 128]), 'person', 'backbone.blocks.6', 'fpn.cell.2.fnode.3')
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        class_names: Optional[Sequence[str]] = None,
        size: Optional[Union[int, Sequence[int]]] = None,
        conf: Optional[float] = None,
        max_det: Optional[int] = None,
    ) -> None:
        net = unwrap(model)
        config = net.config
        pipeline = input_config(config)
        image_size = tuple(int(v) for v in pipeline["input_size"][1:])
        super().__init__(
            net,
            size=image_size,  # type: ignore[arg-type]
            resize="letterbox",
            stride=2 ** int(config.max_level),
            mean=pipeline["mean"],
            std=pipeline["std"],
            conf=EVAL_CONF if conf is None else float(conf),
            iou=NMS_IOU,
            max_det=int(config.max_det_per_image) if max_det is None else int(max_det),
            class_names=_names(class_names, int(config.num_classes)),
        )
        self.config = config
        self.user_model = model
        self.interpolation = str(pipeline["interpolation"])
        self.fill_color = tuple(int(c) for c in pipeline["fill_color"])
        self.max_points = int(config.max_detection_points)
        self.soft_nms = bool(config.soft_nms)
        self.anchors = effdet_module("anchors").Anchors.from_config(config).boxes  # [N, 4]
        self._extents: WeakIdKeyDictionary = WeakIdKeyDictionary()
        if size is not None:
            self.set_size(_size(size))

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without the inputs :meth:`prepare` made (weak references)."""
        return {**self.__dict__, "_extents": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._extents = WeakIdKeyDictionary()

    # -- what it is ------------------------------------------------------------------------
    @property
    def family(self) -> str:
        return "effdet"

    @property
    def detector(self) -> nn.Module:
        """The model as given (a bench, where one was given)."""
        return self.user_model

    @property
    def explains(self) -> tuple[str, ...]:
        """A detection's score or a side of its box (EfficientDet has no objectness)."""
        return WHAT[:5]

    @property
    def multi_label(self) -> bool:
        """effdet selects (anchor, class) pairs: an anchor may be kept for several classes."""
        return True

    def set_size(self, dims: Sequence[int]) -> None:
        """Accept ``--size`` only when it is the model's ``image_size``.

        Raises:
            TaskcamError: another size (effdet's BiFPN and anchors are built for one).
        """
        h, w = _size(dims)
        if (h, w) != tuple(self.size):  # type: ignore[arg-type]
            raise TaskcamError(
                f"--size {h},{w}: this EfficientDet ({self.config.name}) was built for "
                f"image_size {self.size[0]}x{self.size[1]} and takes no other (its BiFPN and "
                "anchors are fixed at build); build it at that size with effdet.create_model("
                f"'{self.config.name}', image_size=({h}, {w})) and pass it in"
            )

    # -- the contract ----------------------------------------------------------------------
    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, ResizePadPlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]`` on the model's device,
        placement), as effdet's eval pipeline prepares it
        (:func:`~taskcam.adapters.effdet.placement.resize_pad`). :meth:`detect` on this
        tensor clips boxes to the image before NMS, as the bench does given ``img_info``."""
        x, placement = resize_pad(
            image,
            self.size,  # type: ignore[arg-type]
            mean=self.mean or (0.0, 0.0, 0.0),
            std=self.std or (1.0, 1.0, 1.0),
            fill_color=self.fill_color,
            interpolation=self.interpolation,
        )
        x = x.to(self.device)
        self._extents[x] = placement.extent()[None]
        return x, placement

    def candidates(self, output: Any) -> Candidates:
        return effdet_candidates(output, self.anchors)

    def select(
        self, candidates: Candidates, extent: Optional[torch.Tensor] = None
    ) -> list[Detections]:
        """``DetBenchPredict``'s detections, each with its anchor
        (:func:`~taskcam.adapters.effdet.postprocess.effdet_select`); ``extent``
        ``Tensor[B, 2]``: the images' width and height on the input, to clip boxes to before
        NMS (effdet's ``img_info``)."""
        return effdet_select(
            candidates,
            self.anchors,
            max_points=self.max_points,
            max_det=self.max_det,
            iou=self.iou,
            soft_nms=self.soft_nms,
            conf=self.score_threshold,
            extent=extent,
        )

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """The detections of every image of ``x``: those of ``bench(x, img_info)`` for an
        input :meth:`prepare` made (boxes clipped to the image before NMS), of ``bench(x)``
        for any other; boxes in ``x``'s pixels, each naming its level's layer."""
        check_batch(x)
        candidates = self.candidates(predict(self.model, x))
        detections = self.select(candidates, self._extents.get(x))
        names = self.level_layers()
        assert candidates.levels is not None
        for det in detections:
            det.levels = [names[i] for i in candidates.levels[det.candidates].tolist()]
        return detections

    def target(self, dets: Detections, i: int, what: str) -> EffDetTarget:
        c = int(dets.candidates[i])
        return EffDetTarget(
            c,
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            layer=dets.levels[i] if dets.levels else None,
            anchor=self.anchors[c],
            read=self.candidates,
        )

    def level_layers(self) -> list[str]:
        """The BiFPN's outputs, finest level first: what the class and box heads read, one
        per pyramid level (the last BiFPN cell's last ``num_levels`` nodes)."""
        cells = self.model.fpn.cell
        last = len(cells) - 1
        nodes = len(cells[last].fnode)
        levels = int(self.config.num_levels)
        return [f"fpn.cell.{last}.fnode.{j}" for j in range(nodes - levels, nodes)]

    def backbone_layers(self) -> list[str]:
        """The backbone's stages that feed the BiFPN, finest first (``backbone.blocks.2``,
        ``.4``, ``.6`` for the EfficientNets: strides 8, 16, 32), named as timm's
        ``feature_info`` names them; none where those names are not the model's modules."""
        info = getattr(self.model.backbone, "feature_info", None)
        names = info.module_name() if hasattr(info, "module_name") else []
        modules = {name for name, _ in self.model.named_modules()}
        out = []
        for name in names:
            for candidate in (f"backbone.{name}", f"backbone.{name.replace('.', '_')}"):
                if candidate in modules:
                    out.append(candidate)
                    break
        return out if len(out) == len(names) else []

    def default_layers(self) -> list[str]:
        """The backbone's stages that feed the BiFPN, their maps fused
        (:meth:`backbone_layers`), as ultralytics YOLO's and Faster R-CNN's defaults are, where
        deletion and insertion preferred their backbones' stages to the neck or FPN level of
        each detection on every trained model measured; else :meth:`level_layers`. Each
        detection still names its BiFPN level, so hooking :meth:`level_layers` explains it at
        its own level, as ODAM does. Not measured on a trained EfficientDet (none can be
        loaded offline)."""
        return self.backbone_layers() or self.level_layers()
