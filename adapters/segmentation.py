"""Segmentation adapter: region targets for segmentation-models-pytorch and torchvision models.

A region target is Seg-Grad-CAM's score (Vinogradova et al., AAAI 2020 student abstract,
"Towards Interpretable Semantic Segmentation via Gradient-weighted Class Activation Mapping"):
the sum of one class's pre-softmax logits over a set of pixels. The set is, by default, the
pixels the model itself paints with that class; it can also be one connected component, one
pixel, a user mask or a user box. All classes of an image are explained from one forward and one
batched backward because each class is just one more target of the engine.

Example:
    >>> import segmentation_models_pytorch as smp, torch, taskcam
    >>> net = smp.Unet("resnet18", encoder_weights=None, classes=3).eval()
    >>> x = torch.rand(1, 3, 64, 64)
    >>> targets = region_targets(net(x), "all")
    >>> exp = taskcam.explain(net, x, targets, layers=default_segmentation_layers(net))
    >>> exp.maps.shape[-2:]
    torch.Size([64, 64])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.outputs import seg_logits

__all__ = [
    "RegionTarget",
    "box_region",
    "component_regions",
    "default_segmentation_layers",
    "parse_classes",
    "pixel_region",
    "region_targets",
    "seg_logits",
]


def _as_region(region: torch.Tensor, batch: int, size: tuple[int, int]) -> torch.Tensor:
    if region.dtype != torch.bool:
        region = region > 0
    if region.ndim == 2:
        region = region[None]
    if region.ndim != 3 or tuple(region.shape[-2:]) != size:
        raise TaskcamError(
            f"region mask is {tuple(region.shape[-2:])} but the model's output is {size} "
            "(resize the mask to the model input)"
        )
    if region.shape[0] not in (1, batch):
        raise TaskcamError(f"region holds {region.shape[0]} masks for a batch of {batch}")
    return region


class RegionTarget:
    """Sum of class ``class_id``'s logits (or probabilities) over a region.

    Args:
        class_id: the class channel.
        region: ``BoolTensor[H, W]`` or ``[B, H, W]`` on the output grid; ``None`` means the
            pixels the model predicts as ``class_id`` (read from the detached output).
        probabilities: score softmax probabilities instead of logits.
        name: a label for pictures and results (e.g. ``"cat, component 2"``).

    A region with no pixels scores 0, so its map is flagged empty, never NaN.

    Example:
        >>> out = torch.zeros(1, 2, 2, 2); out[0, 1, 0, 0] = 3.0
        >>> RegionTarget(1)(out)
        tensor([3.])
    """

    def __init__(
        self,
        class_id: int,
        region: Optional[torch.Tensor] = None,
        *,
        probabilities: bool = False,
        name: Optional[str] = None,
    ) -> None:
        if int(class_id) < 0:
            raise TaskcamError(f"class id must be >= 0, got {class_id}")
        self.class_id = int(class_id)
        self.class_index = self.class_id  # what the classification pipeline reads
        self.region = region
        self.probabilities = probabilities
        self.name = name

    def mask(self, output: Any) -> torch.Tensor:
        """``BoolTensor[B, H, W]``: the pixels this target sums over, for ``output``."""
        logits = seg_logits(output)
        self._check(logits)
        b, _, h, w = logits.shape
        if self.region is None:
            return logits.detach().argmax(1) == self.class_id
        return _as_region(self.region.to(logits.device), b, (h, w)).expand(b, h, w)

    def _check(self, logits: torch.Tensor) -> None:
        if self.class_id >= logits.shape[1]:
            raise TaskcamError(
                f"class id {self.class_id} does not exist: the model has {logits.shape[1]} "
                f"classes (0..{logits.shape[1] - 1})"
            )

    def __call__(self, output: Any) -> torch.Tensor:
        logits = seg_logits(output)
        region = self.mask(output)
        scores = logits.softmax(1) if self.probabilities else logits
        return (scores[:, self.class_id] * region).sum(dim=(1, 2))  # [B]

    def __repr__(self) -> str:
        where = "predicted" if self.region is None else "given region"
        return f"RegionTarget(class_id={self.class_id}, {where})"


def pixel_region(y: int, x: int, height: int, width: int) -> torch.Tensor:
    """``BoolTensor[H, W]`` with the single pixel ``(y, x)`` set."""
    if not (0 <= y < height and 0 <= x < width):
        raise TaskcamError(f"pixel ({y}, {x}) is outside the {height}x{width} output")
    region = torch.zeros(height, width, dtype=torch.bool)
    region[y, x] = True
    return region


def box_region(box: Sequence[float], height: int, width: int) -> torch.Tensor:
    """``BoolTensor[H, W]`` true inside the xyxy pixel ``box`` (x2, y2 exclusive)."""
    if len(box) != 4:
        raise TaskcamError(f"box must be [x1, y1, x2, y2], got {list(box)}")
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    x1, x2 = max(0, x1), min(width, x2)
    y1, y2 = max(0, y1), min(height, y2)
    if x2 <= x1 or y2 <= y1:
        raise TaskcamError(f"box {list(box)} covers no pixel of the {height}x{width} output")
    region = torch.zeros(height, width, dtype=torch.bool)
    region[y1:y2, x1:x2] = True
    return region


def component_regions(mask: torch.Tensor, min_pixels: int = 1) -> list[torch.Tensor]:
    """The 8-connected components of ``mask`` ``[H, W]``, largest first."""
    import cv2

    count, labels = cv2.connectedComponents(mask.cpu().numpy().astype(np.uint8), connectivity=8)
    parts = [torch.from_numpy(labels == k) for k in range(1, count)]
    parts = [p for p in parts if int(p.sum()) >= min_pixels]
    return sorted(parts, key=lambda p: -int(p.sum()))


def parse_classes(spec: Union[str, Sequence[int]], num_classes: int) -> Optional[list[int]]:
    """``"all"`` -> ``None`` (every predicted class); ``"1,3"`` or ``[1, 3]`` -> class ids.

    Raises:
        TaskcamError: a class id the model does not have (the message names how many it has).
    """
    if isinstance(spec, str):
        if spec.strip().lower() == "all":
            return None
        try:
            ids = [int(v) for v in spec.split(",") if v.strip()]
        except ValueError as e:
            raise TaskcamError(f"--targets {spec!r}: expected 'all' or class ids like 1,3") from e
    else:
        ids = [int(v) for v in spec]
    bad = [i for i in ids if not 0 <= i < num_classes]
    if bad:
        raise TaskcamError(
            f"class id(s) {bad} do not exist: the model has {num_classes} classes "
            f"(0..{num_classes - 1})"
        )
    if not ids:
        raise TaskcamError(f"--targets {spec!r}: no class id given")
    return ids


def region_targets(
    output: Any,
    classes: Union[str, Sequence[int]] = "all",
    *,
    components: bool = False,
    probabilities: bool = False,
    class_names: Optional[Sequence[str]] = None,
) -> list[list[RegionTarget]]:
    """One list of region targets per image.

    Args:
        output: the model's output on the batch.
        classes: ``"all"`` (every class present in each image's prediction, in id order) or
            class ids; a requested class absent from the prediction still gets a target (its
            map comes back flagged empty).
        components: one target per connected component of each class's predicted region.
        probabilities: score probabilities instead of logits.
        class_names: names for the targets' labels.

    With ``"all"`` and several images the images may hold different class counts; the
    engine needs the same count per image, so pass one image at a time or class ids.
    """
    logits = seg_logits(output).detach()
    ids = parse_classes(classes, logits.shape[1])
    pred = logits.argmax(1)  # [B, H, W]
    rows: list[list[RegionTarget]] = []
    for b in range(logits.shape[0]):
        present = ids if ids is not None else sorted(int(c) for c in pred[b].unique())
        row: list[RegionTarget] = []
        for c in present:
            label = class_names[c] if class_names and c < len(class_names) else str(c)
            if not components:
                row.append(RegionTarget(c, probabilities=probabilities, name=label))
                continue
            for k, part in enumerate(component_regions(pred[b] == c)):
                row.append(
                    RegionTarget(
                        c, part.to(logits.device), probabilities=probabilities, name=f"{label} #{k}"
                    )
                )
        rows.append(row)
    return rows


def default_segmentation_layers(model: nn.Module) -> Optional[list[str]]:
    """A sensible target layer for known segmentation families, ``None`` otherwise.

    - segmentation-models-pytorch (``encoder``/``decoder``/``segmentation_head``): ``decoder``,
      the last feature map before the 1×1 class head, at the finest resolution the model has.
    - torchvision FCN and DeepLabV3: the classifier's last layer before its final convolution;
      LRASPP: ``classifier.cbr``, its high-level branch.

    Example:
        >>> import torchvision
        >>> net = torchvision.models.segmentation.fcn_resnet50(weights=None,
        ...     weights_backbone=None, num_classes=3)
        >>> default_segmentation_layers(net)
        ['classifier.3']
    """
    if all(hasattr(model, a) for a in ("encoder", "decoder", "segmentation_head")):
        return ["decoder"]
    classifier = getattr(model, "classifier", None)
    if hasattr(model, "backbone") and classifier is not None:
        if isinstance(classifier, nn.Sequential) and len(classifier) >= 2:
            return [f"classifier.{len(classifier) - 2}"]
        if hasattr(classifier, "cbr"):
            return ["classifier.cbr"]
    return None
