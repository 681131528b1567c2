"""Classifiers and semantic segmenters, explained class by class: one ``class`` record per
explained class, one ``region`` record per class region."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch

from taskcam.capture import predict
from taskcam.engine import Explanation
from taskcam.explainers.per_image import (
    Decorate,
    Fields,
    ImageExplainer,
    ImageResult,
    maps_to_image,
    to_image_mask,
)
from taskcam.io import to_tensor
from taskcam.layers import default_layer
from taskcam.loaded import LoadedModel
from taskcam.methods import Method
from taskcam.options import RunOptions
from taskcam.render import outline
from taskcam.targets import Target

__all__ = ["ClassExplainer", "RegionExplainer"]


class ClassExplainer(ImageExplainer):
    """A classifier: ``--targets`` picks classes (``top1`` by default); one ``class`` record
    per class and method, with its logit (``score``) and softmax ``probability``."""

    kind = "class"
    _default_targets: ClassVar[str] = "top1"

    def __init__(self, loaded: LoadedModel, options: RunOptions, out: str | Path) -> None:
        super().__init__(loaded, options, out)
        self.targets = options.targets if options.targets is not None else self._default_targets
        self.device = next(iter(loaded.model.parameters()), torch.zeros(())).device
        self.layer_names = list(options.layers or loaded.layers or self._default_layers() or [])

    def _default_layers(self) -> Optional[list[str]]:
        return None

    def _input(self, image: np.ndarray) -> tuple[torch.Tensor, Any]:
        """The model input and output; the default layer is found on the first image (unless
        no method reads a layer: rise, the attention methods)."""
        pre, model = self.loaded.preprocess, self.loaded.model
        x = to_tensor(image, pre.size, pre.mean, pre.std).to(self.device)
        if not self.layer_names and any(m.uses_layers for m in self.method_objs):
            self.layer_names = [default_layer(model, x)]
        return x, predict(model, x)

    def _run(self, x: torch.Tensor, rows: list[list[Target]]) -> Callable[[Method], Explanation]:
        # the loaded reshape fits the default layers; other layers' reshapes are inferred
        reshape = None if self.options.layers else self.loaded.reshape
        return lambda method: self._explainer(method, self.loaded.model, reshape)(x, rows)

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        from taskcam.adapters.classification import logits_of, parse_targets

        names = self.loaded.class_names
        x, output = self._input(image)
        logits = logits_of(output)
        rows = parse_targets(self.targets, logits, class_names=names)
        probs = logits.softmax(dim=1)[0]
        ids = [t.class_index for t in rows[0]]

        def fields(t: int, exp: Explanation) -> dict[str, Any]:
            k = ids[t]
            return {
                "kind": "class",
                "index": t,
                "class_id": k,
                "class_name": self._name(k, names),
                "score": float(exp.scores[0, t]),
                "probability": float(probs[k]),
            }

        return self._explain_classes(image, folder, source, (x, rows), fields)

    def _explain_classes(
        self,
        image: np.ndarray,
        folder: str,
        source: str,
        prepared: tuple[torch.Tensor, list[list[Target]]],
        fields: Fields,
        decorate: Optional[Decorate] = None,
    ) -> ImageResult:
        """Every method on one image's class (or class region) targets: files named
        ``<kind><class id>_<method>``, grid columns labelled by class."""
        (x, rows), names = prepared, self.loaded.class_names
        height, width = image.shape[:2]
        ids = [t.class_index for t in rows[0]]
        records, tiles, maps = self._explain_methods(
            image,
            folder,
            self._run(x, rows),
            lambda m: maps_to_image(m, height, width).cpu().numpy().astype(np.float32),
            rows[0],
            [f"{self.kind}{k}" for k in ids],
            fields,
            decorate or (lambda t, record, picture: picture),
            (self.loaded.model, x),
        )
        labels = [f"{k} {self._name(k, names)}" for k in ids]
        return ImageResult(self._item(source, image, folder, records, tiles, labels), maps)


class RegionExplainer(ClassExplainer):
    """A semantic segmenter: ``--targets`` picks classes (``all`` predicted ones by default);
    one ``region`` record per class region and method (Seg-Grad-CAM's summed logits as
    ``score``, the region's ``pixels``, ``mean_score`` and ``mean_probability``), its overlay
    outlined with the region."""

    kind = "region"
    _default_targets = "all"

    def _default_layers(self) -> Optional[list[str]]:
        from taskcam.adapters.segmentation import default_segmentation_layers

        return default_segmentation_layers(self.loaded.model)

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        from taskcam.adapters.segmentation import region_targets, seg_logits

        height, width = image.shape[:2]
        names = self.loaded.class_names
        x, output = self._input(image)
        rows = region_targets(output, self.targets, class_names=names)
        regions = [t.mask(output)[0] for t in rows[0]]  # BoolTensor[h, w] per target
        probs = seg_logits(output).softmax(dim=1)[0]  # [K, h, w]
        ids = [t.class_index for t in rows[0]]

        def fields(t: int, exp: Explanation) -> dict[str, Any]:
            k, region = ids[t], regions[t]
            pixels = int(region.sum())
            score = float(exp.scores[0, t])
            return {
                "kind": "region",
                "index": t,
                "class_id": k,
                "class_name": self._name(k, names),
                "score": score,
                "pixels": pixels,
                "mean_score": score / max(1, pixels),
                "mean_probability": float(probs[k][region].mean()) if pixels else 0.0,
            }

        def decorate(t: int, record: dict[str, Any], picture: np.ndarray) -> np.ndarray:
            return outline(picture, to_image_mask(regions[t], height, width))

        return self._explain_classes(image, folder, source, (x, rows), fields, decorate)
