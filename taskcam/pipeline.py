"""Explain image files end to end: load, preprocess, explain, write maps, overlays and
``results.json`` (the contract in DESIGN.md)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from taskcam.capture import Capture
from taskcam.engine import Explainer
from taskcam.errors import ImageError, TaskcamError
from taskcam.io import list_images, load_image, to_tensor
from taskcam.layers import default_layer
from taskcam.methods import get_method
from taskcam.models import LoadedModel
from taskcam.render import grid, overlay, save_image
from taskcam.runlog import RunLog, write_json_atomic

__all__ = ["RunSummary", "detector_adapter", "explain_files", "maps_to_image"]

log = logging.getLogger("taskcam")
RESULTS_VERSION = 1


@dataclass
class RunSummary:
    """What a run did: the results document, where it went, and the images that failed."""

    results: dict[str, Any]
    out_dir: Path
    failures: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0  # images an earlier, interrupted run of the same settings had done

    @property
    def n_targets(self) -> int:
        return sum(len(item["targets"]) for item in self.results["items"])


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


def _to_image_mask(region: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A model-grid mask ``[h, w]`` resized (nearest) to the original image, as numpy."""
    up = F.interpolate(region[None, None].float(), size=(height, width), mode="nearest")
    return up[0, 0].bool().cpu().numpy()


def outline(picture: np.ndarray, mask: np.ndarray, color=(255, 255, 255)) -> np.ndarray:
    """Draw the outline of ``mask`` (``bool[H, W]``) on an RGB picture, with a dark edge."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.ascontiguousarray(picture.copy())
    cv2.drawContours(out, contours, -1, (0, 0, 0), 3)
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def _stems(paths: Sequence[Path]) -> dict[str, str]:
    """Each image's output folder name, unique, from the whole list (so a resumed run names
    them as one uninterrupted run would)."""
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


def _settings(
    loaded: LoadedModel,
    *,
    methods: Optional[Sequence[str]],
    layers: Optional[Sequence[str]],
    **options: Any,
) -> dict[str, Any]:
    """What shapes a run's results: a folder is resumed only under the same settings.

    Also where a run's options are checked against its model before anything is written:
    options that have no meaning for a detector are refused, not silently dropped.
    """
    if loaded.task == "detect" or _is_detector(loaded):
        _check_detection_options(methods or ("odam",), **options)
    pre = loaded.preprocess
    return {
        "version": RESULTS_VERSION,
        "model": loaded.spec,
        "task": loaded.task,
        "size": list(pre.size),
        "mean": list(pre.mean),
        "std": list(pre.std),
        "methods": list(methods) if methods else None,
        "layers": list(layers) if layers else None,
        **options,
    }


def _check_detection_options(
    methods: Sequence[str], *, aug_smooth: bool = False, what: str = "score", **_: Any
) -> None:
    if aug_smooth:
        raise TaskcamError(
            "--aug-smooth: not for detectors: a flipped or rescaled copy of the image has "
            "detections of its own, so one detection's map cannot be averaged over them"
        )
    perturbing = [m for m in methods if get_method(m).perturbation]
    if what not in (None, "score") and perturbing:
        raise TaskcamError(
            f"--what {what}: {', '.join(perturbing)} explain a detection's score (matched in "
            "each perturbed output by D-RISE similarity); explain a box side or objectness "
            "with a gradient method (odam, gradcam, layercam, ...)"
        )


def _finish(
    loaded: LoadedModel,
    methods: Sequence[Any],
    layers: list[str],
    paths: Sequence[Path],
    run: RunLog,
    failures: list[tuple[str, str]],
    complete: bool = True,
) -> RunSummary:
    """Write ``results.json`` (the DESIGN contract) from the run log, in input order, and sum
    the run up; an interrupted run writes what it finished, with ``complete: false``."""
    results = {
        "version": RESULTS_VERSION,
        "model": loaded.spec,
        "task": loaded.task,
        "methods": [m.name for m in methods],
        "layers": layers,
        "items": [run.items[str(p)] for p in paths if str(p) in run.items],
        "failures": [{"image": p, "error": e} for p, e in failures],
        "complete": complete,
    }
    write_json_atomic(run.out / "results.json", results)
    return RunSummary(results, run.out, failures, run.resumed)


def _predict(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's output without gradients, model state restored."""
    with Capture(model, [], need_grad=False), torch.no_grad():
        return model(x)


def explain_files(
    loaded: LoadedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    methods: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    targets: Optional[str] = None,
    colormap: str = "jet",
    batch_size: Optional[int] = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    make_grid: bool = True,
    progress: bool = True,
    what: str = "score",
    conf: Optional[float] = None,
    overwrite: bool = False,
    stride: int = 1,
) -> RunSummary:
    """Explain every image of ``inputs`` with every method and write the results to ``out_dir``.

    For each image: ``<stem>/class<K>_<method>.npy`` (float32 H×W in [0, 1] on the original
    image's grid), the matching ``.png`` overlay, ``<stem>/grid.png`` (methods × targets) and
    one entry in ``results.json``. An image that cannot be read is reported and skipped.

    Each finished image is logged to ``results.jsonl`` (see :mod:`taskcam.runlog`): a run
    stopped by Ctrl-C or a crash and started again with the same settings skips what is done
    and ends with the ``results.json`` of one uninterrupted run; Ctrl-C writes a
    ``results.json`` of the finished images (``complete: false``) before it stops.

    Args:
        loaded: the model and its preprocessing (:func:`taskcam.models.load_model`).
        inputs: image files or folders.
        out_dir: output folder (created).
        methods: registered method names; default ``gradcam``, and ``odam`` for detections
            (Grad-CAM's channel averaging spreads a detection's map over every object of its
            class; ODAM keeps it on the instance).
        layers: target layers; default: the model's preferred layers or the last feature map.
        targets: classification ``top1`` (default), ``top3``, ``285,281`` or class names;
            detection ``all`` (default), ``0,2`` (the model's ranking) or ``class=NAME``;
            segmentation ``all`` (default: every predicted class) or class ids.
        colormap: OpenCV colormap of the overlays.
        batch_size: perturbed inputs per forward for perturbation methods.
        aug_smooth: test-time augmentation smoothing.
        eigen_smooth: eigen smoothing.
        make_grid: also write the methods × targets grid per image.
        progress: progress bars.
        what: detection models: what each detection's map explains, ``score`` (its class
            score), a box side ``x1``/``y1``/``x2``/``y2``, or ``objectness``.
        conf: detection models: the score threshold (default: the model's own).
        overwrite: start afresh in a folder holding results of a run with other settings
            (otherwise refused with an error naming the settings that differ).
        stride: video inputs: explain every ``stride``-th frame.

    Inputs that are video files (:data:`taskcam.video.VIDEO_EXTENSIONS`) are explained frame
    by frame by :func:`taskcam.video.explain_videos` (an annotated video and one item per
    explained frame); a run takes either images or videos, not both.

    Returns:
        A :class:`RunSummary`.

    Example:
        >>> from taskcam.models import load_model
        >>> lm = load_model("torchvision:resnet18", weights="none")  # doctest: +SKIP
        >>> explain_files(lm, ["cat.png"], "out", methods=["gradcam"])  # doctest: +SKIP
    """
    if loaded.task not in ("classify", "detect", "segment"):
        raise TaskcamError(f"task {loaded.task!r}: expected classify, detect or segment")
    from taskcam.video import explain_videos, is_video

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    videos = [p for p in inputs if is_video(p) and not Path(p).is_dir()]
    if videos:
        if len(videos) != len(inputs):
            raise TaskcamError("explain images and videos in separate runs (separate --out)")
        return explain_videos(
            loaded,
            videos,
            out_dir,
            methods=methods,
            layers=layers,
            targets=targets,
            stride=stride,
            colormap=colormap,
            batch_size=batch_size,
            aug_smooth=aug_smooth,
            eigen_smooth=eigen_smooth,
            progress=progress,
            what=what,
            conf=conf,
            overwrite=overwrite,
        )
    if stride != 1:
        raise TaskcamError(f"--stride {stride}: only for video inputs")
    settings = _settings(
        loaded,
        methods=methods,
        layers=layers,
        targets=targets,
        colormap=colormap,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        make_grid=make_grid,
        what=what,
        conf=conf,
    )
    if loaded.task == "detect" or _is_detector(loaded):
        return _explain_detections(
            loaded,
            inputs,
            out_dir,
            methods=methods or ("odam",),
            layers=layers,
            targets=targets,
            what=what,
            conf=conf,
            colormap=colormap,
            batch_size=batch_size,
            eigen_smooth=eigen_smooth,
            make_grid=make_grid,
            progress=progress,
            run_settings=(settings, overwrite),
        )
    method_objs = [get_method(m) for m in methods or ("gradcam",)]
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    run = RunLog(Path(out_dir), settings, overwrite)
    job = _ClassifyJob(
        loaded,
        run.out,
        method_objs,
        layers=layers,
        targets=targets,
        colormap=colormap,
        batch_size=batch_size,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        make_grid=make_grid,
        progress=progress,
        found_layers=run.layers,  # the default layer an interrupted run of these settings found
    )
    return _run_loop(loaded, job, paths, run, progress)


def _run_loop(
    loaded: LoadedModel,
    job: _ClassifyJob | _DetectJob,
    paths: list[Path],
    run: RunLog,
    progress: bool,
) -> RunSummary:
    """Explain each image of ``paths`` the run log does not hold, logging each, then write
    ``results.json`` (also on Ctrl-C, marked incomplete)."""
    failures: list[tuple[str, str]] = []
    stems = _stems(paths)
    with run:
        try:
            for path in tqdm(paths, desc="explain", unit="img", disable=not progress):
                if str(path) in run.items:
                    continue  # done by an earlier, interrupted run of the same settings
                try:
                    item = job.item(path, _read(path), stems[str(path)])
                except ImageError as e:  # an unreadable file, a detection it does not have
                    log.warning("skipping %s: %s", path, e)
                    failures.append((str(path), str(e)))
                    run.failed(str(path), str(e))
                    continue
                run.done(str(path), item, job.layer_names)
        except KeyboardInterrupt:
            _finish(loaded, job.method_objs, job.layer_names, paths, run, failures, False)
            raise
    return _finish(loaded, job.method_objs, job.layer_names, paths, run, failures)


def _read(path: Path) -> np.ndarray:
    """:func:`load_image`, its errors marked as this image's (a run goes on without it)."""
    try:
        return load_image(path)
    except ImageError:
        raise
    except TaskcamError as e:
        raise ImageError(str(e)) from e


class _ClassifyJob:
    """The prepared state of a classification or segmentation run: explains one image at a
    time into ``out`` (used by :func:`explain_files` and by each Ray actor alike)."""

    def __init__(
        self,
        loaded: LoadedModel,
        out: Path,
        method_objs: Sequence[Any],
        *,
        layers: Optional[Sequence[str]],
        targets: Optional[str],
        colormap: str,
        batch_size: Optional[int],
        aug_smooth: bool,
        eigen_smooth: bool,
        make_grid: bool,
        progress: bool,
        found_layers: Optional[Sequence[str]] = None,
    ) -> None:
        from taskcam.adapters.segmentation import default_segmentation_layers

        self.loaded, self.out, self.method_objs = loaded, Path(out), list(method_objs)
        self.segment = loaded.task == "segment"
        self.targets = targets if targets is not None else ("all" if self.segment else "top1")
        self.layers, self.colormap, self.batch_size = layers, colormap, batch_size
        self.aug_smooth, self.eigen_smooth = aug_smooth, eigen_smooth
        self.make_grid, self.progress = make_grid, progress
        model = loaded.model
        self.device = next(iter(model.parameters()), torch.zeros(())).device
        self.layer_names = list(
            layers
            or loaded.layers
            or (default_segmentation_layers(model) if self.segment else None)
            or found_layers
            or []
        )
        self.explainers: dict[str, Explainer] = {}

    def item(self, path: Path, image: np.ndarray, stem: str) -> dict[str, Any]:
        """Explain one decoded image, write its files under ``out/stem``, return its item."""
        from taskcam.adapters.classification import logits_of, parse_targets
        from taskcam.adapters.segmentation import region_targets, seg_logits

        loaded, out, segment, targets = self.loaded, self.out, self.segment, self.targets
        model, pre, names = loaded.model, loaded.preprocess, loaded.class_names
        colormap, method_objs = self.colormap, self.method_objs
        height, width = image.shape[:2]
        x = to_tensor(image, pre.size, pre.mean, pre.std).to(self.device)
        if not self.layer_names:
            self.layer_names = [default_layer(model, x)]
        output = _predict(model, x)
        if segment:
            target_rows = region_targets(output, targets, class_names=names)
            regions = [t.mask(output)[0] for t in target_rows[0]]
            probs = seg_logits(output).softmax(dim=1)[0]  # [K, h, w]
        else:
            logits = logits_of(output)
            target_rows = parse_targets(targets, logits, class_names=names)
            probs = logits.softmax(dim=1)[0]
        (out / stem).mkdir(exist_ok=True)
        records: list[dict[str, Any]] = []
        tiles: list[list[np.ndarray]] = []
        for method in method_objs:
            if method.name not in self.explainers:
                self.explainers[method.name] = Explainer(
                    model,
                    self.layer_names,
                    method,
                    batch_size=self.batch_size,
                    aug_smooth=self.aug_smooth,
                    eigen_smooth=self.eigen_smooth,
                    # the loaded reshape fits the default layers; others are inferred
                    reshape=None if self.layers else loaded.reshape,
                    progress=self.progress,
                )
            exp = self.explainers[method.name](x, target_rows)
            maps = maps_to_image(exp.maps[0], height, width).cpu().numpy().astype(np.float32)
            row = []
            for t, target in enumerate(target_rows[0]):
                k = target.class_index
                base = f"{stem}/{'region' if segment else 'class'}{k}_{method.name}"
                np.save(out / f"{base}.npy", maps[t])
                picture = overlay(image, maps[t], colormap=colormap)
                record: dict[str, Any] = {
                    "kind": "region" if segment else "class",
                    "index": t,
                    "class_id": k,
                    "class_name": names[k] if names and k < len(names) else str(k),
                    "score": float(exp.scores[0, t]),
                }
                if segment:
                    region = regions[t]
                    pixels = int(region.sum())
                    picture = outline(picture, _to_image_mask(region, height, width))
                    record["pixels"] = pixels
                    record["mean_score"] = float(exp.scores[0, t]) / max(1, pixels)
                    record["mean_probability"] = float(probs[k][region].mean()) if pixels else 0.0
                else:
                    record["probability"] = float(probs[k])
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
                records.append(record)
            tiles.append(row)
        item: dict[str, Any] = {
            "image": str(path),
            "width": width,
            "height": height,
            "targets": records,
        }
        if self.make_grid and tiles:
            col_labels = [
                f"{r['class_id']} {r['class_name']}" for r in records[: len(target_rows[0])]
            ]
            picture = grid(tiles, row_labels=[m.name for m in method_objs], col_labels=col_labels)
            save_image(out / stem / "grid.png", picture)
            item["grid"] = f"{stem}/grid.png"
        return item


# -- detection -----------------------------------------------------------------------------------
def _is_detector(loaded: LoadedModel) -> bool:
    """Instance segmenters (YOLO-seg) go through the detection path: instances are detections."""
    return loaded.adapter is not None


def detector_adapter(loaded: LoadedModel, conf: Optional[float] = None) -> Any:
    """The detector adapter for a loaded detection model (YOLO or torchvision).

    Raises:
        TaskcamError: the model is neither an ultralytics YOLO nor a torchvision detector.
    """
    adapter = loaded.adapter
    if adapter is None:
        model = loaded.model
        if type(model).__module__.startswith("ultralytics."):
            from taskcam.adapters.yolo import YoloAdapter

            adapter = YoloAdapter(
                model, size=max(loaded.preprocess.size), class_names=loaded.class_names
            )
        else:
            from taskcam.adapters.torchvision_detection import (
                TorchvisionDetectionAdapter,
                is_torchvision_detector,
            )

            if not is_torchvision_detector(model):
                raise TaskcamError(
                    f"{loaded.spec}: a {type(model).__name__} is neither an ultralytics YOLO "
                    "nor a torchvision detector; taskcam cannot trace its detections"
                )
            adapter = TorchvisionDetectionAdapter(model, class_names=loaded.class_names)
        loaded.adapter = adapter
    if conf is not None:
        if not 0.0 <= conf <= 1.0:
            raise TaskcamError(f"--conf: expected a score in [0, 1], got {conf}")
        adapter.conf = conf
    return adapter


_COLORS = [(255, 255, 255), (255, 220, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0)]


def _explain_detections(
    loaded: LoadedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    methods: Sequence[str],
    layers: Optional[Sequence[str]],
    targets: Optional[str],
    what: str,
    conf: Optional[float],
    colormap: str,
    batch_size: Optional[int],
    eigen_smooth: bool,
    make_grid: bool,
    progress: bool,
    run_settings: tuple[dict[str, Any], bool],
) -> RunSummary:
    """Detections (and YOLO-seg instances): one map per detection, all from one call per
    method, drawn with the detection's box and label; see :func:`explain_files`."""
    adapter = detector_adapter(loaded, conf)
    method_objs = [get_method(m) for m in methods]
    if not method_objs:
        raise TaskcamError("--method: no method given")
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    run = RunLog(Path(out_dir), *run_settings)
    job = _DetectJob(
        loaded,
        run.out,
        method_objs,
        adapter=adapter,
        layers=layers,
        targets=targets,
        what=what,
        colormap=colormap,
        batch_size=batch_size,
        eigen_smooth=eigen_smooth,
        make_grid=make_grid,
        progress=progress,
    )
    return _run_loop(loaded, job, paths, run, progress)


class _DetectJob:
    """The prepared state of a detection run: explains one image at a time into ``out``
    (used by :func:`explain_files` and by each Ray actor alike)."""

    def __init__(
        self,
        loaded: LoadedModel,
        out: Path,
        method_objs: Sequence[Any],
        *,
        adapter: Any,
        layers: Optional[Sequence[str]],
        targets: Optional[str],
        what: str,
        colormap: str,
        batch_size: Optional[int],
        eigen_smooth: bool,
        make_grid: bool,
        progress: bool,
    ) -> None:
        self.loaded, self.out, self.method_objs = loaded, Path(out), list(method_objs)
        self.adapter, self.targets, self.what, self.colormap = adapter, targets, what, colormap
        self.batch_size, self.eigen_smooth = batch_size, eigen_smooth
        self.make_grid, self.progress = make_grid, progress
        self.instances = loaded.task == "segment"
        self.layer_names = list(layers or adapter.default_layers())
        # a malformed spec or an unknown class is the run's error, found before any image;
        # an index an image lacks is that image's (see item)
        from taskcam.adapters.detection import Detections, parse_detection_targets

        none = Detections(
            torch.zeros(0, 4),
            torch.zeros(0),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, dtype=torch.long),
        )
        parse_detection_targets(targets, none, adapter.class_names, existing_only=True)
        self.explainers: dict[str, Explainer] = {}

    def item(self, path: Path, image: np.ndarray, stem: str) -> dict[str, Any]:
        """Explain one decoded image, write its files under ``out/stem``, return its item."""
        from taskcam.adapters.detection import parse_detection_targets
        from taskcam.render import draw_box

        adapter, out, instances = self.adapter, self.out, self.instances
        names, method_objs, colormap = adapter.class_names, self.method_objs, self.colormap
        height, width = image.shape[:2]
        x, placement = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        try:
            picks = parse_detection_targets(self.targets, dets, names)
        except TaskcamError as e:  # this image's detections: the run goes on without it
            raise ImageError(str(e)) from e
        item: dict[str, Any] = {"image": str(path), "width": width, "height": height}
        if not picks:
            # none at all, or none of the class --targets asks for
            message = "no detections" if not len(dets) else f"no detections of {self.targets}"
            log.warning("%s: %s to explain", path, message)
            item.update({"targets": [], "message": message})
            return item
        dets = dets.select(picks)
        target_objs = adapter.targets(dets, self.what)
        boxes = placement.boxes_to_image(dets.boxes.float()).cpu()
        masks = None
        if dets.masks is not None:
            masks = placement.map_to_image(dets.masks.float()).cpu().numpy() > 0.5
        (out / stem).mkdir(exist_ok=True)
        records: list[dict[str, Any]] = []
        tiles: list[list[np.ndarray]] = []
        for method in method_objs:
            if method.name not in self.explainers:
                self.explainers[method.name] = Explainer(
                    adapter.model,
                    self.layer_names,
                    method,
                    batch_size=self.batch_size,
                    eigen_smooth=self.eigen_smooth,
                    progress=self.progress,
                )
            exp = self.explainers[method.name](x, [target_objs])
            maps = placement.map_to_image(exp.maps[0]).clamp(0, 1).cpu().numpy()
            maps = maps.astype(np.float32)
            row = []
            for t, (rank, target) in enumerate(zip(picks, target_objs)):
                k = int(dets.classes[t])
                name = names[k] if names and k < len(names) else str(k)
                base = f"{stem}/{'inst' if instances else 'det'}{rank}_{method.name}"
                np.save(out / f"{base}.npy", maps[t])
                picture = overlay(image, maps[t], colormap=colormap)
                box = [round(float(v), 2) for v in boxes[t]]
                record: dict[str, Any] = {
                    "kind": "region" if instances else "detection",
                    "index": rank,
                    "class_id": k,
                    "class_name": name,
                    "score": float(dets.scores[t]),
                    "box": box,
                }
                if target.what != "score":
                    record["explains"] = target.what
                if masks is not None:
                    picture = outline(picture, masks[t])
                    record["pixels"] = int(masks[t].sum())
                picture = draw_box(picture, box, f"{rank}: {name} {record['score']:.2f}")
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
                if len(exp.layers) > 1 and getattr(target, "layer", None) in exp.layers:
                    record["layer"] = target.layer
                records.append(record)
            tiles.append(row)
        item["targets"] = records
        if self.make_grid and tiles:
            col_labels = [f"{r['index']}: {r['class_name']}" for r in records[: len(picks)]]
            picture = grid(tiles, row_labels=[m.name for m in method_objs], col_labels=col_labels)
            save_image(out / stem / "grid.png", picture)
            item["grid"] = f"{stem}/grid.png"
        return item
