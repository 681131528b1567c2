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
* ``forwards``: masked forwards per image (the masks used: fewer than ``n_masks`` when a stop
  rule ended sampling), median over images; ``s_per_image``: median seconds for one image's
  explain call (``--threads`` CPU threads; a compiled runtime's one-off export included).

Settings (``--variants``, each ``method[:key=value...]``; ``runtime=`` and ``precision=`` go to
the explainer, ``none`` is ``None``): plain ``drise`` (16 × 16 grid, p = 0.5, seed 0) with
``--masks`` counts (125, 250, 500, 1000, 2000), ``fast-drise`` as it is now (Sobol masks, the
local fit, the split-half stop rule), its earlier form
(``fast-drise:local=0:stop=none:n_masks=250``: the score-weighted mean of 250 Sobol masks),
the same in OpenVINO (``runtime=openvino``, with ``precision=bf16``), and ``odam`` on the
adapter's layers for the time of a gradient map.

``--forward-cost`` times one forward of ultralytics' YOLOv8s (yaml, random weights) at 640 × 480
in each runtime; ``--yolov8s PHOTO`` times every setting on that YOLOv8s with the median masks
the setting used on the trained model (the stop rule's count depends on the maps, the cost of
a mask on the architecture). ``--ref-cache DIR`` keeps the reference maps between runs.

Models (``--models``):

* ``shapes-yolo``: the zoo's trained YOLO on ``--shapes-images`` held-out shapes images (256
  px);
* ``nudenet-320`` (and ``nudenet-640``): NudeNet's trained YOLOv8n (``320n.onnx`` from the
  ``nudenet`` package) at a 320 (640) letterbox on the photos ``--photos`` (skimage's astronaut,
  ultralytics' bus and zidane; ``--photos-640`` at 640: those and skimage's camera).

Issue 30's run (README, docs/methods.md)::

    python benchmarks/drise_convergence.py --models nudenet-640 --masks 1000 \
        --variants fast-drise:local=0:stop=none:n_masks=250,fast-drise,\
fast-drise:runtime=openvino,fast-drise:runtime=openvino:precision=bf16,odam \
        --ref-runtime openvino --yolov8s bus

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
import taskcam.runtime
from taskcam.metrics import spearman

VARIANTS = (
    "fast-drise:local=0:stop=none:n_masks=250",
    "fast-drise",
    "fast-drise:runtime=openvino",
    "fast-drise:runtime=openvino:precision=bf16",
    "odam",
)


#: keys of a setting that are the explainer's, not the method's
EXPLAINER_KEYS = ("runtime", "precision")


def parse_setting(spec: str) -> tuple[str, dict[str, Any]]:
    """``"drise:n_masks=250:centered=1"`` -> ``("drise", {"n_masks": 250, "centered": True})``;
    ``runtime=`` and ``precision=`` are passed to the explainer."""
    name, *pairs = spec.split(":")
    options: dict[str, Any] = {}
    for pair in pairs:
        key, value = pair.split("=", 1)
        if key in ("centered", "local"):
            options[key] = value.lower() in ("1", "true", "yes")
        elif value.lower() == "none":
            options[key] = None
        elif key in ("n_masks", "grid", "seed", "batch_size", "min_masks"):
            options[key] = int(value)
        elif key in ("p", "stop"):
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
                model = adapter.model
                model.taskcam_layers = list(adapter.default_layers())  # for gradient methods
                out.append((f"{spec}/{name}", model, x, adapter.targets(dets)))
    return out


def explain(model, x, targets, name: str, options: dict[str, Any]) -> tuple[Any, float]:
    """The explanation of one image and the seconds the call took (a compiled runtime's
    one-off export included)."""
    run = {k: options[k] for k in EXPLAINER_KEYS if k in options}
    method = {k: v for k, v in options.items() if k not in EXPLAINER_KEYS}
    start = time.perf_counter()
    method = taskcam.get_method(name, **method)
    if method.uses_layers:  # odam, gradcam: the adapter's own layers (the neck outputs)
        run["layers"] = model.taskcam_layers
    exp = taskcam.explain(model, x, [targets], method=method, **run)
    return exp, time.perf_counter() - start


def forward_cost(runtimes: list[str], size: tuple[int, int] = (640, 480)) -> dict[str, float]:
    """Milliseconds per image of one YOLOv8s forward (ultralytics' yaml, random weights: the
    cost does not depend on them) at ``size``, batch 8, per ``runtime[/precision]``."""
    from ultralytics import YOLO

    model = YOLO("yolov8s.yaml").model.eval()
    x = torch.rand(8, 3, *size)
    out = {}
    with torch.no_grad():
        reference = model(x)
        for spec in runtimes:
            runtime, _, precision = spec.partition("/")
            run = taskcam.runtime.compiled_forward(
                model, x, runtime, reference, precision or "fp32"
            )
            run(x)
            times = []
            for _ in range(3):
                start = time.perf_counter()
                run(x)
                times.append((time.perf_counter() - start) / len(x) * 1000)
            out[spec] = statistics.median(times)
            print(f"YOLOv8s forward at {size[0]}x{size[1]}, {spec}: {out[spec]:.0f} ms/image")
    return out


def yolov8s_seconds(settings: list[str], masks: dict[str, float], photo: str) -> dict[str, float]:
    """Seconds per photo of each setting on ultralytics' YOLOv8s at 640 (built from its yaml,
    random weights: what a forward costs does not depend on them), with the median masks the
    setting used on the trained model (the stop rule's count depends on the maps, the cost
    per mask on the architecture), explaining the top 4 candidates of ``photo``. A compiled
    runtime is timed twice: with its one-off export, and again as a folder's further photos of
    the same size run (the export cached)."""
    from ultralytics import YOLO

    from taskcam.adapters.ultralytics import YoloAdapter

    adapter = YoloAdapter(YOLO("yolov8s.yaml").model.eval(), size=640, conf=0.0)
    x, _ = adapter.prepare(photos()[photo])
    dets = adapter.detect(x)[0]
    targets = adapter.targets(dets.select(list(range(min(4, len(dets))))))
    model = adapter.model
    model.taskcam_layers = list(adapter.default_layers())
    out = {}
    for setting in settings:
        name, options = parse_setting(setting)
        if masks.get(setting):
            options = {**options, "n_masks": int(round(masks[setting])), "stop": None}
        _, seconds = explain(model, x, targets, name, options)
        out[setting] = seconds
        print(f"YOLOv8s at 640 on {photo}, {setting}: {seconds:.1f} s", flush=True)
        if "runtime" in options:  # a folder's further photos of that size reuse the export
            _, seconds = explain(model, x, targets, name, options)
            out[f"{setting} (export cached)"] = seconds
            print(f"YOLOv8s at 640 on {photo}, {setting}, export cached: {seconds:.1f} s")
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="shapes-yolo,nudenet-320", help="comma-separated")
    parser.add_argument("--photos", default="astronaut,bus,zidane", help="photos at 320")
    parser.add_argument(
        "--photos-640", default="bus,zidane,astronaut,camera", help="photos for nudenet-640"
    )
    parser.add_argument("--shapes-images", type=int, default=2)
    parser.add_argument("--masks", default="125,250,500,1000,2000", help="plain D-RISE counts")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="method[:key=value...]")
    parser.add_argument("--ref-masks", type=int, default=4000)
    parser.add_argument("--ref-seed", type=int, default=1000)
    parser.add_argument("--ref-estimator", choices=("centered", "plain"), default="centered")
    parser.add_argument(
        "--ref-runtime",
        choices=taskcam.runtime.RUNTIMES,
        default="torch",
        help="where the reference's forwards run (openvino: the same maps in a third of the time)",
    )
    parser.add_argument(
        "--yolov8s",
        default="",
        help="a photo: also time every setting on a YOLOv8s at 640 with its median masks",
    )
    parser.add_argument(
        "--ref-cache", help="a folder keeping the reference maps between runs (default: none)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument(
        "--forward-cost",
        default="torch,openvino,openvino/bf16",
        help="runtimes whose YOLOv8s forward at 640 x 480 is timed ('' for none)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = [f"drise:n_masks={n}" for n in args.masks.split(",") if n]
    settings += [v for v in args.variants.split(",") if v]
    models = [m for m in args.models.split(",") if m]
    print(f"taskcam {taskcam.__version__}, torch {torch.__version__}, {args.threads} threads")

    rows: dict[str, dict[str, list]] = {s: {"p": [], "s": [], "t": [], "f": []} for s in settings}
    per_case: dict[str, Any] = {}
    for case, model, x, targets in cases(models, args):
        ref_options = {
            "n_masks": args.ref_masks,
            "seed": args.ref_seed,
            "centered": args.ref_estimator == "centered",
            "runtime": args.ref_runtime,
        }
        cached = None
        if args.ref_cache:  # the reference does not depend on the settings under test
            key = "_".join(f"{v}" for v in ref_options.values())
            cached = Path(args.ref_cache) / f"{case.replace('/', '_')}_{key}.pt"
        if cached is not None and cached.is_file():
            ref, ref_s = torch.load(cached), 0.0  # not timed: read back
        else:
            ref, ref_s = explain(model, x, targets, "drise", ref_options)
            ref = ref.maps[0]
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                torch.save(ref, cached)
        print(f"{case}: {len(targets)} detections, {args.ref_masks}-mask reference {ref_s:.1f} s")
        per_case[case] = {"detections": len(targets), "reference_s": ref_s}
        for setting in settings:
            name, options = parse_setting(setting)
            exp, seconds = explain(model, x, targets, name, options)
            maps = exp.maps[0]
            p, s = pearson(maps, ref).tolist(), spearman(maps, ref).tolist()
            forwards = exp.forwards[0] if exp.forwards is not None else 0
            rows[setting]["p"] += p
            rows[setting]["s"] += s
            rows[setting]["t"].append((case, seconds))
            rows[setting]["f"].append(forwards)
            per_case[case][setting] = {"pearson": p, "spearman": s, "s": seconds, "masks": forwards}
            print(
                f"  {setting:<46} pearson {min(p):.3f}..{max(p):.3f}  "
                f"spearman {min(s):.3f}..{max(s):.3f}  {forwards:5d} masks {seconds:6.1f} s",
                flush=True,
            )

    summary: dict[str, Any] = {}
    print(f"\n{'setting':<46} {'fwd':>5} {'pearson':>14} {'spearman':>14} {'s/img':>14}")
    for setting in settings:
        r = rows[setting]
        if not r["p"]:
            continue
        forwards = statistics.median(r["f"])
        by_model: dict[str, list[float]] = {}
        for case, seconds in r["t"]:
            by_model.setdefault(case.split("/")[0], []).append(seconds)
        summary[setting] = {
            "forwards": forwards,  # masked forwards per image, median
            "pearson_mean": statistics.fmean(r["p"]),
            "pearson_min": min(r["p"]),
            "spearman_mean": statistics.fmean(r["s"]),
            "spearman_min": min(r["s"]),
            "s_per_image": {m: statistics.median(v) for m, v in by_model.items()},
        }
        sec = " ".join(f"{v:.1f}" for v in summary[setting]["s_per_image"].values())
        print(
            f"{setting:<46} {forwards:>5.0f} {summary[setting]['pearson_mean']:>7.3f}/"
            f"{summary[setting]['pearson_min']:.3f} {summary[setting]['spearman_mean']:>7.3f}/"
            f"{summary[setting]['spearman_min']:.3f} {sec:>14}"
        )
    costs = forward_cost([r for r in args.forward_cost.split(",") if r])
    v8s = {}
    if args.yolov8s:
        used = {k: v["forwards"] for k, v in summary.items()}
        v8s = yolov8s_seconds(list(summary), used, args.yolov8s)
    out = {
        "threads": args.threads,
        "yolov8s_forward_ms": costs,
        "yolov8s_s_per_photo": v8s,
        "reference": {
            "method": "drise",
            "n_masks": args.ref_masks,
            "seed": args.ref_seed,
            "estimator": args.ref_estimator,
            "runtime": args.ref_runtime,
        },
        "summary": summary,
        "cases": per_case,
    }
    print(json.dumps(_round(out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
