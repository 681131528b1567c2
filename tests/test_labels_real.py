"""Issue 27's bar on a real, trained YOLOv8 (NudeNet's YOLOv8n export, which its wheel ships)
and real photos with YOLO-format labels written by the test (:mod:`taskcam.data.people`: the
photos of the installed packages, labelled by eye): every label appears once with an outcome,
the outcomes equal an independent matching of ultralytics' own predictions at the same
threshold, every missed label has a map and a reason, and ``taskcam eval --labels`` prints a
table per method."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from taskcam.cli import main
from taskcam.data.people import PEOPLE_LABELS as LABELS
from taskcam.data.people import write_people_dataset

CONF = 0.1


def _onnx() -> Path:
    spec = importlib.util.find_spec("nudenet")
    if spec is None:
        pytest.skip("nudenet is not installed (pip install 'taskcam[dev]')")
    return Path(spec.submodule_search_locations[0]) / "320n.onnx"


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _greedy(predictions, labels, thr=0.5):
    """Matching written out plainly: best score first, the free label of the same class with
    the highest IoU at or above ``thr``; returns {prediction: label}."""
    taken: dict[int, int] = {}
    for i in sorted(range(len(predictions)), key=lambda i: -predictions[i][1]):
        box, _, k = predictions[i]
        free = [j for j in range(len(labels)) if j not in taken.values() and labels[j][0] == k]
        if free:
            j = max(free, key=lambda j: _iou(box, labels[j][1]))
            if _iou(box, labels[j][1]) >= thr:
                taken[i] = j
    return taken


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The photos in ``images/``, their labels in ``labels/`` and a ``data.yaml`` naming the
    model's classes (:mod:`taskcam.data.people`)."""
    from ultralytics import YOLO

    root = tmp_path_factory.mktemp("people")
    names = YOLO(str(_onnx()), task="detect").names
    write_people_dataset(root, names)
    return root, names


def test_outcomes_equal_a_matching_of_ultralytics_own_predictions(dataset, tmp_path):
    from ultralytics import YOLO

    root, names = dataset
    out = tmp_path / "out"
    args = ["explain", str(root / "images"), "--model", f"yolo:{_onnx()}", "--labels"]
    args += [str(root / "data.yaml"), "--conf", str(CONF), "--out", str(out), "--no-progress"]
    assert main(args) == 0
    items = {
        Path(i["image"]).name: i for i in json.loads((out / "results.json").read_text())["items"]
    }
    yolo = YOLO(str(_onnx()), task="detect")
    reasons = []
    for image, rows in LABELS.items():
        labels = [(names_k, (x1, y1, x2, y2)) for names_k, x1, y1, x2, y2 in rows]
        (result,) = yolo.predict(
            str(root / "images" / image), imgsz=320, conf=CONF, verbose=False, save=False
        )
        predictions = [
            (b, float(s), names[int(c)])
            for b, s, c in zip(result.boxes.xyxy.tolist(), result.boxes.conf, result.boxes.cls)
        ]
        taken = _greedy(predictions, labels)
        item = items[image]
        records = item["targets"]
        # ours are ultralytics' detections, row for row
        dets = [r for r in records if r["index"] is not None]
        assert [r["class_name"] for r in dets] == [p[2] for p in predictions]
        for r, p in zip(dets, predictions):
            assert np.allclose(r["box"], p[0], atol=1.0) and abs(r["score"] - p[1]) < 1e-3
        # the same hits, misses and false positives as the independent matching
        hits = {r["index"]: r["label"] for r in dets if r["outcome"] == "hit"}
        assert hits == taken
        assert {r["index"] for r in dets if r["outcome"] == "false_positive"} == (
            set(range(len(predictions))) - set(taken)
        )
        missed = {r["label"] for r in records if r["outcome"] == "missed"}
        assert missed == set(range(len(labels))) - set(taken.values())
        assert item["outcomes"] == {
            "hit": len(taken),
            "missed": len(missed),
            "false_positive": len(predictions) - len(taken),
        }
        for r in records:
            if r["outcome"] != "missed":
                continue
            reasons.append(r["reason"])
            assert r["label_class"] == labels[r["label"]][0]
            heat = np.load(out / r["heatmap"])
            assert heat.shape == (item["height"], item["width"]) and heat.max() > 0
            if r["reason"] == "below_conf":
                assert r["candidate_score"] < CONF
    # the man taken for a woman, and faces the detector scored too low
    assert "wrong_class" in reasons and "below_conf" in reasons, reasons


def test_eval_labels_prints_a_table_per_method(dataset, tmp_path, capsys):
    root, _ = dataset
    args = ["eval", str(root / "images"), "--model", f"yolo:{_onnx()}", "--labels"]
    args += [str(root / "labels"), "--conf", str(CONF), "--method", "odam,gradcam"]
    args += ["--steps", "4", "--out", str(tmp_path / "ev"), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 image(s): precision" in printed and "recall" in printed
    summary = json.loads((tmp_path / "ev" / "eval.json").read_text())
    methods = {r["method"] for r in summary["rows"]}
    assert methods == {"odam", "gradcam", "baseline:centre", "baseline:random"}
    outcomes = {r["outcome"] for r in summary["rows"] if r["method"] == "odam"}
    assert {"hit", "missed", "all"} <= outcomes
    counts = summary["counts"]
    assert counts["hit"] + counts["missed"] == sum(len(v) for v in LABELS.values())
    assert summary["recall"] == pytest.approx(counts["hit"] / 8)
    for line in ("odam", "gradcam", "baseline:centre"):
        assert any(row.startswith(line) for row in printed.splitlines())
