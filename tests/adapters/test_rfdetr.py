"""RF-DETR through ``rfdetr:NAME``: one target per kept detection, equal to rfdetr's own predict.

Real ``rfdetr.RFDETRNano`` models (the smallest RF-DETR) with seeded random weights, built
offline. Random weights leave the learned reference boxes of the queries that do not start from a
feature cell's proposal at zero (empty boxes), so detections are compared where every query has a
proposal: at the 384-pixel resolution of ``predict`` (576 cells for 300 queries), at 256 x 320 on
the command line, and at 64 pixels with RF-DETR Nano built with 16 queries (rfdetr's own
``num_queries`` option), which also makes the 250 masked forwards of fast-drise quick.
"""

from __future__ import annotations

import json
import socket
import warnings

import numpy as np
import pytest
import torch

import taskcam
from taskcam.adapters.detection.families import detector_for, family_of
from taskcam.adapters.rfdetr import RFDETRAdapter, is_rfdetr, load_rfdetr
from taskcam.adapters.rfdetr.adapter import RFDETRTarget, class_names_by_id
from taskcam.capture import predict
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.io import read_image
from taskcam.models import load_model

rfdetr = pytest.importorskip("rfdetr")

SIZE = 64  # the 16-query model's input side: 4 x 4 cells, one proposal each


def _nano(seed, **options):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return rfdetr.RFDETRNano(pretrain_weights=None, device="cpu", **options)


@pytest.fixture(scope="module")
def rf():
    """RF-DETR Nano with random weights, seeded as the command-line run seeds its own."""
    return _nano(0)


@pytest.fixture(scope="module")
def rf16():
    """RF-DETR Nano with 16 queries (and 16 pairs kept), random weights."""
    return _nano(1, num_queries=16, num_select=16)


@pytest.fixture(scope="module")
def photo(chelsea_png):
    return read_image(chelsea_png)  # 300 x 451 RGB, as the command line reads it


def _kept(adapter, image, keep):
    """Set ``adapter.conf`` between the ``keep``-th and the next pair's score on ``image``;
    return the ``keep`` detections and the placement."""
    x, placement = adapter.prepare(image)
    candidates = adapter.candidates(predict(adapter.model, x))
    best = candidates.scores.flatten().sort(descending=True).values
    assert float(best[keep - 1]) > float(best[keep])  # no tie at the cut
    adapter.conf = float((best[keep - 1] + best[keep]) / 2)
    dets = adapter.select(candidates)[0]
    assert len(dets) == keep and (dets.boxes[:, 2:] - dets.boxes[:, :2]).min() > 1  # not points
    return dets, placement


def test_detections_equal_rfdetrs_own_predict(rf, photo):
    adapter = RFDETRAdapter(rf)
    assert adapter.size == 384 and adapter.conf == 0.5  # predict's resolution and threshold
    assert adapter.detector is rf and adapter.model is rf.model.model
    ours, placement = _kept(adapter, photo, 4)
    theirs = rf.predict(photo, threshold=adapter.conf)
    assert len(theirs) == 4
    boxes = placement.boxes_to_image(ours.boxes).numpy()
    np.testing.assert_allclose(boxes, theirs.xyxy, atol=1e-3, rtol=0)  # best first, as theirs
    np.testing.assert_array_equal(ours.scores.numpy(), theirs.confidence)
    np.testing.assert_array_equal(ours.classes.numpy(), theirs.class_id)
    names = [adapter.class_names[k] for k in ours.classes.tolist()]
    assert names == list(theirs.data["class_name"])
    assert rf.model.model.training is False


def test_class_ids_are_cocos_category_ids_as_predict_names_them(rf):
    names = class_names_by_id(rf.class_names, 90)
    assert len(names) == 91 and names[1] == "person" and names[18] == "dog"
    assert names[90] == "toothbrush" and names[0] == names[12] == ""  # ids COCO left unused
    assert class_names_by_id(["cat", "dog"], 2) == ["cat", "dog", "__background__"]


def test_random_weights_are_rfdetrs_own_model(rf):
    torch.manual_seed(0)
    loaded = load_rfdetr("Nano", "none")
    ours, theirs = loaded.model.state_dict(), rf.model.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert loaded.task == "detect" and loaded.adapter.detector is loaded.model
    assert loaded.preprocess.size == (384, 384) and list(loaded.preprocess.mean) == rf.means
    assert loaded.class_names == class_names_by_id(rf.class_names, 90)
    assert family_of(rf) == family_of(loaded.model) == "rfdetr"
    assert is_rfdetr(rf) and not is_rfdetr(torch.nn.Linear(2, 2))


def test_each_detection_is_its_query_and_the_model_comes_back_as_it_was(rf16, photo):
    net = rf16.model.model.train()
    frozen = net.backbone[0].encoder.encoder.embeddings.patch_embeddings.projection.weight
    frozen.requires_grad_(False)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        adapter = detector_for(rf16, size=SIZE)
        assert isinstance(adapter, RFDETRAdapter) and adapter.size == SIZE
        dets, _ = _kept(adapter, photo, 3)
        targets = adapter.targets(dets)
        assert all(type(t) is RFDETRTarget for t in targets)
        x, _ = adapter.prepare(photo)
        out = predict(net, x)
        torch.testing.assert_close(torch.cat([t(out) for t in targets]), dets.scores)
        sides = torch.cat([t(out) for t in adapter.targets(dets, "y2")])
        torch.testing.assert_close(sides, dets.boxes[:, 3], atol=1e-4, rtol=0)
        exp = taskcam.explain(net, x, [targets], adapter.default_layers(), method="gradcam")
        assert exp.layers == ["backbone.0.projector.stages.0"]
        assert exp.maps.shape == (1, 3, SIZE, SIZE) and torch.isfinite(exp.maps).all()
        assert not bool(exp.empty.any())
        # the user's model: mode, flags, hooks and weights as they were
        assert net.training and all(m.training for m in net.modules())
        assert not frozen.requires_grad and net.class_embed.weight.requires_grad
        assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())
        after = net.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        net.eval()
        frozen.requires_grad_(True)


def test_detr_attention_is_refused_saying_why(rf16):
    x = torch.zeros(1, 3, SIZE, SIZE)
    targets = [[RFDETRTarget(0, 1, size=(SIZE, SIZE))]]
    with pytest.raises(TaskcamError, match=r"detr-attention: .*LWDETR \(rfdetr\).*deformable"):
        taskcam.explain(rf16.model.model, x, targets, method="detr-attention")


def _records(out, adapter, dets, placement, method):
    """results.json's records, checked against the adapter's own detections ``dets``."""
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == ["backbone.0.projector.stages.0"]
    records = result["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["detection"] * len(dets)
    boxes = placement.boxes_to_image(dets.boxes).tolist()
    for record, box, k in zip(records, boxes, dets.classes.tolist()):
        assert record["class_name"] == adapter.class_names[k] and record["method"] == method
        assert record["box"] == pytest.approx(box, abs=1e-2)
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300
        heatmap = np.load(out / record["heatmap"])
        assert heatmap.shape == (300, 451) and np.isfinite(heatmap).all() and heatmap.max() > 0


def test_the_command_line_explains_each_detection(rf, photo, chelsea_png, tmp_path):
    adapter = RFDETRAdapter(rf, size=(256, 320))  # 16 x 20 cells: a proposal for each query
    dets, placement = _kept(adapter, photo, 2)
    out = tmp_path / "out"
    args = ["explain", str(chelsea_png), "--model", "rfdetr:nano", "--weights", "none"]
    args += ["--size", "256,320", "--conf", repr(adapter.conf), "--method", "gradcam"]
    torch.manual_seed(0)  # the model rf is
    assert main([*args, "--no-progress", "--out", str(out)]) == 0
    _records(out, adapter, dets, placement, "gradcam")


def test_fast_drise_from_the_command_line_and_a_factory(rf16, photo, chelsea_png, tmp_path):
    (tmp_path / "my_rfdetr.py").write_text(
        "from taskcam.adapters.rfdetr import RFDETRAdapter\n\n"
        "MODEL = None\n\n"
        "def build():\n"
        f"    return RFDETRAdapter(MODEL, size={SIZE})\n"
    )
    adapter = RFDETRAdapter(rf16, size=SIZE)
    dets, placement = _kept(adapter, photo, 2)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(tmp_path))
        import my_rfdetr

        patch.setattr(my_rfdetr, "MODEL", rf16)
        loaded = load_model("my_rfdetr:build")
        assert loaded.task == "detect" and loaded.model is rf16.model.model
        assert loaded.preprocess.size == (SIZE, SIZE) and loaded.adapter.detector is rf16
        out = tmp_path / "out"
        args = ["explain", str(chelsea_png), "--model", "my_rfdetr:build", "--conf"]
        args += [repr(adapter.conf), "--method", "fast-drise", "--batch-size", "125"]
        assert main([*args, "--no-progress", "--out", str(out)]) == 0
    _records(out, adapter, dets, placement, "fast-drise")


def test_bad_names_sizes_and_weights_are_refused_naming_them(rf16, tmp_path):
    with pytest.raises(TaskcamError, match=r"rfdetr:huge: no RF-DETR named 'huge'; .*nano"):
        load_model("rfdetr:huge", weights="none")
    missing = tmp_path / "missing.pth"
    with pytest.raises(TaskcamError, match=f"--weights: no such file {missing}"):
        load_model("rfdetr:nano", weights=str(missing))
    with pytest.raises(TaskcamError, match=r"--size 100,100: .*multiples of 32"):
        RFDETRAdapter(rf16, size=100)
    with pytest.raises(TaskcamError, match=r"a Linear is not an RF-DETR model"):
        RFDETRAdapter(torch.nn.Linear(2, 2))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(TaskcamError, match=f"--weights {junk}: not an RF-DETR nano checkpoint"):
        load_model("rfdetr:nano", weights=str(junk))


def test_a_checkpoint_loads_as_rfdetr_loads_it(rf, tmp_path):
    path = tmp_path / "nano.pth"
    torch.save({"model": rf.model.model.state_dict()}, path)
    loaded = load_model("rfdetr:nano", weights=str(path))
    assert type(loaded.adapter.detector).__name__ == "RFDETRNano"
    ours, theirs = loaded.model.state_dict(), rf.model.model.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def _online() -> bool:
    try:
        socket.getaddrinfo("storage.googleapis.com", 443)
    except OSError:
        return False
    return True


@pytest.mark.skipif(_online(), reason="this machine could download rfdetr's weights (100 MB)")
def test_pretrained_weights_offline_say_what_to_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("RF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(
        TaskcamError, match=r"rfdetr:nano: could not load its pretrained weights.* --weights none"
    ):
        load_model("rfdetr:nano")


def test_a_factory_returning_the_rfdetr_model_or_its_module_is_recognised(
    rf16, tmp_path, monkeypatch
):
    (tmp_path / "my_rfdetr_bare.py").write_text(
        "MODEL = None\n\ndef bare():\n    return MODEL\n\ndef module():\n"
        "    return MODEL.model.model\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_rfdetr_bare

    monkeypatch.setattr(my_rfdetr_bare, "MODEL", rf16)
    for attr in ("bare", "module"):
        loaded = load_model(f"my_rfdetr_bare:{attr}")
        assert loaded.task == "detect" and isinstance(loaded.adapter, RFDETRAdapter)
        assert loaded.model is rf16.model.model and loaded.preprocess.size == (384, 384)
        assert loaded.adapter.max_det == 16  # num_select, or the module's query count
    assert loaded.class_names[1] == "person"
