"""Explain videos frame by frame: every ``stride``-th frame is explained like an image and the
run writes an annotated video plus per-frame results.

For each video ``clip.mp4`` in ``out_dir``:

- ``clip_explained.mp4``: one output frame per explained frame (``mp4v``, the input's frame rate
  divided by ``stride``), the overlay of the frame's maps combined (their pixel-wise maximum),
  with detection boxes and labels drawn; with several methods the first one goes to
  ``clip_explained.mp4`` and each other to ``clip_explained_<method>.mp4``;
- ``clip/f<frame>/<kind><k>_<method>.npy`` and ``.png``: each target's map (float32 H×W in
  [0, 1] on the frame's grid) and its overlay, as for images;
- ``results.json`` (the DESIGN contract): one item per explained frame with ``"image"`` the
  video, ``"frame"`` its index, ``"time"`` in seconds, its width, height and targets; the
  written videos are listed under ``"videos"``.

Videos are recognised by their extension (:data:`VIDEO_EXTENSIONS`). A video run is not
resumed frame by frame: the annotated video is written in one go, so a re-run with the same
settings redoes every frame (other settings in the same ``out_dir`` are refused unless
``overwrite``).

Example:
    >>> from taskcam.models import load_model
    >>> lm = load_model("zoo:shapes-fasterrcnn")  # doctest: +SKIP
    >>> summary = explain_video(lm, "clip.mp4", "out", stride=2)  # doctest: +SKIP
    >>> [item["frame"] for item in summary.results["items"]]  # doctest: +SKIP
    [0, 2, 4, 6]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import torch
from tqdm.auto import tqdm

from taskcam.engine import Explainer
from taskcam.errors import TaskcamError
from taskcam.io import to_tensor
from taskcam.layers import default_layer
from taskcam.methods import get_method
from taskcam.models import LoadedModel
from taskcam.render import draw_box, draw_label, overlay, save_image
from taskcam.runlog import RunLog, write_json_atomic

__all__ = ["VIDEO_EXTENSIONS", "explain_video", "explain_videos", "is_video", "read_frames"]

log = logging.getLogger("taskcam")

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
DEFAULT_FPS = 25.0  # when the container does not say


def is_video(path: str | Path) -> bool:
    """Whether ``path`` names a video, by its extension (case-insensitive).

    Example:
        >>> is_video("clip.MP4"), is_video("cat.png")
        (True, False)
    """
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _open(path: Path) -> tuple[cv2.VideoCapture, float, int]:
    """An opened capture, its frame rate and frame count (0 when unknown)."""
    if not path.is_file():
        raise TaskcamError(f"input not found: '{path}'")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise TaskcamError(f"cannot open video '{path}'")
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not math.isfinite(fps) or fps <= 0:
        fps = DEFAULT_FPS
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return cap, fps, max(count, 0)


def read_frames(path: str | Path, stride: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for every ``stride``-th frame of a video, frames RGB uint8.

    Args:
        path: the video file.
        stride: keep frames 0, stride, 2 * stride, ...

    Raises:
        TaskcamError: the file is missing, OpenCV cannot open it, or it holds no frame.

    Example:
        >>> [i for i, _ in read_frames("clip.mp4", stride=3)]  # doctest: +SKIP
        [0, 3, 6]
    """
    stride = _check_stride(stride)
    path = Path(path)
    cap, _, _ = _open(path)
    try:
        index = 0
        while True:
            if index % stride == 0:
                ok, bgr = cap.read()
                if not ok:
                    break
                yield index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            elif not cap.grab():  # skipped frames are not decoded
                break
            index += 1
    finally:
        cap.release()
    if index == 0:
        raise TaskcamError(f"cannot read any frame from video '{path}'")


def _check_stride(stride: Any) -> int:
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise TaskcamError(f"--stride: expected a whole number >= 1, got {stride!r}")
    return stride


class _Frames:
    """Explains one frame with a loaded model: ``(records, maps per method, boxes, labels)``."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        methods: Sequence[str],
        layers: Optional[Sequence[str]],
        targets: Optional[str],
        what: str,
        conf: Optional[float],
        batch_size: Optional[int],
        aug_smooth: bool,
        eigen_smooth: bool,
    ) -> None:
        from taskcam.pipeline import _is_detector, detector_adapter

        self.loaded = loaded
        self.detect = loaded.task == "detect" or _is_detector(loaded)
        self.segment = loaded.task == "segment"
        self.methods = [get_method(m) for m in methods]
        if not self.methods:
            raise TaskcamError("--method: no method given")
        self.user_layers = list(layers) if layers else None
        self.what, self.batch_size = what, batch_size
        self.aug_smooth, self.eigen_smooth = aug_smooth, eigen_smooth
        self.explainers: dict[str, Explainer] = {}
        # the last frame's instance (YOLO-seg) or class-region masks on the frame's grid
        self.masks: Optional[np.ndarray] = None
        if self.detect:
            self.adapter = detector_adapter(loaded, conf)
            self.names = self.adapter.class_names
            self.model = self.adapter.model
            self.layers = list(layers or self.adapter.default_layers())
            self.targets = targets
        else:
            from taskcam.adapters.segmentation import default_segmentation_layers

            self.names = loaded.class_names
            self.model = loaded.model
            self.layers = list(
                layers
                or loaded.layers
                or (default_segmentation_layers(self.model) if self.segment else None)
                or []
            )
            self.targets = targets or ("all" if self.segment else "top1")

    def _explainer(self, method: Any) -> Explainer:
        if method.name not in self.explainers:
            self.explainers[method.name] = Explainer(
                self.model,
                self.layers,
                method,
                batch_size=self.batch_size,
                aug_smooth=self.aug_smooth and not self.detect,
                eigen_smooth=self.eigen_smooth,
                reshape=None if (self.detect or self.user_layers) else self.loaded.reshape,
                progress=False,
            )
        return self.explainers[method.name]

    def __call__(self, image: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray], list]:
        """Records without paths, maps ``{method: float32[T, H, W]}`` and per-target boxes."""
        return self._detections(image) if self.detect else self._classes(image)

    def _detections(self, image: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray], list]:
        from taskcam.adapters.detection import parse_detection_targets

        self.masks = None
        x, placement = self.adapter.prepare(image)
        dets = self.adapter.detect(x)[0]
        picks = parse_detection_targets(self.targets, dets, self.names, existing_only=True)
        if not picks:
            return [], {}, []
        dets = dets.select(picks)
        if dets.masks is not None:
            self.masks = placement.map_to_image(dets.masks.float()).cpu().numpy() > 0.5
        target_objs = self.adapter.targets(dets, self.what)
        boxes = placement.boxes_to_image(dets.boxes.float()).cpu()
        maps = {}
        for method in self.methods:
            exp = self._explainer(method)(x, [target_objs])
            m = placement.map_to_image(exp.maps[0]).clamp(0, 1).cpu().numpy()
            maps[method.name] = (m.astype(np.float32), exp.empty[0].tolist())
        records, box_list = [], []
        kind = "region" if self.segment else "detection"
        for t, (rank, target) in enumerate(zip(picks, target_objs)):
            k = int(dets.classes[t])
            box = [round(float(v), 2) for v in boxes[t]]
            record: dict[str, Any] = {
                "kind": kind,
                "index": rank,
                "class_id": k,
                "class_name": self._name(k),
                "score": float(dets.scores[t]),
                "box": box,
            }
            if target.what != "score":
                record["explains"] = target.what
            records.append(record)
            box_list.append(box)
        return records, maps, box_list

    def _classes(self, image: np.ndarray) -> tuple[list[dict], dict[str, np.ndarray], list]:
        from taskcam.adapters.classification import logits_of, parse_targets
        from taskcam.adapters.segmentation import region_targets, seg_logits
        from taskcam.pipeline import _predict, _to_image_mask, maps_to_image

        height, width = image.shape[:2]
        pre = self.loaded.preprocess
        device = next(iter(self.model.parameters()), torch.zeros(())).device
        x = to_tensor(image, pre.size, pre.mean, pre.std).to(device)
        if not self.layers:
            self.layers = [default_layer(self.model, x)]
        output = _predict(self.model, x)
        if self.segment:
            target_rows = region_targets(output, self.targets, class_names=self.names)
            regions = [t.mask(output)[0] for t in target_rows[0]]
            probs = seg_logits(output).softmax(dim=1)[0]  # [K, h, w]
            self.masks = np.stack([_to_image_mask(r, height, width) for r in regions])
        else:
            logits = logits_of(output)
            target_rows = parse_targets(self.targets, logits, class_names=self.names)
            probs = logits.softmax(dim=1)[0]
        maps: dict[str, Any] = {}
        scores = None
        for method in self.methods:
            exp = self._explainer(method)(x, target_rows)
            m = maps_to_image(exp.maps[0], height, width).cpu().numpy().astype(np.float32)
            maps[method.name] = (m, exp.empty[0].tolist())
            if scores is None:
                scores = exp.scores[0]
        records = []
        for t, target in enumerate(target_rows[0]):
            k = target.class_index
            record: dict[str, Any] = {
                "kind": "region" if self.segment else "class",
                "index": t,
                "class_id": k,
                "class_name": self._name(k),
                "score": float(scores[t]) if scores is not None else 0.0,
            }
            if self.segment:
                pixels = int(regions[t].sum())
                record["pixels"] = pixels
                record["mean_score"] = record["score"] / max(1, pixels)
                record["mean_probability"] = float(probs[k][regions[t]].mean()) if pixels else 0.0
            else:
                record["probability"] = float(probs[k])
            records.append(record)
        return records, maps, [None] * len(records)

    def _name(self, k: int) -> str:
        return self.names[k] if self.names and k < len(self.names) else str(k)


def _annotate(
    image: np.ndarray,
    maps: Optional[np.ndarray],
    records: list[dict],
    boxes: list,
    colormap: str,
) -> np.ndarray:
    """One output frame: the overlay of the maps' maximum, boxes and labels drawn."""
    if maps is None or not len(maps):
        picture = np.ascontiguousarray(image)
        return draw_label(picture, "no targets") if not records else picture
    picture = overlay(image, maps.max(axis=0), colormap=colormap)
    labels = []
    for record, box in zip(records, boxes):
        text = f"{record['index']}: {record['class_name']} {record['score']:.2f}"
        if box is not None:
            picture = draw_box(picture, box, text)
        else:
            labels.append(f"{record['class_name']} {record['score']:.2f}")
    if labels:
        picture = draw_label(picture, "\n".join(labels))
    return picture


def explain_video(
    loaded: LoadedModel, path: str | Path, out_dir: str | Path, **options: Any
) -> Any:
    """Explain one video; see :func:`explain_videos` for the options and outputs.

    Example:
        >>> from taskcam.models import load_model
        >>> lm = load_model("zoo:shapes-cnn")  # doctest: +SKIP
        >>> explain_video(lm, "clip.mp4", "out", stride=5).results["videos"]  # doctest: +SKIP
        [{'image': 'clip.mp4', 'method': 'gradcam', 'path': 'clip_explained.mp4', ...}]
    """
    return explain_videos(loaded, [path], out_dir, **options)


def explain_videos(
    loaded: LoadedModel,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    methods: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    targets: Optional[str] = None,
    stride: int = 1,
    colormap: str = "jet",
    batch_size: Optional[int] = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    progress: bool = True,
    what: str = "score",
    conf: Optional[float] = None,
    overwrite: bool = False,
) -> Any:
    """Explain every ``stride``-th frame of each video and write annotated videos and results.

    Detectors: every detection of a frame (``targets`` picks them as for images), default method
    ``odam``; classifiers: the top class (default ``top1``); segmenters: every predicted class
    region; default method ``gradcam``. The annotated video shows, per explained frame, the
    pixel-wise maximum of the frame's maps over the frame, with boxes and labels.

    Args:
        loaded: the model and its preprocessing (:func:`taskcam.models.load_model`).
        paths: video files (:data:`VIDEO_EXTENSIONS`).
        out_dir: output folder (created).
        methods: registered method names.
        layers: target layers; default: the model's preferred layers or the last feature map.
        targets: as :func:`taskcam.pipeline.explain_files`.
        stride: explain frames 0, stride, 2 * stride, ...; the video is written at the input's
            frame rate divided by ``stride``.
        colormap: OpenCV colormap of the overlays.
        batch_size: perturbed inputs per forward for perturbation methods.
        aug_smooth: test-time augmentation smoothing (classifiers, segmenters).
        eigen_smooth: eigen smoothing.
        progress: a progress bar per video, in frames per second.
        what: detection models: what each detection's map explains (see ``explain_files``).
        conf: detection models: the score threshold (default: the model's own).
        overwrite: start afresh in a folder holding results of a run with other settings.

    Returns:
        A :class:`taskcam.pipeline.RunSummary`; ``results["items"]`` has one item per
        explained frame, ``results["videos"]`` one entry per written video.

    Raises:
        TaskcamError: a video is missing or cannot be opened (the message names it, and nothing
            is written), a bad ``stride``, or the errors of :func:`explain_files`.

    Example:
        >>> from taskcam.models import load_model
        >>> lm = load_model("zoo:shapes-fasterrcnn")  # doctest: +SKIP
        >>> s = explain_videos(lm, ["a.mp4", "b.mp4"], "out", stride=2)  # doctest: +SKIP
        >>> sorted({item["image"] for item in s.results["items"]})  # doctest: +SKIP
        ['a.mp4', 'b.mp4']
    """
    from taskcam.pipeline import (
        RESULTS_VERSION,
        RunSummary,
        _is_detector,
        _settings,
        _stems,
        outline,
    )

    if loaded.task not in ("classify", "detect", "segment"):
        raise TaskcamError(f"task {loaded.task!r}: expected classify, detect or segment")
    stride = _check_stride(stride)
    paths = [Path(p) for p in paths]
    if not paths:
        raise TaskcamError("no videos given")
    for path in paths:  # every video opens before anything is written
        cap, _, _ = _open(path)
        cap.release()
    detect = loaded.task == "detect" or _is_detector(loaded)
    frames = _Frames(
        loaded,
        methods=methods or ("odam" if detect else "gradcam",),
        layers=layers,
        targets=targets,
        what=what,
        conf=conf,
        batch_size=batch_size,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
    )
    settings = _settings(
        loaded,
        methods=methods,
        layers=layers,
        targets=targets,
        colormap=colormap,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        what=what,
        conf=conf,
        stride=stride,
    )
    run = RunLog(Path(out_dir), settings, overwrite)
    out = run.out
    stems = _stems(paths)
    items: list[dict[str, Any]] = []
    videos: list[dict[str, Any]] = []
    method_names = [m.name for m in frames.methods]

    def finish(complete: bool) -> RunSummary:
        results = {
            "version": RESULTS_VERSION,
            "model": loaded.spec,
            "task": loaded.task,
            "methods": method_names,
            "layers": frames.layers,
            "items": items,
            "videos": videos,
            "failures": [],
            "complete": complete,
        }
        write_json_atomic(out / "results.json", results)
        return RunSummary(results, out, [])

    with run:
        try:
            for path in paths:
                stem = stems[str(path)]
                _, fps, count = _open_info(path)
                writers: dict[str, cv2.VideoWriter] = {}
                entries: dict[str, dict[str, Any]] = {}
                total = math.ceil(count / stride) if count else None
                bar = tqdm(total=total, desc=stem, unit="frame", disable=not progress)
                try:
                    for index, image in read_frames(path, stride):
                        height, width = image.shape[:2]
                        records, maps, boxes = frames(image)
                        folder = f"{stem}/f{index:06d}"
                        (out / folder).mkdir(parents=True, exist_ok=True)
                        masks = frames.masks  # YOLO-seg instances, on the frame's grid
                        targets_out: list[dict[str, Any]] = []
                        for n, name in enumerate(method_names):
                            method_maps, empty = maps.get(name, (None, []))
                            for t, record in enumerate(records):
                                prefix = _prefix(record)
                                base = f"{folder}/{prefix}{record['index']}_{name}"
                                np.save(out / f"{base}.npy", method_maps[t])
                                picture = overlay(image, method_maps[t], colormap=colormap)
                                if masks is not None:
                                    picture = outline(picture, masks[t])
                                if boxes[t] is not None:
                                    label = (
                                        f"{record['index']}: {record['class_name']} "
                                        f"{record['score']:.2f}"
                                    )
                                    picture = draw_box(picture, boxes[t], label)
                                save_image(out / f"{base}.png", picture)
                                targets_out.append(
                                    {
                                        **record,
                                        "method": name,
                                        "heatmap": f"{base}.npy",
                                        "overlay": f"{base}.png",
                                        "empty": bool(empty[t]),
                                    }
                                )
                            picture = _annotate(image, method_maps, records, boxes, colormap)
                            if name not in writers:
                                suffix = "" if n == 0 else f"_{name}"
                                video_name = f"{stem}_explained{suffix}.mp4"
                                writers[name] = _writer(
                                    out / video_name, fps / stride, width, height
                                )
                                entries[name] = {
                                    "image": str(path),
                                    "method": name,
                                    "path": video_name,
                                    "fps": fps / stride,
                                    "stride": stride,
                                    "frames": 0,
                                    "width": width,
                                    "height": height,
                                }
                                videos.append(entries[name])
                            writers[name].write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
                            entries[name]["frames"] += 1
                        item: dict[str, Any] = {
                            "image": str(path),
                            "frame": index,
                            "time": round(index / fps, 6),
                            "width": width,
                            "height": height,
                            "targets": targets_out,
                        }
                        if not records:
                            item["message"] = "no targets"
                        items.append(item)
                        run.done(f"{path}#{index}", item, frames.layers)
                        bar.update(1)
                finally:
                    bar.close()
                    for writer in writers.values():
                        writer.release()
        except KeyboardInterrupt:
            finish(complete=False)
            raise
    return finish(complete=True)


def _open_info(path: Path) -> tuple[None, float, int]:
    cap, fps, count = _open(path)
    cap.release()
    return None, fps, count


def _prefix(record: dict[str, Any]) -> str:
    if record["kind"] == "detection":
        return "det"
    if record["kind"] == "region" and "box" in record:
        return "inst"
    return "region" if record["kind"] == "region" else "class"


def _writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise TaskcamError(f"cannot write video '{path}' (OpenCV's mp4v encoder)")
    return writer
