"""The ``taskcam`` command on real image files (random-weight torchvision models, no downloads)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage import data

from taskcam.cli import main
from taskcam.methods import available_methods

MODEL = ["--model", "torchvision:resnet18", "--weights", "none", "--size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "cat.png"), cv2.cvtColor(data.chelsea(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "coffee.jpg"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    gray16 = (data.camera().astype(np.uint16) * 257)[:, :300]
    cv2.imwrite(str(folder / "gray16.png"), gray16)
    rgba = np.dstack([data.astronaut()[:200, :120], np.full((200, 120), 200, np.uint8)])
    cv2.imwrite(str(folder / "rgba.png"), rgba[..., [2, 1, 0, 3]])
    (folder / "broken.png").write_bytes(b"not an image")
    return folder


def test_explain_folder_writes_results_contract(images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["explain", str(images), *MODEL, "--method", "gradcam,eigencam", "--out", str(out)])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert results["version"] == 1 and results["task"] == "classify"
    assert results["methods"] == ["gradcam", "eigencam"] and results["layers"] == ["layer4"]
    assert results["model"] == "torchvision:resnet18"
    by_name = {p["image"].rsplit("/", 1)[-1]: p for p in results["items"]}
    assert sorted(by_name) == ["cat.png", "coffee.jpg", "gray16.png", "rgba.png"]
    assert [f["image"].rsplit("/", 1)[-1] for f in results["failures"]] == ["broken.png"]
    assert "broken.png" in capsys.readouterr().err
    for name, item in by_name.items():
        assert len(item["targets"]) == 2  # top1 × two methods
        for target in item["targets"]:
            assert target["kind"] == "class" and 0 <= target["class_id"] < 1000
            assert target["class_name"] and isinstance(target["score"], float)
            heat = np.load(out / target["heatmap"])
            assert heat.dtype == np.float32, name
            assert heat.shape == (item["height"], item["width"]), name
            assert heat.min() >= 0.0 and heat.max() <= 1.0
            picture = cv2.imread(str(out / target["overlay"]))
            assert picture.shape[:2] == heat.shape
        assert (out / item["grid"]).is_file()
    assert (by_name["cat.png"]["width"], by_name["cat.png"]["height"]) == (451, 300)
    assert (by_name["gray16.png"]["width"], by_name["gray16.png"]["height"]) == (300, 512)


def test_explain_named_classes_and_topk(images, tmp_path):
    out = tmp_path / "named"
    cat = str(images / "cat.png")
    assert main(["explain", cat, *MODEL, "--targets", "285,tabby", "--out", str(out)]) == 0
    targets = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert [(t["class_id"], t["class_name"]) for t in targets] == [
        (285, "Egyptian cat"),
        (281, "tabby"),
    ]
    out3 = tmp_path / "top3"
    assert main(["explain", cat, *MODEL, "--targets", "top3", "--out", str(out3)]) == 0
    scores = [
        t["score"] for t in json.loads((out3 / "results.json").read_text())["items"][0]["targets"]
    ]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--targets", "1000"], "the model has 1000 classes"),
        (["--layer", "layer5"], "closest: layer4"),
        (["--method", "gradkam"], "available: gradcam"),
        (["--task", "detect"], "is a classify model"),
    ],
)
def test_explain_bad_input_is_named(images, tmp_path, capsys, extra, message):
    rc = main(["explain", str(images / "cat.png"), *MODEL, "--out", str(tmp_path), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err


def test_explain_missing_input_is_named(tmp_path, capsys):
    assert main(["explain", str(tmp_path / "nope.png"), *MODEL]) == 2
    assert "nope.png" in capsys.readouterr().err


def test_methods_lists_registry(capsys):
    assert main(["methods"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == available_methods()


def test_zoo_lists_models(capsys):
    assert main(["zoo"]) == 0
    assert "zoo:efficientnet-lite0" in capsys.readouterr().out


def test_detector_pictures_all_png_alpha_labels_and_box_norm(tmp_path):
    from taskcam.data import make_sample
    from taskcam.io import load_image
    from taskcam.render import box_normalized, draw_box, overlay, save_image

    image = make_sample(5, seed=9999, size=256).image
    save_image(tmp_path / "in" / "shapes.png", image)
    base = ["explain", str(tmp_path / "in"), "--model", "zoo:shapes-fasterrcnn", "--no-progress"]
    assert main([*base, "--method", "odam,eigencam", "--out", str(tmp_path / "a")]) == 0
    plain = json.loads((tmp_path / "a" / "results.json").read_text())["items"][0]
    # one picture per method with every detection in its box, as ultralytics' visualize draws
    assert plain["all"] == {"odam": "shapes/all.png", "eigencam": "shapes/all_eigencam.png"}
    for path in plain["all"].values():
        assert load_image(tmp_path / "a" / path).shape == image.shape
    flags = ["--alpha", "0.8", "--no-labels", "--box-norm", "--method", "odam"]
    assert main([*base, *flags, "--out", str(tmp_path / "b")]) == 0
    styled = json.loads((tmp_path / "b" / "results.json").read_text())["items"][0]
    assert json.loads((tmp_path / "b" / "run.json").read_text())["alpha"] == 0.8
    record = styled["targets"][0]
    heat = np.load(tmp_path / "b" / record["heatmap"])
    # the maps stay as computed; only their pictures are drawn rescaled in the box, unlabelled
    assert np.array_equal(heat, np.load(tmp_path / "a" / plain["targets"][0]["heatmap"]))
    expected = draw_box(
        overlay(image, box_normalized(heat, record["box"]), alpha=0.8), record["box"]
    )
    assert np.array_equal(load_image(tmp_path / "b" / record["overlay"]), expected)
    assert main([*base, "--alpha", "1.5", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()
