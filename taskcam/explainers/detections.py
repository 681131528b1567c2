"""Detectors, explained detection by detection through the detector contract
(:class:`taskcam.Detector`): one ``detection`` record per detection (instance segmenters' as
``region`` records with their masks), drawn with its box, mask, keypoints or rotated box."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from taskcam.adapters import adapter_for
from taskcam.adapters.detection import Detections, keypoint_what, parse_detection_targets
from taskcam.adapters.detection.box_specs import hand_labels
from taskcam.adapters.detection.labels import read_labels
from taskcam.adapters.detection.outcomes import ErrorAnalysis, analyse_input
from taskcam.boxes import rotated_corners
from taskcam.engine import Explanation
from taskcam.errors import ImageError, TaskcamError
from taskcam.explainers.per_image import ImageExplainer, ImageResult
from taskcam.loaded import LoadedModel
from taskcam.methods import Method
from taskcam.options import RunOptions
from taskcam.render import (
    OUTCOME_COLORS,
    detections_picture,
    draw_box,
    draw_keypoints,
    draw_polygon,
    outline,
    save_image,
)

__all__ = ["DetectionExplainer"]

log = logging.getLogger("taskcam")

_SHORT_REASONS = {
    "below_conf": "low",
    "suppressed": "nms",
    "wrong_class": "class",
    "no_candidate": "none",
}  # a missed label's reason as its picture's label says it

LABEL_BOX_STYLE = {"color": OUTCOME_COLORS["label"], "dashed": True}
"""How a label's own box is drawn beside the detection's or candidate's."""


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
        self.truth: dict[str, Any] = {}  # --labels by image path (start, or read per image)
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

    def start(self, paths: Sequence[Path]) -> None:
        """Read the run's labels (``--labels``) for all its images at once."""
        if self.options.labels_from is not None:
            self.truth.update(
                read_labels(self.options.labels_from, paths, self.adapter.class_names)
            )
        elif self.options.boxes and len(paths) != 1:
            raise TaskcamError(
                f"--box names boxes on one image; this run has {len(paths)}: give each image's "
                "labels with --labels"
            )

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        adapter = self.adapter
        height, width = image.shape[:2]
        x, placement = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        analysis = self._analysis(source, x, placement, dets)
        picks = self._picks(dets)
        rows = self._detection_rows(dets, picks, placement, analysis)
        if analysis is not None:
            rows += self._missed_rows(analysis, placement)
        item = {"image": source, "width": width, "height": height}
        if analysis is not None:
            item["outcomes"] = analysis.counts
        if not rows:  # none at all, or none of the class --targets asks for
            message = (
                "no detections" if not len(dets) else f"no detections of {self.options.targets}"
            )
            log.warning("%s: %s to explain", source, message)
            return ImageResult({**item, "targets": [], "message": message}, {})
        targets = [r.target for r in rows]
        highlight = keypoint_what(self.options.what)

        def decorate(t: int, record: dict[str, Any], picture: np.ndarray) -> np.ndarray:
            row = rows[t]
            if row.mask is not None:
                picture = outline(picture, row.mask)
            if row.keypoints is not None:
                index = None if highlight is None else highlight[0]
                picture = draw_keypoints(picture, row.keypoints, highlight=index)
            if row.label_box is not None:
                picture = draw_box(picture, row.label_box, "", **LABEL_BOX_STYLE)
            if row.polygon is not None:
                return draw_polygon(picture, row.polygon, self._label(record))
            return draw_box(picture, record["box"], self._label(record), **row.style)

        def run(method: Method) -> Explanation:
            return self._explainer(method, adapter.model, None)(x, [targets])

        records, tiles, maps = self._explain_methods(
            image,
            folder,
            run,
            lambda m: placement.map_to_image(m).clamp(0, 1).cpu().numpy().astype(np.float32),
            targets,
            [r.file for r in rows],
            lambda t, exp: dict(rows[t].record),
            decorate,
            (adapter.model, x),
        )
        labels = [_column_label(r.record) for r in rows]
        item = {**item, **self._item(source, image, folder, records, tiles, labels)}
        if self.options.make_grid:
            item["all"] = self._all_pictures(image, folder, rows, maps)
        return ImageResult(item, maps)

    def _analysis(
        self, source: str, x: torch.Tensor, placement: Any, dets: Detections
    ) -> Optional[ErrorAnalysis]:
        """The image's labels matched to its detections (None without labels)."""
        options, names = self.options, self.adapter.class_names
        if options.labels_from is not None:
            if source not in self.truth:  # a driver that did not call start (Ray actors)
                self.truth.update(read_labels(options.labels_from, [source], names))
            labels = self.truth[source]
        elif options.boxes:
            boxes = placement.boxes_to_image(dets.boxes.float()).cpu()
            labels = hand_labels(options.boxes, names, boxes, dets.classes)
        else:
            return None
        return analyse_input(
            self.adapter,
            x,
            placement,
            labels,
            iou=options.match_iou,
            what=options.what,
            detections=dets,
        )

    def _detection_rows(
        self,
        dets: Detections,
        picks: list[int],
        placement: Any,
        analysis: Optional[ErrorAnalysis],
    ) -> list[_Row]:
        """One row per picked detection: its target, record and drawing."""
        if not picks:
            return []
        names = self.adapter.class_names
        chosen = dets.select(picks)
        targets = self.adapter.targets(chosen, self.options.what)
        boxes = placement.boxes_to_image(chosen.boxes.float()).cpu()
        masks = None
        if chosen.masks is not None:
            masks = placement.map_to_image(chosen.masks.float()).cpu().numpy() > 0.5
        keypoints = _keypoints_to_image(chosen.keypoints, placement)  # [n, K, D] or None
        polygons = _polygons_to_image(chosen.rboxes, placement)  # [n, 4, 2] or None
        rows = []
        for t, rank in enumerate(picks):
            k = int(chosen.classes[t])
            record: dict[str, Any] = {
                "kind": "region" if self.instances else "detection",
                "index": rank,
                "class_id": k,
                "class_name": self._name(k, names),
                "score": float(chosen.scores[t]),
                "box": [round(float(v), 2) for v in boxes[t]],
            }
            if targets[t].what != "score":
                record["explains"] = targets[t].what
            row = _Row(targets[t], f"{'inst' if self.instances else 'det'}{rank}", record)
            if masks is not None:
                record["pixels"] = int(masks[t].sum())
                row.mask = masks[t]
            if keypoints is not None:
                record["keypoints"] = [[round(float(v), 2) for v in k] for k in keypoints[t]]
                row.keypoints = keypoints[t].tolist()
            if polygons is not None:
                record["polygon"] = [[round(float(v), 2) for v in c] for c in polygons[t]]
                row.polygon = polygons[t].tolist()
            if chosen.fields is not None:  # a prompt, a phrase: the model's own fields
                record.update(chosen.fields[t])
                row.label_box = record.get("prompt_box")
                if record.get("prompt_points"):
                    row.keypoints = [[*p, 1.0] for p in record["prompt_points"]]
            if analysis is not None:
                outcome = analysis.outcomes[rank]
                record.update(outcome.fields(names))
                row.label_box = record.get("label_box")
                row.style = {"color": OUTCOME_COLORS[outcome.outcome]}
            rows.append(row)
        return rows

    def _missed_rows(self, analysis: ErrorAnalysis, placement: Any) -> list[_Row]:
        """Per missed label, one row per target that explains it (see
        :mod:`taskcam.adapters.detection.outcomes`)."""
        names = self.adapter.class_names
        rows = []
        for o in analysis.missed:
            k, versus = int(o.label_class or 0), o.versus_class
            if o.reason == "no_candidate" or o.box is None:
                box = list(o.label_box or [])
            else:
                box = placement.boxes_to_image(o.box.float()[None]).cpu()[0].tolist()
            for role, target in o.targets:
                record: dict[str, Any] = {
                    "kind": "detection",
                    "index": None,
                    "class_id": k,
                    "class_name": self._name(k, names),
                    "score": round(float(o.candidate_score or 0.0), 4),
                    "box": [round(float(v), 2) for v in box],
                }
                if role != "score" and versus is not None:
                    record["class_id"], record["class_name"] = versus, self._name(versus, names)
                    record["score"] = round(float(o.versus_score or 0.0), 4)
                if role == "contrast" and versus is not None:
                    record["explains"] = "contrast"
                    record["versus_class"], record["versus_name"] = k, self._name(k, names)
                    record["score"] = round(
                        float(o.versus_score or 0) - float(o.candidate_score or 0), 4
                    )
                record.update(o.fields(names))
                file = f"miss{o.label}" + ("" if role == "score" else f"_{role}")
                row = _Row(target, file, record, label_box=record["label_box"], role=role)
                row.style = {"color": OUTCOME_COLORS["missed"]}
                rows.append(row)
        return rows

    def _label(self, record: dict[str, Any]) -> str:
        """A detection's label on pictures (none with ``labels=False``)."""
        if not self.options.labels:
            return ""
        if record.get("outcome") == "missed":
            versus = f"-{record['versus_name']}" if "versus_name" in record else ""
            why = _SHORT_REASONS.get(record["reason"], record["reason"])
            return f"miss: {record['class_name']}{versus} {record['score']:.2f} {why}"
        flag = " FP" if record.get("outcome") == "false_positive" else ""
        return f"{record['index']}: {record['class_name']} {record['score']:.2f}{flag}"

    def _all_pictures(
        self,
        image: np.ndarray,
        folder: str,
        rows: list[_Row],
        maps: dict[str, np.ndarray],
    ) -> dict[str, str]:
        """Per method, every detection's map in its box on one picture (``all.png`` for the
        first method, ``all_<method>.png`` for the others), boxes coloured by outcome when the
        run has labels (a missed label's map in its candidate's box, beside the label's); their
        paths by method."""
        shown = [t for t, r in enumerate(rows) if r.role == "score"]  # not versus, contrast
        boxes = [rows[t].record["box"] for t in shown]
        labels = [self._label(rows[t].record) for t in shown]
        extra: dict[str, Any] = {}
        if any(r.record.get("outcome") for r in rows):
            extra["colors"] = [rows[t].style["color"] for t in shown]
            extra["label_boxes"] = [rows[t].label_box for t in shown]
        paths = {}
        for n, (name, method_maps) in enumerate(maps.items()):
            path = f"{folder}/all.png" if n == 0 else f"{folder}/all_{name}.png"
            picture = detections_picture(
                image,
                method_maps[shown],
                boxes,
                labels,
                box_norm=self.options.box_norm,
                **extra,
                **self._style,
            )
            save_image(self.out / path, picture)
            paths[name] = path
        return paths


@dataclass
class _Row:
    """One explained target of an image: its target, file stem, record and drawing."""

    target: Any
    file: str
    record: dict[str, Any]
    label_box: Optional[list[float]] = None
    mask: Optional[np.ndarray] = None
    keypoints: Optional[list] = None
    polygon: Optional[list] = None
    style: dict[str, Any] = field(default_factory=dict)
    role: str = "score"


def _column_label(record: dict[str, Any]) -> str:
    """A target's column title on the grid."""
    if record.get("outcome") == "missed":
        versus = f" - {record['versus_name']}" if "versus_name" in record else ""
        return f"missed {record['label']}: {record['class_name']}{versus}"
    return f"{record['index']}: {record['class_name']}"


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
