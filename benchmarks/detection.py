"""taskcam against grad-cam 1.5.7 on Faster R-CNN: Grad-CAM for K detections of one image.

Models, layers and inputs (the same for both libraries):

* ``fasterrcnn``: torchvision ``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
  num_classes=91, min_size=512, max_size=512)`` with random weights (``torch.manual_seed(0)``)
  on the photo ``skimage.data.astronaut()`` (512x512, so the transform neither resizes nor
  pads it).
* ``shapes-fasterrcnn``: taskcam's trained ``zoo:shapes-fasterrcnn`` (a small ResNet + FPN
  Faster R-CNN, at most 20 detections per image) on ``make_sample(3, seed=9999,
  size=256).image``.
* Both: ``roi_heads.score_thresh = 0.0`` (and ``conf=0.0`` for taskcam's adapter) so that at
  least 20 detections exist; layer ``backbone.fpn.layer_blocks.0`` (the finest FPN level, a
  module whose output is a tensor, so grad-cam needs no ``reshape_transform``). The input is
  the image as a ``Tensor[1, 3, H, W]`` in [0, 1] (``adapter.prepare``); the detector
  normalises it itself.
* The detections: ``adapter.detect(x)[0]`` (torchvision's own ranking, best first), computed
  once outside the timing; ``K`` = 1, 5, 20 are its first K. They are checked to be the
  boxes and labels of ``detector(x)``, which grad-cam is given.

What one call is (what a user writes; targets are built once, outside the timing):

* taskcam: ``taskcam.explain(adapter.model, x, [adapter.targets(dets.select(range(K)))],
  layers=[LAYER], method="gradcam")``: all K detections in ONE call, one forward and one
  batched backward (``torch.autograd.grad(..., is_grads_batched=True)``); each target reads
  its detection's own proposal score (softmax probability of its class).
* grad-cam: ``GradCAM(model=detector, target_layers=[detector.get_submodule(LAYER)])`` built
  once, then its natural loop, one call per detection, as its Faster R-CNN tutorial does:
  ``cam(input_tensor=x, targets=[FasterRCNNBoxScoreTarget(labels=[label],
  bounding_boxes=[box])])``, ``box`` and ``label`` the detection's float box (original image
  pixels, the coordinates of ``detector(x)``'s output, which the target matches by IoU) and
  class id. The tutorial casts boxes to ``int32``; the float box is kept here, so the target
  matches its own output box with IoU exactly 1 (see Agreement).
* ``forward``: a plain ``detector(x)`` under ``torch.no_grad``, for context.

How things are measured:

* One process; ``torch.set_num_threads`` is the CPUs it may use. Each library gets its own
  deep copy of the detector (so their hooks never meet); ``forward`` runs the original.
* Warm-up: taskcam K=1, 5, 20, grad-cam K=1 and the forward run once. grad-cam's K=5 and
  K=20 calls are K repetitions of its K=1 call on other detections (the same code path, and
  minutes each on the ResNet-50), so they are not warmed separately. Then ``--rounds``
  rounds each time every call once, round-robin, the order rotated each round. Reported are
  medians (``*_s``) and, for the speed-ups, also the median of the per-round ratios
  (``speedup_k_paired``), which is robust to load that drifts between rounds on a shared
  machine.
* ``k20_over_k1``: median time for K=20 over K=1, per library (taskcam's batched backward
  should keep it far under 20; grad-cam's loop is about 20). ``speedup_k``: grad-cam's time
  over taskcam's, per K. ``bars``: the project's targets, taskcam K=20 <= 3x its K=1 and
  taskcam >= 5x faster than grad-cam's loop at K=20 (reported, not tuned for).

Agreement (sanity check; the two compute the same Grad-CAM):

* ``corr_one``: Pearson correlation of the two libraries' maps for the K=1 detection, both
  min-max normalised to [0, 1] at the image size (taskcam's from its warm-up call, grad-cam's
  from its own). ``corr_k20_min``: the smallest such correlation over the K=20 detections
  whose maps are not empty (taskcam's warm-up maps, grad-cam's first timed round), with
  ``corr_k20`` listing them all (``null``: a constant map).
* Why they agree although the targets differ: grad-cam's ``FasterRCNNBoxScoreTarget`` scores
  ``IoU + score`` of the output box that best overlaps the given box (summed over the boxes
  it is given; one here). Given the float box, that output box is the detection itself, IoU
  is exactly 1 (its maximum), and autograd's gradient of torchvision's ``box_iou`` there is
  0 (``torch.max`` / ``torch.min`` split ties evenly, and the intersection's and the union's
  derivatives cancel), so only the score's gradient remains: the same softmax probability
  taskcam's target reads. ``gc_matched`` counts the detections whose box grad-cam matches to
  the detection itself (IoU argmax = its own index); a box matched elsewhere would make
  grad-cam explain another box or score 0.
* Empty maps (``empty``): torchvision's RPN detaches its proposals and the FPN's top-down
  path runs from coarse to fine levels only, so a detection whose proposal
  ``MultiScaleRoIAlign`` pools from a coarser level has exactly zero gradient at
  ``layer_blocks.0``: both libraries give it an empty map (taskcam flags it; grad-cam returns
  zeros). ``levels`` counts the K=20 detections per pyramid level and
  ``empty_are_other_levels`` checks that exactly those from other levels are empty. (taskcam's
  own default, every level with each detection's own level, is not what is timed here.)

Run from the repository root (the ResNet-50 model takes tens of minutes on two cores: the
grad-cam loop is one full forward and backward per detection)::

    .venv/bin/python benchmarks/detection.py            # 3 rounds, both models
    .venv/bin/python benchmarks/detection.py --rounds 1 --models shapes-fasterrcnn
    .venv/bin/python benchmarks/detection.py [--rounds N] [--models fasterrcnn,shapes-fasterrcnn]

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
from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from classic import _cores, _fmt, _normalised, _round, pearson  # noqa: E402

import taskcam  # noqa: E402
from taskcam.adapters.detection import Detections
from taskcam.adapters.torchvision import (
    TorchvisionDetectionAdapter,
    TorchvisionDetectionTarget,
)

MODEL_NAMES = ("fasterrcnn", "shapes-fasterrcnn")
LAYER = "backbone.fpn.layer_blocks.0"
KS = (1, 5, 20)
SCORE_THRESH = 0.0  # low enough for at least max(KS) detections


# -- models and inputs ----------------------------------------------------------------------


def _fasterrcnn() -> tuple[nn.Module, np.ndarray]:
    from skimage.data import astronaut

    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=91, min_size=512, max_size=512
    )
    return model, astronaut()  # uint8[512, 512, 3]


def _shapes_fasterrcnn() -> tuple[nn.Module, np.ndarray]:
    from taskcam.data import make_sample
    from taskcam.zoo import build_zoo_model

    model = build_zoo_model("shapes-fasterrcnn").model
    return model, make_sample(3, seed=9999, size=256).image  # uint8[256, 256, 3]


MODELS: dict[str, Callable[[], tuple[nn.Module, np.ndarray]]] = {
    "fasterrcnn": _fasterrcnn,
    "shapes-fasterrcnn": _shapes_fasterrcnn,
}


# -- one call per library -------------------------------------------------------------------


def taskcam_call(
    model: nn.Module, targets: list[TorchvisionDetectionTarget]
) -> Callable[[torch.Tensor], np.ndarray]:
    def call(x: torch.Tensor) -> np.ndarray:
        exp = taskcam.explain(model, x, [targets], layers=[LAYER], method="gradcam")
        return exp.maps[0].numpy()  # [K, H, W]

    return call


def gradcam_call(
    cam: pgc.GradCAM, targets: list[FasterRCNNBoxScoreTarget]
) -> Callable[[torch.Tensor], np.ndarray]:
    def call(x: torch.Tensor) -> np.ndarray:
        return np.concatenate([cam(input_tensor=x, targets=[t]) for t in targets])  # [K, H, W]

    return call


def _check_same_detections(dets: Detections, out: dict[str, torch.Tensor], k: int) -> None:
    """taskcam's first ``k`` detections must be ``detector(x)``'s (what grad-cam is given)."""
    if len(out["boxes"]) < k or not torch.equal(out["labels"][:k], dets.classes[:k]):
        raise RuntimeError("taskcam's detections differ from the detector's own output")
    if not torch.allclose(out["boxes"][:k], dets.boxes[:k], atol=1e-3):
        raise RuntimeError("taskcam's boxes differ from the detector's own output")


def _matched_to_self(out: dict[str, torch.Tensor], k: int) -> int:
    """How many of the first ``k`` output boxes grad-cam's IoU argmax matches to themselves."""
    ious = torchvision.ops.box_iou(out["boxes"][:k], out["boxes"])  # [k, N]
    return int((ious.argmax(dim=1) == torch.arange(k)).sum())


# -- report ---------------------------------------------------------------------------------


def _is_empty(m: np.ndarray) -> bool:
    return float(m.max()) <= float(m.min())


def _measure(model_name: str, rounds: int) -> dict[str, Any]:
    """Build the model, warm the calls up, time ``rounds`` interleaved rounds."""
    detector, image = MODELS[model_name]()
    detector.eval()
    detector.roi_heads.score_thresh = SCORE_THRESH
    tc_det = copy.deepcopy(detector)
    gc_det = copy.deepcopy(detector)

    adapter = TorchvisionDetectionAdapter(tc_det, conf=SCORE_THRESH)
    x, placement = adapter.prepare(image)  # [1, 3, H, W] in [0, 1]
    dets = adapter.detect(x)[0]
    kmax = max(KS)
    if len(dets) < kmax:
        raise RuntimeError(f"{len(dets)} detections, need {kmax}: lower SCORE_THRESH")
    with torch.no_grad():
        out = gc_det(x)[0]  # torchvision's own output: what grad-cam's tutorial reads
    _check_same_detections(dets, out, kmax)
    gc_boxes = out["boxes"][:kmax].numpy()  # float xyxy, original image pixels
    gc_labels = out["labels"][:kmax].tolist()

    cam = pgc.GradCAM(model=gc_det, target_layers=[gc_det.get_submodule(LAYER)])
    tc_targets = {k: adapter.targets(dets.select(range(k))) for k in KS}
    gc_targets = {
        k: [
            FasterRCNNBoxScoreTarget(labels=[gc_labels[i]], bounding_boxes=[gc_boxes[i]])
            for i in range(k)
        ]
        for k in KS
    }

    def forward(x: torch.Tensor) -> None:
        with torch.no_grad():
            detector(x)

    calls: dict[str, Callable[[torch.Tensor], Any]] = {}
    for k in KS:
        calls[f"taskcam_{k}"] = taskcam_call(adapter.model, tc_targets[k])
    for k in KS:
        calls[f"gradcam_{k}"] = gradcam_call(cam, gc_targets[k])
    calls["forward"] = forward

    warm_names = [*(f"taskcam_{k}" for k in KS), f"gradcam_{KS[0]}", "forward"]
    maps = {name: calls[name](x) for name in warm_names}  # warm-up, and the maps
    times: dict[str, list[float]] = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no fixed slot
            t0 = time.perf_counter()
            result = calls[name](x)
            times[name].append(time.perf_counter() - t0)
            if name not in maps:
                maps[name] = result
    cam.activations_and_grads.release()

    med = {name: statistics.median(t) for name, t in times.items()}

    def paired(a: str, b: str) -> float:
        # median over rounds of a_i / b_i: robust to load that drifts between rounds
        return statistics.median(p / q for p, q in zip(times[a], times[b]))

    def to_image(m: np.ndarray) -> np.ndarray:
        return placement.map_to_image(torch.from_numpy(m)).numpy()

    tc_maps = to_image(maps[f"taskcam_{kmax}"])  # [K, H, W]
    gc_maps = to_image(maps[f"gradcam_{kmax}"])
    corr_one = pearson(
        _normalised(to_image(maps["taskcam_1"])[0]), _normalised(to_image(maps["gradcam_1"])[0])
    )
    corrs = [pearson(_normalised(a), _normalised(b)) for a, b in zip(tc_maps, gc_maps)]
    found = [c for c in corrs if c is not None]
    empty_tc = [_is_empty(m) for m in tc_maps]
    empty_gc = [_is_empty(m) for m in gc_maps]
    levels = dets.levels[:kmax] if dets.levels is not None else [None] * kmax
    other_level = [lv != LAYER for lv in levels]

    def per_lib(lib: str) -> dict[str, Any]:
        entry: dict[str, Any] = {f"k{k}_s": med[f"{lib}_{k}"] for k in KS}
        entry[f"k{kmax}_over_k1"] = med[f"{lib}_{kmax}"] / med[f"{lib}_1"]
        return entry

    tc, gc = per_lib("taskcam"), per_lib("gradcam")
    speedup = {str(k): med[f"gradcam_{k}"] / med[f"taskcam_{k}"] for k in KS}
    speedup_paired = {str(k): paired(f"gradcam_{k}", f"taskcam_{k}") for k in KS}
    return {
        "layer": LAYER,
        "input": list(x.shape),
        "detections": len(dets),
        "k1": {
            "class_id": int(dets.classes[0]),
            "score": float(dets.scores[0]),
            "box": [round(float(v), 1) for v in dets.boxes[0]],
            "level": levels[0],
        },
        "levels": {str(lv): levels.count(lv) for lv in dict.fromkeys(levels)},
        "taskcam": tc,
        "gradcam": gc,
        "forward_s": med["forward"],
        "speedup_k": speedup,
        "speedup_k_paired": speedup_paired,
        "bars": {
            "taskcam_k20_le_3x_k1": tc[f"k{kmax}_over_k1"] <= 3.0,
            "speedup_k20_ge_5": speedup[str(kmax)] >= 5.0,
        },
        "corr_one": corr_one,
        "corr_k20": corrs,
        "corr_k20_min": min(found) if found else None,
        "empty": {"taskcam": sum(empty_tc), "gradcam": sum(empty_gc), "of": kmax},
        "empty_are_other_levels": empty_tc == other_level and empty_gc == other_level,
        "gc_matched": _matched_to_self(out, kmax),
        "min_s": {name: min(t) for name, t in times.items()},
    }


def _print_entry(name: str, e: dict[str, Any]) -> None:
    tc, gc = e["taskcam"], e["gradcam"]
    kmax = max(KS)
    ks = "".join(f"{'K=' + str(k):>9}" for k in KS)
    print(f"{name}  ({e['detections']} detections, input {e['input']}, layer {e['layer']})")
    print(f"  {'seconds':10}{ks}{'20/1':>8}")
    for label, lib in (("taskcam", tc), ("grad-cam", gc)):
        cells = "".join(f"{_fmt(lib[f'k{k}_s']):>9}" for k in KS)
        print(f"  {label:10}{cells}{_fmt(lib[f'k{kmax}_over_k1'], '.2f'):>8}")
    cells = "".join(f"{_fmt(e['speedup_k'][str(k)], '.2f'):>9}" for k in KS)
    print(f"  {'gc/tc':10}{cells}")
    cells = "".join(f"{_fmt(e['speedup_k_paired'][str(k)], '.2f'):>9}" for k in KS)
    print(f"  {'  paired':10}{cells}")
    emp = e["empty"]
    print(
        f"  forward {_fmt(e['forward_s'])} s; corr K=1 {_fmt(e['corr_one'])}; corr K={kmax} "
        f"min {_fmt(e['corr_k20_min'])}\n  empty maps of K={kmax}: {emp['taskcam']} taskcam, "
        f"{emp['gradcam']} grad-cam (exactly the detections from other levels: "
        f"{e['empty_are_other_levels']}); grad-cam boxes matched to themselves "
        f"{e['gc_matched']}/{kmax}\n  bars {e['bars']}\n",
        flush=True,
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
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
        f"taskcam {taskcam.__version__}, grad-cam 1.5.7, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}; {_cores()} CPU threads; rounds {args.rounds} "
        f"(+1 warm-up); loadavg at start {os.getloadavg()}",
        flush=True,
    )
    print(
        "times: median seconds per call for the first K detections of one image; taskcam = "
        "all K in one explain call, grad-cam = one call per detection; 20/1 = time for K=20 "
        "over K=1; gc/tc = grad-cam / taskcam (paired: median of per-round ratios); corr = "
        "Pearson of the normalised maps\n",
        flush=True,
    )
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
        _print_entry(name, entry)
    out["loadavg_end"] = list(os.getloadavg())
    if errors:
        out["errors"] = errors
    print(json.dumps(_round(out)), flush=True)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
