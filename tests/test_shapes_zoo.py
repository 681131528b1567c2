"""The shapes zoo: every model loads as the CLI loads it, meets its accuracy on held-out data,
trains from the shipped recipe code, and the shipped CNN's Grad-CAM points at the objects."""

import os

import pytest
import torch

from taskcam import explain
from taskcam.adapters.classification import ClassTarget
from taskcam.data import HELDOUT_SEED
from taskcam.errors import TaskcamError
from taskcam.metrics import energy_pointing_game, pointing_game, randomization_check
from taskcam.models import load_model
from taskcam.zoo.shapes_models import NAMES, weights_path
from taskcam.zoo.train import heldout_score, train_zoo_model

os.environ.setdefault("YOLO_OFFLINE", "1")

# (metric, bar, held-out images): the bars of the zoo issue, on a sample of the held-out set.
BARS = {
    "shapes-cnn": ("accuracy", 0.95, 200),
    "shapes-vit": ("accuracy", 0.95, 200),
    "shapes-swin": ("accuracy", 0.95, 200),
    "shapes-fasterrcnn": ("mAP50", 0.8, 40),
    "shapes-yolo": ("mAP50", 0.8, 40),
    "shapes-unet": ("mIoU", 0.8, 24),
}


def test_every_weight_file_ships_and_fits_the_size_budget():
    sizes = {name: weights_path(name).stat().st_size for name in NAMES}
    assert max(sizes.values()) <= 10 * 2**20, sizes
    assert sum(sizes.values()) <= 40 * 2**20, sizes


@pytest.mark.parametrize("name", NAMES)
def test_zoo_model_meets_its_bar_on_held_out_images(name):
    metric, bar, n = BARS[name]
    got_metric, value = heldout_score(name, n, seed=HELDOUT_SEED)
    assert got_metric == metric
    assert value >= bar, f"{name}: {metric} {value:.3f} < {bar}"


@pytest.mark.parametrize("name", NAMES)
def test_zoo_spec_with_random_weights_builds_the_same_architecture(name):
    shipped = load_model(f"zoo:{name}")
    fresh = load_model(f"zoo:{name}", weights="none")
    assert type(fresh.model) is type(shipped.model)
    assert fresh.task == shipped.task and fresh.class_names == shipped.class_names
    a, b = shipped.model.state_dict(), fresh.model.state_dict()
    assert a.keys() == b.keys()
    assert all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_missing_weights_name_the_file_and_the_command(tmp_path):
    from taskcam.zoo.shapes_models import shapes_loaded_model

    with pytest.raises(TaskcamError, match="taskcam zoo train shapes-cnn"):
        shapes_loaded_model("shapes-cnn", True, tmp_path / "nope.safetensors")
    with pytest.raises(TaskcamError, match="trainable zoo models"):
        train_zoo_model("shapes-resnet")


def _cnn_heldout(n):
    from taskcam.evaluate import heldout_classification

    loaded = load_model("zoo:shapes-cnn")
    images, labels, masks, boxes = heldout_classification(n, HELDOUT_SEED, 64)
    mean = torch.tensor(loaded.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocess.std).view(1, 3, 1, 1)
    return loaded, (images - mean) / std, labels, masks, boxes


def test_gradcam_on_the_shapes_cnn_points_at_the_object():
    loaded, x, labels, masks, boxes = _cnn_heldout(200)
    targets = [[ClassTarget(int(k))] for k in labels]
    maps = explain(loaded.model, x, targets, layers=loaded.layers).maps[:, 0]
    hit = pointing_game(maps, masks, tolerance=4).float().mean()
    # Energy inside the object's box, as Wang et al. define it; inside the exact mask it is
    # lower (a 16x16 map upsampled to 64x64 spills over the silhouette) but most of it.
    energy = energy_pointing_game(maps, boxes).mean()
    assert hit >= 0.95, float(hit)
    assert energy >= 0.6, float(energy)
    assert energy_pointing_game(maps, masks).mean() > 3 * masks.float().mean()


def test_gradcam_maps_of_a_fully_randomised_cnn_do_not_correlate():
    loaded, x, labels, _, _ = _cnn_heldout(16)
    targets = [[ClassTarget(int(k))] for k in labels]

    def explain_fn(model, images):
        return explain(model, images, targets, layers=loaded.layers).maps[:, 0]

    steps = randomization_check(loaded.model, explain_fn, x, max_steps=1)
    assert abs(float(steps[-1].correlation.mean())) < 0.3


@pytest.mark.parametrize("name", ["shapes-cnn", "shapes-vit", "shapes-swin", "shapes-unet"])
def test_training_recipe_runs_and_saves_loadable_weights(name, tmp_path):
    from taskcam.zoo.shapes_models import shapes_loaded_model

    out = tmp_path / f"{name}.safetensors"
    result = train_zoo_model(name, out, recipe=(16, 1, 8, 1e-3), progress=False)
    assert out.is_file() and result["weights"] == str(out)
    assert 0.0 <= next(v for k, v in result.items() if k.startswith("val_")) <= 1.0
    loaded = shapes_loaded_model(name, True, out)
    size = loaded.preprocess.size
    with torch.no_grad():
        out_t = loaded.model(torch.rand(1, 3, *size))
    assert torch.isfinite(out_t).all()


def test_fasterrcnn_recipe_runs_and_saves_loadable_weights(tmp_path):
    from taskcam.zoo.shapes_models import shapes_loaded_model

    out = tmp_path / "frcnn.safetensors"
    result = train_zoo_model("shapes-fasterrcnn", out, recipe=(4, 1, 2, 0.01), progress=False)
    assert 0.0 <= result["val_map50"] <= 1.0
    model = shapes_loaded_model("shapes-fasterrcnn", True, out).model
    with torch.no_grad():
        det = model([torch.rand(3, 256, 256)])[0]
    assert set(det) == {"boxes", "labels", "scores"}


def test_zoo_commands_list_and_check_the_models(capsys):
    from taskcam.cli import main

    assert main(["zoo"]) == 0
    listing = capsys.readouterr().out
    assert all(f"zoo:{name}" in listing for name in NAMES)
    assert main(["zoo", "check", "shapes-cnn", "-n", "20"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("zoo:shapes-cnn") and "accuracy" in line and "(20 images)" in line
    assert float(line.split("accuracy")[1].split()[0]) >= 0.95


def test_yolo_recipe_trains_with_ultralytics_and_saves_a_loadable_pt(tmp_path):
    from ultralytics import YOLO

    out = tmp_path / "yolo.pt"
    result = train_zoo_model("shapes-yolo", out, recipe=(8, 1, 4, 0.002), progress=False)
    assert 0.0 <= result["val_map50"] <= 1.0
    yolo = YOLO(str(out))
    assert yolo.task == "detect" and list(yolo.names.values()) == [
        "circle",
        "square",
        "triangle",
        "cross",
    ]


@pytest.mark.parametrize("name", ["shapes-cnn", "shapes-vit", "shapes-swin"])
def test_explain_command_runs_on_the_zoo_classifiers(name, tmp_path):
    import json

    import cv2
    import numpy as np

    from taskcam.cli import main
    from taskcam.data import make_sample

    sample = make_sample(0, seed=HELDOUT_SEED, size=64, max_objects=1)
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), sample.image[..., ::-1])
    out = tmp_path / "out"
    assert (
        main(["explain", str(image), "--model", f"zoo:{name}", "--out", str(out), "--no-progress"])
        == 0
    )
    (item,) = json.loads((out / "results.json").read_text())["items"]
    (target,) = item["targets"]
    assert target["class_id"] == int(sample.labels[0])
    heatmap = np.load(out / target["heatmap"])
    assert heatmap.shape == (64, 64) and np.isfinite(heatmap).all() and heatmap.max() == 1.0
