"""Per-image explainers: the one place where a run's records and files are made.

An explain run (a folder of images, the frames of a video, the share of a Ray actor) is a
driver over one :class:`ImageExplainer` of the model's kind:

- :class:`ClassExplainer`: a classifier, one ``class`` record per explained class;
- :class:`RegionExplainer`: a semantic segmenter, one ``region`` record per class region;
- :class:`DetectionExplainer`: a detector, one ``detection`` record per detection (instance
  segmenters such as YOLO-seg: one ``region`` record per instance, with its mask).

:func:`image_explainer` picks the kind. Each explains one decoded image, writes its maps
(``.npy``, float32 on the image's grid, in [0, 1]) and overlays (``.png``) under ``out/folder``
and returns the image's ``results.json`` item (docs/results.md) with the maps themselves.

Example:
    >>> import tempfile, numpy as np
    >>> from taskcam.models import load_model
    >>> from taskcam.options import RunOptions
    >>> loaded = load_model("zoo:shapes-cnn")
    >>> ex = image_explainer(loaded, RunOptions(progress=False), tempfile.mkdtemp())
    >>> result = ex.explain(np.zeros((48, 80, 3), np.uint8), "black", source="black.png")
    >>> [(r["kind"], r["method"], r["heatmap"].split("/")[0]) for r in result.item["targets"]]
    [('class', 'gradcam', 'black')]
    >>> result.maps["gradcam"].shape  # one map per target, on the image's own grid
    (1, 48, 80)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F

from taskcam.adapters.detection import keypoint_what
from taskcam.capture import predict
from taskcam.engine import Explainer, Explanation
from taskcam.errors import ImageError, TaskcamError
from taskcam.faithfulness import target_faithfulness
from taskcam.io import to_tensor
from taskcam.layers import default_layer
from taskcam.loaded import LoadedModel
from taskcam.methods import Method, get_method
from taskcam.options import RunOptions
from taskcam.render import (
    box_normalized,
    detections_picture,
    draw_box,
    draw_keypoints,
    draw_polygon,
    grid,
    outline,
    overlay,
    save_image,
)
from taskcam.targets import Target, explained_layer

__all__ = [
    "ClassExplainer",
    "DetectionExplainer",
    "ImageExplainer",
    "ImageResult",
    "RegionExplainer",
    "image_explainer",
    "maps_to_image",
    "output_stems",
    "to_image_mask",
]

log = logging.getLogger("taskcam")


def maps_to_image(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize maps ``Tensor[..., h, w]`` in [0, 1] to the original image grid ``[..., H, W]``.

    Classification inputs are the whole image resized (no crop), so undoing the resize is a
    plain bilinear resize back.

    Example:
        >>> maps_to_image(torch.rand(1, 2, 8, 8), 20, 30).shape
        torch.Size([1, 2, 20, 30])
    """
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return out.clamp(0, 1).reshape(*lead, height, width)


def to_image_mask(region: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A model-grid mask ``BoolTensor[h, w]`` resized (nearest) to the original image.

    Example:
        >>> to_image_mask(torch.eye(2, dtype=torch.bool), 4, 4).astype(int).tolist()[0]
        [1, 1, 0, 0]
    """
    up = F.interpolate(region[None, None].float(), size=(height, width), mode="nearest")
    return up[0, 0].bool().cpu().numpy()


def output_stems(paths: Sequence[Path]) -> dict[str, str]:
    """Each image's output folder name, unique, from the whole list (so a resumed or
    distributed run names them as one uninterrupted run does).

    Example:
        >>> output_stems([Path("a/cat.png"), Path("b/cat.png"), Path("x y.jpg")])
        {'a/cat.png': 'cat', 'b/cat.png': 'cat_2', 'x y.jpg': 'x_y'}
    """
    used: set[str] = set()
    stems = {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "image"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        stems[str(path)] = name
    return stems


@dataclass
class ImageResult:
    """One explained image.

    Attributes:
        item: its ``results.json`` item: ``image``, ``width``, ``height``, ``targets`` (one
            record per target and method, methods in order), and ``grid`` or ``message``.
        maps: method name -> ``float32[T, H, W]`` the maps written, on the image's grid.
    """

    item: dict[str, Any]
    maps: dict[str, np.ndarray]


# per target: the record's fields before the method's ("kind" ... "box"), given the method's
# explanation, and the overlay drawn for it
Fields = Callable[[int, Explanation], dict[str, Any]]
Decorate = Callable[[int, dict[str, Any], np.ndarray], np.ndarray]


class ImageExplainer:
    """Explains one image at a time with every method of a run, into ``out``.

    Subclasses prepare the input and targets of their kind and say what a record holds;
    :meth:`_explain_methods` runs the methods and writes every file and record.

    Args:
        loaded: the model.
        options: the run's options.
        out: the output folder.
    """

    kind: ClassVar[str] = ""

    def __init__(self, loaded: LoadedModel, options: RunOptions, out: str | Path) -> None:
        self.loaded, self.options, self.out = loaded, options, Path(out)
        self.method_objs: list[Method] = [get_method(m) for m in options.method_names(loaded)]
        self.layer_names: list[str] = []
        self._explainers: dict[str, Explainer] = {}

    def adopt_layers(self, layers: Optional[Sequence[str]]) -> None:
        """Use the layers an interrupted run of the same settings found, when none are set."""
        if not self.layer_names and layers:
            self.layer_names = list(layers)

    def item(self, path: Path, image: np.ndarray, stem: str) -> dict[str, Any]:
        """Explain one decoded image file into ``out/stem`` and return its item."""
        return self.explain(image, stem, source=str(path)).item

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        """Explain ``image`` (``uint8[H, W, 3]`` RGB), writing its files under ``out/folder``.

        Args:
            image: the decoded image.
            folder: where its files go, relative to ``out``.
            source: what the item's ``image`` field names (the file, or the video).
        """
        raise NotImplementedError  # pragma: no cover - each kind implements it

    def _explainer(self, method: Method, model: torch.nn.Module, reshape: Any) -> Explainer:
        if method.name not in self._explainers:
            self._explainers[method.name] = Explainer(
                model,
                self.layer_names or None,
                method,
                batch_size=self.options.batch_size,
                aug_smooth=self.options.aug_smooth,
                eigen_smooth=self.options.eigen_smooth,
                reshape=reshape,
                progress=self.options.progress,
            )
        return self._explainers[method.name]

    def _explain_methods(
        self,
        image: np.ndarray,
        folder: str,
        run: Callable[[Method], Explanation],
        to_image: Callable[[torch.Tensor], np.ndarray],
        targets: list[Target],
        files: Sequence[str],
        fields: Fields,
        decorate: Decorate,
        scored: tuple[torch.nn.Module, torch.Tensor],
    ) -> tuple[list[dict[str, Any]], list[list[np.ndarray]], dict[str, np.ndarray]]:
        """Every method on one image: its maps, overlays and records.

        Args:
            image: the decoded image.
            folder: the files' folder, relative to ``out``.
            run: method -> its explanation of the image's targets.
            to_image: one image's maps ``Tensor[T, h, w]`` -> ``float32[T, H, W]``.
            targets: the image's targets.
            files: per target, its file name before ``_<method>`` (``class285``, ``det0``).
            fields: per target, the record's fields before the method's.
            decorate: per target, what is drawn on its overlay.
            scored: the model and the input ``Tensor[1, C, h, w]`` the maps explain; with
                ``faithfulness`` each record gets its map's deletion and insertion there.

        Returns:
            ``(records, tiles, maps)``: records of every method in order, overlays by
            method (rows of the grid) and the maps by method.
        """
        out = self.out
        (out / folder).mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        tiles: list[list[np.ndarray]] = []
        maps: dict[str, np.ndarray] = {}
        for method in self.method_objs:
            exp = run(method)
            method_maps = to_image(exp.maps[0])
            maps[method.name] = method_maps
            faith = self._faithfulness(scored, targets, exp)
            row = []
            for t, target in enumerate(targets):
                base = f"{folder}/{files[t]}_{method.name}"
                np.save(out / f"{base}.npy", method_maps[t])
                record = {**fields(t, exp), **faith[t]}
                picture = overlay(image, self._shown(method_maps[t], record), **self._style)
                picture = decorate(t, record, picture)
                save_image(out / f"{base}.png", picture)
                row.append(picture)
                record.update(
                    {
                        "method": method.name,
                        "heatmap": f"{base}.npy",
                        "overlay": f"{base}.png",
                        "empty": bool(exp.empty[0, t]),
                    }
                )
                layer = explained_layer(target, exp.layers) if len(exp.layers) > 1 else None
                if layer is not None:
                    record["layer"] = layer
                records.append(record)
            tiles.append(row)
        return records, tiles, maps

    def _faithfulness(
        self,
        scored: tuple[torch.nn.Module, torch.Tensor],
        targets: list[Target],
        exp: Explanation,
    ) -> list[dict[str, float]]:
        """Per target, its map's ``deletion``, ``insertion`` and ``faithfulness`` (nothing
        unless the run asks for them, and nothing for a map flagged empty: an all-zero map
        ranks no pixel above another)."""
        scoring = [self.options.faithfulness and not bool(e) for e in exp.empty[0]]
        if not any(scoring):
            return [{} for _ in targets]
        model, x = scored
        picked = [k for k, on in enumerate(scoring) if on]
        rows = target_faithfulness(
            model,
            x,
            [targets[k] for k in picked],
            exp.maps[0, picked],
            steps=self.options.faithfulness_steps,
            batch_size=self.options.batch_size or 32,
            progress=self.options.progress,
        )
        out: list[dict[str, float]] = [{} for _ in targets]
        for k, row in zip(picked, rows):
            out[k] = {name: round(v, 4) for name, v in row[0].as_dict().items()}
        return out

    @property
    def _style(self) -> dict[str, Any]:
        return {"colormap": self.options.colormap, "alpha": self.options.alpha}

    def _shown(self, heat: np.ndarray, record: dict[str, Any]) -> np.ndarray:
        """The map as drawn: rescaled inside the target's box with ``box_norm``."""
        if self.options.box_norm and "box" in record:
            return box_normalized(heat, record["box"])
        return heat

    def _item(
        self,
        source: str,
        image: np.ndarray,
        folder: str,
        records: list[dict[str, Any]],
        tiles: list[list[np.ndarray]],
        col_labels: list[str],
    ) -> dict[str, Any]:
        """The image's item; with ``make_grid``, its methods × targets grid is drawn too."""
        height, width = image.shape[:2]
        item: dict[str, Any] = {
            "image": source,
            "width": width,
            "height": height,
            "targets": records,
        }
        if self.options.make_grid and tiles:
            picture = grid(
                tiles, row_labels=[m.name for m in self.method_objs], col_labels=col_labels
            )
            save_image(self.out / folder / "grid.png", picture)
            item["grid"] = f"{folder}/grid.png"
        return item

    def _name(self, k: int, names: Optional[Sequence[str]]) -> str:
        return names[k] if names and k < len(names) else str(k)


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
        from taskcam.adapters import adapter_for
        from taskcam.adapters.detection import Detections, parse_detection_targets

        super().__init__(loaded, options, out)
        self.adapter = adapter_for(loaded, options.conf)
        self.instances = loaded.task == "segment"
        self.existing_only = existing_only
        self.layer_names = list(options.layers or self.adapter.default_layers())
        # a malformed spec or an unknown class is the run's error, found before any image;
        # an index an image lacks is that image's (see explain)
        none = Detections(
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
        )
        parse_detection_targets(options.targets, none, self.adapter.class_names, existing_only=True)

    def _picks(self, dets: Any) -> list[int]:
        from taskcam.adapters.detection import parse_detection_targets

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
    from taskcam.adapters.yolo import rotated_corners

    return _points_to_image(rotated_corners(rboxes.float()), placement)


def _keypoints_to_image(keypoints: Optional[torch.Tensor], placement: Any) -> Any:
    """Pose keypoints ``Tensor[n, K, D]`` from input pixels to the image's, or None."""
    if keypoints is None:
        return None
    xy = _points_to_image(keypoints[..., :2], placement)
    return torch.cat([xy, keypoints[..., 2:].float().cpu()], dim=-1)


def image_explainer(
    loaded: LoadedModel,
    options: RunOptions,
    out: str | Path,
    *,
    existing_only: bool = False,
) -> ImageExplainer:
    """The per-image explainer of ``loaded``'s kind (see the module docstring).

    Args:
        loaded: the model.
        options: the run's options.
        out: the output folder.
        existing_only: detectors: skip ``--targets`` indices an image lacks (video frames)
            instead of failing the image.

    Raises:
        TaskcamError: a task other than classify, detect or segment; options the model
            refuses (:meth:`taskcam.options.RunOptions.check`); for detectors, the errors of
            :func:`taskcam.adapters.adapter_for` and a malformed ``--targets``.
    """
    options.check(loaded)
    if loaded.is_detector:
        return DetectionExplainer(loaded, options, out, existing_only=existing_only)
    if loaded.task == "segment":
        return RegionExplainer(loaded, options, out)
    if loaded.task == "classify":
        return ClassExplainer(loaded, options, out)
    raise TaskcamError(f"task {loaded.task!r}: expected classify, detect or segment")
