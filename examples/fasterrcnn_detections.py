"""Explain every detection of a Faster R-CNN, each with its own map, two ways.

``zoo:shapes-fasterrcnn`` is a torchvision Faster R-CNN (ResNet + FPN whose levels are named
``p3``..``p5``, as detectors in the wild name them) trained on the shapes benchmark. Each
detection is traced to the proposal and box-head row that produced it; ODAM explains its class
score from one forward and one batched backward (each detection on the pyramid level its box was
pooled from), and D-RISE (black-box: random masks, each scored by how well the detector still
finds the same box) gives a second opinion without gradients.

Run: ``python examples/fasterrcnn_detections.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch

import taskcam
from taskcam.adapters import adapter_for
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.metrics import pointing_game
from taskcam.models import load_model
from taskcam.render import detections_picture, grid, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/fasterrcnn", help="output folder")
out = Path(parser.parse_args().out)

loaded = load_model("zoo:shapes-fasterrcnn")
adapter = adapter_for(loaded, conf=0.5)  # detections scoring at least 0.5
image = make_sample(5, seed=HELDOUT_SEED, size=256).image  # a held-out image, RGB uint8
x, placement = adapter.prepare(image)
dets = adapter.detect(x)[0]
targets = adapter.targets(dets)  # one per detection, each naming its pyramid level
boxes = placement.boxes_to_image(dets.boxes).tolist()
labels = [f"{k}: {adapter.class_names[int(c)]}" for k, c in enumerate(dets.classes)]

odam = taskcam.explain(adapter.model, x, [targets], adapter.default_layers(), method="odam")
# D-RISE's default is 1,000 masks (about a minute on 2 CPU cores); 300 keep this quick
drise = taskcam.explain(adapter.model, x, [targets], method="drise", n_masks=300, batch_size=32)

pictures = {}
for name, exp in (("odam", odam), ("drise", drise)):
    maps = placement.map_to_image(exp.maps)[0].numpy()  # [K, H, W] on the image
    pictures[name] = detections_picture(image, maps, boxes, labels)
    save_image(out / f"all_{name}.png", pictures[name])
    hits = pointing_game(torch.from_numpy(maps), torch.tensor(boxes), tolerance=0).tolist()
    print(f"{name:5s}: each detection's map peaks inside its own box: {hits}")
for t, target in enumerate(targets):
    print(f"detection {labels[t]} {float(dets.scores[t]):.2f}, from level {target.layer}")
save_image(out / "odam_vs_drise.png", grid([list(pictures.values())], col_labels=list(pictures)))
print(f"wrote {out / 'odam_vs_drise.png'}")
