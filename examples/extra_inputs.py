"""A model whose forward takes more than the image: ``forward_kwargs`` and ``input_builder``.

Species classifiers often take a second input, a prior over the classes from where and when
the photo was taken (Mac Aodha et al., "Presence-Only Geographical Priors for Fine-Grained Image
Classification", ICCV 2019): ``forward(image, prior)`` adds the prior's log to the image's
logits. Here the image network is the real ImageNet EfficientNet-Lite0
(``zoo:efficientnet-lite0``) and the prior makes "tiger cat" and "tabby" three times as likely
as other classes, as a prior for a city might; scikit-image's cat photo is explained for the
class the model picks.

- ``forward_kwargs={"prior": prior}``: the same prior on every forward; a tensor with one row
  is expanded to each batch the engine forwards (Score-CAM forwards many masked copies);
- ``input_builder=lambda x: {"image": x, "prior": ...}``: for inputs that must be built per
  batch; here it gives the same maps, which the script checks.

Run: ``python examples/extra_inputs.py [--out DIR]``
"""

import argparse
from pathlib import Path

import torch
from skimage import data
from torch import nn

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.inputs import bind_inputs
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
prior = torch.ones(1, 1000)  # [1, 1000]: one row, expanded to every batch
for name in ("tiger cat", "tabby"):
    prior[0, names.index(name)] = 3.0  # three times as likely here as elsewhere
prior /= prior.sum()

photo = data.chelsea()
x = to_tensor(photo, lite0.preprocess.size, lite0.preprocess.mean, lite0.preprocess.std)
with torch.no_grad():
    top = int(model(x, prior).argmax())
print(f"with the prior the model says {names[top]!r}")
target = [ClassTarget(top)]

tiles, maps = [], {}
for method in ("gradcam", "scorecam"):
    exp = taskcam.explain(
        model, x, target, method=method, batch_size=32, forward_kwargs={"prior": prior}
    )
    maps[method] = exp.maps
    tiles.append(overlay(photo, exp.maps[0, 0]))
    print(f"{method}: layer {exp.layers}, score {float(exp.scores[0, 0]):.2f}")


def inputs(x: torch.Tensor) -> dict:
    """The model's arguments for a batch of images: the prior repeated for every row."""
    return {"image": x, "prior": prior.expand(len(x), -1)}


built = taskcam.explain(model, x, target, method="gradcam", input_builder=inputs)
assert torch.allclose(built.maps, maps["gradcam"], atol=1e-6), "both ways give one map"

# the bound model takes the image alone, for anything else of taskcam's (faithfulness, metrics)
bound = bind_inputs(model, {"prior": prior})
with torch.no_grad():
    assert torch.equal(bound(x), model(x, prior))

save_image(out / "prior.png", grid([tiles], col_labels=["Grad-CAM", "Score-CAM"]))
print(f"wrote {out / 'prior.png'}")
