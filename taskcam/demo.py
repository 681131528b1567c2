"""``taskcam demo``: the four jobs taskcam is for, in a minute, with one page linking them.

* **detection**: a real trained detector, NudeNet's YOLOv8n (the ``nudenet`` wheel ships its
  ultralytics export, ``320n.onnx``), on ultralytics' ``bus.jpg`` and ``zidane.jpg``: one map
  per detection (ODAM) and every detection in one picture (``all.png``); then the same run
  against labels drawn by eye (:mod:`taskcam.data.people`): hits, missed labels with the reason
  they were missed, false positives. Without nudenet or ultralytics: the zoo's detector on
  synthetic shapes and their ground truth, and the page says so.
* **segmentation**: ``zoo:shapes-unet``, one map per class region of each image.
* **transformer**: ``zoo:shapes-vit``, its attention report (layers × heads, rollout beside
  Grad-CAM, head statistics) and a Grad-CAM / LayerCAM run.
* **classification**: ``zoo:efficientnet-lite0`` (real ImageNet weights) on scikit-image's
  photos, top-1 class.

Each part is an explain run of its own (``results.json``, ``report.html``) in a folder of
``out_dir``; ``index.html`` links them with their key pictures. ``every_method=True`` runs the
older comparison instead: every classifier method on EfficientNet-Lite0 (:func:`every_method_demo`).
"""

from __future__ import annotations

import html
import importlib.util
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from taskcam.errors import TaskcamError
from taskcam.io import load_image, to_tensor
from taskcam.methods import available_methods, get_method
from taskcam.models import load_model
from taskcam.pipeline import RunSummary, explain_files
from taskcam.render import feature_map_grid, filter_grid, save_image
from taskcam.report import write_report

__all__ = ["DEMO_IMAGES", "PARTS", "every_method_demo", "real_detector", "run_demo"]

DEMO_IMAGES = ("chelsea", "coffee", "rocket")

#: The demo's parts, each an explain run in the folder of that name.
PARTS = ("detection", "detection-labels", "segmentation", "transformer", "classification")

#: The detectors' score threshold. NudeNet's 320-px YOLOv8n scores the faces on these photos at
#: 0.1-0.2; at ultralytics' default (0.25) zidane.jpg has no detection.
DETECT_CONF = 0.1

#: The classifier's methods (Grad-CAM, and LayerCAM's finer map beside it).
CLASSIFY_METHODS = ("gradcam", "layercam")

_INSTALL = "pip install 'taskcam[demo]'"


def write_demo_images(folder: Path) -> list[Path]:
    """Save scikit-image's ``chelsea``, ``coffee`` and ``rocket`` photos as PNG files."""
    try:
        from skimage import data
    except ImportError as e:
        raise TaskcamError(f"the demo needs scikit-image ({_INSTALL})") from e
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


def real_detector() -> Optional[Path]:
    """NudeNet's YOLOv8n export (``320n.onnx`` in the installed ``nudenet`` package), or None
    when nudenet or ultralytics (which rebuilds the export in PyTorch) is not installed."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        return None
    if importlib.util.find_spec("ultralytics") is None:
        return None
    path = Path(spec.submodule_search_locations[0]) / "320n.onnx"
    return path if path.is_file() else None


def run_demo(
    out_dir: str | Path = "taskcam-demo",
    *,
    every_method: bool = False,
    methods: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> dict[str, RunSummary]:
    """Explain a detector, a segmenter, a transformer and a classifier; write ``index.html``.

    Writes ``inputs/`` (the images), one folder per part of :data:`PARTS` (an explain run with
    its ``results.json`` and ``report.html``; ``transformer/attention/`` holds the attention
    report), ``index.html`` linking each part's report and key pictures, and ``demo.json``
    (the seconds taken, per part and in all); prints a line per part and where index.html is.

    Args:
        out_dir: the output folder.
        every_method: run :func:`every_method_demo` instead (every classifier method on
            EfficientNet-Lite0).
        methods: the classifier's methods (default :data:`CLASSIFY_METHODS`; with
            ``every_method``, :func:`demo_methods`).
        progress: progress bars.

    Returns:
        ``{part: RunSummary}`` of the parts run (``{"every-method": ...}`` with
        ``every_method``).

    Raises:
        TaskcamError: a package the demo needs is missing (the message names it).

    Example:
        >>> import tempfile
        >>> parts = run_demo(tempfile.mkdtemp(), progress=False)  # doctest: +SLOW +ELLIPSIS
        detection ...
    """
    if every_method:
        return {"every-method": every_method_demo(out_dir, methods=methods, progress=progress)}
    start = time.perf_counter()
    out = Path(out_dir)
    sections: list[dict[str, Any]] = []
    summaries: dict[str, RunSummary] = {}
    seconds: dict[str, float] = {}
    for name, part in (
        ("detection", _detection),
        ("segmentation", _segmentation),
        ("transformer", _transformer),
        ("classification", _classification),
    ):
        began = time.perf_counter()
        kwargs = {"methods": methods} if name == "classification" else {}
        runs, section = part(out, progress=progress, **kwargs)
        summaries.update(runs)
        sections.append(section)
        seconds[name] = round(time.perf_counter() - began, 1)
    index = _write_index(out, sections)
    meta = {
        "seconds": round(time.perf_counter() - start, 1),
        "parts": seconds,
        "models": {name: s.results["model"] for name, s in summaries.items()},
    }
    (out / "demo.json").write_text(json.dumps(meta, indent=2))
    print(f"demo written in {meta['seconds']} s; open {index.resolve()}")
    return summaries


def _report(summary: RunSummary, title: str) -> Path:
    return write_report(summary.out_dir, title=f"taskcam demo: {title}")


def _detection(out: Path, *, progress: bool) -> tuple[dict[str, RunSummary], dict[str, Any]]:
    """NudeNet's YOLOv8n on two photos, then against their labels; the zoo's detector on
    shapes where nudenet or ultralytics is missing."""
    onnx = real_detector()
    if onnx is not None:
        from taskcam.data.people import write_people_dataset

        loaded = load_model(f"yolo:{onnx}")
        data_yaml = write_people_dataset(
            out / "inputs" / "people", dict(enumerate(loaded.class_names))
        )
        images = [data_yaml.parent / "images" / n for n in ("bus.jpg", "zidane.jpg")]
        what = (
            "NudeNet's YOLOv8n, a detector of faces and body parts that ultralytics trained (its "
            "export ships in the nudenet wheel), on ultralytics' bus.jpg and zidane.jpg"
        )
        note = ""
    else:
        from taskcam.data import HELDOUT_SEED, write_yolo_dataset

        spec = (
            "zoo:shapes-yolo"
            if importlib.util.find_spec("ultralytics")
            else "zoo:shapes-fasterrcnn"
        )
        loaded = load_model(spec)
        root = out / "inputs" / "shapes-labelled"
        data_yaml = write_yolo_dataset(root, n_train=0, n_val=3, val_seed=HELDOUT_SEED)
        images = sorted((root / "images" / "val").glob("*.png"))
        what = f"the zoo's {spec} on synthetic shapes"
        note = (
            "nudenet or ultralytics is not installed, so this part shows the zoo's detector on "
            f"shapes; {_INSTALL} for NudeNet's YOLOv8n on real photos."
        )
        print(f"detection: {note}")
    plain = explain_files(loaded, images, out / "detection", conf=DETECT_CONF, progress=progress)
    runs = {"detection": plain}
    reports = [("report", _report(plain, "explained detections"))]
    line = f"{plain.n_targets} detection(s) explained"
    if importlib.util.find_spec("supervision") is not None:
        labelled = explain_files(
            loaded,
            images,
            out / "detection-labels",
            conf=DETECT_CONF,
            labels_from=str(data_yaml),
            progress=progress,
        )
        runs["detection-labels"] = labelled
        reports.append(("against labels", _report(labelled, "detections against labels")))
        counts = {k: 0 for k in ("hit", "missed", "false_positive")}
        for item in labelled.results["items"]:
            for k, v in item.get("outcomes", {}).items():
                counts[k] = counts.get(k, 0) + v
        line += (
            f"; against labels {counts['hit']} hit(s), {counts['missed']} missed, "
            f"{counts['false_positive']} false positive(s)"
        )
    else:
        note += f" Reading labels needs supervision ({_INSTALL}): the labelled run is left out."
    print(f"detection       {loaded.spec}: {line} -> {reports[0][1]}")
    captions = {"detection": "every detection's map", "detection-labels": "against labels"}
    pictures = [
        (f"{Path(item['image']).name}: {captions[name]}", run.out_dir / picture)
        for name, run in runs.items()
        for item in run.results["items"]
        for picture in item.get("all", {}).values()
    ]
    return runs, {
        "title": "Explained detections",
        "text": f"{what}. One map per detection (ODAM: where each detection's own score "
        "came from), and every detection's map in one picture; against labels drawn by eye, "
        "each label is a hit or missed (with the reason: below the threshold, suppressed, "
        "the wrong class) and each detection without a label a false positive.",
        "note": note.strip(),
        "model": loaded.spec,
        "line": line,
        "reports": reports,
        "pictures": pictures,
    }


def _shapes(folder: Path, *, size: int, max_objects: int) -> list[Path]:
    """Three held-out shapes images (no zoo model trained on them)."""
    from taskcam.data import HELDOUT_SEED, make_sample

    return [
        save_image(
            folder / f"shapes{i}.png",
            make_sample(i, seed=HELDOUT_SEED, size=size, max_objects=max_objects).image,
        )
        for i in range(3)
    ]


def _segmentation(out: Path, *, progress: bool) -> tuple[dict[str, RunSummary], dict[str, Any]]:
    images = _shapes(out / "inputs" / "shapes-256", size=256, max_objects=4)
    summary = explain_files(
        load_model("zoo:shapes-unet"), images, out / "segmentation", progress=progress
    )
    report = _report(summary, "segmentation classes")
    line = f"{summary.n_targets} class region(s) explained"
    print(f"segmentation    zoo:shapes-unet: {line} -> {report}")
    return {"segmentation": summary}, {
        "title": "Segmentation classes",
        "text": "A U-Net (segmentation-models-pytorch) trained on synthetic shapes: one map per "
        "class the model segments in each image, over the pixels it gave that class.",
        "model": "zoo:shapes-unet",
        "line": line,
        "reports": [("report", report)],
        "pictures": [
            (f"{Path(item['image']).name}: every class", out / "segmentation" / item["grid"])
            for item in summary.results["items"]
        ],
    }


def _transformer(out: Path, *, progress: bool) -> tuple[dict[str, RunSummary], dict[str, Any]]:
    from taskcam.attention import attention_report

    images = _shapes(out / "inputs" / "shapes-64", size=64, max_objects=1)
    loaded = load_model("zoo:shapes-vit")
    pre = loaded.preprocess
    attention = out / "transformer" / "attention"
    found = attention_report(
        loaded.model,
        images[0],
        attention,
        size=pre.size,
        mean=pre.mean,
        std=pre.std,
        class_names=loaded.class_names,
        model_name=loaded.spec,
    )
    summary = explain_files(
        loaded, images, out / "transformer", methods=["gradcam", "layercam"], progress=progress
    )
    report = _report(summary, "a transformer")
    flagged = found["flagged"]
    heads = ", ".join(f"{k.replace('_', '-')} heads {v}" for k, v in flagged.items() if v)
    line = (
        f"attention report of {len(found['layers'])} layers ({heads or 'no head flagged'}); "
        f"{summary.n_targets} Grad-CAM / LayerCAM map(s)"
    )
    print(f"transformer     zoo:shapes-vit: {line} -> {attention / 'attention.json'}, {report}")
    return {"transformer": summary}, {
        "title": "A transformer's attention",
        "text": "A ViT (timm, patch 8, 4 blocks, 4 register tokens) trained on synthetic shapes: "
        "each layer's heads' attention from the class token, attention rollout beside "
        "Grad-CAM, the heads that attend uniformly or only to the prefix tokens "
        "(attention.json); and Grad-CAM / LayerCAM maps of its predicted class.",
        "model": "zoo:shapes-vit",
        "line": line,
        "reports": [("report", report), ("attention.json", attention / "attention.json")],
        "pictures": [
            ("layers × heads", attention / found["files"]["grid"]),
            ("rollout, grad-rollout, Grad-CAM", attention / found["files"]["maps"]),
        ],
    }


def _classification(
    out: Path, *, progress: bool, methods: Optional[Sequence[str]] = None
) -> tuple[dict[str, RunSummary], dict[str, Any]]:
    images = write_demo_images(out / "inputs" / "photos")
    summary = explain_files(
        load_model("zoo:efficientnet-lite0"),
        images,
        out / "classification",
        methods=list(methods or CLASSIFY_METHODS),
        progress=progress,
    )
    report = _report(summary, "a classifier")
    pictures = []
    for item in summary.results["items"]:
        top = item["targets"][0]
        stem = Path(item["image"]).stem
        print(
            f"classification  {stem:8s} top-1 {top['class_id']} {top['class_name']!r} "
            f"p={top['probability']:.2f}"
        )
        caption = f"{stem}: {top['class_name']} ({top['probability']:.2f})"
        pictures.append((caption, out / "classification" / item["grid"]))
    return {"classification": summary}, {
        "title": "A classifier",
        "text": "EfficientNet-Lite0 with its ImageNet weights on scikit-image's photos: the "
        "top-1 class, Grad-CAM and LayerCAM.",
        "model": "zoo:efficientnet-lite0",
        "line": f"{summary.n_targets} map(s) of the top-1 classes",
        "reports": [("report", report)],
        "pictures": pictures,
    }


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
section { border-top: 1px solid #ddd; padding: 0.5em 0 1em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-height: 16em; max-width: 32em; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #555; max-width: 32em; }
.note { background: #fff4d6; padding: 0.4em 0.8em; }
code { background: #f2f2f2; padding: 0 0.2em; }
"""


def _write_index(out: Path, sections: Sequence[dict[str, Any]]) -> Path:
    """``out/index.html``: per part its text, its reports' links and its key pictures."""

    def link(path: Path) -> str:
        return html.escape(quote(Path(os.path.relpath(path.resolve(), out.resolve())).as_posix()))

    body = []
    for s in sections:
        reports = " · ".join(
            f'<a href="{link(p)}">{html.escape(label)}</a>' for label, p in s["reports"]
        )
        figures = "".join(
            f'<figure><a href="{link(p)}"><img src="{link(p)}" alt="{html.escape(c)}"></a>'
            f"<figcaption>{html.escape(c)}</figcaption></figure>"
            for c, p in s["pictures"]
        )
        note = f'<p class="note">{html.escape(s["note"])}</p>' if s.get("note") else ""
        body.append(
            f"<section><h2>{html.escape(s['title'])}</h2>{note}<p>{html.escape(s['text'])}</p>"
            f"<p><code>{html.escape(s['model'])}</code>: {html.escape(s['line'])}. "
            f"{reports}</p>{figures}</section>"
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>taskcam demo</title><style>{_STYLE}</style></head><body>"
        "<h1>taskcam demo</h1><p>What a detector, a segmenter, a transformer and a classifier "
        "looked at. Each part is an explain run: its report lists every map, with filters and "
        "the numbers behind it.</p>" + "".join(body) + "</body></html>\n"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def every_method_demo(
    out_dir: str | Path = "taskcam-demo",
    *,
    methods: Optional[Sequence[str]] = None,
    progress: bool = True,
) -> RunSummary:
    """Explain the three photos' top-3 classes with every classifier method; write pictures.

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
        >>> out = tempfile.mkdtemp()
        >>> summary = every_method_demo(out, progress=False)  # doctest: +SLOW +ELLIPSIS
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
