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

from pathlib import Path

from taskcam.errors import TaskcamError
from taskcam.explainers.classes import ClassExplainer, RegionExplainer
from taskcam.explainers.detections import DetectionExplainer
from taskcam.explainers.per_image import (
    ImageExplainer,
    ImageResult,
    maps_to_image,
    output_stems,
    to_image_mask,
)
from taskcam.loaded import LoadedModel
from taskcam.options import RunOptions

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
