"""Detectors, explained detection by detection through the detector contract
(:class:`taskcam.Detector`): one ``detection`` record per detection (instance segmenters' as
``region`` records with their masks), drawn with its box, mask, keypoints or rotated box."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from taskcam.adapters import adapter_for
from taskcam.adapters.detection import Detections, keypoint_what, parse_detection_targets
from taskcam.boxes import rotated_corners
from taskcam.engine import Explanation
from taskcam.errors import ImageError, TaskcamError
from taskcam.explainers.per_image import ImageExplainer, ImageResult
from taskcam.loaded import LoadedModel
from taskcam.methods import Method
from taskcam.options import RunOptions
from taskcam.render import (
    detections_picture,
    draw_box,
    draw_keypoints,
    draw_polygon,
    outline,
    save_image,
)

__all__ = ["DetectionExplainer"]

log = logging.getLogger("taskcam")


class DetectionExplainer(ImageExplainer):
    """A detector: ``--targets`` picks detections (``all`` by default); one ``detection``
    record per detection and method (its ``score``, ``box`` in image pixels, and the
    ``layer`` whose map explains it when several are hooked), drawn with its box and label.
    Detections with masks carry the mask's ``pixels`` (in image pixels) and their overlays are
    outlined with the mask: YOLO-seg's instances as ``region`` records, Mask R-CNN's as
    ``detection`` records (a torchvision detector's task is ``detect``). ``--what mask``
    explains the mask instead of the class score; a model without masks is refused by
    :meth:`RunOptions.check` (:func:`taskcam.options.check_masks`) before this is built.

    Args:
        existing_only: drop ``--targets`` indices an image does not have instead of failing
            the image (video frames, whose detections come and go).
    """

    kind = "detection"

    def __init__(
        self,
        loaded: LoadedModel,
        options: RunOptions,
        out: str | Path,
        *,
        existing_only: bool = False,
    ) -> None:
        super().__init__(loaded, options, out)
        self.adapter = adapter_for(loaded, options.conf)
        self.instances = self.adapter.task == "segment"
        self.existing_only = existing_only
        self.layer_names = list(options.layers or self.adapter.default_layers())
        # a malformed spec or an unknown class is the run's error, found before any image;
        # an index an image lacks is that image's (see explain)
        none = Detections.empty()
        parse_detection_targets(options.targets, none, self.adapter.class_names, existing_only=True)

    def _picks(self, dets: Any) -> list[int]:
        names = self.adapter.class_names
        try:
            return parse_detection_targets(
                self.options.targets, dets, names, existing_only=self.existing_only
            )
        except TaskcamError as e:  # this image's detections: the run goes on without it
            raise ImageError(str(e)) from e

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        adapter, names = self.adapter, self.adapter.class_names
        height, width = image.shape[:2]
        x, placement = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        picks = self._picks(dets)
        if not picks:  # none at all, or none of the class --targets asks for
            message = (
                "no detections" if not len(dets) else f"no detections of {self.options.targets}"
            )
            log.warning("%s: %s to explain", source, message)
            item = {"image": source, "width": width, "height": height}
            return ImageResult({**item, "targets": [], "message": message}, {})
        dets = dets.select(picks)
        targets = adapter.targets(dets, self.options.what)
        boxes = placement.boxes_to_image(dets.boxes.float()).cpu()
        masks = None
        if dets.masks is not None:
            masks = placement.map_to_image(dets.masks.float()).cpu().numpy() > 0.5
        keypoints = _keypoints_to_image(dets.keypoints, placement)  # [n, K, D] or None
        polygons = _polygons_to_image(dets.rboxes, placement)  # [n, 4, 2] or None
        highlight = keypoint_what(self.options.what)

        def fields(t: int, exp: Explanation) -> dict[str, Any]:
            k = int(dets.classes[t])
            record: dict[str, Any] = {
                "kind": "region" if self.instances else "detection",
                "index": picks[t],
                "class_id": k,
                "class_name": self._name(k, names),
                "score": float(dets.scores[t]),
                "box": [round(float(v), 2) for v in boxes[t]],
            }
            if targets[t].what != "score":
                record["explains"] = targets[t].what
            if masks is not None:
                record["pixels"] = int(masks[t].sum())
            if keypoints is not None:
                record["keypoints"] = [[round(float(v), 2) for v in k] for k in keypoints[t]]
            if polygons is not None:
                record["polygon"] = [[round(float(v), 2) for v in c] for c in polygons[t]]
            return record

        def decorate(t: int, record: dict[str, Any], picture: np.ndarray) -> np.ndarray:
            if masks is not None:
                picture = outline(picture, masks[t])
            if keypoints is not None:
                index = None if highlight is None else highlight[0]
                picture = draw_keypoints(picture, keypoints[t].tolist(), highlight=index)
            if polygons is not None:
                return draw_polygon(picture, polygons[t].tolist(), self._label(record))
            return draw_box(picture, record["box"], self._label(record))

        def run(method: Method) -> Explanation:
            return self._explainer(method, adapter.model, None)(x, [targets])

        records, tiles, maps = self._explain_methods(
            image,
            folder,
            run,
            lambda m: placement.map_to_image(m).clamp(0, 1).cpu().numpy().astype(np.float32),
            targets,
            [f"{'inst' if self.instances else 'det'}{rank}" for rank in picks],
            fields,
            decorate,
            (adapter.model, x),
        )
        labels = [f"{r['index']}: {r['class_name']}" for r in records[: len(picks)]]
        item = self._item(source, image, folder, records, tiles, labels)
        if self.options.make_grid:
            item["all"] = self._all_pictures(image, folder, records[: len(picks)], maps)
        return ImageResult(item, maps)

    def _label(self, record: dict[str, Any]) -> str:
        """A detection's label on pictures (none with ``labels=False``)."""
        if not self.options.labels:
            return ""
        return f"{record['index']}: {record['class_name']} {record['score']:.2f}"

    def _all_pictures(
        self,
        image: np.ndarray,
        folder: str,
        records: list[dict[str, Any]],
        maps: dict[str, np.ndarray],
    ) -> dict[str, str]:
        """Per method, every detection's map in its box on one picture (``all.png`` for the
        first method, ``all_<method>.png`` for the others); their paths by method."""
        boxes = [r["box"] for r in records]
        labels = [self._label(r) for r in records]
        paths = {}
        for n, (name, method_maps) in enumerate(maps.items()):
            path = f"{folder}/all.png" if n == 0 else f"{folder}/all_{name}.png"
            picture = detections_picture(
                image, method_maps, boxes, labels, box_norm=self.options.box_norm, **self._style
            )
            save_image(self.out / path, picture)
            paths[name] = path
        return paths


def _points_to_image(points: torch.Tensor, placement: Any) -> torch.Tensor:
    """Points ``Tensor[..., 2]`` (x, y) from input pixels to the image's, as degenerate
    boxes through the placement."""
    flat = placement.boxes_to_image(points.float().reshape(-1, 2).repeat(1, 2))[:, :2]
    return flat.reshape(points.shape).cpu()


def _polygons_to_image(rboxes: Optional[torch.Tensor], placement: Any) -> Any:
    """Oriented boxes ``Tensor[n, 5]`` -> their corners in the image's pixels ``[n, 4, 2]``."""
    if rboxes is None:
        return None
    return _points_to_image(rotated_corners(rboxes.float()), placement)


def _keypoints_to_image(keypoints: Optional[torch.Tensor], placement: Any) -> Any:
    """Pose keypoints ``Tensor[n, K, D]`` from input pixels to the image's, or None."""
    if keypoints is None:
        return None
    xy = _points_to_image(keypoints[..., :2], placement)
    return torch.cat([xy, keypoints[..., 2:].float().cpu()], dim=-1)
