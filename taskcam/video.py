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
from tqdm.auto import tqdm

from taskcam.errors import TaskcamError
from taskcam.explainers import ImageExplainer, image_explainer, output_stems
from taskcam.loaded import LoadedModel
from taskcam.options import RunOptions, check_stride, run_options
from taskcam.render import draw_boxes, draw_label, overlay
from taskcam.results import RunSummary, results_document, write_results
from taskcam.runlog import RunLog

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
    stride = check_stride(stride)
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


def _annotate(
    image: np.ndarray,
    maps: Optional[np.ndarray],
    records: list[dict[str, Any]],
    options: RunOptions,
) -> np.ndarray:
    """One output frame: the overlay of the maps' maximum, with each record's box and label
    (records without a box are listed in a corner; no labels with ``labels=False``)."""
    if maps is None or not len(maps):
        picture = np.ascontiguousarray(image)
        return draw_label(picture, "no targets") if not records else picture
    picture = overlay(image, maps.max(axis=0), colormap=options.colormap, alpha=options.alpha)
    boxed = [r for r in records if r.get("box") is not None]
    if boxed:  # drawn together, so that close boxes' labels are moved apart
        texts = [f"{r['index']}: {r['class_name']} {r['score']:.2f}" for r in boxed]
        picture = draw_boxes(picture, [r["box"] for r in boxed], texts if options.labels else None)
    labels = [f"{r['class_name']} {r['score']:.2f}" for r in records if r.get("box") is None]
    if labels and options.labels:
        picture = draw_label(picture, "\n".join(labels))
    return picture


def explain_video(
    loaded: LoadedModel,
    path: str | Path,
    out_dir: str | Path,
    options: Optional[RunOptions] = None,
    **overrides: Any,
) -> RunSummary:
    """Explain one video; see :func:`explain_videos` for the options and outputs.

    Example:
        >>> from taskcam.models import load_model
        >>> lm = load_model("zoo:shapes-cnn")  # doctest: +SKIP
        >>> explain_video(lm, "clip.mp4", "out", stride=5).results["videos"]  # doctest: +SKIP
        [{'image': 'clip.mp4', 'method': 'gradcam', 'path': 'clip_explained.mp4', ...}]
    """
    return explain_videos(loaded, [path], out_dir, options, **overrides)


def explain_videos(
    loaded: LoadedModel,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    options: Optional[RunOptions] = None,
    **overrides: Any,
) -> RunSummary:
    """Explain every ``stride``-th frame of each video and write annotated videos and results.

    Each explained frame is explained as an image is, by the same per-image explainer
    (:mod:`taskcam.explainers`), so its records equal an image's field for field: every
    detection of a detector (``targets`` picks them; indices a frame lacks are skipped),
    the top class of a classifier (default ``top1``), every predicted class region of a
    segmenter. The annotated video shows, per explained frame, the pixel-wise maximum of the
    frame's maps, with boxes and labels.

    Args:
        loaded: the model and its preprocessing (:func:`taskcam.models.load_model`).
        paths: video files (:data:`VIDEO_EXTENSIONS`).
        out_dir: output folder (created).
        options: the run's :class:`~taskcam.options.RunOptions`; ``stride`` explains frames
            0, stride, 2 * stride, ... and the video is written at the input's frame rate
            divided by ``stride``; ``progress`` is a bar per video in frames per second.
        **overrides: options as keyword arguments, applied over ``options``.

    Returns:
        A :class:`taskcam.results.RunSummary`; ``results["items"]`` has one item per
        explained frame, ``results["videos"]`` one entry per written video.

    Raises:
        TaskcamError: a video is missing or cannot be opened (the message names it, and nothing
            is written), bad options, or the errors of :func:`taskcam.pipeline.explain_files`.

    Example:
        >>> from taskcam.models import load_model
        >>> lm = load_model("zoo:shapes-fasterrcnn")  # doctest: +SKIP
        >>> s = explain_videos(lm, ["a.mp4", "b.mp4"], "out", stride=2)  # doctest: +SKIP
        >>> sorted({item["image"] for item in s.results["items"]})  # doctest: +SKIP
        ['a.mp4', 'b.mp4']
    """
    options = run_options(options, **overrides)
    paths = [Path(p) for p in paths]
    if not paths:
        raise TaskcamError("no videos given")
    for path in paths:  # every video opens before anything is written
        cap, _, _ = _open(path)
        cap.release()
    settings = options.settings(loaded, video=True)
    # frames draw no grids, and their progress is the video's bar, not each method's
    frame_options = options.replace(progress=False, make_grid=False)
    explainer = image_explainer(loaded, frame_options, out_dir, existing_only=True)
    run = RunLog(Path(out_dir), settings, options.overwrite)
    items: list[dict[str, Any]] = []
    videos: list[dict[str, Any]] = []
    with run:
        try:
            for path, stem in output_stems(paths).items():
                _explain_video(explainer, Path(path), stem, options, run, items, videos)
        except KeyboardInterrupt:
            _finish(loaded, explainer, run, items, videos, complete=False)
            raise
    return _finish(loaded, explainer, run, items, videos)


def _explain_video(
    explainer: ImageExplainer,
    path: Path,
    stem: str,
    options: RunOptions,
    run: RunLog,
    items: list[dict[str, Any]],
    videos: list[dict[str, Any]],
) -> None:
    """Explain one video's frames into ``out/stem/f<frame>/``, its items into ``items`` and
    its annotated videos (one per method) into ``videos``."""
    _, fps, count = _open_info(path)
    stride = options.stride
    writers = _Writers(run.out, path, stem, (fps, stride), videos)
    total = math.ceil(count / stride) if count else None
    bar = tqdm(total=total, desc=stem, unit="frame", disable=not options.progress)
    try:
        for index, image in read_frames(path, stride):
            result = explainer.explain(image, f"{stem}/f{index:06d}", source=str(path))
            frame = {k: v for k, v in result.item.items() if k != "image"}
            item = {"image": str(path), "frame": index, "time": round(index / fps, 6), **frame}
            for method in explainer.method_objs:
                records = [r for r in item["targets"] if r["method"] == method.name]
                maps = result.maps.get(method.name)
                writers.write(method.name, _annotate(image, maps, records, options))
            items.append(item)
            run.done(f"{path}#{index}", item, explainer.layer_names)
            bar.update(1)
    finally:
        bar.close()
        writers.release()


class _Writers:
    """The annotated videos of one input, one per method (the first method's is
    ``<stem>_explained.mp4``, the others' ``<stem>_explained_<method>.mp4``), each listed in
    ``videos`` as soon as it is opened."""

    def __init__(
        self,
        out: Path,
        path: Path,
        stem: str,
        rate: tuple[float, int],
        videos: list[dict[str, Any]],
    ) -> None:
        self.out, self.path, self.stem, self.videos = out, path, stem, videos
        self.fps, self.stride = rate[0] / rate[1], rate[1]  # the input's fps and the stride
        self.writers: dict[str, cv2.VideoWriter] = {}
        self.entries: dict[str, dict[str, Any]] = {}

    def write(self, method: str, picture: np.ndarray) -> None:
        if method not in self.writers:
            height, width = picture.shape[:2]
            suffix = "" if not self.writers else f"_{method}"
            name = f"{self.stem}_explained{suffix}.mp4"
            self.writers[method] = _writer(self.out / name, self.fps, width, height)
            self.entries[method] = {
                "image": str(self.path),
                "method": method,
                "path": name,
                "fps": self.fps,
                "stride": self.stride,
                "frames": 0,
                "width": width,
                "height": height,
            }
            self.videos.append(self.entries[method])
        self.writers[method].write(cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        self.entries[method]["frames"] += 1

    def release(self) -> None:
        for writer in self.writers.values():
            writer.release()


def _finish(
    loaded: LoadedModel,
    explainer: ImageExplainer,
    run: RunLog,
    items: list[dict[str, Any]],
    videos: list[dict[str, Any]],
    complete: bool = True,
) -> RunSummary:
    document = results_document(
        model=loaded.spec,
        task=loaded.task,
        methods=[m.name for m in explainer.method_objs],
        layers=explainer.layer_names,
        items=items,
        videos=videos,
        complete=complete,
    )
    return write_results(run.out, document)


def _open_info(path: Path) -> tuple[None, float, int]:
    cap, fps, count = _open(path)
    cap.release()
    return None, fps, count


def _writer(path: Path, fps: float, width: int, height: int) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise TaskcamError(f"cannot write video '{path}' (OpenCV's mp4v encoder)")
    return writer
