"""``taskcam demo``: the real ImageNet EfficientNet-Lite0 explaining scikit-image's photos."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from taskcam.errors import TaskcamError
from taskcam.io import load_image, to_tensor
from taskcam.methods import available_methods, get_method
from taskcam.models import load_model
from taskcam.pipeline import RunSummary, explain_files
from taskcam.render import feature_map_grid, filter_grid, save_image

__all__ = ["DEMO_IMAGES", "run_demo"]

DEMO_IMAGES = ("chelsea", "coffee", "rocket")


def write_demo_images(folder: Path) -> list[Path]:
    """Save scikit-image's ``chelsea``, ``coffee`` and ``rocket`` photos as PNG files."""
    try:
        from skimage import data
    except ImportError as e:
        raise TaskcamError("the demo needs scikit-image (pip install 'taskcam[demo]')") from e
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in DEMO_IMAGES:
        path = folder / f"{name}.png"
        save_image(path, getattr(data, name)())
        paths.append(path)
    return paths


def demo_methods() -> list[str]:
    """Every registered method that explains a CNN classifier (not the detection-only ones,
    nor the attention methods, which need a ViT-style model).

    Example:
        >>> "gradcam" in demo_methods() and "drise" not in demo_methods()
        True
        >>> "rollout" in demo_methods()
        False
    """
    return [
        m
        for m in available_methods()
        if not (get_method(m).needs_detections or get_method(m).attention)
    ]


def run_demo(
    out_dir: str | Path = "taskcam-demo",
    *,
    methods: Sequence[str] | None = None,
    progress: bool = True,
) -> RunSummary:
    """Explain the three photos' top-3 classes with every method; write pictures and results.

    Writes ``inputs/``, one folder per photo (a map and overlay per method × class and a
    ``grid.png`` of every method × the top-3 classes), ``filters.png`` (the first layer's
    filters), ``features.png`` (a mid-network feature-map grid for chelsea) and
    ``results.json``, then prints the top-1 classes and the folder.

    Args:
        out_dir: the output folder.
        methods: the methods to run (default: :func:`demo_methods`).
        progress: progress bars.

    Example:
        >>> import tempfile
        >>> summary = run_demo(tempfile.mkdtemp(), progress=False)  # doctest: +SLOW +ELLIPSIS
        chelsea  top-1 285 'Egyptian cat' ...
    """
    start = time.perf_counter()
    out = Path(out_dir)
    inputs = write_demo_images(out / "inputs")
    loaded = load_model("zoo:efficientnet-lite0")
    methods = list(methods or demo_methods())
    summary = explain_files(loaded, inputs, out, methods=methods, targets="top3", progress=progress)
    model, pre = loaded.model, loaded.preprocess
    save_image(out / "filters.png", filter_grid(model.conv_stem))
    x = to_tensor(load_image(inputs[0]), pre.size, pre.mean, pre.std)
    save_image(out / "features.png", feature_map_grid(model, "blocks.2", x, max_maps=32))
    for item in summary.results["items"]:
        top = item["targets"][0]
        print(
            f"{Path(item['image']).stem:8s} top-1 {top['class_id']} {top['class_name']!r} "
            f"p={top['probability']:.2f}   grid: {out / item['grid']}"
        )
    meta = {"seconds": round(time.perf_counter() - start, 1), "methods": methods}
    (out / "demo.json").write_text(json.dumps(meta, indent=2))
    print(f"demo written to {out.resolve()} in {meta['seconds']} s")
    return summary
