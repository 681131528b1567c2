"""EfficientDet from ``effdet`` (``effdet:NAME``, or a model of yours): detections equal
effdet's own pipeline, each is explained at its own pyramid level, and the command line writes
one record per kept detection.

effdet's pipeline here is effdet's own code: its eval transform (``transforms_coco_eval``), its
collate (``DetectionFastCollate``), the normalisation of its ``PrefetchLoader`` and
``DetBenchPredict(model)(x, img_info)``. No weights can be downloaded: models have random
weights, their batch norms calibrated on two photos (timm's random EfficientNet shrinks features
about 3.5× per stage, which leaves every score at the head's prior, 0.01, within 1e-5).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import taskcam
from taskcam.adapters.detection.families import detector_for, family_of
from taskcam.adapters.effdet import EffDetAdapter, is_effdet, load_effdet
from taskcam.adapters.effdet.library import effdet_module
from taskcam.adapters.effdet.outputs import EffDetTarget
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

effdet = effdet_module()
transforms = effdet_module("data.transforms")
loader = effdet_module("data.loader")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


PHOTOS = (data.astronaut, data.coffee, data.rocket, data.immunohistochemistry)


def _calibrated(name: str, size: tuple[int, int]) -> torch.nn.Module:
    """effdet's ``name`` at ``size`` with seeded random weights, calibrated on four photos
    as a data-dependent init does: its batch norms' statistics theirs, its class logits
    ``prior + N(0, 1.5²)`` and its box codes ``N(0, 0.5²)`` over them (left as they are,
    every score saturates at 1 and boxes are many times their anchors); in eval mode."""
    torch.manual_seed(0)
    net = effdet.create_model(name, pretrained_backbone=False, image_size=size)
    adapter = EffDetAdapter(net)
    x = torch.cat([adapter.prepare(photo())[0] for photo in PHOTOS])
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: after one batch, its statistics
    net.train()
    with torch.no_grad():
        net(x)
        net.eval()
        for head, out, std in zip((net.class_net, net.box_net), net(x), (1.5, 0.5)):
            spread = torch.cat([t.flatten() for t in out]).std()
            head.predict.conv_pw.weight.mul_(std / spread)
    return net


@pytest.fixture(scope="module")
def nets():
    """A TF-ported EfficientDet-D0 (TF "same" padding) at 128×256 and effdet's own D0 at
    256×128: non-square inputs, small enough to be quick."""
    return {
        "tf_efficientdet_d0": _calibrated("tf_efficientdet_d0", (128, 256)),
        "efficientdet_d0": _calibrated("efficientdet_d0", (256, 128)),
    }


def _effdet_pipeline(net: torch.nn.Module, image: np.ndarray) -> tuple[torch.Tensor, dict]:
    """``(x, img_info)`` as effdet's eval loader makes them from a photo."""
    cfg = effdet_module("data").resolve_input_config({}, model_config=net.config)
    tf = transforms.transforms_coco_eval(
        cfg["input_size"][1:],
        interpolation=cfg["interpolation"],
        use_prefetcher=True,
        fill_color=cfg["fill_color"],
        mean=cfg["mean"],
        std=cfg["std"],
    )
    h, w = image.shape[:2]
    pixels, anno = tf(Image.fromarray(image), {"img_idx": 0, "img_size": (w, h)})
    x, target = loader.DetectionFastCollate()([(pixels, anno)])
    mean = torch.tensor([v * 255 for v in cfg["mean"]]).view(1, 3, 1, 1)
    std = torch.tensor([v * 255 for v in cfg["std"]]).view(1, 3, 1, 1)
    return x.float().sub_(mean).div_(std), target


@pytest.mark.parametrize("name", ["tf_efficientdet_d0", "efficientdet_d0"])
def test_detections_equal_effdet_own_pipeline(nets, name):
    net, photo = nets[name], data.chelsea()  # 451 x 300: padded below
    theirs_x, img_info = _effdet_pipeline(net, photo)
    with torch.no_grad():
        rows = effdet.DetBenchPredict(net)(theirs_x, img_info=img_info)[0]  # [100, 6]
    conf = float(rows[30, 4])  # a threshold that keeps 31 of its 100 rows
    adapter = EffDetAdapter(net, conf=conf)
    x, placement = adapter.prepare(photo)
    assert torch.equal(x, theirs_x)
    dets = adapter.detect(x)[0]
    kept = rows[rows[:, 4] >= conf]  # effdet's own convention: scores fall row after row
    assert len(dets) == len(kept) == 31
    assert torch.equal(dets.boxes * img_info["img_scale"], kept[:, :4])  # clipped before NMS
    assert torch.equal(placement.boxes_to_image(dets.boxes), kept[:, :4])
    assert torch.equal(dets.scores, kept[:, 4])
    assert torch.equal(dets.classes, kept[:, 5].long())
    assert len(set(dets.classes.tolist())) > 5  # (anchor, class) pairs over many classes


def test_an_input_of_yours_is_detected_as_the_bench_does_without_img_info(nets):
    """No ``img_info``: no clip before NMS, boxes in input pixels (they leave the input)."""
    net = nets["tf_efficientdet_d0"]
    adapter = EffDetAdapter(net, conf=0.0)
    x = adapter.prepare(data.astronaut())[0].clone()  # not the tensor prepare made
    dets = adapter.detect(x)[0]
    with torch.no_grad():
        rows = effdet.DetBenchPredict(net)(x)[0]
    assert len(dets) == len(rows) == 100
    assert torch.equal(dets.boxes, rows[:, :4]) and torch.equal(dets.scores, rows[:, 4])
    assert torch.equal(dets.classes, rows[:, 5].long())
    assert float(dets.boxes[:, 1::2].min()) < 0 or float(dets.boxes[:, 1::2].max()) > 128


def test_targets_read_their_own_anchor_at_its_level(nets):
    net = nets["tf_efficientdet_d0"]
    adapter = EffDetAdapter(net, conf=0.0)
    x = adapter.prepare(data.chelsea())[0].clone()  # unclipped boxes: those the anchors give
    dets = adapter.detect(x)[0].select([0, 1, 2, 50, 99])
    with torch.no_grad():
        out = net(x)
    scores = torch.cat([t(out) for t in adapter.targets(dets)])
    torch.testing.assert_close(scores, dets.scores)
    for side, column in (("x1", 0), ("y2", 3)):
        got = torch.cat([t(out) for t in adapter.targets(dets, side)])
        torch.testing.assert_close(got, dets.boxes[:, column], rtol=1e-5, atol=1e-4)
    candidates = adapter.candidates(out)
    torch.testing.assert_close(candidates.scores[0, dets.candidates, dets.classes], dets.scores)
    levels = adapter.level_layers()
    assert levels == [f"fpn.cell.2.fnode.{j}" for j in range(3, 8)]
    assert dets.levels == [levels[i] for i in candidates.levels[dets.candidates].tolist()]
    assert all(type(t) is EffDetTarget for t in adapter.targets(dets))
    with pytest.raises(TaskcamError, match="has no objectness"):
        adapter.targets(dets, "objectness")


def test_the_backbone_explains_by_default_and_your_model_comes_back(nets):
    net = nets["tf_efficientdet_d0"]
    adapter = EffDetAdapter(net, conf=0.0)
    x, placement = adapter.prepare(data.chelsea())
    dets = adapter.detect(x)[0].select([0, 1, 2])
    net.train()  # yours as you left it: training mode, a frozen part, a hook
    net.class_net.requires_grad_(False)
    calls = []
    handle = net.box_net.register_forward_hook(lambda *a: calls.append(1))
    try:
        exp = taskcam.explain(net, x, [adapter.targets(dets)], adapter.default_layers(), "odam")
        assert net.training and not any(p.requires_grad for p in net.class_net.parameters())
        assert all(p.requires_grad for p in net.box_net.parameters())
        assert [len(m._forward_hooks) for m in (net, net.box_net, net.fpn)] == [0, 1, 0]
    finally:
        handle.remove()
        net.class_net.requires_grad_(True)
        net.eval()
    assert exp.layers == [f"backbone.blocks.{i}" for i in (2, 4, 6)]
    assert exp.maps.shape == (1, 3, 128, 256) and torch.isfinite(exp.maps).all()
    assert not bool(exp.empty.any())
    maps = placement.map_to_image(exp.maps)[0]
    assert maps.shape == (3, 300, 451)
    with torch.no_grad():  # the explanation did not change what the model detects
        assert torch.equal(adapter.detect(x)[0].select([0, 1, 2]).scores, dets.scores)


def test_hooking_the_bifpn_explains_each_detection_at_its_own_level(nets):
    """ODAM's per-level maps: with every BiFPN output hooked, each detection's map is the one
    its own level alone gives."""
    net = nets["tf_efficientdet_d0"]
    adapter = EffDetAdapter(net, conf=0.0)
    x, _ = adapter.prepare(data.chelsea())
    dets = adapter.detect(x)[0]
    first = {level: i for i, level in reversed(list(enumerate(dets.levels)))}
    dets = dets.select(sorted(first.values())[:3])  # the best detection of three levels
    assert len(set(dets.levels)) == 3
    targets = adapter.targets(dets)
    exp = taskcam.explain(net, x, [targets], adapter.level_layers(), "odam")
    assert not bool(exp.empty.any())
    for t, target in enumerate(targets):
        alone = taskcam.explain(net, x, [[target]], [target.layer], "odam")
        torch.testing.assert_close(exp.maps[0, t], alone.maps[0, 0])


def test_a_bench_is_recognised_and_its_model_run(nets):
    net = nets["efficientdet_d0"]
    bench = effdet.DetBenchPredict(net)
    assert is_effdet(net) and is_effdet(bench) and not is_effdet(torch.nn.Linear(2, 2))
    assert family_of(net) == family_of(bench) == "effdet"
    adapter = detector_for(bench)
    assert type(adapter) is EffDetAdapter and adapter.model is net and adapter.detector is bench
    assert adapter.size == (256, 128) and adapter.class_names[1] == "person"
    assert adapter.class_names[90] == "toothbrush" and len(adapter.class_names) == 91
    with pytest.raises(TaskcamError, match=r"built for image_size 256x128 .* image_size=\(320"):
        EffDetAdapter(net, size=320)
    with pytest.raises(TaskcamError, match="expected 90 names .* got 3"):
        EffDetAdapter(net, class_names=["a", "b", "c"])


@pytest.fixture(scope="module")
def lite0_run(tmp_path_factory):
    """``effdet:tf_efficientdet_lite0`` with seeded random weights on the cat photo: its
    kept detections at a threshold that keeps three, and the command line's run."""
    folder = tmp_path_factory.mktemp("effdet")
    image = folder / "chelsea.png"
    Image.fromarray(data.chelsea()).save(image)
    torch.manual_seed(0)
    adapter = load_model("effdet:tf_efficientdet_lite0", weights="none").adapter
    x, placement = adapter.prepare(data.chelsea())
    scores = adapter.detect(x)[0].scores
    conf = float(scores[2] + scores[3]) / 2
    adapter.conf = conf
    dets = adapter.detect(x)[0]
    out = folder / "out"
    args = ["explain", str(image), "--model", "effdet:tf_efficientdet_lite0", "--weights", "none"]
    torch.manual_seed(0)
    assert main([*args, "--conf", str(conf), "--out", str(out)]) == 0
    return dets, placement, json.loads((out / "results.json").read_text()), out


def test_the_command_line_writes_one_record_per_kept_detection(lite0_run):
    dets, placement, results, out = lite0_run
    assert results["model"] == "effdet:tf_efficientdet_lite0" and results["methods"] == ["odam"]
    assert results["layers"] == [f"backbone.blocks.{i}" for i in (2, 4, 6)]
    records = results["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["detection"] * len(dets) == ["detection"] * 3
    boxes = placement.boxes_to_image(dets.boxes)
    for record, box, score, k in zip(records, boxes, dets.scores, dets.classes):
        assert record["score"] == pytest.approx(float(score))
        assert record["class_id"] == int(k) and record["class_name"] not in ("__background__",)
        assert record["box"] == pytest.approx([round(float(v), 2) for v in box], abs=0.01)
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300
        assert np.load(out / record["heatmap"]).shape == (300, 451)


def test_a_factory_returning_your_model_runs_fast_drise_from_the_command_line(
    nets, tmp_path, monkeypatch
):
    """``--model package.module:factory`` returning an EfficientDet (here effdet's D0 at
    256×128: 250 masked forwards stay quick), its detections matched in each masked output by
    D-RISE similarity."""
    (tmp_path / "my_effdet.py").write_text("MODEL = None\n\ndef net():\n    return MODEL\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_effdet

    monkeypatch.setattr(my_effdet, "MODEL", nets["efficientdet_d0"])
    image, out = tmp_path / "chelsea.png", tmp_path / "out"
    Image.fromarray(data.chelsea()).save(image)
    args = ["explain", str(image), "--model", "my_effdet:net", "--method", "fast-drise"]
    assert main([*args, "--conf", "0.1", "--targets", "0,1", "--out", str(out)]) == 0
    records = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    assert [r["method"] for r in records] == ["fast-drise"] * 2
    for record in records:
        heatmap = np.load(out / record["heatmap"])
        assert heatmap.shape == (300, 451) and 0 <= heatmap.min() < heatmap.max() <= 1


def test_a_factory_returning_a_bench_loads_its_model_with_effdet_preprocessing(
    nets, tmp_path, monkeypatch
):
    (tmp_path / "my_bench.py").write_text("MODEL = None\n\ndef bench():\n    return MODEL\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_bench

    net = nets["tf_efficientdet_d0"]
    monkeypatch.setattr(my_bench, "MODEL", effdet.DetBenchPredict(net))
    loaded = load_model("my_bench:bench")
    assert loaded.task == "detect" and isinstance(loaded.adapter, EffDetAdapter)
    assert loaded.model is net and loaded.preprocess.size == (128, 256)
    assert loaded.preprocess.mean == (0.485, 0.456, 0.406) and loaded.class_names[1] == "person"


def test_soft_nms_detections_equal_the_bench(nets):
    """effdet's Gaussian Soft-NMS (``soft_nms=True`` in the config): rescored detections."""
    net = nets["efficientdet_d0"]
    adapter, bench = EffDetAdapter(net, conf=0.0), effdet.DetBenchPredict(net)
    adapter.soft_nms = bench.soft_nms = True
    x = adapter.prepare(data.chelsea())[0].clone()
    dets = adapter.detect(x)[0]
    with torch.no_grad():
        rows = bench(x)[0]
    assert len(dets) == len(rows) == 100
    assert torch.equal(dets.boxes, rows[:, :4]) and torch.equal(dets.scores, rows[:, 4])
    assert torch.equal(dets.classes, rows[:, 5].long())
    plain = EffDetAdapter(net, conf=0.0).detect(x)[0]
    assert not torch.equal(plain.scores, dets.scores)  # rescored, not NMS'd


def test_weights_of_the_model_load_and_others_are_refused(tmp_path):
    torch.manual_seed(1)
    mine = load_effdet("tf_efficientdet_lite0", "none").model
    plain, bench = tmp_path / "lite0.pt", tmp_path / "bench.pth"
    torch.save(mine.state_dict(), plain)
    other = {k: torch.zeros_like(v) for k, v in mine.state_dict().items()}
    torch.save(  # as timm's CheckpointSaver saves effdet's training, a bench's state dict here
        {
            "epoch": 3,
            "state_dict": effdet.DetBenchPredict(mine).state_dict(),
            "state_dict_ema": other,
            "args": argparse.Namespace(model="tf_efficientdet_lite0", lr=0.01),
        },
        bench,
    )
    for path in (plain, bench):
        torch.manual_seed(2)  # other random weights, then the file's
        loaded = load_model("effdet:tf_efficientdet_lite0", weights=str(path)).model
        assert all(torch.equal(a, b) for a, b in zip(loaded.parameters(), mine.parameters()))
    with pytest.raises(TaskcamError, match=r"--weights .*lite0.pt does not fit effdet:tf_eff"):
        load_model("effdet:tf_efficientdet_d0", weights=str(plain))
    with pytest.raises(TaskcamError, match=r"--weights: no such file .*missing.pt"):
        load_model("effdet:tf_efficientdet_lite0", weights=str(tmp_path / "missing.pt"))


def test_bad_names_and_unfetchable_weights_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(TaskcamError, match=r"effdet:tf_efficientdet_d9: effdet has no model .*"):
        load_model("effdet:tf_efficientdet_d9", weights="none")
    with pytest.raises(TaskcamError, match=r"no pretrained weights for it; pass --weights none"):
        load_model("effdet:efficientdet_lite0")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache, and no way out
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    with pytest.raises(
        TaskcamError, match=r"could not load .* pretrained weights.* pass --weights none .*PATH"
    ):
        load_model("effdet:tf_efficientdet_lite0")
    with pytest.raises(TaskcamError, match=r"--size 256,256: .* built for image_size 320x320"):
        load_model("effdet:tf_efficientdet_lite0", weights="none", size=[256])
