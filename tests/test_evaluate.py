"""``taskcam eval``: methods × shapes zoo models scored against the held-out ground truth."""

import csv
import json
import math

import pytest

from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.evaluate import COLUMNS, evaluate, format_table


def test_eval_command_writes_csv_json_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--models",
            "shapes-cnn",
            "--method",
            "gradcam,eigencam",
            "-n",
            "3",
            "--sanity-images",
            "2",
            "--steps",
            "8",
            "--baseline",
            "mean",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "pointing_game" in printed and "eigencam" in printed
    rows = list(csv.DictReader((out / "eval.csv").open()))
    baselines = ["baseline:random", "baseline:box", "baseline:centre"]
    assert [r["method"] for r in rows] == ["gradcam", "eigencam", *baselines]
    assert list(rows[0]) == list(COLUMNS)
    data = json.loads((out / "eval.json").read_text())
    by_method = {row["method"]: row for row in data}
    # the maps drawn without the model: noise orders pixels by chance (faithfulness near 0);
    # the blob at the object's centre is a strong baseline on these one-object images
    assert abs(by_method["baseline:random"]["faithfulness"]) < 0.2
    assert by_method["baseline:centre"]["faithfulness"] > 0.3
    for row in data[:2]:
        assert row["faithfulness"] == pytest.approx(row["insertion"] - row["deletion"])
        assert 0.0 <= row["beats_centre"] <= 1.0
    for row in data[:2]:
        assert row["model"] == "shapes-cnn" and row["images"] == 3
        for key in ("pointing_game", "energy_pg", "energy_mask", "deletion", "road_morf"):
            assert 0.0 <= row[key] <= 1.0, (key, row[key])
        assert -1.0 <= row["sanity"] <= 1.0
        assert row["median_s"] > 0
        # A map that points at the object deletes the class faster than it inserts it back,
        # and removing its most relevant pixels hurts more than removing its least relevant.
        assert row["deletion"] < row["insertion"]
        assert row["road_morf"] < row["road_lerf"]


def test_eval_on_a_transformer_uses_its_token_reshape():
    row = evaluate(["zoo:shapes-vit"], ["gradcam"], n=2, sanity_images=2, progress=False)[0]
    assert row.model == "shapes-vit" and 0.0 <= row.energy_pg <= 1.0
    assert "shapes-vit" in format_table([row])


def test_eval_refuses_what_it_cannot_score():
    with pytest.raises(TaskcamError, match="without shapes ground truth"):
        evaluate(["efficientnet-lite0"], ["gradcam"], n=2, progress=False)
    with pytest.raises(TaskcamError, match="at least one image, got 0"):
        evaluate(["shapes-cnn"], ["gradcam"], n=0, progress=False)
    with pytest.raises(TaskcamError, match="--baseline: expected mean, blur or zero, got 'noise'"):
        evaluate(["shapes-cnn"], ["gradcam"], n=2, baseline="noise", progress=False)
    with pytest.raises(TaskcamError, match="--steps: expected a whole number >= 1, got 0"):
        evaluate(["shapes-cnn"], ["gradcam"], n=2, steps=0, progress=False)
    with pytest.raises(TaskcamError, match="no zoo model 'shapes-gan'"):
        evaluate(["shapes-gan"], ["gradcam"], n=2, progress=False)


def test_road_can_be_left_out():
    row = evaluate(["shapes-cnn"], ["gradcam"], n=2, sanity_images=1, road=False, progress=False)[0]
    assert math.isnan(row.road_morf) and math.isnan(row.road_lerf) and row.pointing_game >= 0.5


def test_eval_on_the_shapes_unet_scores_region_targets():
    row = evaluate(["shapes-unet"], ["gradcam"], n=1, sanity_images=1, progress=False)[0]
    assert row.model == "shapes-unet" and row.images == 1
    # The Unet's region maps sit on the class region, and deleting the most relevant pixels
    # first drops the class's mean probability over its region faster than its reverse.
    assert row.pointing_game == 1.0 and row.energy_mask > 0.6
    assert row.deletion < row.insertion and row.road_morf < row.road_lerf


def test_eval_on_shapes_yolo_scores_each_detection():
    # held-out images 3 and 5 hold two objects of one class each
    rows = evaluate(["shapes-yolo"], ["gradcam", "odam"], n=6, steps=8, progress=False)
    baselines = ["baseline:random", "baseline:box", "baseline:centre"]
    assert [r.method for r in rows] == ["gradcam", "odam", *baselines]
    assert abs(rows[2].faithfulness) < 0.2  # a random map orders pixels by chance
    for row in rows[:2]:
        assert row.model == "shapes-yolo" and row.images == 6
        for value in (row.pointing_game, row.energy_pg, row.other_energy, row.deletion):
            assert 0.0 <= value <= 1.0
        # its own object is one of its class's objects
        assert row.pointing_game <= row.pointing_game_class <= 1.0
        # deleting what the map points at loses the detection faster than inserting it back
        assert row.deletion < row.insertion
        assert math.isnan(row.sanity) and math.isnan(row.road_morf)
    # ODAM keeps each detection's map on its own object; Grad-CAM's channel averaging
    # spreads it over every object of the class
    gradcam, odam = rows[:2]
    assert odam.pointing_game == 1.0 and odam.other_energy < gradcam.other_energy
    # ... so Grad-CAM's peak lands on an object of the class more often than on its own
    assert gradcam.pointing_game_class > gradcam.pointing_game
