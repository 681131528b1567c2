"""A trained YOLOv8 explained against labels on real photos: its outcomes, and which method's
maps explain its hits, misses and false positives (``taskcam eval --labels``).

The model is NudeNet's YOLOv8n (``nudenet`` ships it as ``320n.onnx``; see
``benchmarks/yolo_photos.py``), the photos ultralytics' ``bus.jpg`` and ``zidane.jpg`` and
scikit-image's ``astronaut``, labelled by eye (faces and shoes, in the model's classes:
:mod:`taskcam.data.people`) and written as a YOLO dataset in a temporary folder.
At ``--conf`` (0.1) the detector hits some labels, misses others (its face of the first man on
the bus is a woman's: ``wrong_class``; faces scored too low: ``below_conf``) and finds a few
boxes no label has.

Printed: the detector's precision and recall, the reasons of its misses, then per method and
outcome the pointing game and energy in the label box, deletion and insertion of the explained
score (blurred pixels, ``--steps``) and their difference, beside a Gaussian at the box centre
and a random map (``baseline:`` rows), and the seconds per map; the last line is the JSON of
``eval.json``.

    python benchmarks/label_outcomes.py [--methods odam,gradcam,layercam,fast-drise]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="odam,gradcam,layercam,fast-drise")
    parser.add_argument("--conf", type=float, default=0.1)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from taskcam.data.people import write_people_dataset
    from taskcam.evaluate.labels import evaluate_labels
    from taskcam.models import load_model

    spec = importlib.util.find_spec("nudenet")
    if spec is None:
        raise SystemExit("pip install nudenet (it ships the trained YOLOv8n this measures)")
    onnx = Path(spec.submodule_search_locations[0]) / "320n.onnx"
    loaded = load_model(f"yolo:{onnx}")
    with tempfile.TemporaryDirectory() as tmp:
        names = dict(enumerate(loaded.class_names))
        data = write_people_dataset(Path(tmp) / "people", names)
        start = time.perf_counter()
        result = evaluate_labels(
            loaded,
            [data.parent / "images"],
            data,
            args.methods.split(","),
            conf=args.conf,
            steps=args.steps,
            progress=False,
        )
        seconds = time.perf_counter() - start
        print(result.format())
        print(f"{seconds:.1f} s for {result.images} photos, {args.threads} threads")
        result.write(tmp)
        print((Path(tmp) / "eval.json").read_text().replace("\n", " "))


if __name__ == "__main__":
    main()
