"""Which detection maps explain the detection's score: deletion and insertion, against baselines.

For every model, method and layer choice, each detection the adapter keeps is explained (all
detections of an image in one call) and its map is judged by what it is for
(:mod:`taskcam.faithfulness`): the detection's own score, found in each perturbed copy by
D-RISE similarity, as the map's most salient pixels are blurred away (deletion) or put back
into a blurred image (insertion), 8 steps, both ÷ the clean score. ``faith`` = insertion −
deletion. On the shapes images removed pixels take the image's mean colour instead of its blur,
as ``taskcam eval`` does: a blurred shape keeps its colour and is still found. Beside every
method, on the same detections, three maps drawn without the model: a uniform ``random`` map,
the filled ``box`` and a Gaussian at the box ``centre`` (σ = 10 % of the input side).

Models (``--models``):

* ``shapes-yolo``, ``shapes-fasterrcnn``: the zoo's trained detectors on held-out shapes
  images (``--images`` of them);
* ``nudenet-320``, ``nudenet-640``: NudeNet's trained YOLOv8n (``nudenet`` on PyPI ships it as
  ``320n.onnx``; taskcam rebuilds the ``DetectionModel`` from it) at a 320 and a 640 letterbox,
  on the people photos that ship with scikit-image and ultralytics (astronaut, camera, bus,
  zidane);
* ``nudenet-onnx``: the same file as a black box (``--model onnx:PATH``), run by ONNX Runtime
  at its 320 px, explained by the methods that read no layer (``drise``, ``fast-drise``;
  the others are skipped for it).

Layer choices (``--choices``): YOLO ``head@level`` (the neck outputs the head reads, each
detection at its own stride: taskcam's default before this benchmark), ``head@all`` (all three
fused), ``backbone@last`` (the backbone's last stage, stride 32), ``backbone@level`` (the backbone
stage at the detection's stride), ``backbone@all``, ``deep@all`` (backbone's last stage with the
coarsest head input); torchvision ``fpn@level`` (the FPN level that pooled the detection),
``fpn@all``, ``body@last`` (the backbone body's last stage), ``body@all``.

Per (model, method, choice): mean deletion, insertion and faith; the share of detections whose
faith beats the centre blob's (``beats_centre``), mean margins over the centre blob and the
random map, and ``other_energy`` (the share of the map's energy on the *other* detections'
boxes, outside its own: maps per instance keep it low). The last line is a JSON object with it
all.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("YOLO_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from yolo_photos import _round, nudenet_onnx, photos

import taskcam
from taskcam.faithfulness import BASELINE_MAPS, baseline_maps, target_faithfulness
from taskcam.methods import get_method
from taskcam.metrics import boxes_to_masks, energy_pointing_game

MODELS = ("shapes-yolo", "shapes-fasterrcnn", "nudenet-320", "nudenet-640", "nudenet-onnx")
METHODS = ("odam", "gradcam", "layercam", "hirescam", "eigencam", "drise", "fast-drise")
YOLO_CHOICES = (
    "head@level",
    "head@all",
    "backbone@last",
    "backbone@level",
    "backbone@all",
    "deep@all",
)
TORCHVISION_CHOICES = ("fpn@level", "fpn@all", "body@last", "body@all")


def _relayered(targets: list, layer_of: Callable[[Any], Optional[str]]) -> list:
    """Copies of ``targets`` explained by ``layer_of(target)`` (None: every hooked layer)."""
    out = []
    for t in targets:
        c = copy.copy(t)
        c.layer = layer_of(t)
        out.append(c)
    return out


def _neck_level(target: Any) -> Optional[str]:
    """The neck output a YOLO detection was predicted at."""
    return target.layer


def yolo_layer_sets(model: torch.nn.Module) -> dict[str, tuple[list[str], Callable]]:
    """choice -> (layers, target -> its layer), from the model's yaml (backbone length) and
    the head's inputs."""
    from taskcam.adapters.ultralytics import backbone_stages, default_layers

    head = default_layers(model)
    stages = backbone_stages(model)  # one per head input's stride, finest first
    to_stage = dict(zip(head, stages))
    return {
        "head@level": (head, _neck_level),
        "head@all": (head, lambda t: None),
        "backbone@last": ([stages[-1]], lambda t: None),
        "backbone@level": (stages, lambda t: to_stage.get(_neck_level(t))),
        "backbone@all": (stages, lambda t: None),
        "deep@all": ([stages[-1], head[-1]], lambda t: None),
    }


def torchvision_layer_sets(adapter: Any) -> dict[str, tuple[list[str], Callable]]:
    fpn = adapter.default_layers()
    body = [
        name
        for name, _ in adapter.model.named_modules()
        if name.startswith("backbone.body.") and name.count(".") == 2
    ]
    return {
        "fpn@level": (fpn, lambda t: t.layer),
        "fpn@all": (fpn, lambda t: None),
        "body@last": ([body[-1]], lambda t: None),
        "body@all": (body[-3:], lambda t: None),
    }


def load(name: str, n_images: int, conf: float) -> tuple[Any, Any, dict[str, np.ndarray]]:
    """``(adapter, layer sets, images)`` of a benchmark model."""
    from taskcam.adapters import adapter_for
    from taskcam.adapters.ultralytics import YoloAdapter, load_yolo
    from taskcam.data.shapes import HELDOUT_SEED, make_sample
    from taskcam.zoo import build_zoo_model

    if name == "nudenet-onnx":
        from taskcam.adapters.blackbox import BlackBox

        return BlackBox.from_onnx(nudenet_onnx(), conf=conf), {}, photos()
    if name.startswith("nudenet-"):
        model = load_yolo(nudenet_onnx())
        adapter = YoloAdapter(model, size=int(name.split("-")[1]), conf=conf)
        return adapter, yolo_layer_sets(model), photos()
    loaded = build_zoo_model(name)
    adapter = adapter_for(loaded)
    size = loaded.preprocess.size[0]
    images = {
        f"heldout{i}": make_sample(i, seed=HELDOUT_SEED, size=size).image for i in range(n_images)
    }
    sets = yolo_layer_sets(adapter.model) if "yolo" in name else torchvision_layer_sets(adapter)
    return adapter, sets, images


def _other_energy(maps: torch.Tensor, boxes: torch.Tensor) -> list[Optional[float]]:
    """Per detection: the share of its map's energy on the other detections' boxes, outside
    its own (None for an image's only detection)."""
    masks = boxes_to_masks(boxes.float().cpu(), *maps.shape[-2:])  # [K, H, W]
    out: list[Optional[float]] = []
    for k in range(len(boxes)):
        rest = torch.cat([masks[:k], masks[k + 1 :]]).any(0) & ~masks[k]
        out.append(
            float(energy_pointing_game(maps[k].cpu(), rest[None])[0]) if len(boxes) > 1 else None
        )
    return out


def measure(
    name: str,
    methods: list[str],
    choices: list[str],
    *,
    n_images: int,
    steps: int,
    masks: int,
    conf: float,
    baseline: str,
) -> dict[str, Any]:
    adapter, sets, images = load(name, n_images, conf)
    model = adapter.model
    if adapter.black_box:  # only the methods that read no layer run a black box
        methods = [m for m in methods if not get_method(m).uses_layers]
    # black-box methods (drise, fast-drise) read no layer: one entry each
    keys = [(m, c) for m in methods for c in (choices if get_method(m).uses_layers else ["-"])]
    per: dict[tuple, dict[str, list]] = {
        k: {"del": [], "ins": [], "faith": [], "other": [], "s": []} for k in keys
    }
    base: dict[str, dict[str, list]] = {
        b: {"del": [], "ins": [], "faith": []} for b in BASELINE_MAPS
    }
    found = []
    for image_name, image in images.items():
        x, _ = adapter.prepare(image)
        dets = adapter.detect(x)[0]
        if not len(dets):
            continue
        targets = adapter.targets(dets)
        found += [f"{image_name}:{int(c)}" for c in dets.classes]
        maps = []
        for method, choice in keys:
            start = time.perf_counter()
            if method == "drise":
                exp = taskcam.explain(model, x, [targets], method="drise", n_masks=masks)
            elif choice == "-":
                exp = taskcam.explain(model, x, [targets], method=method)
            else:
                layers, layer_of = sets[choice]
                exp = taskcam.explain(
                    model, x, [_relayered(targets, layer_of)], layers=layers, method=method
                )
            per[(method, choice)]["s"].append(time.perf_counter() - start)
            m = exp.maps[0].detach()  # [K, H, W]
            per[(method, choice)]["other"] += _other_energy(m, dets.boxes)
            maps.append(m)
        grid = torch.stack(maps, 1)  # [K, M, H, W]
        h, w = x.shape[-2:]

        def extra(t: int, boxes: torch.Tensor = dets.boxes, h: int = h, w: int = w) -> torch.Tensor:
            drawn = baseline_maps(boxes[t].float().cpu(), h, w, seed=t)
            return torch.stack([drawn[b] for b in BASELINE_MAPS])

        rows = target_faithfulness(
            model, x, targets, grid, steps=steps, extra_maps=extra, baseline=baseline
        )
        for row in rows:
            for k, f in zip(keys, row):
                per[k]["del"].append(f.deletion)
                per[k]["ins"].append(f.insertion)
                per[k]["faith"].append(f.faithfulness)
            for b, f in zip(BASELINE_MAPS, row[len(keys) :]):
                base[b]["del"].append(f.deletion)
                base[b]["ins"].append(f.insertion)
                base[b]["faith"].append(f.faithfulness)
        print(f"  {name} {image_name}: {len(dets)} detections", flush=True)
    centre, rand = np.array(base["centre"]["faith"]), np.array(base["random"]["faith"])
    out: dict[str, Any] = {"detections": len(centre), "found": found, "baselines": {}}
    for b, v in base.items():
        out["baselines"][b] = {k: float(np.mean(v[k])) for k in ("del", "ins", "faith")}
    out["methods"] = {}
    for (method, choice), v in per.items():
        faith = np.array(v["faith"])
        other = [o for o in v["other"] if o is not None]
        out["methods"][f"{method}/{choice}"] = {
            "del": float(np.mean(v["del"])),
            "ins": float(np.mean(v["ins"])),
            "faith": float(faith.mean()),
            "beats_centre": float((faith > centre).mean()),
            "over_centre": float((faith - centre).mean()),
            "over_random": float((faith - rand).mean()),
            "other_energy": float(np.mean(other)) if other else None,
            "s_per_image": statistics.median(v["s"]),
        }
    return out


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--choices", default=None, help="layer choices (default: all)")
    parser.add_argument("--images", type=int, default=8, help="held-out shapes images")
    parser.add_argument("--steps", type=int, default=8, help="deletion/insertion steps")
    parser.add_argument("--masks", type=int, default=1000, help="D-RISE masks")
    parser.add_argument(
        "--conf", type=float, default=0.25, help="NudeNet score threshold (ultralytics' 0.25)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    out: dict[str, Any] = {"steps": args.steps, "threads": args.threads, "conf": args.conf}
    for name in [m for m in args.models.split(",") if m]:
        family = TORCHVISION_CHOICES if "fasterrcnn" in name else YOLO_CHOICES
        choices = [c for c in (args.choices or ",".join(family)).split(",") if c in family]
        r = measure(
            name,
            methods,
            choices,
            n_images=args.images,
            steps=args.steps,
            masks=args.masks,
            conf=args.conf,
            baseline="mean" if name.startswith("shapes-") else "blur",
        )
        out[name] = r
        print(f"{name}: {r['detections']} detections")
        for b, v in r["baselines"].items():
            print(
                f"  baseline {b:<18} del {v['del']:.3f} ins {v['ins']:.3f} faith {v['faith']:.3f}"
            )
        for key, v in sorted(r["methods"].items(), key=lambda kv: -kv[1]["faith"]):
            other = "-" if v["other_energy"] is None else f"{v['other_energy']:.3f}"
            print(
                f"  {key:<27} del {v['del']:.3f} ins {v['ins']:.3f} faith {v['faith']:.3f} "
                f"beats centre {v['beats_centre']:.2f} (+{v['over_centre']:.3f}) "
                f"over random {v['over_random']:.3f} other {other} {v['s_per_image']:.2f}s",
                flush=True,
            )
    print(json.dumps(_round(out)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
