"""Detectors as black boxes: ``--model onnx:PATH`` through ONNX Runtime and ``BlackBox`` around a
callable, explained by D-RISE only.

The real ONNX file is NudeNet's YOLOv8n export (``nudenet`` on PyPI ships it as ``320n.onnx``,
trained on people: faces, feet, armpits, ...); the photos are ultralytics' ``bus.jpg`` and
``zidane.jpg``, neither square.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import taskcam
from taskcam.adapters.blackbox import BlackBox, OnnxRuntimeModel, scores_decode
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.faithfulness import baseline_maps, target_faithfulness
from taskcam.models import load_model

pytest.importorskip("onnxruntime")
nudenet = pytest.importorskip("nudenet")
ultralytics = pytest.importorskip("ultralytics")

ONNX = Path(nudenet.__file__).parent / "320n.onnx"
ASSETS = Path(ultralytics.__file__).parent / "assets"
CONF = 0.1


def _rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(ASSETS / name)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def loaded():
    lm = load_model(f"onnx:{ONNX}")
    lm.adapter.conf = CONF
    return lm


def _predict(photo: str, size: int):
    from ultralytics import YOLO

    (theirs,) = YOLO(str(ONNX), task="detect").predict(
        str(ASSETS / photo), imgsz=size, conf=CONF, verbose=False, save=False
    )
    return theirs


def test_onnx_detections_equal_ultralytics_predict_through_onnx_runtime(tmp_path):
    """What `yolo predict` shows for the export (ultralytics runs it with ONNX Runtime too):
    the same boxes, scores and classes, row for row, in the CLI's records."""
    out = tmp_path / "out"
    args = ["explain", str(ASSETS / "bus.jpg"), "--model", f"onnx:{ONNX}", "--conf", str(CONF)]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    (item,) = results["items"]
    records = item["targets"]
    theirs = _predict("bus.jpg", 320)
    assert len(records) == len(theirs.boxes) >= 3
    assert results["methods"] == ["fast-drise"]  # a black box's default
    for r, box, score, cls in zip(
        records, theirs.boxes.xyxy.tolist(), theirs.boxes.conf.tolist(), theirs.boxes.cls
    ):
        assert r["kind"] == "detection" and r["class_name"] == theirs.names[int(cls)]
        assert np.allclose(r["box"], box, atol=0.5) and abs(r["score"] - score) < 1e-4
        x1, y1, x2, y2 = r["box"]
        assert 0 <= x1 < x2 <= item["width"] and 0 <= y1 < y2 <= item["height"]
        heat = np.load(out / r["heatmap"])
        assert heat.shape == (item["height"], item["width"]) and heat.max() > 0


def test_a_dynamic_export_at_another_size_equals_predict_at_that_size():
    lm = load_model(f"onnx:{ONNX}", size=[640])
    lm.adapter.conf = CONF
    x, placement = lm.adapter.prepare(_rgb("zidane.jpg"))
    assert x.shape[-2:] == (384, 640)
    (dets,) = lm.adapter.detect(x)
    theirs = _predict("zidane.jpg", 640)
    assert len(dets) == len(theirs.boxes) >= 3
    assert dets.classes.tolist() == theirs.boxes.cls.long().tolist()
    boxes = placement.boxes_to_image(dets.boxes)
    torch.testing.assert_close(boxes, theirs.boxes.xyxy, atol=0.5, rtol=0)
    torch.testing.assert_close(dets.scores, theirs.boxes.conf, atol=1e-4, rtol=0)


def test_onnx_runtime_equals_the_pytorch_rebuild_of_the_same_export(loaded):
    """The black box and `yolo:PATH.onnx` (the export rebuilt in PyTorch) read one file: the
    same detections, so the gradient maps of the one and the D-RISE maps of the other
    explain the same boxes."""
    rebuilt = load_model(f"yolo:{ONNX}").adapter
    rebuilt.conf = CONF
    image = _rgb("zidane.jpg")
    x, placement = loaded.adapter.prepare(image)
    x2, _ = rebuilt.prepare(image)
    assert x.shape == x2.shape == (1, 3, 192, 320)  # the minimal rectangle of a dynamic export
    ours, theirs = loaded.adapter.detect(x)[0], rebuilt.detect(x2)[0]
    assert ours.classes.tolist() == theirs.classes.tolist()
    torch.testing.assert_close(ours.boxes, theirs.boxes, atol=0.05, rtol=0)
    torch.testing.assert_close(ours.scores, theirs.scores, atol=1e-4, rtol=0)


def test_drise_maps_of_the_black_box_beat_random_and_centre_maps(loaded):
    """Deletion/insertion of each detection's own score on a real photo: D-RISE through ONNX
    Runtime orders pixels better than a random map, on average over the detections."""
    adapter = loaded.adapter
    x, _ = adapter.prepare(_rgb("bus.jpg"))
    dets = adapter.detect(x)[0]
    targets = adapter.targets(dets)
    torch.manual_seed(0)
    exp = taskcam.explain(adapter.model, x, [targets], method="drise", n_masks=300)
    maps = exp.maps[0]  # [K, h, w]
    assert maps.shape == (len(dets), *x.shape[-2:])

    def baselines(t):
        drawn = baseline_maps(dets.boxes[t], *x.shape[-2:])
        return torch.stack([drawn["random"], drawn["centre"]])

    rows = target_faithfulness(adapter.model, x, targets, maps, extra_maps=baselines)
    drise = np.mean([r[0].faithfulness for r in rows])
    random = np.mean([r[1].faithfulness for r in rows])
    assert drise > random + 0.2, (drise, random)


def test_gradient_and_layer_methods_are_refused_with_the_reason(tmp_path, capsys):
    image = str(ASSETS / "bus.jpg")
    base = ["explain", image, "--model", f"onnx:{ONNX}", "--out", str(tmp_path)]
    refusals = [
        (["--method", "gradcam,odam"], r"gradcam, odam: .* black box .* no gradients to take"),
        (["--method", "scorecam"], "scorecam: .*fast-drise, drise or rise"),
        (["--method", "drise", "--layer", "model.15"], "--layer model.15: .* without layers"),
    ]
    for extra, message in refusals:
        assert main([*base, *extra]) == 2
        assert re.search(message, capsys.readouterr().err), message
    with pytest.raises(TaskcamError, match="holds its weights already"):
        load_model(f"onnx:{ONNX}", weights="none")
    assert not (tmp_path / "results.json").exists()


def test_bad_files_are_named(tmp_path):
    with pytest.raises(TaskcamError, match=r"onnx:.*nowhere\.onnx: no such file"):
        load_model(f"onnx:{tmp_path / 'nowhere.onnx'}")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(TaskcamError, match=r"junk\.onnx: ONNX Runtime cannot load it"):
        load_model(f"onnx:{junk}")
    plain = tmp_path / "plain.onnx"
    _write_plain_onnx(plain)
    with pytest.raises(TaskcamError, match="not an ultralytics export.*decode="):
        load_model(f"onnx:{plain}")
    # with a decode the user names, the same file is a detector
    box = BlackBox.from_onnx(plain, _plain_decode, size=32, resize="stretch", conf=0.0, nms=False)
    x, _ = box.prepare(np.full((40, 30, 3), 255, np.uint8))
    (dets,) = box.detect(x)
    assert len(dets) == 1 and dets.boxes[0].tolist() == [4.0, 4.0, 20.0, 20.0]
    with pytest.raises(TaskcamError, match="takes a fixed 32x32 input"):
        box.set_size([64])


def _write_plain_onnx(path: Path, shape=(1, 3, 32, 32), metadata=None) -> None:
    """An ONNX file (without ultralytics metadata unless given): the mean of each channel of
    a fixed ``shape`` input."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], 3, 1, 1])
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "plain", [x], [y]))
    model.opset_import[0].version = 13
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def test_files_of_a_fixed_batch_and_static_rectangles(tmp_path):
    """A file that fixes its batch runs any number of images (the last chunk padded); a static
    export of a non-square input is refused by name, not failed on at every image."""
    batch4 = tmp_path / "batch4.onnx"
    _write_plain_onnx(batch4, shape=(4, 3, 32, 32))
    net = OnnxRuntimeModel(batch4)
    x = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(net(x)[:, :, 0, 0], x.mean(dim=(2, 3)))
    assert net(x[:1]).shape == (1, 3, 1, 1)
    wide = tmp_path / "wide.onnx"
    meta = {"task": "detect", "names": "{0: 'cat'}", "imgsz": "[480, 640]", "stride": "32"}
    _write_plain_onnx(wide, shape=(1, 3, 480, 640), metadata=meta)
    with pytest.raises(TaskcamError, match=r"wide\.onnx: a static export of a 480x640 input"):
        load_model(f"onnx:{wide}")
    # an image without boxes beside one with boxes: padded, not a reshape error mid-batch
    c = scores_decode()([(torch.zeros(0, 4), torch.zeros(0)), (torch.ones(2, 4), torch.rand(2, 3))])
    assert tuple(c.scores.shape) == (2, 2, 3) and float(c.scores[0].sum()) == 0.0


def _plain_decode(output: torch.Tensor) -> taskcam.Candidates:
    scores = output.flatten(1)[:, None, :]  # [B, 1, 3]: one box, three "class" scores
    boxes = torch.tensor([4.0, 4.0, 20.0, 20.0]).expand(len(output), 1, 4)
    return taskcam.Candidates(boxes, scores, nms=False)


def test_a_callable_known_only_by_its_detections_is_explained(tmp_path):
    """A detector seen only through its answers (here the zoo's Faster R-CNN, called without
    gradients, its final boxes with one score per class): the black box keeps exactly those
    detections, and D-RISE maps them at the image's size."""
    zoo = load_model("zoo:shapes-fasterrcnn")
    frcnn, names = zoo.model, zoo.class_names
    state = {k: v.clone() for k, v in frcnn.state_dict().items()}

    def service(x: torch.Tensor):  # per image: its boxes and their scores per class
        answers = []
        for out in frcnn(list(x)):
            scores = torch.zeros(len(out["boxes"]), len(names))
            scores[torch.arange(len(scores)), out["labels"]] = out["scores"]
            answers.append((out["boxes"], scores))
        return answers

    box = BlackBox(service, resize="none", conf=0.5, nms=False, class_names=names)
    from taskcam.data.shapes import HELDOUT_SEED, make_sample

    image = make_sample(0, seed=HELDOUT_SEED, size=256).image
    x, _ = box.prepare(image)
    (dets,) = box.detect(x)
    (theirs,) = frcnn(list(x))
    keep = theirs["scores"] > 0.5
    assert len(dets) == int(keep.sum()) >= 1
    torch.testing.assert_close(dets.boxes, theirs["boxes"][keep])
    assert dets.classes.tolist() == theirs["labels"][keep].tolist()
    exp = taskcam.explain(box.model, x, [box.targets(dets)], method="fast-drise", n_masks=48)
    assert exp.maps.shape == (1, len(dets), 256, 256) and torch.isfinite(exp.maps).all()
    assert all(torch.equal(v, state[k]) for k, v in frcnn.state_dict().items())
    with pytest.raises(TaskcamError, match=r"callable must return \(boxes, scores.*got Tensor"):
        scores_decode()(torch.zeros(3))


def test_the_session_survives_a_copy(loaded):
    """A run copies models (Ray, deep copies): the ONNX Runtime session is opened again."""
    import copy
    import pickle

    net = loaded.adapter.model
    assert isinstance(net, OnnxRuntimeModel) and list(net.parameters()) == []
    x = torch.rand(2, 3, 64, 96)
    for twin in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        torch.testing.assert_close(twin(x), net(x))


def test_drise_scores_a_perturbed_image_as_the_pytorch_rebuild_does(loaded):
    """One file, two runtimes: each detection's D-RISE score on a perturbed copy (what its map
    and its faithfulness are made of) is the same through ONNX Runtime as through PyTorch."""
    from taskcam.faithfulness import faithfulness_score

    rebuilt = load_model(f"yolo:{ONNX}").adapter
    rebuilt.conf = CONF
    x, _ = loaded.adapter.prepare(_rgb("bus.jpg"))
    noisy = (x + 0.3 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    pairs = zip(
        loaded.adapter.targets(loaded.adapter.detect(x)[0]), rebuilt.targets(rebuilt.detect(x)[0])
    )
    with torch.no_grad():
        ours, theirs = loaded.adapter.model(noisy), rebuilt.model.eval()(noisy)
        for a, b in pairs:
            torch.testing.assert_close(
                faithfulness_score(a)(ours), faithfulness_score(b)(theirs), atol=1e-4, rtol=0
            )
