"""Video input for ``taskcam explain``: real clips written with OpenCV from shapes images, explained
with the shapes zoo models (shipped weights, CPU, no downloads)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from taskcam.cli import main
from taskcam.data.shapes import make_sample
from taskcam.errors import TaskcamError
from taskcam.models import load_model
from taskcam.pipeline import explain_files
from taskcam.video import explain_video, is_video, read_frames

SEED = 9999


def write_clip(path, n: int, size: int, fps: float = 10.0, **sample_options) -> list:
    """Write ``n`` shapes samples as an mp4 clip; return the samples."""
    samples = [make_sample(i, seed=SEED, size=size, **sample_options) for i in range(n)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    assert writer.isOpened()
    for sample in samples:
        writer.write(cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    writer.release()
    return samples


def read_video(path) -> tuple[list[np.ndarray], float]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames, fps


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    path = folder / "clip.mp4"
    samples = write_clip(path, 8, 256)
    return path, samples


@pytest.fixture(scope="module")
def detector():
    return load_model("zoo:shapes-fasterrcnn")


@pytest.fixture(scope="module")
def detector_run(clip, detector, tmp_path_factory):
    out = tmp_path_factory.mktemp("video-out")
    # ODAM per FPN level (the default fuses the body's stages): each map peaks on its instance
    levels = [f"backbone.fpn.layer_blocks.{i}" for i in range(3)]
    summary = explain_video(detector, clip[0], out, layers=levels, stride=2, progress=False)
    return summary, out


def test_is_video_by_extension():
    assert [is_video(p) for p in ["a.mp4", "b.AVI", "c.mov", "d.mkv", "e.webm"]] == [True] * 5
    assert not is_video("cat.png") and not is_video("clip.mp4.txt")


def test_read_frames_keeps_every_stride_th_frame(clip):
    path, samples = clip
    frames = list(read_frames(path, stride=3))
    assert [i for i, _ in frames] == [0, 3, 6]
    for index, frame in frames:  # RGB, the sample's picture up to mp4 compression
        assert frame.shape == (256, 256, 3) and frame.dtype == np.uint8
        error = np.abs(frame.astype(float) - samples[index].image.astype(float)).mean()
        assert error < 12, (index, error)


def test_detector_video_has_one_annotated_frame_per_explained_frame(clip, detector_run):
    summary, out = detector_run
    (video,) = summary.results["videos"]
    assert video["path"] == "clip_explained.mp4" and video["method"] == "odam"
    frames, fps = read_video(out / "clip_explained.mp4")
    assert len(frames) == 4 == video["frames"]
    assert all(f.shape == (256, 256, 3) for f in frames)
    assert fps == pytest.approx(5.0)  # 10 fps / stride 2
    # each output frame is its input frame with the heatmap over it, not the input itself
    for n, frame in enumerate(frames):
        source = cv2.cvtColor(clip[1][2 * n].image, cv2.COLOR_RGB2BGR).astype(float)
        assert np.abs(frame.astype(float) - source).mean() > 20


def test_detector_results_one_item_per_explained_frame(clip, detector_run):
    summary, out = detector_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == summary.results
    assert on_disk["task"] == "detect" and on_disk["methods"] == ["odam"]
    assert on_disk["complete"] is True
    items = on_disk["items"]
    assert [item["frame"] for item in items] == [0, 2, 4, 6]
    assert [item["time"] for item in items] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert {item["image"] for item in items} == {str(clip[0])}
    assert all((item["width"], item["height"]) == (256, 256) for item in items)


def test_detections_match_their_frame_and_heatmaps_load(clip, detector_run):
    summary, out = detector_run
    samples = clip[1]
    for item in summary.results["items"]:
        truth = samples[item["frame"]]
        assert item["targets"], item["frame"]
        for target in item["targets"]:
            assert target["kind"] == "detection" and target["method"] == "odam"
            x1, y1, x2, y2 = target["box"]
            assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
            # the detection is an object of *this* frame (frames are not shuffled or skipped)
            assert max(iou(target["box"], b) for b in truth.boxes) > 0.5, item["frame"]
            heat = np.load(out / target["heatmap"])
            assert heat.dtype == np.float32 and heat.shape == (256, 256)
            assert heat.min() >= 0.0 and heat.max() <= 1.0 and not target["empty"]
            assert cv2.imread(str(out / target["overlay"])).shape == (256, 256, 3)
        # ODAM keeps each detection's map on its instance: its peak lies in its own box
        for target in item["targets"]:
            heat = np.load(out / target["heatmap"])
            py, px = np.unravel_index(heat.argmax(), heat.shape)
            x1, y1, x2, y2 = target["box"]
            assert x1 - 8 <= px <= x2 + 8 and y1 - 8 <= py <= y2 + 8, (item["frame"], target)


def test_classifier_video_with_progress(tmp_path, capsys):
    path = tmp_path / "small.avi"
    samples = write_clip(path, 5, 64, fps=5.0, max_objects=1)
    loaded = load_model("zoo:shapes-cnn")
    summary = explain_video(loaded, path, tmp_path / "out", progress=True)
    assert "5/5" in capsys.readouterr().err  # the bar counts frames
    items = summary.results["items"]
    assert [item["frame"] for item in items] == [0, 1, 2, 3, 4]
    right = 0
    for item, sample in zip(items, samples):
        (target,) = item["targets"]
        assert target["kind"] == "class" and target["method"] == "gradcam"
        heat = np.load(tmp_path / "out" / target["heatmap"])
        assert heat.shape == (64, 64) and heat.dtype == np.float32
        right += target["class_id"] == int(sample.labels[0])
    assert right >= 4  # the shipped classifier reads the frames it is given
    frames, fps = read_video(tmp_path / "out" / "small_explained.mp4")
    assert len(frames) == 5 and frames[0].shape == (64, 64, 3)
    assert fps == pytest.approx(5.0)


def test_unreadable_video_is_an_error_naming_it(tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"this is not a video")
    loaded = load_model("zoo:shapes-cnn")
    with pytest.raises(TaskcamError, match="broken.mp4"):
        explain_video(loaded, bad, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()  # nothing written
    rc = main(["explain", str(bad), "--model", "zoo:shapes-cnn", "--out", str(tmp_path / "o2")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "taskcam: error:" in err and "broken.mp4" in err


def test_bad_stride_and_mixed_inputs_are_refused(clip, tmp_path):
    loaded = load_model("zoo:shapes-cnn")
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), make_sample(0, seed=SEED, size=64).image)
    with pytest.raises(TaskcamError, match="--stride"):
        explain_video(loaded, clip[0], tmp_path / "a", stride=0)
    with pytest.raises(TaskcamError, match="separate runs"):
        explain_files(loaded, [clip[0], image], tmp_path / "b")
    with pytest.raises(TaskcamError, match="only for video"):
        explain_files(loaded, [image], tmp_path / "c", stride=2)


def test_cli_explains_a_video_end_to_end(clip, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["explain", str(clip[0]), "--model", "zoo:shapes-fasterrcnn", "--task", "detect"]
    rc = main([*argv, "--stride", "4", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert "2 frame(s) -> clip_explained.mp4" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert [item["frame"] for item in results["items"]] == [0, 4]
    assert results["videos"][0]["fps"] == pytest.approx(2.5)
    frames, _ = read_video(out / "clip_explained.mp4")
    assert len(frames) == 2 and frames[0].shape == (256, 256, 3)
    # the same command again redoes the frames into the same folder (settings match)
    assert main([*argv, "--stride", "4", "--out", str(out), "--no-progress"]) == 0
    assert len(json.loads((out / "results.json").read_text())["items"]) == 2
    # other settings in that folder are refused
    assert main([*argv, "--stride", "2", "--out", str(out), "--no-progress"]) == 2
    assert "stride" in capsys.readouterr().err


def test_segmenter_video_regions_are_the_frame_classes(clip, tmp_path):
    path, samples = clip
    loaded = load_model("zoo:shapes-unet")
    summary = explain_video(loaded, path, tmp_path / "seg", stride=4, progress=False)
    items = summary.results["items"]
    assert [item["frame"] for item in items] == [0, 4]
    for item in items:
        truth = {int(label) + 1 for label in samples[item["frame"]].labels}  # 0: background
        regions = {t["class_id"]: t["pixels"] for t in item["targets"] if t["class_id"] != 0}
        # every object class of this frame is a region; others are at most a few specks
        large = {k for k, pixels in regions.items() if pixels >= 500}
        assert large == truth, (item["frame"], regions, truth)
        for target in item["targets"]:
            assert target["kind"] == "region" and target["pixels"] > 0
            assert 0.0 <= target["mean_probability"] <= 1.0
            heat = np.load(tmp_path / "seg" / target["heatmap"])
            assert heat.shape == (256, 256) and heat.dtype == np.float32
    frames, _ = read_video(tmp_path / "seg" / "clip_explained.mp4")
    assert len(frames) == 2
