"""Images per second of an explain run over a folder: single process against Ray (``--ray``).

What is measured, for three cases:

* ``classifier``: ``zoo:efficientnet-lite0`` (ImageNet weights), Grad-CAM, 224x224 crops of
  scikit-image's photos (seeded positions and sizes);
* ``classifier-tiny``: ``zoo:shapes-cnn``, Grad-CAM, 64x64 shapes images; a whole run takes
  under 2 s here, so it shows the fixed cost of starting Ray's actors (a process each that
  imports Ray Data, torch and torchvision and loads the model, 3-4 s on this machine);
* ``detector``: ``zoo:shapes-fasterrcnn``, ODAM, 256x256 shapes images.

The shapes images are ``make_sample(i, seed=9999)``. For each case:

* ``single``: :func:`taskcam.pipeline.explain_files` on a folder of N images (written once to a
  temporary folder), the model loaded beforehand (outside the timing); torch uses ``--cpus``
  threads; run before Ray starts, so Ray's own processes do not compete with it.
* ``ray``: :func:`taskcam.distributed.explain_files_ray` on the same folder, on a local Ray
  started beforehand with ``num_cpus=--cpus`` (outside the timing): one CPU actor per CPU,
  each loading the model itself (inside the timing: the actor start-up is part of a run).
* Both write every file (maps, overlays, grids, ``results.json``) into a fresh output folder;
  the two ``results.json`` are compared: exactly, and with floats to a relative 1e-5 (one
  torch thread per actor against ``--cpus`` threads changes scores in the last bits).
  ``overhead`` is ray seconds / single seconds (the issue's bar on one machine: <= 1.5).

Run: ``python benchmarks/throughput.py [--images 200] [--cpus 2]``; the last line is a JSON
object with every number.

Example:
    >>> # python benchmarks/throughput.py --images 20
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from taskcam.data import make_sample
from taskcam.distributed import explain_files_ray
from taskcam.models import load_model
from taskcam.pipeline import explain_files
from taskcam.render import save_image

CASES = [
    {"name": "classifier", "spec": "zoo:efficientnet-lite0", "method": "gradcam", "size": 224},
    {"name": "classifier-tiny", "spec": "zoo:shapes-cnn", "method": "gradcam", "size": 64},
    {"name": "detector", "spec": "zoo:shapes-fasterrcnn", "method": "odam", "size": 256},
]
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "stereo_motorcycle")


@functools.cache
def _photo(name: str) -> np.ndarray:
    """One of scikit-image's photos, read once for all the crops taken from it."""
    from skimage import data

    photo = getattr(data, name)()
    return photo[0] if isinstance(photo, tuple) else photo  # the motorcycle's left view


def _photo_crop(i: int, size: int) -> np.ndarray:
    """A seeded square crop (a third to all of the short side) of one of scikit-image's photos."""
    photo = _photo(PHOTOS[i % len(PHOTOS)])
    rng = np.random.default_rng(i)
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    return cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)


def _folder(root: Path, n: int, case: dict) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        if case["spec"] == "zoo:efficientnet-lite0":
            image = _photo_crop(i, case["size"])
        else:
            image = make_sample(i, seed=9999, size=case["size"]).image
        save_image(root / f"img{i:04d}.png", image)
    return root


def _close(a: Any, b: Any) -> bool:
    """Equal documents, floats equal to a relative 1e-5 (torch's CPU kernels give scores that
    differ in the last bits between thread counts: one thread per Ray actor, all CPUs in the
    single process)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def main() -> None:
    """Run both cases and print one line per measurement, then the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("YOLO_OFFLINE", "1")
    import ray

    torch.set_num_threads(args.cpus)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for case in CASES:  # single process first, with no Ray processes competing for CPUs
            folder = _folder(Path(tmp) / case["name"], args.images, case)
            loaded = load_model(case["spec"])
            options = {"methods": [case["method"]], "progress": False}
            start = time.perf_counter()
            single = explain_files(
                loaded, [folder], Path(tmp) / f"{case['name']}-single", **options
            )
            runs.append((case, folder, options, single, time.perf_counter() - start))
        ray.init(
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        for case, folder, options, single, t_single in runs:
            start = time.perf_counter()
            dist = explain_files_ray(
                case["spec"], [folder], Path(tmp) / f"{case['name']}-ray", **options
            )
            t_ray = time.perf_counter() - start
            row = {
                "case": case["name"],
                "model": case["spec"],
                "method": case["method"],
                "image_size": case["size"],
                "images": args.images,
                "targets": single.n_targets,
                "single_s": round(t_single, 2),
                "ray_s": round(t_ray, 2),
                "single_img_per_s": round(args.images / t_single, 2),
                "ray_img_per_s": round(args.images / t_ray, 2),
                "overhead": round(t_ray / t_single, 3),
                "equal_results": dist.results == single.results,
                "equal_results_rtol_1e-5": _close(dist.results, single.results),
            }
            rows.append(row)
            print(
                f"{row['case']:<15} {row['model']:<22} single {row['single_img_per_s']:7.2f} img/s"
                f"  ray {row['ray_img_per_s']:7.2f} img/s  overhead x{row['overhead']:.2f}"
                f"  equal={row['equal_results']}",
                flush=True,
            )
    ray.shutdown()
    print(
        json.dumps(
            {
                "benchmark": "throughput",
                "cpus": args.cpus,
                "torch": torch.__version__,
                "ray": ray.__version__,
                "python": platform.python_version(),
                "bar_overhead": 1.5,
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
