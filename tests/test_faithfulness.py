"""Deletion and insertion of a target's own score (taskcam.faithfulness), --faithfulness."""

import json
import math

import numpy as np
import pytest
import torch

from taskcam.adapters import adapter_for
from taskcam.adapters.classification import ClassTarget
from taskcam.cli import main
from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.errors import TaskcamError
from taskcam.faithfulness import (
    BASELINE_MAPS,
    baseline_maps,
    faithfulness,
    faithfulness_score,
    target_faithfulness,
)
from taskcam.render import save_image
from taskcam.report import write_report
from taskcam.zoo import build_zoo_model


@pytest.fixture(scope="module")
def shapes_yolo():
    loaded = build_zoo_model("shapes-yolo")
    return loaded, adapter_for(loaded)


def test_the_pixels_a_score_rests_on_rank_first_and_the_reverse_map_last():
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))

    def score(x):  # a "model" that reads the left quarter only
        return x[:, :, :, :8].mean(dim=(1, 2, 3))

    left = torch.zeros(32, 32)
    left[:, :8] = 1
    good, bad, noise = faithfulness(
        score, image, torch.stack([left, 1 - left, torch.rand(32, 32)]), steps=8, baseline="zero"
    )
    assert good.clean == pytest.approx(float(score(image[None])))
    # deleting the left quarter first kills the score within 2 of 8 steps
    assert good.deletion_curve.scores[2] == pytest.approx(0.0, abs=1e-6)
    assert good.insertion_curve.scores[2] == pytest.approx(1.0, abs=1e-5)
    assert good.faithfulness > 0.7 > noise.faithfulness > -0.2 and bad.faithfulness < -0.7
    assert good.as_dict() == {
        "deletion": good.deletion,
        "insertion": good.insertion,
        "faithfulness": good.faithfulness,
    }


def test_a_target_absent_from_the_clean_image_scores_zero_curves_not_nan():
    image = torch.rand(3, 16, 16)
    (f,) = faithfulness(lambda x: torch.zeros(len(x)), image, torch.rand(1, 16, 16), steps=4)
    assert f.clean == 0.0 and (f.deletion, f.insertion, f.faithfulness) == (0.0, 0.0, 0.0)
    assert not torch.isnan(f.deletion_curve.scores).any()


def test_bad_input_is_refused_naming_it():
    image = torch.rand(3, 16, 16)
    with pytest.raises(TaskcamError, match=r"maps of size \(8, 8\) do not match.*\(16, 16\)"):
        faithfulness(lambda x: x.mean((1, 2, 3)), image, torch.rand(8, 8))
    with pytest.raises(TaskcamError, match="steps must be a positive integer, got 0"):
        faithfulness(lambda x: x.mean((1, 2, 3)), image, torch.rand(16, 16), steps=0)
    # one batch: the clean image, the baseline, and 7 inner points of each of the 2 curves
    with pytest.raises(TaskcamError, match=r"score_fn must return Tensor\[16\]"):
        faithfulness(lambda x: x.mean(), image, torch.rand(16, 16))
    with pytest.raises(TaskcamError, match="NaN"):
        faithfulness(lambda x: x.mean((1, 2, 3)), image, torch.full((16, 16), float("nan")))
    with pytest.raises(TaskcamError, match=r"a box Tensor\[4\] or a region Tensor\[16, 16\]"):
        baseline_maps(torch.zeros(5), 16, 16)


def test_baseline_maps_for_a_box_and_for_a_region():
    maps = baseline_maps(torch.tensor([10.0, 20.0, 30.0, 60.0]), 80, 100)
    assert list(maps) == list(BASELINE_MAPS)
    assert int(maps["box"].sum()) == 20 * 40
    assert divmod(int(maps["centre"].argmax()), 100) in {(39, 19), (39, 20), (40, 19), (40, 20)}
    # sigma is 10 % of the longer side (10 px); pixel centres lie at +0.5
    assert float(maps["centre"][40, 30]) == pytest.approx(math.exp(-(0.5**2 + 10.5**2) / 200), 1e-4)
    region = torch.zeros(80, 100, dtype=torch.bool)
    region[5:15, 70:90] = True
    drawn = baseline_maps(region, 80, 100)
    assert torch.equal(drawn["box"].bool(), region)
    assert divmod(int(drawn["centre"].argmax()), 100) in {(9, 79), (9, 80), (10, 79), (10, 80)}
    assert not torch.equal(baseline_maps(region, 80, 100, seed=1)["random"], drawn["random"])


def test_a_detection_is_scored_by_its_d_rise_match_and_beats_noise(shapes_yolo):
    loaded, adapter = shapes_yolo
    x, _ = adapter.prepare(make_sample(3, seed=HELDOUT_SEED, size=256).image)
    dets = adapter.detect(x)[0]
    targets = adapter.targets(dets)
    assert len(targets) >= 2
    h, w = x.shape[-2:]

    def drawn(t):
        maps = baseline_maps(dets.boxes[t].float(), h, w, seed=t)
        return torch.stack([maps[k] for k in BASELINE_MAPS])

    # the filled box as "the map" and the three baselines after it; a blurred shape keeps
    # its colour and is still found, so pixels are replaced by the image's mean colour
    own = torch.stack([drawn(t)[1] for t in range(len(targets))])
    rows = target_faithfulness(
        loaded.model, x, targets, own, steps=4, extra_maps=drawn, baseline="mean"
    )
    for t, row in enumerate(rows):
        assert len(row) == 4
        # on the clean image the detection matches itself: IoU 1, its own class
        assert row[0].clean == pytest.approx(float(dets.scores[t]), rel=0.05)
        box, rand = row[0], row[1]
        assert box.faithfulness > rand.faithfulness + 0.2
    # a detection's box side is judged by the detection's score too
    side = adapter.targets(dets, "x1")[0]
    assert faithfulness_score(side).__class__.__name__ == "MatchTarget"
    # a target the model never finds (a box in an empty corner) scores 0, not NaN
    lost = adapter.targets(dets)[0]
    lost.box = torch.tensor([0.0, 0.0, 2.0, 2.0])
    (row,) = target_faithfulness(loaded.model, x, [lost], torch.rand(1, h, w), steps=2)
    assert row[0].clean < 1e-4 and (row[0].deletion, row[0].faithfulness) == (0.0, 0.0)


def test_a_classifier_target_is_scored_by_its_probability_and_the_model_is_unchanged():
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
    )
    net.train()  # a user's model left in training mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.rand(1, 3, 12, 12)
    (row,) = target_faithfulness(net, x, [ClassTarget(2)], torch.rand(1, 12, 12), steps=2)
    # scored in eval mode (batch statistics would make scores depend on the batching), and
    # the model comes back as it was: in training mode, its running statistics untouched
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    net.eval()
    assert row[0].clean == pytest.approx(float(net(x).softmax(1)[0, 2].detach()), rel=1e-4)
    with pytest.raises(TaskcamError, match="got 2 maps for 1 targets"):
        target_faithfulness(net, x, [ClassTarget(0)], torch.rand(2, 12, 12))


def _records(out):
    data = json.loads((out / "results.json").read_text())
    return [t for item in data["items"] for t in item["targets"]]


def test_explain_with_faithfulness_adds_the_three_fields(tmp_path, capsys):
    image = tmp_path / "in" / "shapes.png"
    save_image(image, make_sample(3, seed=HELDOUT_SEED, size=256).image)
    out = tmp_path / "det"
    args = ["explain", str(image), "--model", "zoo:shapes-yolo", "--out", str(out)]
    assert main([*args, "--faithfulness", "--faithfulness-steps", "2", "--no-progress"]) == 0
    records = _records(out)
    assert len(records) >= 2
    for r in records:
        assert r["kind"] == "detection"
        assert r["faithfulness"] == pytest.approx(r["insertion"] - r["deletion"], abs=2e-4)
        assert np.isfinite([r["deletion"], r["insertion"]]).all()
    # the report offers it as the first field to sort by
    page = (write_report(out)).read_text()
    assert '"sortable": ["faithfulness", "score"' in page
    # a classifier scores its class
    out = tmp_path / "cls"
    args = ["explain", str(image), "--model", "zoo:shapes-cnn", "--out", str(out)]
    assert main([*args, "--faithfulness", "--no-progress", "--method", "gradcam,eigencam"]) == 0
    records = _records(out)
    assert [r["method"] for r in records] == ["gradcam", "eigencam"]
    assert all("faithfulness" in r for r in records)
    # a segmenter scores each class region by its mean probability over the clean prediction
    out = tmp_path / "seg"
    args = ["explain", str(image), "--model", "zoo:shapes-unet", "--out", str(out)]
    assert main([*args, "--faithfulness", "--faithfulness-steps", "2", "--no-progress"]) == 0
    records = _records(out)
    assert records and all(r["kind"] == "region" and "faithfulness" in r for r in records)
    # off by default
    out = tmp_path / "plain"
    args = ["explain", str(image), "--model", "zoo:shapes-cnn", "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0
    assert "faithfulness" not in _records(out)[0]
    assert main([*args, "--faithfulness", "--faithfulness-steps", "0"]) == 2
    assert "--faithfulness-steps: expected a whole number >= 1, got 0" in capsys.readouterr().err
