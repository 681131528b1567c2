"""Segmentation adapter: region targets on real smp and torchvision models and the shapes Unet."""

import json

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import torchvision

from taskcam import explain
from taskcam.adapters.segmentation import (
    RegionTarget,
    box_region,
    component_regions,
    default_segmentation_layers,
    parse_classes,
    pixel_region,
    region_targets,
    seg_logits,
)
from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.errors import TaskcamError
from taskcam.metrics import energy_pointing_game
from taskcam.models import load_model

SMP_ARCHS = [
    ("Unet", "resnet18", 64),
    ("UnetPlusPlus", "resnet18", 64),
    ("MAnet", "resnet18", 64),
    ("Linknet", "resnet18", 64),
    ("FPN", "resnet18", 64),
    ("PSPNet", "resnet18", 64),
    ("PAN", "resnet18", 128),
    ("DeepLabV3", "resnet18", 64),
    ("DeepLabV3Plus", "resnet18", 64),
    ("UPerNet", "resnet18", 64),
    ("Segformer", "resnet18", 64),
    ("DPT", "tu-vit_tiny_patch16_224", 224),
]
TORCHVISION = [
    "fcn_resnet50",
    "fcn_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
]


def test_every_smp_architecture_is_covered():
    archs = {a for a, _, _ in SMP_ARCHS}
    listed = {n for n in dir(smp) if isinstance(getattr(smp, n), type)}
    assert listed <= archs, sorted(listed - archs)


@pytest.mark.parametrize("arch,encoder,size", SMP_ARCHS)
def test_smp_models_explain_every_class_with_defaults(arch, encoder, size):
    torch.manual_seed(0)
    net = getattr(smp, arch)(encoder, encoder_weights=None, classes=3).eval()
    x = torch.rand(1, 3, size, size)
    targets = region_targets(net(x), [0, 1, 2])
    exp = explain(net, x, targets, layers=default_segmentation_layers(net))
    assert exp.maps.shape == (1, 3, size, size)
    assert torch.isfinite(exp.maps).all()
    assert not net.training


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_with_dict_outputs_and_aux_heads(name):
    torch.manual_seed(0)
    builder = getattr(torchvision.models.segmentation, name)
    kwargs = {} if name.startswith("lraspp") else {"aux_loss": True}
    net = builder(weights=None, weights_backbone=None, num_classes=4, **kwargs).eval()
    x = torch.rand(1, 3, 96, 80)  # not square
    out = net(x)
    assert isinstance(out, dict)
    targets = region_targets(out, "all")
    exp = explain(net, x, targets, layers=default_segmentation_layers(net))
    assert exp.maps.shape == (1, len(targets[0]), 96, 80)
    assert torch.isfinite(exp.maps).all()


def test_region_score_is_the_sum_of_class_logits_over_the_region():
    logits = torch.randn(2, 3, 5, 6)
    pred = logits.argmax(1)
    target = RegionTarget(2)
    expected = (logits[:, 2] * (pred == 2)).sum(dim=(1, 2))
    torch.testing.assert_close(target(logits), expected)
    mask = box_region([1, 1, 4, 3], 5, 6)
    torch.testing.assert_close(
        RegionTarget(1, mask)(logits), logits[:, 1, 1:3, 1:4].sum(dim=(1, 2))
    )
    probs = RegionTarget(0, pixel_region(4, 5, 5, 6), probabilities=True)(logits)
    torch.testing.assert_close(probs, logits.softmax(1)[:, 0, 4, 5])
    assert RegionTarget(1)({"out": logits, "aux": logits * 0}).shape == (2,)


def test_class_absent_from_the_prediction_gives_a_flagged_empty_map():
    net = smp.Unet("resnet18", encoder_weights=None, classes=3).eval()
    with torch.no_grad():
        net.segmentation_head[0].bias.copy_(torch.tensor([0.0, 100.0, -100.0]))
    x = torch.rand(1, 3, 64, 64)
    exp = explain(net, x, [RegionTarget(2), RegionTarget(1)], layers="decoder")
    assert exp.empty[0].tolist() == [True, False]
    assert torch.isfinite(exp.maps).all() and exp.maps[0, 0].abs().sum() == 0


def test_bad_inputs_are_named():
    logits = torch.zeros(1, 4, 8, 8)
    with pytest.raises(TaskcamError, match="the model has 4 classes"):
        RegionTarget(7)(logits)
    with pytest.raises(TaskcamError, match=r"mask is \(5, 5\) but the model's output is \(8, 8\)"):
        RegionTarget(1, torch.ones(5, 5, dtype=torch.bool))(logits)
    with pytest.raises(TaskcamError, match=r"class id\(s\) \[9\] do not exist: the model has 4"):
        parse_classes("1,9", 4)
    with pytest.raises(TaskcamError, match="outside the 8x8 output"):
        pixel_region(8, 0, 8, 8)
    with pytest.raises(TaskcamError, match="covers no pixel"):
        box_region([9, 9, 12, 12], 8, 8)
    with pytest.raises(TaskcamError, match="without 'out'"):
        seg_logits({"logits": logits})


def test_components_split_a_class_region_largest_first():
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[0:2, 0:2] = True
    mask[5:9, 5:9] = True
    parts = component_regions(mask)
    assert [int(p.sum()) for p in parts] == [16, 4]
    logits = torch.zeros(1, 2, 10, 10)
    logits[0, 1][mask] = 1.0
    rows = region_targets(logits, [1], components=True, class_names=["bg", "thing"])
    assert [t.name for t in rows[0]] == ["thing #0", "thing #1"]


def test_all_classes_come_from_one_forward():
    net = smp.FPN("resnet18", encoder_weights=None, classes=5).eval()
    calls = []
    handle = net.register_forward_hook(lambda *_: calls.append(1))
    x = torch.rand(1, 3, 64, 64)
    exp = explain(net, x, [RegionTarget(c) for c in range(5)], layers="decoder")
    handle.remove()
    assert len(calls) == 1 and exp.maps.shape[1] == 5


def test_gradcam_on_the_shapes_unet_puts_its_energy_in_the_class_region():
    loaded = load_model("zoo:shapes-unet")
    net = loaded.model
    mean = torch.tensor(loaded.preprocess.mean).view(1, 3, 1, 1)
    std = torch.tensor(loaded.preprocess.std).view(1, 3, 1, 1)
    energies = []
    for i in range(100):
        s = make_sample(i, seed=HELDOUT_SEED, size=256)
        x = (torch.from_numpy(s.image).permute(2, 0, 1)[None].float() / 255 - mean) / std
        classes = sorted({int(c) + 1 for c in s.labels})
        exp = explain(net, x, [RegionTarget(c) for c in classes], layers=["decoder"])
        semantic = torch.from_numpy(s.semantic)
        for t, c in enumerate(classes):
            energies.append(float(energy_pointing_game(exp.maps[0, t], semantic == c)))
    assert np.mean(energies) >= 0.6, np.mean(energies)


def test_segment_command_writes_region_results(tmp_path):
    import cv2

    from taskcam.cli import main

    s = make_sample(3, seed=HELDOUT_SEED, size=256)
    image = tmp_path / "shapes.png"
    cv2.imwrite(str(image), cv2.resize(s.image, (300, 240))[..., ::-1])  # another size and aspect
    out = tmp_path / "out"
    assert (
        main(
            [
                "explain",
                str(image),
                "--model",
                "zoo:shapes-unet",
                "--task",
                "segment",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "segment" and results["layers"] == ["decoder"]
    (item,) = results["items"]
    present = sorted({0} | {int(c) + 1 for c in s.labels})
    assert [t["class_id"] for t in item["targets"]] == present
    for t in item["targets"]:
        assert t["kind"] == "region" and t["pixels"] > 0
        assert (
            t["class_name"]
            == ["background", "circle", "square", "triangle", "cross"][t["class_id"]]
        )
        heatmap = np.load(out / t["heatmap"])
        assert heatmap.shape == (240, 300) and np.isfinite(heatmap).all()
        assert (out / t["overlay"]).is_file()
    assert (
        main(
            [
                "explain",
                str(image),
                "--model",
                "zoo:shapes-unet",
                "--targets",
                "9",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 2
    )


def test_smp_spec_loads_with_random_weights():
    loaded = load_model("smp:FPN:resnet18:3", weights="none")
    assert loaded.task == "segment" and loaded.preprocess.size == (512, 512)
    with pytest.raises(TaskcamError, match="no architecture 'Unett'"):
        load_model("smp:Unett:resnet18", weights="none")
    with pytest.raises(TaskcamError, match="expected smp:ARCH:ENCODER"):
        load_model("smp:Unet", weights="none")
