"""The per-image explainers: one place makes records and files, so a video frame's records equal
the same picture's records as an image, field for field (shapes zoo models, shipped weights)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from taskcam.data.shapes import make_sample
from taskcam.errors import ImageError, TaskcamError
from taskcam.explainers import (
    ClassExplainer,
    DetectionExplainer,
    RegionExplainer,
    image_explainer,
    output_stems,
)
from taskcam.models import load_model
from taskcam.options import RunOptions
from taskcam.pipeline import explain_files
from taskcam.render import save_image
from taskcam.video import explain_video, read_frames

SEED = 9999


def _clip(path, size: int, n: int = 3) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
    for i in range(n):
        writer.write(cv2.cvtColor(make_sample(i, seed=SEED, size=size).image, cv2.COLOR_RGB2BGR))
    writer.release()


def _without_paths(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in ("heatmap", "overlay")}


@pytest.mark.parametrize(
    "spec, methods, size, layers",
    [
        # the FPN levels: several layers, so each record names the one that explains it
        (
            "zoo:shapes-fasterrcnn",
            ["odam", "gradcam"],
            256,
            [f"backbone.fpn.layer_blocks.{i}" for i in range(3)],
        ),
        ("zoo:shapes-unet", ["gradcam"], 256, None),  # class regions: pixels, mean probability
        ("zoo:shapes-cnn", ["gradcam", "layercam"], 64, None),
    ],
)
def test_video_frame_records_equal_the_image_records(spec, methods, size, layers, tmp_path):
    clip = tmp_path / "clip.mp4"
    _clip(clip, size)
    # the decoded frames (mp4 is lossy) saved losslessly: the images a user would extract
    frames = dict(read_frames(clip, stride=2))
    folder = tmp_path / "frames"
    folder.mkdir()
    for index, frame in frames.items():
        save_image(folder / f"f{index}.png", frame)
    loaded = load_model(spec)
    video = explain_video(
        loaded, clip, tmp_path / "video", methods=methods, layers=layers, stride=2, progress=False
    )
    images = explain_files(
        loaded, [folder], tmp_path / "images", methods=methods, layers=layers, progress=False
    )
    by_name = {item["image"].rsplit("/", 1)[-1]: item for item in images.results["items"]}
    assert len(video.results["items"]) == len(frames) == 2
    for item in video.results["items"]:
        image_item = by_name[f"f{item['frame']}.png"]
        assert len(item["targets"]) == len(image_item["targets"]) > 0
        for frame_record, image_record in zip(item["targets"], image_item["targets"]):
            assert list(frame_record) == list(image_record)  # same fields, same order
            assert _without_paths(frame_record) == _without_paths(image_record)
            # the same file names, under the frame's folder instead of the image's
            stem = image_record["heatmap"].split("/", 1)[1]
            assert frame_record["heatmap"] == f"clip/f{item['frame']:06d}/{stem}"
            a = np.load(tmp_path / "video" / frame_record["heatmap"])
            b = np.load(tmp_path / "images" / image_record["heatmap"])
            np.testing.assert_allclose(a, b, atol=1e-6)
    if spec == "zoo:shapes-fasterrcnn":
        layers = {r["layer"] for i in video.results["items"] for r in i["targets"]}
        assert layers <= set(video.results["layers"]) and layers


def test_the_explainer_kind_follows_the_model(tmp_path):
    options = RunOptions(progress=False)
    assert isinstance(
        image_explainer(load_model("zoo:shapes-cnn"), options, tmp_path), ClassExplainer
    )
    unet = image_explainer(load_model("zoo:shapes-unet"), options, tmp_path)
    assert isinstance(unet, RegionExplainer) and unet.layer_names == ["decoder"]
    yolo = image_explainer(load_model("zoo:shapes-yolo"), options, tmp_path)
    assert (
        isinstance(yolo, DetectionExplainer) and yolo.layer_names == yolo.adapter.default_layers()
    )


def test_a_detection_index_the_image_lacks_fails_that_image_only(tmp_path):
    loaded = load_model("zoo:shapes-fasterrcnn")
    image = make_sample(0, seed=SEED, size=256).image
    strict = image_explainer(loaded, RunOptions(targets="0,40", progress=False), tmp_path / "a")
    with pytest.raises(ImageError, match="detection 40 does not exist"):
        strict.explain(image, "img", source="img.png")
    lenient = image_explainer(
        loaded, RunOptions(targets="0,40", progress=False), tmp_path / "b", existing_only=True
    )
    result = lenient.explain(image, "img", source="img.png")
    assert [r["index"] for r in result.item["targets"]] == [0]
    assert result.maps["odam"].shape == (1, 256, 256)
    # a malformed spec is the run's error, found before any image
    with pytest.raises(TaskcamError, match="expected all, indices"):
        image_explainer(loaded, RunOptions(targets="first"), tmp_path / "c")


def test_options_a_detector_refuses_are_refused_before_anything_is_written(tmp_path):
    loaded = load_model("zoo:shapes-fasterrcnn")
    with pytest.raises(TaskcamError, match="--aug-smooth: not for detectors"):
        image_explainer(loaded, RunOptions(aug_smooth=True), tmp_path / "a")
    with pytest.raises(TaskcamError, match="--what x1: scorecam"):
        explain_files(loaded, [tmp_path], tmp_path / "b", methods=["scorecam"], what="x1")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_output_stems_are_unique_over_the_run(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    stems = output_stems([a / "cat.png", b / "cat.png", a / "cat.jpg", a / "über katze.png"])
    assert list(stems.values()) == ["cat", "cat_2", "cat_3", "_ber_katze"]


def test_class_records_carry_each_methods_own_score(tmp_path):
    loaded = load_model("zoo:shapes-cnn")
    explainer = image_explainer(
        loaded, RunOptions(methods=("gradcam", "scorecam"), targets="top2"), tmp_path
    )
    image = make_sample(1, seed=SEED, size=64, max_objects=1).image
    result = explainer.explain(image, "one", source="one.png")
    records = result.item["targets"]
    assert [(r["method"], r["index"]) for r in records] == [
        ("gradcam", 0),
        ("gradcam", 1),
        ("scorecam", 0),
        ("scorecam", 1),
    ]
    assert records[0]["class_id"] == records[2]["class_id"]
    assert records[0]["score"] == pytest.approx(records[2]["score"], rel=1e-5)
    assert records[0]["probability"] > records[1]["probability"]
    assert set(result.maps) == {"gradcam", "scorecam"}
    assert result.maps["gradcam"].shape == (2, 64, 64)
    assert json.loads(json.dumps(result.item)) == result.item  # plain JSON
    assert (tmp_path / "one" / "grid.png").is_file()


def test_guided_backprop_is_drawn_as_its_gradient_image_not_a_heatmap(tmp_path):
    """Guided Backprop's picture is the input gradient as an image, as its paper shows it:
    gray where the gradient is zero, colours where it is not; not a jet overlay of the photo
    (Grad-CAM's stays one). With ``aug_smooth`` (no gradient image kept) its magnitude, gray."""
    from taskcam.io import load_image
    from taskcam.render import overlay

    image = make_sample(1, seed=SEED, size=64, max_objects=1).image
    loaded = load_model("zoo:shapes-cnn")
    for smooth in (False, True):
        options = RunOptions(methods=("gradcam", "guided-backprop"), aug_smooth=smooth)
        out = tmp_path / str(smooth)
        records = image_explainer(loaded, options, out).explain(image, "one", source="one.png")
        by_method = {r["method"]: r for r in records.item["targets"]}
        heat = np.load(out / by_method["guided-backprop"]["heatmap"])
        picture = load_image(out / by_method["guided-backprop"]["overlay"]).astype(int)
        assert not np.array_equal(picture, overlay(image, heat))
        gradcam = load_image(out / by_method["gradcam"]["overlay"])
        assert np.array_equal(
            gradcam, overlay(image, np.load(out / by_method["gradcam"]["heatmap"]))
        )
        spread = picture.max(-1) - picture.min(-1)  # 0 on gray
        if smooth:  # the map in gray: no colour, brighter where the map is higher
            assert (spread == 0).all()
            assert np.abs(picture[..., 0] - np.rint(heat * 255)).max() <= 1
            continue
        # mostly gray (gradients are small almost everywhere), where jet colours everything
        gray = int(np.median(picture))
        assert np.median(spread) <= 10 and 100 < gray < 150
        assert np.median(np.ptp(gradcam.astype(int), axis=-1)) > 40
        strong = heat > 0.5  # a strong gradient: coloured, away from gray
        assert strong.any() and np.abs(picture[strong] - gray).max(-1).mean() > 40
