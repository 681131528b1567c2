"""Explain image files end to end: load, preprocess, explain, write maps, overlays and
``results.json`` (the format in docs/results.md).

:func:`explain_files` is the entry point of ``taskcam explain``: image files and folders are
explained here, one image at a time by the model's per-image explainer
(:mod:`taskcam.explainers`); video files go to :func:`taskcam.video.explain_videos`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from tqdm.auto import tqdm

from taskcam.adapters.detection import Detector
from taskcam.errors import ImageError, TaskcamError
from taskcam.explainers import ImageExplainer, image_explainer, maps_to_image, output_stems
from taskcam.io import list_images, read_image
from taskcam.loaded import LoadedModel
from taskcam.models import loaded_detector
from taskcam.options import RunOptions, run_options
from taskcam.results import RunSummary, results_document, write_results
from taskcam.runlog import RunLog
from taskcam.video import explain_videos, is_video

__all__ = ["RunSummary", "explain_files", "explain_images", "maps_to_image"]

log = logging.getLogger("taskcam")


def explain_files(
    loaded: LoadedModel | Detector,
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    options: Optional[RunOptions] = None,
    **overrides: Any,
) -> RunSummary:
    """Explain every image of ``inputs`` with every method and write the results to ``out_dir``.

    For each image: ``<stem>/class<K>_<method>.npy`` (float32 H×W in [0, 1] on the original
    image's grid), the matching ``.png`` overlay, ``<stem>/grid.png`` (methods × targets) and
    one item in ``results.json``. An image that cannot be read, or lacks a detection
    ``--targets`` asks for, is reported and skipped.

    Each finished image is logged to ``results.jsonl`` (see :mod:`taskcam.runlog`): a run
    stopped by Ctrl-C or a crash and started again with the same settings skips what is done
    and ends with the ``results.json`` of one uninterrupted run; Ctrl-C writes a
    ``results.json`` of the finished images (``complete: false``) before it stops. Another
    run's settings in the same folder are refused unless ``overwrite``.

    Inputs that are video files (:data:`taskcam.video.VIDEO_EXTENSIONS`) are explained frame
    by frame by :func:`taskcam.video.explain_videos`; a run takes images or videos, not both.

    Args:
        loaded: the model and its preprocessing (:func:`taskcam.models.load_model`), or a
            :class:`taskcam.Detector` of yours (:func:`taskcam.models.loaded_detector`).
        inputs: image files or folders, or video files.
        out_dir: output folder (created).
        options: the run's :class:`~taskcam.options.RunOptions`.
        **overrides: options as keyword arguments (``methods=["gradcam"]``,
            ``targets="top3"``, ``progress=False``, ...), applied over ``options``.

    Returns:
        A :class:`~taskcam.results.RunSummary`.

    Raises:
        TaskcamError: bad options, no images, images mixed with videos, an output folder
            holding another run, or a run-wide error of the model (nothing is explained).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from taskcam.data import make_sample
        >>> from taskcam.models import load_model
        >>> from taskcam.render import save_image
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = save_image(folder / "images" / "shapes.png", make_sample(0, size=64).image)
        >>> summary = explain_files(load_model("zoo:shapes-cnn"), [folder / "images"],
        ...                         folder / "out", methods=["gradcam", "layercam"],
        ...                         progress=False)
        >>> [t["heatmap"] for t in summary.results["items"][0]["targets"]]  # doctest: +ELLIPSIS
        ['shapes/class..._gradcam.npy', 'shapes/class..._layercam.npy']
    """
    options = run_options(options, **overrides)
    if isinstance(loaded, Detector):
        loaded = loaded_detector(loaded)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    videos = [p for p in inputs if is_video(p) and not Path(p).is_dir()]
    if videos:
        if len(videos) != len(inputs):
            raise TaskcamError("explain images and videos in separate runs (separate --out)")
        if options.labels_from is not None or options.boxes:
            raise TaskcamError("--labels / --box: labels are matched on images, not videos")
        return explain_videos(loaded, videos, out_dir, options)
    if options.stride != 1:
        raise TaskcamError(f"--stride {options.stride}: only for video inputs")
    return explain_images(loaded, inputs, out_dir, options)


def explain_images(
    loaded: LoadedModel,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: RunOptions,
) -> RunSummary:
    """Explain the image files and folders of ``inputs``; see :func:`explain_files`."""
    settings = options.settings(loaded)
    explainer = image_explainer(loaded, options, out_dir)
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    explainer.start(paths)
    run = RunLog(Path(out_dir), settings, options.overwrite)
    explainer.adopt_layers(run.layers)  # the default layer an interrupted run found
    failures: list[tuple[str, str]] = []
    with run:
        try:
            _explain_each(explainer, paths, run, failures, options.progress)
        except KeyboardInterrupt:
            _finish(loaded, explainer, paths, run, failures, complete=False)
            raise
    return _finish(loaded, explainer, paths, run, failures)


def _explain_each(
    explainer: ImageExplainer,
    paths: list[Path],
    run: RunLog,
    failures: list[tuple[str, str]],
    progress: bool,
) -> None:
    """Explain each image the run log does not hold yet, logging each one as it finishes."""
    stems = output_stems(paths)
    for path in tqdm(paths, desc="explain", unit="img", disable=not progress):
        if str(path) in run.items:
            continue  # done by an earlier, interrupted run of the same settings
        try:
            item = explainer.item(path, read_image(path), stems[str(path)])
        except ImageError as e:  # an unreadable file, a detection it does not have
            log.warning("skipping %s: %s", path, e)
            failures.append((str(path), str(e)))
            run.failed(str(path), str(e))
            continue
        run.done(str(path), item, explainer.layer_names)


def _finish(
    loaded: LoadedModel,
    explainer: ImageExplainer,
    paths: Sequence[Path],
    run: RunLog,
    failures: list[tuple[str, str]],
    complete: bool = True,
) -> RunSummary:
    """Write ``results.json`` from the run log, in input order (an interrupted run: what it
    finished, with ``complete: false``)."""
    document = results_document(
        model=loaded.spec,
        task=loaded.task,
        methods=[m.name for m in explainer.method_objs],
        layers=explainer.layer_names,
        items=[run.items[str(p)] for p in paths if str(p) in run.items],
        failures=failures,
        complete=complete,
    )
    return write_results(run.out, document, failures=failures, resumed=run.resumed)
