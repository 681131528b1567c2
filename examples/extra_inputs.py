"""A model whose forward takes more than the image: ``forward_kwargs`` and ``input_builder``.

Species classifiers often take a second input, a prior over the classes from where and when
the photo was taken (Mac Aodha et al., "Presence-Only Geographical Priors for Fine-Grained Image
Classification", ICCV 2019): ``forward(image, prior)`` adds the prior's log to the image's
logits. Here the image network is the real ImageNet EfficientNet-Lite0
(``zoo:efficientnet-lite0``) and each of two photos has its own prior, as two places would:
scikit-image's cat, taken in a city where "tiger cat" and "tabby" are three times as likely as
other classes, and its coffee cup, taken in a café where "espresso" and "cup" are. Both are
explained in one batch for the class the model picks.

- ``forward_kwargs={"prior": priors}``: the same arguments on every forward. ``priors`` has
  one row per photo (``Tensor[2, 1000]``): the batch of both photos gets both rows, and Fast
  Score-CAM's masked copies of photo ``b`` get row ``b`` (a one-row tensor would be repeated
  to every batch instead);
- ``input_builder=lambda x, rows: {"image": x, "prior": priors[rows]}``: for inputs built per
  batch; ``rows`` says which photo each row of ``x`` is. It gives the same maps, which the
  script checks.

Run: ``python examples/extra_inputs.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch
from skimage import data
from torch import nn

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.faithfulness import target_faithfulness
from taskcam.io import to_tensor
from taskcam.models import load_model
from taskcam.render import grid, overlay, save_image

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/extra-inputs", help="output folder")
out = Path(parser.parse_args().out)


class WithPrior(nn.Module):
    """An image classifier whose logits are shifted by the log of a class prior."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        return self.net(image) + prior.clamp(min=1e-6).log()  # [B, 1000]


lite0 = load_model("zoo:efficientnet-lite0")
names = lite0.class_names
model = WithPrior(lite0.model).eval()
places = {"city": ("tiger cat", "tabby"), "café": ("espresso", "cup")}
priors = torch.ones(2, 1000)  # [2, 1000]: one row per photo
for row, likely in enumerate(places.values()):
    for name in likely:
        priors[row, names.index(name)] = 3.0  # three times as likely here as elsewhere
priors /= priors.sum(1, keepdim=True)

photos = [data.chelsea(), data.coffee()]
x = to_tensor(photos, lite0.preprocess.size, lite0.preprocess.mean, lite0.preprocess.std)
with torch.no_grad():
    top = model(x, priors).argmax(1)  # [2]
targets = [[ClassTarget(int(c))] for c in top]  # one target per photo
for place, c in zip(places, top):
    print(f"in the {place} the model says {names[int(c)]!r}")

tiles, maps = [[], []], {}
for method in ("gradcam", "fast-scorecam"):
    exp = taskcam.explain(
        model, x, targets, method=method, batch_size=32, forward_kwargs={"prior": priors}
    )
    maps[method] = exp.maps  # [2, 1, H, W]
    for b, photo in enumerate(photos):
        tiles[b].append(overlay(photo, exp.maps[b, 0]))
    print(f"{method}: layer {exp.layers}, scores {exp.scores[:, 0].tolist()}")


def inputs(x: torch.Tensor, rows: torch.Tensor) -> dict:
    """The model's arguments for image rows ``x``: each row's own photo's prior."""
    return {"image": x, "prior": priors[rows]}


for method in ("gradcam", "fast-scorecam"):
    built = taskcam.explain(model, x, targets, method=method, batch_size=32, input_builder=inputs)
    assert torch.allclose(built.maps, maps[method], atol=1e-5), "both ways give one map"

# deletion and insertion of the cat's score, its prior given to every perturbed forward
(cat,) = target_faithfulness(
    model, x[:1], targets[0], maps["gradcam"][0], steps=4, forward_kwargs={"prior": priors[:1]}
)
print(f"Grad-CAM on the cat: deletion {cat[0].deletion:.2f}, insertion {cat[0].insertion:.2f}")

picture = grid(tiles, row_labels=list(places), col_labels=["Grad-CAM", "Fast Score-CAM"])
save_image(out / "prior.png", picture)
print(f"wrote {out / 'prior.png'}")
