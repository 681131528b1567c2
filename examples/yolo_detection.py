"""Explain one YOLO detection: which pixels made YOLOv8 find this box?

``zoo:shapes-yolo`` is an ultralytics YOLOv8n trained on the shapes benchmark (its weights ship
with taskcam). The adapter letterboxes the image as ultralytics does, traces each detection after
NMS to the anchor that predicted it, and explains that anchor's class score with ODAM (one map per
detection) on the backbone's stages, the default layers, chosen by how well the maps' top pixels
carry each detection's score (``benchmarks/detection_faithfulness.py``). The map comes back on the
image's own grid.

Run: ``python examples/yolo_detection.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch

import taskcam
from taskcam.adapters import adapter_for
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.metrics import energy_pointing_game
from taskcam.models import load_model
from taskcam.render import detections_picture, draw_box, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/yolo", help="output folder")
out = Path(parser.parse_args().out)

loaded = load_model("zoo:shapes-yolo")
adapter = adapter_for(loaded)  # the YOLO adapter: letterbox, NMS traced to anchors, targets
image = make_sample(3, seed=HELDOUT_SEED, size=256).image  # a held-out image, RGB uint8

x, placement = adapter.prepare(image)  # [1, 3, 256, 256], and how to undo the letterbox
dets = adapter.detect(x)[0]  # detections after NMS, best first
print(f"{len(dets)} detection(s)")
first = dets.select([0])  # explain the top detection
exp = taskcam.explain(
    adapter.model, x, [adapter.targets(first)], layers=adapter.default_layers(), method="odam"
)
heat = placement.map_to_image(exp.maps)[0, 0].numpy()  # [H, W] on the original image
box = placement.boxes_to_image(first.boxes)[0].tolist()
name = adapter.class_names[int(first.classes[0])]
label = f"0: {name} {float(first.scores[0]):.2f}"
save_image(out / "detection0_odam.png", draw_box(overlay(image, heat), box, label))

# every detection at once: one target each, one forward and one batched backward
everything = taskcam.explain(
    adapter.model, x, [adapter.targets(dets)], layers=adapter.default_layers(), method="odam"
)
maps = placement.map_to_image(everything.maps)[0].numpy()  # [K, H, W]
boxes = placement.boxes_to_image(dets.boxes).tolist()
labels = [f"{k}: {adapter.class_names[int(c)]}" for k, c in enumerate(dets.classes)]
save_image(out / "all.png", detections_picture(image, maps, boxes, labels))

inside = float(energy_pointing_game(torch.from_numpy(heat), torch.tensor(box))[0])
print(f"detection 0: {name}, box {[round(v) for v in box]}, {inside:.0%} of its map in its box")
print(f"wrote {out / 'detection0_odam.png'} and {out / 'all.png'}")
