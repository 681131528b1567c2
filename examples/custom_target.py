"""Explain any scalar your model computes: a target is just ``target(output) -> Tensor[B]``.

Two targets no adapter ships, on real models:

- **multi-label**: "is there a cat at all?" on the real ImageNet EfficientNet-Lite0
  (``zoo:efficientnet-lite0``): the log-sum-exp of the five ImageNet cat classes' logits, a
  smooth "any of these" over labels;
- **regression**: "how wide is this box?" on a YOLOv8 (``zoo:shapes-yolo``): the detection's
  ``x2`` minus its ``x1``, two outputs of the box-regression head, built from the adapter's
  box-side targets.

Run: ``python examples/custom_target.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch
from skimage import data

import taskcam
from taskcam.adapters import adapter_for
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.io import to_tensor
from taskcam.models import load_model
from taskcam.render import draw_box, grid, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/custom-target", help="output folder")
out = Path(parser.parse_args().out)

# -- multi-label: any cat ------------------------------------------------------------------------
net = load_model("zoo:efficientnet-lite0")
cats = [
    net.class_names.index(n)
    for n in ("tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat")
]


def any_cat(output: torch.Tensor) -> torch.Tensor:
    """Tensor[B]: log-sum-exp of the cat classes' logits (high when any cat class is)."""
    return output[:, cats].logsumexp(dim=1)


photo = data.chelsea()  # scikit-image's cat photo, RGB uint8
x = to_tensor(photo, net.preprocess.size, net.preprocess.mean, net.preprocess.std)
assert isinstance(any_cat, taskcam.Target)  # any callable meets the contract
exp = taskcam.explain(net.model, x, [any_cat], method="gradcam")  # layer found for you
print(f"any cat: score {float(exp.scores[0, 0]):.2f}, layer {exp.layers}")
save_image(out / "any_cat.png", overlay(photo, exp.maps[0, 0]))

# -- regression: a detection's box width -----------------------------------------------------------
yolo = load_model("zoo:shapes-yolo")
adapter = adapter_for(yolo)
image = make_sample(3, seed=HELDOUT_SEED, size=256).image
x, placement = adapter.prepare(image)
dets = adapter.detect(x)[0].select([0])
(left,) = adapter.targets(dets, what="x1")  # the box head's left side of this detection
(right,) = adapter.targets(dets, what="x2")


def width(output) -> torch.Tensor:
    """Tensor[B]: the detection's predicted box width in input pixels."""
    return right(output) - left(output)


tiles = []
for name, target in (("score", adapter.targets(dets)[0]), ("width", width)):
    exp = taskcam.explain(adapter.model, x, [target], adapter.default_layers(), method="gradcam")
    heat = placement.map_to_image(exp.maps)[0, 0]
    box = placement.boxes_to_image(dets.boxes)[0].tolist()
    tiles.append(draw_box(overlay(image, heat), box))
    print(f"detection 0 {name}: {float(exp.scores[0, 0]):.2f}")
save_image(out / "score_vs_width.png", grid([tiles], col_labels=["class score", "box width"]))
print(f"wrote {out / 'any_cat.png'} and {out / 'score_vs_width.png'}")
