"""``taskcam explain --labels`` / ``--box``: a detector's run against the user's labels writes
every label once with its outcome, a map and a reason for each missed one, and documents the
schema accepts."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from taskcam.cli import main
from taskcam.data.shapes import write_yolo_dataset
from taskcam.errors import TaskcamError
from taskcam.models import load_model
from taskcam.pipeline import explain_files

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "results.schema.json").read_text())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Four held-out shapes images with their YOLO labels and data.yaml."""
    return write_yolo_dataset(tmp_path_factory.mktemp("shapes"), n_train=0, n_val=4, size=256)


def _run(args: list[str], out: Path) -> dict:
    assert main(["explain", *args, "--out", str(out), "--no-progress"]) == 0
    document = json.loads((out / "results.json").read_text())
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    return document


def test_every_label_appears_once_with_an_outcome_and_missed_ones_have_maps(dataset, tmp_path):
    images = dataset.parent / "images" / "val"
    out = tmp_path / "out"
    # a threshold high enough that the trained detector misses some objects
    args = [str(images), "--model", "zoo:shapes-yolo", "--labels", str(dataset), "--conf", "0.9"]
    document = _run([*args, "--report"], out)
    totals = {"hit": 0, "missed": 0, "false_positive": 0}
    for item in document["items"]:
        stem = Path(item["image"]).stem
        lines = (dataset.parent / "labels" / "val" / f"{stem}.txt").read_text().split("\n")
        n_labels = len([line for line in lines if line.strip()])
        records = item["targets"]
        labels = [r["label"] for r in records if r["outcome"] in ("hit", "missed")]
        # a label once (a wrong-class miss has three records of one label)
        assert sorted(set(labels)) == list(range(n_labels))
        counts = item["outcomes"]
        assert counts["hit"] + counts["missed"] == n_labels
        for name in totals:
            totals[name] += counts[name]
        for r in records:
            if r["outcome"] == "missed":
                assert r["index"] is None and r["reason"] in (
                    "below_conf",
                    "suppressed",
                    "wrong_class",
                    "no_candidate",
                )
                if r["reason"] == "below_conf":
                    assert r["candidate_score"] <= 0.9
                heat = np.load(out / r["heatmap"])
                assert heat.shape == (item["height"], item["width"]) and not r["empty"]
                assert (out / r["overlay"]).is_file()
            else:
                assert isinstance(r["index"], int)
        assert (out / item["all"]["odam"]).is_file()
    assert totals["missed"] >= 1 and totals["hit"] >= 1, totals
    page = (out / "report.html").read_text()
    assert '"outcome": "missed"' in page or '"outcome":"missed"' in page


def test_a_box_by_hand_takes_the_overlapping_detections_class(dataset, tmp_path):
    image = dataset.parent / "images" / "val" / "val00000.png"
    lines = (dataset.parent / "labels" / "val" / "val00000.txt").read_text().split()
    k, cx, cy, w, h = int(lines[0]), *(float(v) * 256 for v in lines[1:5])
    box = f"{cx - w / 2:.0f},{cy - h / 2:.0f},{cx + w / 2:.0f},{cy + h / 2:.0f}"
    document = _run([str(image), "--model", "zoo:shapes-yolo", "--box", box], tmp_path / "a")
    (item,) = document["items"]
    hits = [r for r in item["targets"] if r["outcome"] == "hit"]
    assert len(hits) == 1 and hits[0]["class_id"] == k and hits[0]["label"] == 0
    assert item["outcomes"]["hit"] == 1
    # the same box named as another class: missed, and the class it was taken for explained
    other = (k + 1) % 4
    args = [str(image), "--model", "zoo:shapes-yolo", "--box", f"{box}:{other}"]
    (item,) = _run(args, tmp_path / "b")["items"]
    missed = [r for r in item["targets"] if r["outcome"] == "missed"]
    assert {r["reason"] for r in missed} == {"wrong_class"}
    assert [r.get("explains", "score") for r in missed] == ["score", "score", "contrast"]
    assert missed[0]["class_id"] == other and missed[1]["class_id"] == k


def test_labels_are_refused_where_they_mean_nothing(dataset, tmp_path):
    images = dataset.parent / "images" / "val"
    with pytest.raises(TaskcamError, match=r"--labels: .*zoo:shapes-cnn is a classify model"):
        explain_files(
            load_model("zoo:shapes-cnn"), [images], tmp_path / "c", labels_from=str(dataset)
        )
    with pytest.raises(TaskcamError, match="--box names boxes on one image; this run has 4"):
        explain_files(load_model("zoo:shapes-yolo"), [images], tmp_path / "d", boxes=["0,0,9,9:0"])
    with pytest.raises(TaskcamError, match=r"--iou: expected an IoU in \(0, 1\], got 0"):
        explain_files(load_model("zoo:shapes-yolo"), [images], tmp_path / "e", match_iou=0)
