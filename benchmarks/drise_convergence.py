"""How D-RISE maps converge with the number of masks, and what ``fast-drise`` buys.

For every detection the adapter keeps (``conf`` 0.25), a reference map is made with D-RISE
and ``--ref-masks`` masks (4,000 random masks, seed ``--ref-seed`` 1000, never a seed of the
maps under test), by default with the centred estimator (``--ref-estimator centered``: the
same expectation as plain D-RISE, less noise; on zoo:shapes-yolo the plain 4,000-mask map of
one detection correlated only 0.79 with the centred map of the same masks, which caps what any
setting can reach against it; ``--ref-estimator plain`` for the plain one).
Each setting under test explains the same detections (one call per image) and its map is
compared with the reference on the model's input grid:

* ``pearson``: the Pearson correlation of the two maps; ``spearman``: the Spearman rank
  correlation (:func:`taskcam.metrics.spearman`). Per setting: the mean and the minimum over
  detections, and each detection's value.
* ``forwards``: masked forwards per image (the mask count); ``s_per_image``: median seconds for
  one image's explain call (``--threads`` CPU threads).

Settings: plain ``drise`` (16 × 16 grid, p = 0.5, seed 0) with ``--masks`` 125, 250, 500, 1000
(the default) and 2000 masks; ``fast-drise`` (250 masks: Sobol masks, centred scores), its
8 × 8 form and its two parts alone with as many forwards, ``--variants``, each
``method[:key=value...]``.

Models (``--models``):

* ``shapes-yolo``: the zoo's trained YOLO on ``--shapes-images`` held-out shapes images (256
  px);
* ``nudenet-320`` (and ``nudenet-640``): NudeNet's trained YOLOv8n (``320n.onnx`` from the
  ``nudenet`` package) at a 320 (640) letterbox on the photos ``--photos`` (skimage's astronaut,
  ultralytics' bus and zidane; ``--photos-640`` at 640).

The last line is a JSON object with all numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Optional

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from yolo_photos import _round, nudenet_onnx, photos

import taskcam
from taskcam.metrics import spearman

VARIANTS = (
    "fast-drise",
    "fast-drise:grid=8",
    "drise:n_masks=250:centered=1",
    "drise:n_masks=250:sampling=sobol",
)


def parse_setting(spec: str) -> tuple[str, dict[str, Any]]:
    """``"drise:n_masks=250:centered=1"`` -> ``("drise", {"n_masks": 250, "centered": True})``."""
    name, *pairs = spec.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        if key == "centered":
            options[key] = value.lower() in ("1", "true", "yes")
        elif key in ("n_masks", "grid", "seed", "batch_size"):
            options[key] = int(value)
        elif key == "p":
            options[key] = float(value)
        else:
            options[key] = value
    return name, options


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Tensor[T]``: the Pearson correlation of each pair of maps ``Tensor[T, H, W]``."""
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return ((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)).float()


def cases(models: list[str], args: argparse.Namespace) -> list[tuple[str, Any, Any, list]]:
    """``(name, model, x, targets)`` for every image of every model that has detections."""
    out = []
    for spec in models:
        if spec == "shapes-yolo":
            from taskcam.adapters import adapter_for
            from taskcam.data.shapes import HELDOUT_SEED, make_sample
            from taskcam.zoo import build_zoo_model

            adapter = adapter_for(build_zoo_model("shapes-yolo"))
            images = {
                f"shapes{i}": make_sample(i, seed=HELDOUT_SEED, size=256, min_objects=2).image
                for i in range(1, 1 + args.shapes_images)
            }
        elif spec.startswith("nudenet-"):
            from taskcam.adapters.ultralytics import YoloAdapter, load_yolo

            size = int(spec.split("-")[1])
            adapter = YoloAdapter(load_yolo(nudenet_onnx()), size=size)
            chosen = args.photos_640 if size == 640 else args.photos
            every = photos()
            images = {k: every[k] for k in chosen.split(",") if k}
        else:
            raise SystemExit(
                f"unknown model {spec!r}; one of shapes-yolo, nudenet-320, nudenet-640"
            )
        for name, image in images.items():
            x, _ = adapter.prepare(image)
            dets = adapter.detect(x)[0]
            if len(dets):
                out.append((f"{spec}/{name}", adapter.model, x, adapter.targets(dets)))
    return out


def explain(model, x, targets, name: str, options: dict[str, Any]) -> tuple[torch.Tensor, float]:
    """The maps ``Tensor[T, H, W]`` of one image and the seconds the call took."""
    start = time.perf_counter()
    exp = taskcam.explain(model, x, [targets], method=taskcam.get_method(name, **options))
    return exp.maps[0], time.perf_counter() - start


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="shapes-yolo,nudenet-320", help="comma-separated")
    parser.add_argument("--photos", default="astronaut,bus,zidane", help="photos at 320")
    parser.add_argument("--photos-640", default="bus", help="photos for nudenet-640")
    parser.add_argument("--shapes-images", type=int, default=2)
    parser.add_argument("--masks", default="125,250,500,1000,2000", help="plain D-RISE counts")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="method[:key=value...]")
    parser.add_argument("--ref-masks", type=int, default=4000)
    parser.add_argument("--ref-seed", type=int, default=1000)
    parser.add_argument("--ref-estimator", choices=("centered", "plain"), default="centered")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [f"drise:n_masks={n}" for n in args.masks.split(",") if n]
    settings += [v for v in args.variants.split(",") if v]
    models = [m for m in args.models.split(",") if m]
    print(f"taskcam {taskcam.__version__}, torch {torch.__version__}, {args.threads} threads")

    rows: dict[str, dict[str, list]] = {s: {"p": [], "s": [], "t": []} for s in settings}
    per_case: dict[str, Any] = {}
    for case, model, x, targets in cases(models, args):
        ref_options = {
            "n_masks": args.ref_masks,
            "seed": args.ref_seed,
            "centered": args.ref_estimator == "centered",
        }
        ref, ref_s = explain(model, x, targets, "drise", ref_options)
        print(f"{case}: {len(targets)} detections, {args.ref_masks}-mask reference {ref_s:.1f} s")
        per_case[case] = {"detections": len(targets), "reference_s": ref_s}
        for setting in settings:
            name, options = parse_setting(setting)
            maps, seconds = explain(model, x, targets, name, options)
            p, s = pearson(maps, ref).tolist(), spearman(maps, ref).tolist()
            rows[setting]["p"] += p
            rows[setting]["s"] += s
            rows[setting]["t"].append((case, seconds))
            per_case[case][setting] = {"pearson": p, "spearman": s, "s": seconds}
            print(
                f"  {setting:<46} pearson {min(p):.3f}..{max(p):.3f}  "
                f"spearman {min(s):.3f}..{max(s):.3f}  {seconds:6.1f} s",
                flush=True,
            )

    summary: dict[str, Any] = {}
    print(f"\n{'setting':<46} {'fwd':>5} {'pearson':>14} {'spearman':>14} {'s/img':>14}")
    for setting in settings:
        r = rows[setting]
        if not r["p"]:
            continue
        name, options = parse_setting(setting)
        forwards = taskcam.get_method(name, **options).n_masks
        by_model: dict[str, list[float]] = {}
        for case, seconds in r["t"]:
            by_model.setdefault(case.split("/")[0], []).append(seconds)
        summary[setting] = {
            "forwards": forwards,
            "pearson_mean": statistics.fmean(r["p"]),
            "pearson_min": min(r["p"]),
            "spearman_mean": statistics.fmean(r["s"]),
            "spearman_min": min(r["s"]),
            "s_per_image": {m: statistics.median(v) for m, v in by_model.items()},
        }
        sec = " ".join(f"{v:.1f}" for v in summary[setting]["s_per_image"].values())
        print(
            f"{setting:<46} {forwards:>5} {summary[setting]['pearson_mean']:>7.3f}/"
            f"{summary[setting]['pearson_min']:.3f} {summary[setting]['spearman_mean']:>7.3f}/"
            f"{summary[setting]['spearman_min']:.3f} {sec:>14}"
        )
    out = {
        "threads": args.threads,
        "reference": {
            "method": "drise",
            "n_masks": args.ref_masks,
            "seed": args.ref_seed,
            "estimator": args.ref_estimator,
        },
        "summary": summary,
        "cases": per_case,
    }
    print(json.dumps(_round(out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
