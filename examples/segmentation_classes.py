"""Explain a segmentation model class by class: which pixels made the Unet paint each class?

``zoo:shapes-unet`` is a segmentation-models-pytorch Unet trained on the shapes benchmark. Each
class the model paints is a region target (Seg-Grad-CAM: the class's logits summed over the
pixels it predicts), all classes of the image from one forward and one batched backward; one
connected component, or any mask or box of yours, is a target the same way.

Run: ``python examples/segmentation_classes.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch

import taskcam
from taskcam.adapters.segmentation import (
    RegionTarget,
    box_region,
    default_segmentation_layers,
    region_targets,
)
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.io import to_tensor
from taskcam.metrics import energy_pointing_game
from taskcam.models import load_model
from taskcam.render import grid, outline, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/segmentation", help="output folder")
out = Path(parser.parse_args().out)

loaded = load_model("zoo:shapes-unet")
model, pre, names = loaded.model, loaded.preprocess, loaded.class_names
sample = make_sample(2, seed=HELDOUT_SEED, size=256)  # a held-out image and its ground truth
x = to_tensor(sample.image, pre.size, pre.mean, pre.std)  # [1, 3, 256, 256]
with torch.no_grad():
    output = model(x)  # [1, classes, 256, 256] logits
targets = region_targets(output, "all", class_names=names)  # every class the model paints
layers = default_segmentation_layers(model)  # ["decoder"]: the last map before the class head
exp = taskcam.explain(model, x, targets, layers, method="gradcam")

tiles, labels = [], []
for t, target in enumerate(targets[0]):
    region = target.mask(output)[0]  # the pixels the model paints with this class
    heat = exp.maps[0, t]
    share = float(energy_pointing_game(heat, region)[0])
    truth = int((sample.semantic == target.class_id).sum())
    print(
        f"class {target.class_id} {names[target.class_id]:10s}: {int(region.sum()):6d} pixels "
        f"painted ({truth} true), {share:.0%} of its map on them"
    )
    tiles.append(outline(overlay(sample.image, heat), region.numpy()))
    labels.append(names[target.class_id])
save_image(out / "classes.png", grid([tiles], col_labels=labels))

# a class inside a box of yours: the same target, summed over your pixels only
k = targets[0][-1].class_id  # the last class painted
left = RegionTarget(k, box_region([0, 0, 128, 256], 256, 256))  # x1, y1, x2, y2: left half
boxed = taskcam.explain(model, x, [left], layers, method="gradcam")
save_image(out / "left_half.png", overlay(sample.image, boxed.maps[0, 0]))
print(f"wrote {out / 'classes.png'} and {out / 'left_half.png'} ({names[k]}, left half)")
