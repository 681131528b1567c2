"""Images per second of every kind of method on a GPU: one command for the day one is lent.

Run: ``python benchmarks/gpu.py`` (``--device cuda`` by default; ``--device cpu`` runs the same
cases on the CPU, to compare or to check the script on a machine without a GPU).

Cases, each on ``--images`` inputs explained one call per image (its detections, or its top
class), after ``--warmup`` untimed calls:

* ``yolov8s-640``: ultralytics' YOLOv8s built from its yaml (random weights: the cost of a
  forward does not depend on them) at 640 × 640, explaining its top ``--detections``
  candidates, with ``odam`` and ``gradcam`` (gradients), ``fast-scorecam`` (layer
  perturbation) and ``drise`` / ``fast-drise`` (masked forwards);
* ``resnet50-224``: torchvision's ResNet-50 (random weights) at 224 × 224 with ``gradcam``,
  ``fast-scorecam`` and ``rise``.

Each method runs with ``--precision`` (``auto``: fp16 forwards for the perturbation methods on
a GPU, fp32 for the gradient methods; ``fp32`` to compare). Per case and method:
``images_per_s`` and ``s_per_image`` (median), and the peak GPU memory. The last line is a
JSON object with every number.

Example:
    >>> # python benchmarks/gpu.py --images 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any, Optional

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch

import taskcam


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def yolo_case(device: torch.device, detections: int) -> tuple[Any, torch.Tensor, list]:
    """YOLOv8s at 640 (random weights) on the GPU: model, input and its top candidates'
    targets (random weights keep few boxes above a threshold, so the top-scoring candidates
    after NMS stand in for detections)."""
    from ultralytics import YOLO

    from taskcam.adapters.ultralytics import YoloAdapter

    model = YOLO("yolov8s.yaml").model.to(device).eval()
    adapter = YoloAdapter(model, size=640, conf=0.0)
    image = (torch.rand(640, 640, 3) * 255).to(torch.uint8).numpy()
    x, _ = adapter.prepare(image)
    dets = adapter.detect(x.to(device))[0]
    dets = dets.select(list(range(min(detections, len(dets)))))
    return adapter.model, x.to(device), adapter.targets(dets)


def resnet_case(device: torch.device) -> tuple[Any, torch.Tensor, list]:
    import torchvision

    from taskcam.targets import ClassTarget

    model = torchvision.models.resnet50(weights=None).to(device).eval()
    x = torch.rand(1, 3, 224, 224, device=device)
    with torch.no_grad():
        top = int(model(x).argmax())
    return model, x, [ClassTarget(top)]


CASES = {
    "yolov8s-640": ("odam", "gradcam", "fast-scorecam", "fast-drise", "drise"),
    "resnet50-224": ("gradcam", "fast-scorecam", "rise"),
}


def measure(model, x, targets, method: str, args: argparse.Namespace) -> dict[str, Any]:
    device = x.device
    explainer = taskcam.Explainer(model, method=method, precision=args.precision)
    seconds = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i in range(args.warmup + args.images):
        _sync(device)
        start = time.perf_counter()
        explainer(x, [targets])
        _sync(device)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - start)
    out = {
        "s_per_image": statistics.median(seconds),
        "images_per_s": len(seconds) / sum(seconds),
    }
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--images", type=int, default=10, help="timed calls per method")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--detections", type=int, default=4)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated")
    parser.add_argument("--methods", help="comma-separated; default: each case's own")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU here: run with --device cpu, or on a machine with a GPU")
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"taskcam {taskcam.__version__}, torch {torch.__version__}, {name}", flush=True)
    results: dict[str, Any] = {"device": name, "precision": args.precision, "cases": {}}
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; one of {', '.join(CASES)}")
        if case == "yolov8s-640":
            model, x, targets = yolo_case(device, args.detections)
        else:
            model, x, targets = resnet_case(device)
        methods = args.methods.split(",") if args.methods else CASES[case]
        results["cases"][case] = {"targets": len(targets)}
        for method in methods:
            row = measure(model, x, targets, method, args)
            results["cases"][case][method] = row
            print(
                f"{case:<14} {method:<14} {row['images_per_s']:8.2f} images/s "
                f"{row['s_per_image']:7.3f} s/image",
                flush=True,
            )
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
