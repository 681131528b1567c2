"""YOLOX through libreyolo (``yolox:NAME``, :mod:`taskcam.adapters.yolox`).

Models are libreyolo's own ``LibreYOLOX`` with seeded random weights (nothing is downloaded);
detections are compared with libreyolo's own ``predict`` on the same photo file.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

import taskcam
from taskcam.adapters.detection.families import detector_for, family_of
from taskcam.adapters.yolox import YoloxAdapter, is_yolox, load_yolox
from taskcam.adapters.yolox.adapter import BACKBONE, NECK
from taskcam.adapters.yolox.inputs import yolox_input
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

os.environ.setdefault("YOLO_OFFLINE", "1")
LibreYOLOX = pytest.importorskip("libreyolo.models.yolox.model").LibreYOLOX

GAINS = {"n": 1.1, "t": 1.0, "s": 1.0}  # alive but finite outputs for each size


def alive(size: str) -> LibreYOLOX:
    """libreyolo's YOLOX with seeded random convolutions of variance ``gain² / fan_in``:
    libreyolo's own initialisation leaves the features so flat that every cell scores the
    same (0.2698 for nano, whatever the photo)."""
    torch.manual_seed(0)
    wrapper = LibreYOLOX(None, size=size, device="cpu")
    for module in wrapper.model.modules():
        if isinstance(module, torch.nn.Conv2d):
            std = GAINS[size] / math.sqrt(module.weight[0].numel())
            torch.nn.init.normal_(module.weight, 0.0, std)
    wrapper.model.eval()
    return wrapper


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    """bus.jpg (810 × 1080) as ultralytics ships it; chelsea (451 × 300) and astronaut
    (512 × 512) as PNG files."""
    import ultralytics

    folder = tmp_path_factory.mktemp("photos")
    out = {"bus": Path(ultralytics.__file__).parent / "assets" / "bus.jpg"}
    for name in ("chelsea", "astronaut"):
        out[name] = folder / f"{name}.png"
        Image.fromarray(getattr(data, name)()).save(out[name])
    return out


@pytest.fixture(scope="module")
def nano() -> LibreYOLOX:
    return alive("n")


@pytest.fixture(scope="module")
def nano_checkpoint(nano, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "yolox_nano.pt"
    torch.save({"model": nano.model.state_dict()}, path)
    return path


def rgb(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("RGB"))


@pytest.mark.parametrize(
    ("size", "photo", "conf"),
    [("n", "chelsea", 0.3), ("t", "bus", 0.7), ("s", "chelsea", 0.5), ("s", "astronaut", 0.6)],
)
def test_detections_equal_libreyolos_predict(photos, size, photo, conf):
    """Boxes (image pixels), scores and classes bit for bit, in libreyolo's order; at
    ``t``/bus all 300 (``max_det``) of the cells above the threshold."""
    wrapper = alive(size)
    theirs = wrapper(str(photos[photo]), conf=conf, imgsz=320).boxes
    adapter = YoloxAdapter(wrapper, size=320, conf=conf)
    x, placement = adapter.prepare(rgb(photos[photo]))
    ours = adapter.detect(x)[0]
    assert len(ours) == len(theirs.conf) >= 5
    assert torch.equal(placement.boxes_to_image(ours.boxes), theirs.xyxy)
    assert torch.equal(ours.scores, theirs.conf)
    assert torch.equal(ours.classes.float(), theirs.cls)
    assert set(ours.levels) <= set(NECK)


def test_the_input_is_libreyolos_and_maps_come_back_to_the_photo(photos):
    """Top-left, gray 114 below and right, BGR in [0, 255]: libreyolo's own preprocessing of
    the file; a map's image part is cropped back to the photo's size."""
    from libreyolo.models.yolox.utils import preprocess_image

    x, placement = yolox_input(rgb(photos["chelsea"]), 320)
    theirs, _, (width, height), ratio = preprocess_image(str(photos["chelsea"]), 320)
    assert torch.equal(x, theirs) and ratio == placement.ratio
    assert (placement.new_width, placement.new_height) == (320, 212)
    assert bool((x[..., 212:, :] == 114).all()) and not bool((x[..., 211, :] == 114).all())
    ramp = torch.arange(320.0).expand(320, 320)  # a map growing left to right
    back = placement.map_to_image(ramp)
    assert back.shape == (height, width) == (300, 451) and back[0, -1] > 300
    with pytest.raises(TaskcamError, match="multiple of 32"):
        yolox_input(rgb(photos["chelsea"]), 300)


def test_an_input_made_elsewhere_is_clipped_to_itself(photos, nano):
    """A tensor :meth:`prepare` did not make is taken as a whole image: for a square photo
    the detections are the same."""
    adapter = YoloxAdapter(nano, size=320, conf=0.3)
    x, _ = adapter.prepare(rgb(photos["astronaut"]))
    ours, again = adapter.detect(x)[0], adapter.detect(x.clone())[0]
    assert len(ours) > 0 and torch.equal(ours.candidates, again.candidates)


def test_targets_read_their_own_cell_and_level(photos):
    wrapper = alive("t")
    adapter = YoloxAdapter(wrapper, size=256, conf=0.75)
    x, _ = adapter.prepare(rgb(photos["astronaut"]))
    dets = adapter.detect(x)[0].select([0, 1, 2])
    with torch.no_grad():
        out = wrapper.model(x)
    torch.testing.assert_close(torch.cat([t(out) for t in adapter.targets(dets)]), dets.scores)
    cells = adapter.candidates(out)
    objectness = torch.cat([t(out) for t in adapter.targets(dets, "objectness")])
    torch.testing.assert_close(objectness, cells.objectness[0, dets.candidates])
    y2 = torch.cat([t(out) for t in adapter.targets(dets, "y2")])
    torch.testing.assert_close(y2, dets.boxes[:, 3])
    targets = adapter.targets(dets)
    assert [t.layer for t in targets] == dets.levels and set(dets.levels) <= set(NECK)
    exp = taskcam.explain(wrapper.model, x, [targets], adapter.default_layers(), method="odam")
    assert exp.layers == list(BACKBONE) and exp.maps.shape == (1, 3, 256, 256)
    assert not bool(exp.empty.any())


def test_the_users_model_comes_back_unchanged(photos):
    """A wrapper as libreyolo builds it (training mode), with a hook and a frozen layer."""
    torch.manual_seed(0)
    wrapper = LibreYOLOX(None, size="n", device="cpu")
    net = wrapper.model
    net.head.stems[0].conv.weight.requires_grad_(False)
    seen = []
    handle = net.backbone.C3_p3.register_forward_hook(lambda *a: seen.append(1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    adapter = YoloxAdapter(wrapper, size=64)
    x, _ = adapter.prepare(rgb(photos["chelsea"]))
    targets = adapter.targets(adapter.detect(x)[0].select([0]))
    for method in ("gradcam", "fast-drise"):
        taskcam.explain(net, x, [targets], adapter.default_layers(), method=method)
    assert [m.training for m in net.modules()] == modes and net.training
    assert [p.requires_grad for p in net.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # BN stats too
    assert len(net.backbone.C3_p3._forward_hooks) == 1 and seen
    handle.remove()
    assert adapter.detector is wrapper and adapter.model is net


def test_the_registry_knows_the_wrapper_and_its_module(nano):
    assert is_yolox(nano) and is_yolox(nano.model) and not is_yolox(nano.model.backbone)
    assert family_of(nano) == family_of(nano.model) == "yolox"
    adapter = detector_for(nano.model, size=320)
    assert type(adapter) is YoloxAdapter and adapter.size == 320 and adapter.family == "yolox"
    assert adapter.class_names[0] == "person" and len(adapter.class_names) == 80
    assert YoloxAdapter(nano).size == 416  # libreyolo's nano input
    with pytest.raises(TaskcamError, match="expected libreyolo's LibreYOLOX"):
        YoloxAdapter(nano.model.backbone)


def run(args: list[str], out: Path) -> list[dict]:
    assert main(["explain", *args, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["items"][0]["targets"]


def check_records(records: list[dict], out: Path, what: str = "score") -> None:
    for record in records:
        x1, y1, x2, y2 = record["box"]
        assert record["kind"] == "detection" and record.get("explains", "score") == what
        assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300
        assert record.get("layer", NECK[0]) in NECK and not record["empty"]  # its level
        assert np.load(out / record["heatmap"]).shape == (300, 451)


def test_the_cli_explains_random_weights(photos, tmp_path):
    """``--model yolox:nano --weights none``, the default method (ODAM at each level)."""
    torch.manual_seed(0)
    out = tmp_path / "out"
    args = [str(photos["chelsea"]), "--model", "yolox:nano", "--weights", "none"]
    records = run([*args, "--size", "64", "--targets", "0,1"], out)
    assert [r["index"] for r in records] == [0, 1]
    for record in records:
        x1, y1, x2, y2 = record["box"]
        assert record["kind"] == "detection" and record["method"] == "odam"
        assert 0 <= x1 < x2 <= 451 and 0 <= y1 < y2 <= 300
        assert np.load(out / record["heatmap"]).shape == (300, 451)


@pytest.mark.parametrize(
    ("extra", "what"),
    [(["--method", "fast-drise"], "score"), (["--what", "objectness"], "objectness")],
)
def test_the_cli_explains_each_kept_detection(photos, nano_checkpoint, tmp_path, extra, what):
    """One record per detection the adapter keeps at that size and threshold."""
    weights = ["--weights", str(nano_checkpoint), "--size", "64", "--conf", "0.3"]
    loaded = load_model("yolox:nano", str(nano_checkpoint), size=[64])
    loaded.adapter.conf = 0.3
    x, _ = loaded.adapter.prepare(rgb(photos["chelsea"]))
    kept = loaded.adapter.detect(x)[0]
    out = tmp_path / "out"
    records = run([str(photos["chelsea"]), "--model", "yolox:nano", *weights, *extra], out)
    assert len(records) == len(kept) >= 2
    assert [r["score"] for r in records] == pytest.approx(kept.scores.tolist())
    check_records(records, out, what)


def test_a_checkpoint_loads_as_a_model_or_as_weights(nano, nano_checkpoint):
    for loaded in (
        load_model(f"yolox:{nano_checkpoint}"),
        load_model("yolox:nano", weights=str(nano_checkpoint)),
    ):
        assert loaded.task == "detect" and loaded.spec.startswith("yolox:")
        assert loaded.preprocess.size == (416, 416) and loaded.class_names[1] == "bicycle"
        state = loaded.model.state_dict()
        for key, value in nano.model.state_dict().items():
            assert torch.equal(state[key], value), key


@pytest.mark.parametrize(
    ("spec", "weights", "message"),
    [
        ("yolox:huge", "none", r"no YOLOX size or checkpoint file named 'huge'.* nano \(n\)"),
        ("yolox:s", "missing.pt", r"--weights missing.pt: no such checkpoint file missing.pt"),
        ("yolox:s", "CKPT", r"holds YOLOX-n weights, not YOLOX-s; pass --model yolox:n"),
        ("yolox:CKPT", "none", r"holds its weights already; drop --weights"),
        ("yolox:s", "NOT_YOLOX", r"holds no YOLOX weights"),
    ],
)
def test_bad_input_says_what_is_wrong(nano_checkpoint, tmp_path, spec, weights, message):
    other = tmp_path / "other.pt"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, other)
    spec = spec.replace("CKPT", str(nano_checkpoint))
    weights = {"CKPT": str(nano_checkpoint), "NOT_YOLOX": str(other)}.get(weights, weights)
    with pytest.raises(TaskcamError, match=message):
        load_model(spec, weights=weights)


def test_pretrained_weights_offline_say_what_to_pass(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no ./weights/LibreYOLOXs.pt here
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TaskcamError, match=r"yolox:s: .*LibreYOLOXs.pt.* --weights none"):
        load_model("yolox:s")
    assert not (tmp_path / "weights").exists()


FACTORIES = """
from taskcam.adapters.yolox import YoloxAdapter

MODEL = None

def wrapped():
    return YoloxAdapter(MODEL, size=64)

def wrapper():
    return MODEL

def module():
    return MODEL.model
"""


@pytest.fixture
def factories(nano, tmp_path, monkeypatch):
    (tmp_path / "my_yolox.py").write_text(FACTORIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_yolox

    monkeypatch.setattr(my_yolox, "MODEL", nano)
    return my_yolox


def test_a_factory_returning_the_adapter_is_recognised(factories, nano, photos, tmp_path):
    loaded = load_model("my_yolox:wrapped")
    assert loaded.task == "detect" and loaded.model is nano.model
    assert loaded.adapter.detector is nano and loaded.preprocess.size == (64, 64)


@pytest.mark.parametrize("name", ["wrapper", "module"])
def test_a_factory_returning_libreyolos_model_is_recognised(factories, name):
    loaded = load_model(f"my_yolox:{name}")
    assert loaded.task == "detect" and isinstance(loaded.adapter, YoloxAdapter)


def test_yolox_names_and_load_yolox_directly():
    loaded = load_yolox("yolox-tiny", "none")
    assert loaded.spec == "yolox:yolox-tiny" and loaded.preprocess.size == (416, 416)
    assert loaded.model.config == "t" and not loaded.model.training
    assert loaded.adapter.default_layers() == list(BACKBONE)
    assert loaded.adapter.level_layers() == list(NECK)
