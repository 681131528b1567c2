"""Explain a ViT and a Swin transformer: CAMs through token reshapes, and the ViT's attention.

``zoo:shapes-vit`` (a timm ViT with 4 register tokens) and ``zoo:shapes-swin`` (a timm Swin,
channels-last stages) are trained on the shapes benchmark. taskcam reads each model's token
layout (patch grid, prefix tokens, channels-last) from the model itself, never a hard-coded
14x14, so Grad-CAM works on either with no reshape written by hand. For the ViT, the attention
methods read the attention itself (rollout, gradient-weighted rollout, LeGrad), and the attention
report shows every layer and head.

Run: ``python examples/vit_and_swin.py [--out DIR]``
"""

import argparse
from pathlib import Path

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.attention import attention_report
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.io import to_tensor
from taskcam.models import load_model
from taskcam.render import grid, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/transformers", help="output folder")
out = Path(parser.parse_args().out)

sample = make_sample(7, seed=HELDOUT_SEED, size=64, max_objects=1)  # one object, 64 px
for spec in ("zoo:shapes-vit", "zoo:shapes-swin"):
    loaded = load_model(spec)
    x = to_tensor(
        sample.image, loaded.preprocess.size, loaded.preprocess.mean, loaded.preprocess.std
    )
    k = int(loaded.model(x).argmax())  # the predicted class
    target = [ClassTarget(k)]
    methods = ["gradcam", "layercam"]
    if spec == "zoo:shapes-vit":
        methods += ["rollout", "grad-rollout", "legrad"]  # they need no layer
    tiles = []
    for method in methods:
        # loaded.layers and loaded.reshape: the default layer and the reshape its tokens need
        exp = taskcam.explain(
            loaded.model, x, target, loaded.layers, method, reshape=loaded.reshape
        )
        tiles.append(overlay(sample.image, exp.maps[0, 0]))
    name = spec.split("-")[-1]
    save_image(out / f"{name}.png", grid([tiles], col_labels=methods, cell_size=128))
    truth = loaded.class_names[int(sample.labels[0])]
    print(
        f"{spec}: predicts {loaded.class_names[k]!r} (truth {truth!r}); layer {loaded.layers}, "
        f"reshape {loaded.reshape!r} -> {out / (name + '.png')}"
    )

vit = load_model("zoo:shapes-vit")
pre = vit.preprocess
summary = attention_report(
    vit.model,
    sample.image,
    out / "attention",
    size=pre.size,
    mean=pre.mean,
    std=pre.std,
    class_names=vit.class_names,
    model_name="zoo:shapes-vit",
)
flagged = summary["flagged"]
print(
    f"attention report: {len(summary['layers'])} layers, uniform heads {flagged['uniform']}, "
    f"prefix-only heads {flagged['prefix_only']} -> {out / 'attention'}"
)
