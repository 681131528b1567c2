"""The demo: real ImageNet EfficientNet-Lite0 on scikit-image photos."""

from __future__ import annotations

import json

import cv2
import numpy as np

import taskcam
from taskcam.demo import demo_methods, run_demo


def test_demo_writes_pictures_and_finds_the_cat(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, methods=["gradcam", "eigencam"], progress=False)
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "zoo:efficientnet-lite0"
    items = {item["image"].rsplit("/", 1)[-1]: item for item in results["items"]}
    assert sorted(items) == ["chelsea.png", "coffee.png", "rocket.png"]
    chelsea = items["chelsea.png"]["targets"]
    assert chelsea[0]["class_id"] == 285 and chelsea[0]["class_name"] == "Egyptian cat"
    assert len(chelsea) == 6  # top-3 × two methods
    assert items["coffee.png"]["targets"][0]["class_name"] in {"cup", "espresso", "coffee mug"}
    # the cat's map is hotter on the cat's face than in the image corners
    heat = np.load(out / chelsea[0]["heatmap"])
    assert heat.shape == (300, 451)
    assert heat[100:250, 150:350].mean() > heat[:40, :60].mean()
    for name in ("filters.png", "features.png", "chelsea/grid.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.std() > 10, name
    assert summary.n_targets == 18
    assert str(out.resolve()) in capsys.readouterr().out


def test_the_demo_runs_every_method_that_explains_a_classifier():
    """`make demo` runs the defaults: detection-only methods (drise, detr-attention) refuse
    class targets and the attention methods (rollout, grad-rollout, legrad) need a ViT, not
    the demo's EfficientNet, so they are not among them; every other registered method is."""
    detection_only = {
        m for m in taskcam.available_methods() if taskcam.get_method(m).needs_detections
    }
    attention = {m for m in taskcam.available_methods() if taskcam.get_method(m).attention}
    assert "drise" in detection_only and "gradcam" not in detection_only
    assert attention == {"rollout", "grad-rollout", "legrad", "detr-attention"}
    assert set(demo_methods()) == set(taskcam.available_methods()) - detection_only - attention
