"""taskcam against grad-cam 1.5.7 on segmentation models: Grad-CAM for the classes of one image.

Models, layers and inputs (the same for both libraries):

* ``shapes-unet``: taskcam's ``zoo:shapes-unet`` (an smp Unet, 5 classes: background and four
  shapes), layer ``decoder`` (``default_segmentation_layers``), input the 256x256 shapes image
  ``make_sample(3, seed=9999, size=256)`` normalised with the model's mean/std. ``C = all`` is
  every class present in the model's prediction.
* ``deeplabv3``: torchvision ``deeplabv3_resnet50(weights=None, weights_backbone=None,
  num_classes=21)`` with random weights (``torch.manual_seed(0)``), layer ``classifier.3``
  (``default_segmentation_layers``), a 320x320 random input (``torch.rand``, seed 0). Random
  weights predict few classes, so ``C = all`` is the fixed classes 0..4, each with its
  predicted region even if that is empty.

``C = 1`` is one class of those: the one with the most predicted pixels, background (class 0)
left out where another class is predicted.

What one call is (what a user writes):

* taskcam: ``taskcam.explain(model, x, [RegionTarget(c) for c in classes],
  layers=default_segmentation_layers(model), method="gradcam")``: every class in ONE call (the
  engine does one forward and one batched backward); ``RegionTarget(c)`` reads the pixels
  predicted as ``c`` from that forward's own output. DeepLabV3's dict output is taken as is.
* grad-cam: ``GradCAM(model=..., target_layers=[layer])`` built once outside the timing, then
  its natural loop: for each class ``cam(input_tensor=x, targets=[SemanticSegmentationTarget(c,
  mask_c)])``, ``mask_c`` the float numpy mask of the pixels predicted as ``c``. DeepLabV3 is
  wrapped in a small module returning ``out["out"]``, as grad-cam's segmentation tutorial does;
  the target layer is the same module (``model.get_submodule`` of taskcam's dotted name).
* The prediction that picks the classes and grad-cam's masks is computed once, outside the
  timing, for both libraries. That spares grad-cam one forward per image; the plain forward
  (``forward``, under ``torch.no_grad``) is timed in the same rounds so it can be added back.

How things are measured:

* One process; ``torch.set_num_threads`` is the CPUs it may use. Each library gets its own
  deep copy of the model (so their hooks never meet). Every call (taskcam C=1, taskcam C=all,
  grad-cam C=1, grad-cam C=all, forward) is warmed up once, then ``--rounds`` rounds run, each
  timing every call once, round-robin, the order rotated each round; reported are the medians
  (``*_s``) and, for the speed-ups, also the median of the per-round ratios (``*_paired``),
  which is robust to load that drifts between rounds on a shared machine.
* ``all_over_one``: median time for C=all over median time for C=1, per library (taskcam's
  batched backward should keep it well under C; grad-cam's loop is about C).
  ``speedup_all``: grad-cam's C=all time over taskcam's.
* Agreement (sanity check): Pearson correlation of the two libraries' maps for the C=1 class,
  both min-max normalised to [0, 1] at the input size (``corr_one``), and the smallest such
  correlation over the C=all classes whose maps are not empty (``corr_all_min``), taken from
  the warm-up calls.

Run from the repository root::

    .venv/bin/python benchmarks/segmentation.py              # 5 rounds, both models
    .venv/bin/python benchmarks/segmentation.py --rounds 1 --models shapes-unet

A readable table is printed as results arrive; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import traceback
from typing import Any, Callable, Optional

import numpy as np
import pytorch_grad_cam as pgc
import torch
import torchvision
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from classic import _cores, _fmt, _normalised, _round, pearson  # noqa: E402

import taskcam  # noqa: E402
from taskcam.adapters.segmentation import (
    RegionTarget,
    default_segmentation_layers,
    region_targets,
    seg_logits,
)

MODEL_NAMES = ("shapes-unet", "deeplabv3")
DEEPLAB_CLASSES = list(range(5))  # fixed C=all classes for the random DeepLabV3
DEEPLAB_SIZE = 320


# -- models and inputs ----------------------------------------------------------------------


def _shapes_unet() -> tuple[nn.Module, torch.Tensor]:
    from taskcam.data import make_sample
    from taskcam.models import load_model

    lm = load_model("zoo:shapes-unet")
    s = make_sample(3, seed=9999, size=256)
    x = torch.from_numpy(s.image.astype(np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(lm.preprocess.mean)[:, None, None]
    std = torch.tensor(lm.preprocess.std)[:, None, None]
    return lm.model, ((x - mean) / std)[None].contiguous()


def _deeplab() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.segmentation.deeplabv3_resnet50(
        weights=None, weights_backbone=None, num_classes=21
    )
    x = torch.rand(1, 3, DEEPLAB_SIZE, DEEPLAB_SIZE, generator=torch.Generator().manual_seed(0))
    return model, x


MODELS: dict[str, Callable[[], tuple[nn.Module, torch.Tensor]]] = {
    "shapes-unet": _shapes_unet,
    "deeplabv3": _deeplab,
}


class OutOnly(nn.Module):
    """grad-cam wants a tensor: DeepLabV3's ``out["out"]`` (grad-cam's segmentation tutorial)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["out"]


def _classes(model_name: str, pred: torch.Tensor) -> tuple[list[int], int]:
    """``(classes for C=all, the class for C=1)`` from the prediction ``[H, W]``."""
    if model_name == "deeplabv3":
        classes = DEEPLAB_CLASSES
    else:
        classes = sorted(int(c) for c in pred.unique())
    areas = {c: int((pred == c).sum()) for c in classes}
    fg = {c: a for c, a in areas.items() if c != 0 and a > 0}
    pool = fg or areas
    return classes, max(pool, key=lambda c: (pool[c], -c))


# -- one call per library -------------------------------------------------------------------


def taskcam_call(model: nn.Module, classes: list[int]) -> Callable[[torch.Tensor], np.ndarray]:
    layers = default_segmentation_layers(model)
    targets = [RegionTarget(c) for c in classes]

    def call(x: torch.Tensor) -> np.ndarray:
        exp = taskcam.explain(model, x, targets, layers=layers, method="gradcam")
        return exp.maps[0].numpy()  # [C, H, W]

    return call


def gradcam_call(
    cam: pgc.GradCAM, classes: list[int], pred: torch.Tensor
) -> Callable[[torch.Tensor], np.ndarray]:
    targets = [
        SemanticSegmentationTarget(c, (pred == c).numpy().astype(np.float32)) for c in classes
    ]

    def call(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([cam(input_tensor=x, targets=[t]) for t in targets])  # [C, H, W]

    return call


# -- report ---------------------------------------------------------------------------------


def _measure(model_name: str, rounds: int) -> dict[str, Any]:
    """Build the model, warm every call up once, time ``rounds`` interleaved rounds."""
    model, x = MODELS[model_name]()
    model.eval()
    with torch.no_grad():
        output = model(x)
    pred = seg_logits(output).argmax(1)[0]
    classes, one = _classes(model_name, pred)
    if (
        model_name == "shapes-unet"
        and [t.class_id for t in region_targets(output, "all")[0]] != classes
    ):  # "all" must be exactly what taskcam's own helper picks
        raise RuntimeError("the classes present differ from region_targets(output, 'all')")
    layer = default_segmentation_layers(model)[0]

    tc_model = copy.deepcopy(model)
    gc_model = copy.deepcopy(model)
    gc_layer = gc_model.get_submodule(layer)
    gc_net = OutOnly(gc_model) if model_name == "deeplabv3" else gc_model
    cam = pgc.GradCAM(model=gc_net, target_layers=[gc_layer])

    def forward(x: torch.Tensor) -> None:
        with torch.no_grad():
            model(x)

    calls: dict[str, Callable[[torch.Tensor], Any]] = {
        "taskcam_one": taskcam_call(tc_model, [one]),
        "taskcam_all": taskcam_call(tc_model, classes),
        "gradcam_one": gradcam_call(cam, [one], pred),
        "gradcam_all": gradcam_call(cam, classes, pred),
        "forward": forward,
    }
    warm = {name: call(x) for name, call in calls.items()}  # warm-up, and the maps
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no fixed slot
            t0 = time.perf_counter()
            calls[name](x)
            times[name].append(time.perf_counter() - t0)
    cam.activations_and_grads.release()

    med = {name: statistics.median(t) for name, t in times.items()}

    def paired(a: str, b: str) -> float:
        # median over rounds of a_i / b_i: robust to load that drifts between rounds
        return statistics.median(p / q for p, q in zip(times[a], times[b]))

    corr_one = pearson(_normalised(warm["taskcam_one"][0]), _normalised(warm["gradcam_one"][0]))
    corrs = {}
    for i, c in enumerate(classes):
        corrs[c] = pearson(_normalised(warm["taskcam_all"][i]), _normalised(warm["gradcam_all"][i]))
    found = [v for v in corrs.values() if v is not None]
    return {
        "layer": layer,
        "input": list(x.shape),
        "classes_all": classes,
        "class_one": one,
        "pixels": {str(c): int((pred == c).sum()) for c in classes},
        "taskcam": {
            "one_s": med["taskcam_one"],
            "all_s": med["taskcam_all"],
            "all_over_one": med["taskcam_all"] / med["taskcam_one"],
        },
        "gradcam": {
            "one_s": med["gradcam_one"],
            "all_s": med["gradcam_all"],
            "all_over_one": med["gradcam_all"] / med["gradcam_one"],
        },
        "forward_s": med["forward"],
        "speedup_one": med["gradcam_one"] / med["taskcam_one"],
        "speedup_all": med["gradcam_all"] / med["taskcam_all"],
        "speedup_one_paired": paired("gradcam_one", "taskcam_one"),
        "speedup_all_paired": paired("gradcam_all", "taskcam_all"),
        "corr_one": corr_one,
        "corr_all": {str(c): v for c, v in corrs.items()},
        "corr_all_min": min(found) if found else None,
        "min_s": {name: min(t) for name, t in times.items()},
    }


def _header() -> None:
    cols = (
        f"{'model':12} {'C':>3} {'tc 1':>7} {'tc C':>7} {'tc C/1':>6} {'gc 1':>7} {'gc C':>7} "
        f"{'gc C/1':>6} {'gc/tc C':>7} {'paired':>6} {'fwd':>6} {'corr 1':>6} {'corr min':>8}"
    )
    print(cols)
    print("-" * len(cols), flush=True)


def _row(name: str, e: dict[str, Any]) -> None:
    tc, gc = e["taskcam"], e["gradcam"]
    print(
        f"{name:12} {len(e['classes_all']):>3} {_fmt(tc['one_s']):>7} {_fmt(tc['all_s']):>7} "
        f"{_fmt(tc['all_over_one'], '.2f'):>6} {_fmt(gc['one_s']):>7} {_fmt(gc['all_s']):>7} "
        f"{_fmt(gc['all_over_one'], '.2f'):>6} {_fmt(e['speedup_all'], '.2f'):>7} "
        f"{_fmt(e['speedup_all_paired'], '.2f'):>6} {_fmt(e['forward_s']):>6} "
        f"{_fmt(e['corr_one']):>6} {_fmt(e['corr_all_min']):>8}",
        flush=True,
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated")
    args = parser.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            parser.error(f"--models: unknown {m!r}; choose {', '.join(MODEL_NAMES)}")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")

    torch.set_num_threads(_cores())
    print(
        f"taskcam {taskcam.__version__}, grad-cam 1.5.7, torch {torch.__version__}; "
        f"{_cores()} CPU threads; rounds {args.rounds} (+1 warm-up); "
        f"loadavg at start {os.getloadavg()}",
        flush=True,
    )
    print(
        "times: median seconds per call; tc = taskcam (all classes in one call), gc = grad-cam "
        "(one call per class); C/1 = time for C classes / time for 1; gc/tc C = grad-cam / "
        "taskcam for C classes (paired: median of per-round ratios); fwd = plain forward; "
        "corr = Pearson of the normalised maps (1: the C=1 class, min: worst class of C)\n"
    )
    _header()
    out: dict[str, Any] = {"rounds": args.rounds, "threads": _cores()}
    errors = []
    for name in models:
        try:
            entry = _measure(name, args.rounds)
        except Exception:
            errors.append(name)
            print(f"  ! {name}: {traceback.format_exc().strip().splitlines()[-1]}", flush=True)
            print(traceback.format_exc(), file=sys.stderr, flush=True)
            continue
        out[name] = entry
        _row(name, entry)
    out["loadavg_end"] = list(os.getloadavg())
    if errors:
        out["errors"] = errors
    print(json.dumps(_round(out)), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
