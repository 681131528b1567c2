"""A trained YOLOv8 on real photos: how much of each detection's map falls inside its own box.

The model is NudeNet's detector (``nudenet`` 3.4 on PyPI ships it as ``320n.onnx``): a YOLOv8n
that ultralytics 8.2.46 trained on photos of people, 18 classes (faces, feet, armpits, belly,
covered and exposed body parts), exported at 320 px. taskcam loads it as ``yolo:PATH.onnx``,
which rebuilds ultralytics' ``DetectionModel`` from the export's weights (checked against
onnxruntime in the test suite). It is the only trained YOLOv8 that installs without a
download from outside the package registry. The photos are the people photos that ship with
the installed packages: scikit-image's ``astronaut`` and ``camera`` (grayscale, repeated to
three channels) and ultralytics' ``bus.jpg`` and ``zidane.jpg``.

What is measured, per input size (``--sizes``, default 320, the export's, and 640) and
method (``--methods``): every detection the adapter keeps (``conf`` 0.25, ultralytics'
default) is explained in one call per image with the method's default layers (``odam``,
``layercam``, ``gradcam``, ``eigencam`` use the neck output that predicted each detection;
``drise`` is black-box, 1,000 masks, seed 0), and its map, brought back to the original
photo, is scored against its own box:

* ``energy_in_box``: the share of the map's energy inside the box (energy pointing game);
  ``min`` and ``median`` over the detections, and ``most`` = the share of detections whose
  map has more than half its energy inside its box (the issue's bar: all of them).
* ``pointing_game``: the share of detections whose map peaks inside its box (15 px
  tolerance, as Zhang et al. 2016).
* ``other_energy``: the mean share of energy inside the *other* detections' boxes of the
  same photo (photos with more than one detection).
* ``s_per_image``: median seconds for one photo's explain call (2 CPU threads by default).

The last line is a JSON object with all of it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2
import numpy as np
import torch

import taskcam
from taskcam.adapters.ultralytics import YoloAdapter, load_yolo
from taskcam.metrics import energy_pointing_game, pointing_game

METHODS = ("odam", "layercam", "gradcam", "eigencam", "drise")


def nudenet_onnx() -> Path:
    """Where the installed ``nudenet`` package keeps its YOLOv8n export."""
    spec = importlib.util.find_spec("nudenet")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs nudenet (pip install 'nudenet>=3.4'), which ships the model")
    return Path(spec.submodule_search_locations[0]) / "320n.onnx"


def photos() -> dict[str, np.ndarray]:
    """The people photos that ship with scikit-image and ultralytics, RGB ``uint8[H, W, 3]``."""
    import ultralytics
    from skimage import data

    assets = Path(ultralytics.__file__).parent / "assets"
    out = {"astronaut": data.astronaut(), "camera": np.repeat(data.camera()[..., None], 3, 2)}
    for name in ("bus", "zidane"):
        out[name] = cv2.cvtColor(cv2.imread(str(assets / f"{name}.jpg")), cv2.COLOR_BGR2RGB)
    return out


def _measure(model, images: dict[str, np.ndarray], size: int, method: str) -> dict[str, Any]:
    adapter = YoloAdapter(model, size=size)
    energy, hits, other, times, found = [], [], [], [], []
    for name, image in images.items():
        x, info = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        if not len(dets):
            continue
        start = time.perf_counter()
        exp = taskcam.explain(
            model, x, [adapter.targets(dets)], layers=adapter.default_layers(), method=method
        )
        times.append(time.perf_counter() - start)
        maps = info.map_to_image(exp.maps)[0]  # [K, H, W]
        boxes = info.boxes_to_image(dets.boxes)  # [K, 4]
        energy += energy_pointing_game(maps, boxes).tolist()
        hits += pointing_game(maps, boxes, tolerance=15).tolist()
        for k in range(len(dets)):
            rest = torch.cat([boxes[:k], boxes[k + 1 :]])
            if len(rest):
                region = taskcam.metrics.boxes_to_masks(rest, *maps.shape[-2:]).any(0)
                other.append(float(energy_pointing_game(maps[k], region)[0]))
        names = model.names
        found += [f"{name}:{names[int(c)]}" for c in dets.classes]
    return {
        "detections": len(energy),
        "found": found,
        "energy_in_box": {
            "min": min(energy),
            "median": statistics.median(energy),
            "most": sum(e > 0.5 for e in energy) / len(energy),
            "each": energy,
        },
        "pointing_game": sum(hits) / len(hits),
        "other_energy": statistics.fmean(other) if other else None,
        "s_per_image": statistics.median(times),
    }


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--sizes", default="320,640", help="letterbox sides, comma-separated")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    torch.set_num_threads(args.threads)
    path = nudenet_onnx()
    model = load_yolo(path)
    images = photos()
    print(
        f"taskcam {taskcam.__version__}, torch {torch.__version__}; {path} "
        f"({len(model.names)} classes); {args.threads} threads; photos: "
        + ", ".join(f"{k} {v.shape[1]}x{v.shape[0]}" for k, v in images.items()),
        flush=True,
    )
    out: dict[str, Any] = {"model": str(path), "threads": args.threads}
    print(
        f"{'size':>4} {'method':<9} {'dets':>4} {'min E':>6} {'med E':>6} {'E>0.5':>6} "
        f"{'PG':>5} {'other':>6} {'s/img':>6}"
    )
    for size in sizes:
        for method in methods:
            r = _measure(model, images, size, method)
            out[f"{size}/{method}"] = r
            e = r["energy_in_box"]
            other = "-" if r["other_energy"] is None else f"{r['other_energy']:.3f}"
            print(
                f"{size:>4} {method:<9} {r['detections']:>4} {e['min']:>6.3f} {e['median']:>6.3f} "
                f"{e['most']:>6.2f} {r['pointing_game']:>5.2f} {other:>6} "
                f"{r['s_per_image']:>6.2f}",
                flush=True,
            )
        print("  found:", ", ".join(r["found"]), flush=True)
    print(json.dumps(_round(out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
