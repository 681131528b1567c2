"""Detection shared by every detector adapter: D-RISE matching, target selection, per-level
maps, the D-RISE method and ``taskcam explain --task detect`` on YOLO models."""

from __future__ import annotations

import json
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2
import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchvision.ops import box_iou

import taskcam
from taskcam import TaskcamError
from taskcam.adapters.classification import ClassTarget
from taskcam.adapters.detection import (
    Candidates,
    Detections,
    MatchTarget,
    drise_similarity,
    parse_detection_targets,
)
from taskcam.cli import main
from taskcam.data.shapes import HELDOUT_SEED, make_sample

pytest.importorskip("ultralytics")


@pytest.fixture(scope="module")
def shapes_yolo():
    from taskcam.adapters.ultralytics import YoloAdapter
    from taskcam.zoo import build_zoo_model

    loaded = build_zoo_model("shapes-yolo")
    return YoloAdapter(loaded.model, size=256, class_names=loaded.class_names)


@pytest.fixture(scope="module")
def shapes_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shapes")
    samples = []
    for i in range(2):
        sample = make_sample(i, seed=HELDOUT_SEED, size=256, min_objects=2)
        cv2.imwrite(str(folder / f"s{i}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        samples.append(sample)
    # not square, so the letterbox pads: boxes and maps must come back to this grid
    wide = cv2.resize(samples[0].image, (384, 256), interpolation=cv2.INTER_LINEAR)
    cv2.imwrite(str(folder / "wide.png"), cv2.cvtColor(wide, cv2.COLOR_RGB2BGR))
    return folder, samples


def _dets(n: int, classes=None) -> Detections:
    classes = torch.tensor(classes if classes is not None else [0] * n)
    return Detections(torch.zeros(n, 4), torch.ones(n), classes, torch.arange(n))


# -- D-RISE similarity and target selection ------------------------------------------------------
def test_drise_similarity_is_iou_times_cosine_times_objectness():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]]])
    probs = torch.tensor([[[0.6, 0.8], [1.0, 0.0], [1.0, 0.0]]])
    ref = torch.tensor([0.0, 0, 10, 10])
    # candidate 0: IoU 1, cos 0.6; candidate 1: IoU 1/3, cos 1; candidate 2: IoU 0
    assert_close(drise_similarity(Candidates(boxes, probs), ref, 0), torch.tensor([0.6]))
    obj = torch.tensor([[0.5, 1.0, 1.0]])
    sim = drise_similarity(Candidates(boxes, probs, obj), ref, 0)
    assert_close(sim, torch.tensor([1 / 3]))
    empty = Candidates(torch.zeros(2, 0, 4), torch.zeros(2, 0, 2))
    assert_close(drise_similarity(empty, ref, 1), torch.zeros(2))
    with pytest.raises(TaskcamError, match="class_id 2 does not exist: the candidates have 2"):
        drise_similarity(Candidates(boxes, probs), ref, 2)


def test_parse_detection_targets_all_indices_and_class_names():
    dets = _dets(4, [1, 0, 1, 2])
    names = ["circle", "square", "triangle"]
    assert parse_detection_targets(None, dets, names) == [0, 1, 2, 3]
    assert parse_detection_targets("all", dets, names) == [0, 1, 2, 3]
    assert parse_detection_targets("2,0", dets, names) == [2, 0]
    assert parse_detection_targets("class=square", dets, names) == [0, 2]
    assert parse_detection_targets("class=2", dets, names) == [3]
    assert parse_detection_targets("all", _dets(0), names) == []
    with pytest.raises(TaskcamError, match="detection 7 does not exist; the image has 4"):
        parse_detection_targets("0,7", dets, names)
    with pytest.raises(TaskcamError, match="no such class; the model's classes are"):
        parse_detection_targets("class=hexagon", dets, names)
    with pytest.raises(TaskcamError, match="expected all, indices"):
        parse_detection_targets("top3", dets, names)
    with pytest.raises(TaskcamError, match="class 3 does not exist; the model has 3 classes"):
        parse_detection_targets("class=3", dets, names)
    # each detection once; a video frame keeps the indices it has
    assert parse_detection_targets("1,1,0", dets, names) == [1, 0]
    assert parse_detection_targets("0,7", dets, names, existing_only=True) == [0]
    with pytest.raises(TaskcamError, match="detection -1 does not exist"):
        parse_detection_targets("-1", dets, names, existing_only=True)


# -- engine: per-level maps, perturbation matching, D-RISE ------------------------------------
def test_each_detection_uses_its_own_level_from_one_call(shapes_yolo):
    from taskcam.adapters.ultralytics import default_layers

    sample = make_sample(3, seed=HELDOUT_SEED, size=256)
    x, _ = shapes_yolo.prepare(sample.image)
    dets = shapes_yolo.detect(x)[0]
    targets = shapes_yolo.targets(dets)
    layers = default_layers(shapes_yolo.model)  # the neck outputs (ODAM's per-level maps)
    assert {t.layer for t in targets} <= set(layers)
    exp = taskcam.explain(shapes_yolo.model, x, [targets], layers=layers)
    for k, target in enumerate(targets):
        alone = taskcam.explain(shapes_yolo.model, x, [[target]], layers=[target.layer])
        assert_close(exp.maps[0, k], alone.maps[0, 0], atol=1e-5, rtol=1e-4)
    # without a level, a target gets the mean of all levels' maps: a different map
    free = [type(t)(t.candidate, t.class_id, box=t.box) for t in targets]
    mixed = taskcam.explain(shapes_yolo.model, x, [free], layers=layers)
    assert not torch.allclose(mixed.maps, exp.maps, atol=1e-3)


def test_perturbation_methods_match_detections_by_drise_similarity(shapes_yolo):
    sample = make_sample(0, seed=HELDOUT_SEED, size=256)
    x, _ = shapes_yolo.prepare(sample.image)
    dets = shapes_yolo.detect(x)[0]
    (target,) = shapes_yolo.targets(dets.select([0]))
    match = target.perturbed()
    assert isinstance(match, MatchTarget) and match.layer == target.layer
    with torch.no_grad():
        out = shapes_yolo.model(x)
        # on the unperturbed image the detection matches itself: IoU 1, its own class vector
        assert float(match(out)) >= float(dets.scores[0]) * 0.9
        assert float(match(shapes_yolo.model(torch.zeros_like(x)))) < 0.1  # nothing there
    exp = taskcam.explain(
        shapes_yolo.model, x, [[target]], layers=[target.layer], method="scorecam"
    )
    assert 0.5 < float(exp.scores[0, 0]) <= 1.0  # a similarity, not the raw anchor score
    # matching finds a detection, not one side of its box: that is the gradient methods' job
    (side,) = shapes_yolo.targets(dets.select([0]), "x2")
    with pytest.raises(TaskcamError, match="what='x2': perturbation methods"):
        taskcam.explain(shapes_yolo.model, x, [[side]], layers=[side.layer], method="scorecam")
    with pytest.raises(TaskcamError, match="has no box"):
        type(target)(target.candidate, target.class_id).perturbed()


def test_drise_puts_each_detections_energy_inside_its_box(shapes_yolo):
    sample = make_sample(1, seed=HELDOUT_SEED, size=256, min_objects=2)
    x, info = shapes_yolo.prepare(sample.image)
    dets = shapes_yolo.detect(x)[0]
    assert len(dets) >= 2
    method = taskcam.get_method("drise", n_masks=300, seed=3, batch_size=50)
    exp = taskcam.explain(shapes_yolo.model, x, [shapes_yolo.targets(dets)], method=method)
    again = taskcam.explain(shapes_yolo.model, x, [shapes_yolo.targets(dets)], method=method)
    assert torch.equal(exp.maps, again.maps)  # seeded
    maps = info.map_to_image(exp.maps)[0]
    for k, box in enumerate(info.boxes_to_image(dets.boxes).round().long().tolist()):
        x1, y1, x2, y2 = box
        inside = float(maps[k, y1:y2, x1:x2].mean())
        outside = (float(maps[k].sum()) - float(maps[k, y1:y2, x1:x2].sum())) / (
            maps[k].numel() - (x2 - x1) * (y2 - y1)
        )
        assert inside > 1.2 * outside, (k, inside, outside)
        # pointing game with a few pixels' tolerance: the map's peak is on the detection
        peak_y, peak_x = divmod(int(maps[k].argmax()), maps.shape[-1])
        assert x1 - 8 <= peak_x <= x2 + 8 and y1 - 8 <= peak_y <= y2 + 8, (k, peak_x, peak_y)


def test_drise_refuses_targets_that_are_not_detections(cnn):
    with pytest.raises(TaskcamError, match="drise explains detections.*ClassTarget"):
        taskcam.explain(cnn, torch.rand(1, 3, 16, 16), [ClassTarget(1)], method="drise")


def test_match_target_repr_names_box_and_class():
    t = MatchTarget(lambda out: out, torch.tensor([1.0, 2, 3, 4]), 2)
    assert repr(t) == "MatchTarget(box=[1.0, 2.0, 3.0, 4.0], class_id=2)"


# -- the CLI ----------------------------------------------------------------------------------
def test_cli_detect_writes_one_map_per_detection(shapes_files, tmp_path):
    folder, samples = shapes_files
    out = tmp_path / "out"
    args = ["explain", str(folder), "--model", "zoo:shapes-yolo", "--no-progress"]
    assert main([*args, "--task", "detect", "--method", "gradcam,eigencam", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "detect" and results["methods"] == ["gradcam", "eigencam"]
    assert results["layers"] == ["model.4", "model.6", "model.9"]  # backbone stages, fused
    items = {item["image"].rsplit("/", 1)[-1]: item for item in results["items"]}
    assert sorted(items) == ["s0.png", "s1.png", "wide.png"]
    for name, item in items.items():
        targets = item["targets"]
        assert targets and len(targets) % 2 == 0, name
        assert (out / item["grid"]).is_file()
        for t in targets:
            assert t["kind"] == "detection" and t["class_name"] in (
                "circle",
                "square",
                "triangle",
                "star",
            )
            heat = np.load(out / t["heatmap"])
            assert heat.shape == (item["height"], item["width"]) and heat.dtype == np.float32
            assert heat.min() >= 0 and heat.max() <= 1 and not t["empty"]
            x1, y1, x2, y2 = t["box"]
            assert 0 <= x1 < x2 <= item["width"] and 0 <= y1 < y2 <= item["height"]
            assert cv2.imread(str(out / t["overlay"])).shape[:2] == heat.shape
    # boxes are in original-image pixels: the stretched copy's boxes are 1.5x wider
    for k, sample in enumerate(samples):
        gt = torch.from_numpy(sample.boxes).float()
        found = torch.tensor(
            [t["box"] for t in items[f"s{k}.png"]["targets"] if t["method"] == "gradcam"]
        )
        assert (box_iou(gt, found).max(1).values > 0.5).all()
    wide = torch.tensor(
        [t["box"] for t in items["wide.png"]["targets"] if t["method"] == "gradcam"]
    )
    gt = torch.from_numpy(samples[0].boxes).float() * torch.tensor([1.5, 1.0, 1.5, 1.0])
    assert (box_iou(gt, wide).max(1).values > 0.5).all()


def test_cli_detect_targets_and_bad_input(shapes_files, tmp_path, capsys):
    folder, _ = shapes_files
    image = str(folder / "s0.png")
    base = ["explain", image, "--model", "zoo:shapes-yolo", "--no-progress"]
    out = tmp_path / "one"
    assert main([*base, "--targets", "1", "--what", "x2", "--out", str(out)]) == 0
    (t,) = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert t["index"] == 1 and t["explains"] == "x2" and t["heatmap"].endswith("det1_odam.npy")
    out = tmp_path / "cls"
    assert main([*base, "--targets", "class=triangle", "--out", str(out)]) == 0
    chosen = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert chosen and all(t["class_name"] == "triangle" for t in chosen)
    out = tmp_path / "cross"  # a class the model has and the image does not
    assert main([*base, "--targets", "class=cross", "--out", str(out)]) == 0
    item = json.loads((out / "results.json").read_text())["items"][0]
    assert item["targets"] == [] and item["message"] == "no detections of class=cross"
    assert main([*base, "--targets", "9", "--out", str(tmp_path / "bad")]) == 1
    assert "detection 9 does not exist; the image has 2 detection(s)" in capsys.readouterr().err
    # in a folder, an image without the asked detection is a failure of its own: the run goes on
    out = tmp_path / "folder"
    black = folder.parent / "black.png"
    cv2.imwrite(str(black), np.zeros((64, 64, 3), np.uint8))
    assert main([*base[:1], str(black), *base[1:], "--targets", "1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [i["image"] for i in results["items"]] == [image]
    ((failed, error),) = [(f["image"], f["error"]) for f in results["failures"]]
    assert failed == str(black) and "detection 1 does not exist; the image has 0" in error
    # a class the model does not have is the run's error, before any image
    bad = [*base, "--targets", "class=hexagon", "--out", str(tmp_path / "hex")]
    assert main(bad) == 2 and "class=hexagon: no such class" in capsys.readouterr().err
    assert not (tmp_path / "hex" / "results.jsonl").exists()
    # nothing above the threshold: an empty result and a message, not a crash
    out = tmp_path / "none"
    assert main([*base, "--conf", "1.0", "--out", str(out)]) == 0
    item = json.loads((out / "results.json").read_text())["items"][0]
    assert item["targets"] == [] and item["message"] == "no detections"
    assert main([*base, "--task", "segment", "--out", str(tmp_path / "x")]) == 2
    assert "is a detect model" in capsys.readouterr().err
    # options with no meaning for a detection are refused before anything is written
    assert main([*base, "--aug-smooth", "--out", str(tmp_path / "aug")]) == 2
    assert "--aug-smooth: not for detectors" in capsys.readouterr().err
    bad = [*base, "--what", "x2", "--method", "odam,drise", "--out", str(tmp_path / "w")]
    assert main(bad) == 2
    assert "--what x2: drise explain a detection's score" in capsys.readouterr().err
    assert not (tmp_path / "aug").exists() and not (tmp_path / "w").exists()


def test_cli_yolo_seg_explains_instances_with_their_masks(tmp_path):
    photo = tmp_path / "astronaut.png"
    from skimage import data

    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut()[:300, :400], cv2.COLOR_RGB2BGR))
    out = tmp_path / "seg"
    torch.manual_seed(0)
    args = ["explain", str(photo), "--model", "yolo:yolov8n-seg.yaml", "--task", "segment"]
    args += ["--conf", "0", "--targets", "0,1", "--size", "160", "--method", "eigencam"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "segment" and results["model"] == "yolo:yolov8n-seg.yaml"
    item = results["items"][0]
    assert [t["index"] for t in item["targets"]] == [0, 1]
    for t in item["targets"]:
        assert t["kind"] == "region" and isinstance(t["pixels"], int) and len(t["box"]) == 4
        heat = np.load(out / t["heatmap"])
        assert heat.shape == (300, 400) and np.isfinite(heat).all()


def test_cli_torchvision_detector_with_nonstandard_fpn_names(shapes_files, tmp_path):
    folder, samples = shapes_files
    out = tmp_path / "frcnn"
    args = ["explain", str(folder / "s1.png"), str(folder / "wide.png"), "--no-progress"]
    assert main([*args, "--model", "zoo:shapes-fasterrcnn", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "detect" and results["methods"] == ["odam"]
    assert results["layers"] == [f"backbone.body.layer{i}" for i in (2, 3, 4)]
    items = {item["image"].rsplit("/", 1)[-1]: item for item in results["items"]}
    gt = torch.from_numpy(samples[1].boxes).float()
    for name, scale in (("s1.png", 1.0), ("wide.png", None)):
        targets = items[name]["targets"]
        assert targets and all(t["kind"] == "detection" for t in targets)
        for t in targets:
            heat = np.load(out / t["heatmap"])
            assert heat.shape == (items[name]["height"], items[name]["width"])
            assert t["class_name"] in ("circle", "square", "triangle", "star")
        if scale:
            found = torch.tensor([t["box"] for t in targets if t["score"] > 0.5])
            assert (box_iou(gt, found).max(1).values > 0.5).all()
            # each confident detection's map peaks on its own box
            for t in targets:
                if t["score"] > 0.5:
                    heat = np.load(out / t["heatmap"])
                    y, x = np.unravel_index(int(heat.argmax()), heat.shape)
                    x1, y1, x2, y2 = t["box"]
                    assert x1 - 8 <= x <= x2 + 8 and y1 - 8 <= y <= y2 + 8, t
