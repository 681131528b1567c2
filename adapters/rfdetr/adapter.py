"""RF-DETR (Roboflow's ``rfdetr`` package) explained query by query.

RF-DETR (Robinson et al., "RF-DETR: Neural Architecture Search for Real-Time Detection
Transformers", arXiv 2511.09554, 2025) is LW-DETR (Chen et al., "LW-DETR: A Transformer
Replacement to YOLO for Real-Time Detection", arXiv 2406.03459, 2024) on a DINOv2 backbone with
windowed attention: the backbone's features go through a multi-scale projector to one (or a few)
feature maps, and a decoder of deformable cross-attention (Zhu et al., ICLR 2021) over them
predicts ``Q`` object queries, each a box (normalised ``cx, cy, w, h``) and one sigmoid score per
class; there is no NMS. rfdetr's ``predict`` stretches the image to the model's square resolution
(bilinear, no antialiasing), normalises it with ImageNet's mean and std, keeps the best
``num_select`` (query, class) pairs of all ``Q × K`` sigmoid scores (a stable sort: ties go to
the lower index) and, of those, the ones above its threshold (0.5 by default).
:class:`RFDETRAdapter` does the same and remembers each detection's query, so a
:class:`RFDETRTarget` reads that query's score for its class (or one side of its box) from any
later forward: every detection of an image is explained in one forward and one batched backward.

Class ids are the columns of the model's class logits. rfdetr's COCO models score 91 columns,
COCO's own category ids (1 = person, ..., 90 = toothbrush, with the ids COCO left unused in
between); :func:`class_names_by_id` names them as ``predict`` labels them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.placement import StretchPlacement, check_image
from taskcam.adapters.detection.scoring import WHAT, CandidateTarget
from taskcam.boxes import cxcywh_to_xyxy
from taskcam.errors import TaskcamError
from taskcam.loaded import IMAGENET_MEAN, IMAGENET_STD, Preprocess

__all__ = [
    "RFDETRAdapter",
    "RFDETRTarget",
    "class_names_by_id",
    "is_rfdetr",
    "kept_pairs",
    "rfdetr_candidates",
]

NUM_SELECT = 300
"""The (query, class) pairs rfdetr's post-processing ranks by default (``num_select``; every
config it ships sets it to its query count, 300 for the detection models)."""


def is_rfdetr(model: Any) -> bool:
    """Whether ``model`` is an RF-DETR model: the ``rfdetr`` wrapper (``RFDETRNano``, ...,
    any ``rfdetr.detr.RFDETR``) or the ``LWDETR`` module inside it. Nothing is imported for an
    object of another library.

    Example:
        >>> is_rfdetr(torch.nn.Linear(2, 2))
        False
    """
    if not any(c.__module__.startswith("rfdetr.") for c in type(model).__mro__):
        return False
    from rfdetr.detr import RFDETR
    from rfdetr.models.lwdetr import LWDETR

    return isinstance(model, (RFDETR, LWDETR))


def class_names_by_id(names: Sequence[str], slots: int) -> list[str]:
    """Names by class id (the ``slots + 1`` logit columns), as rfdetr's ``predict`` labels them.

    A COCO-pretrained model (``slots`` above the 80 COCO names it carries) numbers classes by
    COCO category id: id ``k`` is named by COCO's own id table, ids COCO leaves unused are
    ``""``. Any other model numbers them from 0: ``names[k]``, and id ``slots`` (the last
    column) is ``"__background__"``.

    Args:
        names: the model's class names (``RFDETR.class_names``).
        slots: the model's ``num_classes`` (its logits have ``slots + 1`` columns).

    Example:
        >>> class_names_by_id(["cat", "dog"], 2)
        ['cat', 'dog', '__background__']
    """
    names = list(names)
    columns = int(slots) + 1
    by_id: dict[int, str] = dict(enumerate(names))
    coco = False
    if slots > len(names):
        from rfdetr.assets.coco_classes import COCO_CLASS_NAMES, COCO_CLASSES

        if names == list(COCO_CLASS_NAMES):
            coco = True
            by_id = {cid: names[i] for i, cid in enumerate(COCO_CLASSES) if i < len(names)}
    out = [by_id.get(k, "") for k in range(columns)]
    if not coco:
        out[slots] = "__background__"
    return out


def _outputs(output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits Tensor[B, Q, K], boxes Tensor[B, Q, 4])`` of an LWDETR output."""
    if isinstance(output, dict):
        logits, boxes = output.get("pred_logits"), output.get("pred_boxes")
        if isinstance(logits, torch.Tensor) and isinstance(boxes, torch.Tensor):
            return logits, boxes
    keys = sorted(output) if isinstance(output, dict) else type(output).__name__
    raise TaskcamError(f"an RF-DETR output is a dict with pred_logits and pred_boxes, got {keys}")


def rfdetr_candidates(output: Any, size: tuple[int, int]) -> Candidates:
    """Every query of an RF-DETR output: boxes in the pixels of a ``size`` (h, w) input,
    sigmoid class scores ``Tensor[B, Q, K]``, objectness the best of them; no NMS.

    Example:
        >>> out = {"pred_logits": torch.zeros(1, 2, 3),
        ...        "pred_boxes": torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.25, 0.5, 0.5, 1.0]]])}
        >>> c = rfdetr_candidates(out, (10, 20))
        >>> c.boxes[0].tolist(), c.scores.shape, c.nms
        ([[5.0, 2.5, 15.0, 7.5], [0.0, 0.0, 10.0, 10.0]], torch.Size([1, 2, 3]), False)
    """
    logits, boxes = _outputs(output)
    probs = logits.sigmoid()  # [B, Q, K]
    return Candidates(cxcywh_to_xyxy(boxes, size), probs, objectness=probs.amax(-1), nms=False)


def kept_pairs(
    scores: torch.Tensor, conf: float, num_select: int = NUM_SELECT
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(queries, classes, scores)`` rfdetr keeps of one image's ``scores: Tensor[Q, K]``:
    the best ``num_select`` (query, class) pairs by a stable descending sort (ties go to the
    lower query-major index, as its ``PostProcess``), then those above ``conf`` (``predict``'s
    threshold), best first. A query may be kept for several classes.

    Example:
        >>> s = torch.tensor([[0.9, 0.2], [0.6, 0.6], [0.1, 0.95]])
        >>> [t.tolist() for t in kept_pairs(s, 0.5, num_select=3)]
        [[2, 0, 1], [1, 0, 0], [0.949999988079071, 0.8999999761581421, 0.6000000238418579]]
    """
    flat = scores.flatten()  # [Q * K], query-major
    order = torch.argsort(flat, descending=True, stable=True)[: min(int(num_select), len(flat))]
    order = order[flat[order] > conf]
    k = scores.shape[-1]
    return order // k, order % k, flat[order]


class RFDETRTarget(CandidateTarget):
    """One RF-DETR query's sigmoid score for its class, or one side of its box (input pixels),
    read from the query's candidate (:func:`rfdetr_candidates`).

    Args:
        candidate: the query (``Detections.candidates``); class_id, what, box: as
            :class:`~taskcam.adapters.detection.scoring.DetectionTarget`.
        size: ``(h, w)`` of the model input, to put boxes in pixels.

    Example:
        >>> out = {"pred_logits": torch.tensor([[[0.0, 2.0], [1.0, -1.0]]]),
        ...        "pred_boxes": torch.full((1, 2, 4), 0.5)}
        >>> RFDETRTarget(0, 1, size=(8, 8))(out), RFDETRTarget(1, 0, "x2", size=(8, 8))(out)
        (tensor([0.8808]), tensor([6.]))
    """

    supports = WHAT[:5]

    def __init__(self, *args: Any, size: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.size = (int(size[0]), int(size[1]))

    def candidates(self, output: Any) -> Candidates:
        return rfdetr_candidates(output, self.size)


def _parts(model: Any) -> tuple[Any, nn.Module]:
    """``(the rfdetr wrapper or None, the LWDETR module the engine runs)``."""
    from rfdetr.detr import RFDETR

    if not isinstance(model, RFDETR):
        return None, model
    context = getattr(model, "model", None)
    net = getattr(context, "model", None)
    if not isinstance(net, nn.Module):
        raise TaskcamError(
            f"{type(model).__name__} holds no LWDETR module (optimised in place with "
            "inference()?); explain a model built without optimize, or call "
            "remove_optimized_model() first"
        )
    return model, net


def _settings(wrapper: Any, net: nn.Module) -> dict[str, Any]:
    """Resolution, mean, std, ``num_select`` and class names, from the wrapper where there is
    one (as its ``predict`` reads them), else from the module (COCO names for 91 columns)."""
    encoder = net.backbone[0].encoder  # rfdetr's DinoV2
    columns = int(net.class_embed.out_features)
    if wrapper is not None:
        slots = int(getattr(getattr(wrapper.model, "args", None), "num_classes", columns - 1))
        return {
            "resolution": int(wrapper.model.resolution),
            "mean": tuple(float(v) for v in wrapper.means),
            "std": tuple(float(v) for v in wrapper.stds),
            "num_select": int(getattr(wrapper.model.postprocess, "num_select", NUM_SELECT)),
            "names": class_names_by_id(wrapper.class_names, slots),
        }
    names = None
    if columns == 91:
        from rfdetr.assets.coco_classes import COCO_CLASS_NAMES

        names = class_names_by_id(COCO_CLASS_NAMES, 90)
    return {
        "resolution": int(encoder.shape[0]),
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "num_select": int(net.num_queries),  # as every config rfdetr ships sets it
        "names": names,
    }


class RFDETRAdapter(Detector):
    """RF-DETR as the pipeline drives it (the :class:`~taskcam.Detector` contract).

    The engine runs the ``LWDETR`` module (:attr:`model`); :attr:`detector` is the object you
    passed. Preprocessing, selection and class names are ``predict``'s (see the module doc).

    Args:
        model: an ``rfdetr`` detection model (``RFDETRNano``, ``RFDETRSmall``, ...) or the
            ``LWDETR`` module inside one (``rf.model.model``; then ImageNet's mean and std, as
            many pairs ranked as there are queries, and COCO's names for 91 classes).
        class_names: names by class id (default: as ``predict`` labels them).
        size: the input side, or ``(h, w)``, each a multiple of the backbone's patch size ×
            windows (32; 56 for base; default: the model's resolution).
        conf: score threshold (``predict``'s default 0.5).
        preprocess: the size, mean and std read at each image (shared with a
            :class:`~taskcam.loaded.LoadedModel`, so ``--size/--mean/--std`` apply).

    Raises:
        TaskcamError: not an RF-DETR model, one of its segmentation or keypoint variants, or a
            size the backbone cannot take.

    Example:
        >>> import warnings; warnings.filterwarnings("ignore")
        >>> from rfdetr.config import RFDETRNanoConfig
        >>> from rfdetr.models.lwdetr import build_model_from_config
        >>> net = build_model_from_config(RFDETRNanoConfig(device="cpu")).eval()
        >>> adapter = RFDETRAdapter(net, size=64, conf=0.0)
        >>> x, placement = adapter.prepare(np.zeros((48, 80, 3), np.uint8))
        >>> dets = adapter.detect(x)[0]
        >>> x.shape, len(dets), adapter.class_names[1], adapter.default_layers()
        (torch.Size([1, 3, 64, 64]), 300, 'person', ['backbone.0.projector.stages.0'])
    """

    def __init__(
        self,
        model: Any,
        *,
        class_names: Optional[Sequence[str]] = None,
        size: Optional[Union[int, Sequence[int]]] = None,
        conf: Optional[float] = None,
        preprocess: Optional[Preprocess] = None,
    ) -> None:
        if not is_rfdetr(model):
            raise TaskcamError(f"RFDETRAdapter: a {type(model).__name__} is not an RF-DETR model")
        wrapper, net = _parts(model)
        if net.segmentation_head is not None or getattr(net, "use_grouppose_keypoints", False):
            kind = "segmentation" if net.segmentation_head is not None else "keypoint"
            raise TaskcamError(
                f"RFDETRAdapter: {type(model).__name__} is an RF-DETR {kind} model; taskcam "
                "explains RF-DETR's detection models (nano, small, medium, base, large)"
            )
        encoder = net.backbone[0].encoder
        self._block = int(encoder.patch_size) * int(encoder.num_windows)
        found = _settings(wrapper, net)
        self._wrapper = wrapper
        side = found["resolution"]
        self.preprocess = preprocess or Preprocess((side, side), found["mean"], found["std"])
        if size is not None:
            self.preprocess.size = _dims(size)
        super().__init__(
            net,
            size=self.preprocess.size,
            resize="stretch",
            mean=self.preprocess.mean,
            std=self.preprocess.std,
            conf=0.5 if conf is None else float(conf),
            max_det=found["num_select"],
            class_names=class_names if class_names is not None else found["names"],
        )

    # size, mean and std live in :attr:`preprocess`, read at each image
    @property
    def size(self) -> Union[int, tuple[int, int]]:  # type: ignore[override]
        """The input side (a square), or ``(h, w)``."""
        h, w = self.preprocess.size
        return h if h == w else (h, w)

    @size.setter
    def size(self, value: Union[int, Sequence[int]]) -> None:
        h, w = _dims(value)
        if h % self._block or w % self._block or min(h, w) <= 0:
            raise TaskcamError(
                f"--size {h},{w}: RF-DETR takes sides that are multiples of {self._block} (its "
                "backbone's patch size × windows), as its predict(shape=...) does"
            )
        self.preprocess.size = (h, w)

    @property
    def mean(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple(self.preprocess.mean)

    @mean.setter
    def mean(self, value: Optional[Sequence[float]]) -> None:
        self.preprocess.mean = _three(value or IMAGENET_MEAN)

    @property
    def std(self) -> tuple[float, ...]:  # type: ignore[override]
        return tuple(self.preprocess.std)

    @std.setter
    def std(self, value: Optional[Sequence[float]]) -> None:
        self.preprocess.std = _three(value or IMAGENET_STD)

    @property
    def family(self) -> str:
        return "rfdetr"

    @property
    def detector(self) -> Any:
        """The model as you passed it: the ``rfdetr`` wrapper, or the ``LWDETR`` module."""
        return self._wrapper if self._wrapper is not None else self.model

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score", "x1", "y1", "x2", "y2")

    @property
    def multi_label(self) -> bool:
        """A query may be kept once per class: the top-k runs over (query, class) pairs."""
        return True

    def set_size(self, dims: Sequence[int]) -> None:
        """``--size S`` or ``--size H,W`` (multiples of the patch size × windows)."""
        self.size = dims

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, StretchPlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]`` normalised, placement), as
        ``predict`` does: bytes / 255, a bilinear resize of the whole image without
        antialiasing, ImageNet's mean and std."""
        import torchvision.transforms.functional as F

        check_image(image)
        height, width = image.shape[:2]
        h, w = self.preprocess.size
        # on the model's device, in predict's order: the bytes go over, then widen and resize
        x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self.device)
        scale = torch.tensor(255, dtype=torch.get_default_dtype(), device=x.device)
        x = x.to(scale.dtype).div_(scale)  # [3, H, W] in [0, 1]
        x = F.resize(x, [h, w], antialias=False)[None]  # [1, 3, h, w]
        x = F.normalize(x, list(self.preprocess.mean), list(self.preprocess.std))
        return x, StretchPlacement(height, width, (h, w))

    def candidates(self, output: Any) -> Candidates:
        return rfdetr_candidates(output, tuple(self.preprocess.size))

    def select(self, candidates: Candidates) -> list[Detections]:
        out = []
        for b in range(candidates.scores.shape[0]):
            queries, classes, scores = kept_pairs(
                candidates.scores[b], self.score_threshold, self.max_det
            )
            boxes = candidates.boxes[b, queries]
            out.append(Detections(boxes, scores, classes.long(), queries.long()))
        return out

    def target(self, dets: Detections, i: int, what: str) -> RFDETRTarget:
        return RFDETRTarget(
            int(dets.candidates[i]),
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            size=tuple(self.preprocess.size),
        )

    def default_layers(self) -> list[str]:
        """The projector's feature maps (``backbone.0.projector.stages.{i}``, one per pyramid
        level: P4 alone for nano to large), their maps fused.

        These are the maps the decoder reads: its two-stage proposals are scored on them and its
        deformable cross-attention samples them, so every query's score and box depend on the
        image only through them; they are spatial (``Tensor[B, 256, h/16, w/16]``), so CAM
        methods weigh their channels. The backbone's ViT tokens before the projector would need a
        reshape and carry no more of what the decoder uses. No trained RF-DETR weights could be
        fetched where taskcam was built, so this choice was not measured by deletion and
        insertion (as the ultralytics and torchvision layers were).
        """
        stages = self.model.backbone[0].projector.stages
        return [f"backbone.0.projector.stages.{i}" for i in range(len(stages))]


def _three(values: Sequence[float]) -> tuple[float, float, float]:
    """Three floats (a mean or a std per channel)."""
    a, b, c = (float(v) for v in values)
    return a, b, c


def _dims(value: Union[int, Sequence[int]]) -> tuple[int, int]:
    """``(h, w)`` from one side or ``[h, w]``."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    sides = [int(v) for v in value]
    if len(sides) not in (1, 2):
        raise TaskcamError(f"size: expected one side or h, w, got {list(value)}")
    return sides[0], sides[-1]
