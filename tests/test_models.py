"""Model specs, weights loading and the zoo."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from skimage import data

from taskcam.errors import TaskcamError
from taskcam.io import to_tensor
from taskcam.models import imagenet_class_names, load_model, load_weights
from taskcam.zoo import available_zoo, build_zoo_model


def test_torchvision_spec_random_weights_has_preprocessing_and_names():
    lm = load_model("torchvision:resnet18", weights="none")
    assert lm.task == "classify"
    assert lm.preprocess.size == (224, 224)
    assert lm.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))
    assert lm.class_names[285] == "Egyptian cat"
    assert not lm.model.training


def test_torchvision_detection_spec_reports_detect_task():
    lm = load_model("torchvision:fasterrcnn_mobilenet_v3_large_320_fpn", weights="none")
    assert lm.task == "detect"
    # its preprocessing is its transform's: short side 320, long side at most 640
    assert lm.preprocess.size == (320, 640)
    assert lm.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_torchvision_detector_overrides_reach_its_transform():
    spec = "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn"
    lm = load_model(spec, weights="none", size=[128], mean=[0.5] * 3, std=[0.25] * 3)
    t = lm.model.transform
    assert (t.min_size, t.max_size) == ((128,), 128)
    assert t.image_mean == [0.5] * 3 and t.image_std == [0.25] * 3
    assert lm.preprocess.size == (128, 128) and lm.preprocess.std == (0.25,) * 3
    # the model resizes with them: a 300x200 image comes in at 128x85
    out = lm.model.transform([torch.rand(3, 200, 300)])[0]
    assert out.image_sizes == [(85, 128)]


def test_factory_detectors_are_recognised(tmp_path, monkeypatch):
    (tmp_path / "my_detectors.py").write_text(
        "from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_fpn\n"
        "from ultralytics import YOLO\n\n"
        "def rcnn():\n"
        "    return fasterrcnn_mobilenet_v3_large_fpn(\n"
        "        weights=None, weights_backbone=None, num_classes=3, min_size=96, max_size=96\n"
        "    )\n\n"
        "def yolo():\n"
        "    return YOLO('yolov8n.yaml')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rcnn = load_model("my_detectors:rcnn")
    assert rcnn.task == "detect" and rcnn.preprocess.size == (96, 96)
    yolo = load_model("my_detectors:yolo")
    assert yolo.task == "detect" and type(yolo.model).__name__ == "DetectionModel"
    assert yolo.preprocess.size == (640, 640) and len(yolo.class_names) == 80


def test_timm_spec_random_weights_reads_data_config():
    lm = load_model("timm:resnet18", weights="none", size=[96], mean=[0.5, 0.5, 0.5])
    assert lm.preprocess.size == (96, 96)
    assert lm.preprocess.mean == (0.5, 0.5, 0.5)
    assert lm.preprocess.std == pytest.approx((0.229, 0.224, 0.225))


def test_size_builds_a_timm_transformer_for_it_and_is_refused_where_fixed():
    vit = load_model("timm:vit_tiny_patch16_224", weights="none", size=[224, 320])
    assert vit.model.patch_embed.grid_size == (14, 20)
    assert vit.reshape.grid == (14, 20) and vit.layers == ["blocks.11.norm1"]
    # torchvision's ViT checks its size at every forward
    with pytest.raises(TaskcamError, match="--size 224,320: torchvision:vit_b_16 does not take"):
        load_model("torchvision:vit_b_16", weights="none", size=[224, 320])


def test_factory_spec_and_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    lm = load_model("torchvision.models:resnet18")
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "state_dict": lm.model.state_dict()}, path)
    other = load_model("torchvision.models:resnet18", weights=str(path))
    for a, b in zip(lm.model.state_dict().values(), other.model.state_dict().values()):
        assert torch.equal(a, b)


def test_safetensors_weights(tmp_path):
    from safetensors.torch import save_file

    net = torch.nn.Linear(3, 2)
    save_file(net.state_dict(), str(tmp_path / "w.safetensors"))
    fresh = load_weights(torch.nn.Linear(3, 2), tmp_path / "w.safetensors")
    assert torch.equal(fresh.weight, net.weight)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("resnet18", "expected timm:NAME"),
        ("torchvision:resnet_does_not_exist", "no model named"),
        ("timm:not_a_model_xyz", "no model named"),
        ("zoo:nothing", "the zoo has: efficientnet-lite0"),
        ("no_such_module_xyz:factory", "cannot import"),
        ("yolo:best.pt", "YOLO weights .best.pt. not found"),
    ],
)
def test_bad_specs_are_named(spec, message):
    with pytest.raises(TaskcamError, match=message):
        load_model(spec, weights="none")


def test_weights_that_do_not_fit_are_named(tmp_path):
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / "w.pt")
    with pytest.raises(TaskcamError, match="w.pt does not fit"):
        load_weights(torch.nn.Linear(4, 2), tmp_path / "w.pt")
    with pytest.raises(TaskcamError, match="no such file"):
        load_weights(torch.nn.Linear(4, 2), tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(TaskcamError, match="cannot read"):
        load_weights(torch.nn.Linear(4, 2), tmp_path / "junk.pt")


def test_bad_overrides_are_named():
    with pytest.raises(TaskcamError, match="--mean"):
        load_model("torchvision:resnet18", weights="none", mean=[0.5, 0.5])
    with pytest.raises(TaskcamError, match="--size"):
        load_model("torchvision:resnet18", weights="none", size=[2])
    with pytest.raises(TaskcamError, match="--mean/--std: zoo:shapes-yolo is an ultralytics"):
        load_model("zoo:shapes-yolo", mean=[0.5] * 3)
    with pytest.raises(TaskcamError, match="--device nonsense: Expected one of cpu"):
        load_model("torchvision:resnet18", weights="none", device="nonsense")


def test_imagenet_names_are_offline():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[281] == "tabby"


def test_zoo_lists_efficientnet_lite0():
    assert "efficientnet-lite0" in [e.name for e in available_zoo()]


def test_zoo_efficientnet_lite0_real_weights_top1_on_chelsea():
    """The shipped ImageNet weights load into timm's EfficientNet-Lite0: chelsea is a cat."""
    lm = build_zoo_model("efficientnet-lite0")
    x = to_tensor(data.chelsea(), lm.preprocess.size, lm.preprocess.mean, lm.preprocess.std)
    with torch.no_grad():
        probs = lm.model.eval()(x).softmax(dim=1)[0]
    top = probs.topk(3).indices.tolist()
    assert top[0] == 285, [lm.class_names[i] for i in top]
    assert set(top) <= {281, 282, 285, 287}  # all cats
    assert float(probs[285]) > 0.3


def test_zoo_random_weights_differ_from_real():
    real = build_zoo_model("efficientnet-lite0").model.conv_stem.weight
    rand = build_zoo_model("efficientnet-lite0", pretrained=False).model.conv_stem.weight
    assert not np.allclose(real.detach().numpy(), rand.detach().numpy())


def test_mean_and_std_reach_the_detectors_that_normalise_and_are_refused_by_raw_pixels():
    """EfficientDet normalises in its adapter's prepare: --mean/--std change its input; YOLOX
    (BGR in [0, 255]) and an ultralytics ONNX export ([0, 1]) take none, and say so."""
    pytest.importorskip("effdet")
    image = np.full((64, 64, 3), 128, np.uint8)
    plain = load_model("effdet:tf_efficientdet_lite0", weights="none").adapter
    moved = load_model("effdet:tf_efficientdet_lite0", "none", mean=[0.0] * 3, std=[1.0] * 3)
    assert moved.adapter.mean == (0.0,) * 3 and plain.mean != moved.adapter.mean
    x0, _ = plain.prepare(image)
    x1, _ = moved.adapter.prepare(image)
    assert abs(float(x1.max()) - 128 / 255) < 1e-3 and not torch.allclose(x0, x1)
    pytest.importorskip("libreyolo")
    with pytest.raises(TaskcamError, match="--mean/--std: yolox:nano is a YOLOX, which takes BGR"):
        load_model("yolox:nano", weights="none", std=[2.0] * 3)
    nudenet = pytest.importorskip("nudenet")
    onnx = f"onnx:{os.path.join(os.path.dirname(nudenet.__file__), '320n.onnx')}"
    with pytest.raises(TaskcamError, match="is an ultralytics YOLO, which takes pixels in"):
        load_model(onnx, mean=[0.5] * 3)
