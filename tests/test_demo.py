"""The demo: explained detections of a real trained detector (against labels too), segmentation
classes, a transformer's attention report and a real ImageNet classifier, linked from one
index.html; and the older every-method comparison on EfficientNet-Lite0."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

import taskcam
from taskcam import demo
from taskcam.demo import PARTS, demo_methods, run_demo


@pytest.fixture(scope="module")
def default_demo(tmp_path_factory):
    """One default demo run, shared by the tests that read it: ``(out, summaries, stdout)``."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("demo") / "demo"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        summaries = run_demo(out, progress=False)
    return out, summaries, printed.getvalue()


def _results(out: Path, part: str) -> dict:
    return json.loads((out / part / "results.json").read_text())


def _kinds(results: dict) -> set[str]:
    return {t["kind"] for item in results["items"] for t in item["targets"]}


def test_index_links_every_jobs_report_and_pictures(default_demo):
    out, summaries, printed = default_demo
    assert set(summaries) == set(PARTS)
    page = (out / "index.html").read_text()
    links = set(re.findall(r'href="([^"]+)"', page))
    for part in PARTS:
        assert f"{part}/report.html" in links, part
        assert (out / part / "report.html").is_file(), part
    assert "transformer/attention/attention.json" in links
    pictures = re.findall(r'<img src="([^"]+)"', page)
    assert any(p.startswith("detection/") and p.endswith("/all.png") for p in pictures)
    assert "transformer/attention/attention_grid.png" in pictures
    for picture in pictures:  # every picture the page shows is there and not blank
        image = cv2.imread(str(out / picture))
        assert image is not None and image.std() > 10, picture
    assert f"open {(out / 'index.html').resolve()}" in printed
    meta = json.loads((out / "demo.json").read_text())
    assert meta["seconds"] > 0 and set(meta["parts"]) == set(PARTS) - {"detection-labels"}


def test_each_part_holds_its_kind_of_result(default_demo):
    out, _, _ = default_demo
    detection = _results(out, "detection")
    assert detection["task"] == "detect" and detection["methods"] == ["odam"]
    assert _kinds(detection) == {"detection"}
    labelled = _results(out, "detection-labels")
    outcomes = {t.get("outcome") for item in labelled["items"] for t in item["targets"]}
    assert outcomes == {"hit", "missed", "false_positive"}  # the photos show all three
    assert all("all" in item for item in detection["items"] + labelled["items"])
    assert _kinds(_results(out, "segmentation")) == {"region"}
    transformer = _results(out, "transformer")
    assert _kinds(transformer) == {"class"}
    assert transformer["methods"] == ["gradcam", "layercam"]
    attention = json.loads((out / "transformer" / "attention" / "attention.json").read_text())
    assert attention["model"] == "zoo:shapes-vit" and len(attention["layers"]) == 4
    assert _kinds(_results(out, "classification")) == {"class"}


def test_the_real_detector_is_nudenets_yolo_on_the_photos(default_demo):
    out, _, _ = default_demo
    if demo.real_detector() is None:
        pytest.skip("nudenet or ultralytics is not installed")
    detection = _results(out, "detection")
    assert detection["model"].startswith("yolo:") and detection["model"].endswith("320n.onnx")
    assert sorted(Path(i["image"]).name for i in detection["items"]) == ["bus.jpg", "zidane.jpg"]
    assert all(item["targets"] for item in detection["items"])  # a detection on each photo


def test_the_classifier_finds_the_cat(default_demo):
    out, _, printed = default_demo
    items = {Path(i["image"]).name: i for i in _results(out, "classification")["items"]}
    assert sorted(items) == ["chelsea.png", "coffee.png", "rocket.png"]
    chelsea = items["chelsea.png"]["targets"]
    assert chelsea[0]["class_id"] == 285 and chelsea[0]["class_name"] == "Egyptian cat"
    assert len(chelsea) == 2  # top-1 × Grad-CAM, LayerCAM
    heat = np.load(out / "classification" / chelsea[0]["heatmap"])
    assert heat.shape == (300, 451)
    assert heat[100:250, 150:350].mean() > heat[:40, :60].mean()  # the face, not the corner
    assert "top-1 285 'Egyptian cat'" in printed


def test_without_nudenet_the_zoo_detector_on_shapes_says_so(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(demo, "real_detector", lambda: None)
    runs, section = demo._detection(tmp_path, progress=False)
    assert runs["detection"].results["model"] in {"zoo:shapes-yolo", "zoo:shapes-fasterrcnn"}
    assert "nudenet or ultralytics is not installed" in section["note"]
    assert "not installed" in capsys.readouterr().out
    if "detection-labels" in runs:  # supervision reads the shapes' own ground truth
        items = runs["detection-labels"].results["items"]
        assert {t.get("outcome") for i in items for t in i["targets"]} >= {"hit"}


def test_every_method_writes_pictures_and_finds_the_cat(tmp_path, capsys):
    out = tmp_path / "demo"
    summary = run_demo(out, every_method=True, methods=["gradcam", "eigencam"], progress=False)
    summary = summary["every-method"]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "zoo:efficientnet-lite0"
    items = {item["image"].rsplit("/", 1)[-1]: item for item in results["items"]}
    assert sorted(items) == ["chelsea.png", "coffee.png", "rocket.png"]
    chelsea = items["chelsea.png"]["targets"]
    assert chelsea[0]["class_id"] == 285 and chelsea[0]["class_name"] == "Egyptian cat"
    assert len(chelsea) == 6  # top-3 × two methods
    assert items["coffee.png"]["targets"][0]["class_name"] in {"cup", "espresso", "coffee mug"}
    for name in ("filters.png", "features.png", "chelsea/grid.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.std() > 10, name
    assert summary.n_targets == 18
    assert str(out.resolve()) in capsys.readouterr().out


def test_the_every_method_demo_runs_every_method_that_explains_a_classifier():
    """`taskcam demo --every-method` runs the defaults: detection-only methods (drise,
    detr-attention) refuse class targets and the attention methods (rollout, grad-rollout,
    legrad) need a ViT, not EfficientNet, so they are not among them; every other registered
    method is."""
    detection_only = {
        m for m in taskcam.available_methods() if taskcam.get_method(m).needs_detections
    }
    attention = {m for m in taskcam.available_methods() if taskcam.get_method(m).attention}
    assert "drise" in detection_only and "gradcam" not in detection_only
    assert attention == {"rollout", "grad-rollout", "legrad", "detr-attention"}
    assert set(demo_methods()) == set(taskcam.available_methods()) - detection_only - attention
