"""torchvision detection adapter: traced candidates equal torchvision's detections for every
family, per-detection targets and pyramid levels, maps, D-RISE matching, errors, model state."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.testing import assert_close
from torchvision.models import detection as tvd
from torchvision.ops import box_iou

import taskcam
from taskcam import TaskcamError
from taskcam.adapters.detection import Detections
from taskcam.adapters.torchvision import (
    ResizePlacement,
    TorchvisionDetectionAdapter,
    TorchvisionDetectionTarget,
    TracedDetector,
    TracedOutput,
    default_layers,
    detect,
    detection_targets,
    detector_family,
    is_torchvision_detector,
)
from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.zoo.shapes_models import shapes_loaded_model

H, W = 120, 170  # not square, not a multiple of 32: the transform resizes and pads
NONE = {"weights": None, "weights_backbone": None}
FPN = [f"backbone.fpn.layer_blocks.{i}" for i in range(4)]
P67 = ["backbone.fpn.extra_blocks.p6", "backbone.fpn.extra_blocks.p7"]

# Random weights score low: thresholds are lowered so that every family detects something.
BUILDERS = {
    "fasterrcnn": lambda: tvd.fasterrcnn_mobilenet_v3_large_fpn(
        **NONE,
        num_classes=5,
        min_size=128,
        max_size=128,
        box_detections_per_img=6,
        rpn_post_nms_top_n_test=200,
    ),
    "maskrcnn": lambda: tvd.maskrcnn_resnet50_fpn(
        **NONE,
        num_classes=3,
        min_size=128,
        max_size=128,
        box_detections_per_img=4,
        rpn_post_nms_top_n_test=200,
    ),
    "retinanet": lambda: tvd.retinanet_resnet50_fpn(
        **NONE,
        num_classes=4,
        min_size=128,
        max_size=128,
        score_thresh=0.005,
        detections_per_img=6,
    ),
    "fcos": lambda: tvd.fcos_resnet50_fpn(
        **NONE,
        num_classes=4,
        min_size=128,
        max_size=128,
        score_thresh=0.01,
        detections_per_img=6,
    ),
    "ssdlite": lambda: tvd.ssdlite320_mobilenet_v3_large(
        **NONE, num_classes=4, detections_per_img=6
    ),
    "ssd300": lambda: tvd.ssd300_vgg16(**NONE, num_classes=3, detections_per_img=6),
}
FAMILY = {
    "fasterrcnn": "rcnn",
    "maskrcnn": "rcnn",
    "retinanet": "retinanet",
    "fcos": "fcos",
    "ssdlite": "ssd",
    "ssd300": "ssd",
}
LAYERS = {
    "fasterrcnn": FPN[:2],
    "maskrcnn": FPN,
    "retinanet": FPN[:3] + P67,
    "fcos": FPN[:3] + P67,
    "ssdlite": ["backbone.features.0", "backbone.features.1"]
    + [f"backbone.extra.{i}" for i in range(4)],
    "ssd300": ["backbone.features"] + [f"backbone.extra.{i}" for i in range(5)],
}


@pytest.fixture(scope="module")
def detectors():
    out = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        out[name] = build().eval()
    return out


@pytest.fixture(params=list(BUILDERS))
def name(request):
    return request.param


@pytest.fixture(params=[n for n in BUILDERS if n != "ssd300"])
def quick(request):
    """Every model but SSD300 (VGG16 at 300 px: slow on a CPU, and ssdlite is the same family)."""
    return request.param


@pytest.fixture(scope="module")
def shapes():
    loaded = shapes_loaded_model("shapes-fasterrcnn")
    return TorchvisionDetectionAdapter(loaded.model, class_names=loaded.class_names)


def _x(batch: int = 1, seed: int = 0, size: tuple[int, int] = (H, W)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, *size, generator=g)


def _shapes_image(i: int) -> np.ndarray:
    return make_sample(i, seed=HELDOUT_SEED, size=256, min_objects=2).image


def _state(model: torch.nn.Module):
    return (
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for m in model.modules()
        ],
    )


def _level_grads(adapter, x, targets) -> list[dict[str, float]]:
    """Per target, |d target / d layer output| summed over every default layer (each a leaf)."""
    layers = adapter.model.level_layers()
    modules = dict(adapter.model.named_modules())
    acts: dict[str, torch.Tensor] = {}

    def keep(layer):
        def hook(_module, _inputs, output):
            acts[layer] = output.detach().requires_grad_(True)
            return acts[layer]

        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in layers]
    out = []
    try:
        with torch.enable_grad():
            output = adapter.model(x)
            for t in targets:
                inputs = [acts[n] for n in layers]
                grads = torch.autograd.grad(
                    t(output).sum(), inputs, allow_unused=True, retain_graph=True
                )
                out.append(
                    {n: 0.0 if g is None else float(g.abs().sum()) for n, g in zip(layers, grads)}
                )
    finally:
        for h in handles:
            h.remove()
    return out


# -- families, wrapper, layers -------------------------------------------------------------------
def test_families_and_non_detectors_are_named(detectors):
    import torchvision

    for name, model in detectors.items():
        assert is_torchvision_detector(model)
        assert detector_family(model) == FAMILY[name]
    net = torchvision.models.resnet18(weights=None)
    assert not is_torchvision_detector(net)
    for make in (detector_family, TracedDetector, TorchvisionDetectionAdapter):
        with pytest.raises(TaskcamError, match="torchvision detector.*got ResNet"):
            make(net)


def test_traced_detector_uses_the_detectors_own_modules(detectors):
    model = detectors["retinanet"]
    traced = TracedDetector(model)
    assert traced.detector is model
    assert traced.state_dict().keys() == model.state_dict().keys()
    assert traced.backbone is model.backbone and traced.head is model.head
    names = dict(traced.named_modules())
    assert all(names[n] is dict(model.named_modules())[n] for n in LAYERS["retinanet"])
    assert TracedDetector(traced).detector is model  # no double wrapping


def test_default_layers_name_each_pyramid_level(detectors, shapes, name):
    assert TracedDetector(detectors[name]).level_layers() == LAYERS[name]
    if FAMILY[name] != "rcnn":  # one-stage models and SSD explain their levels by default
        assert default_layers(detectors[name]) == LAYERS[name]
    else:
        assert all(n.startswith("backbone.body.") for n in default_layers(detectors[name]))
    # non-standard FPN names (p3, p4, p5) and the RPN-only pool level left out
    assert shapes.model.level_layers() == FPN[:3]
    # a two-stage model's default: the body's stages that feed the FPN, fused
    assert shapes.default_layers() == [f"backbone.body.layer{i}" for i in (2, 3, 4)]
    assert shapes.model.feature_layers() == {
        "p3": FPN[0],
        "p4": FPN[1],
        "p5": FPN[2],
        "pool": FPN[2],
    }


# -- detections ----------------------------------------------------------------------------------
def test_detections_equal_torchvision_output(detectors, name):
    model = detectors[name]
    x = _x(1 if name == "ssd300" else 2)  # images of a batch are traced independently
    dets = detect(model, x)
    with torch.no_grad():
        ref = model(list(x))
        out = TracedDetector(model)(x)
    for d, r in zip(dets, ref):
        assert len(d) > 0
        assert torch.equal(d.boxes, r["boxes"])
        assert torch.equal(d.scores, r["scores"])
        assert torch.equal(d.classes, r["labels"])
        assert d.candidates.dtype == torch.long and len(d.levels) == len(d)
        assert set(d.levels) <= set(LAYERS[name])
    for b, d in enumerate(out.detections):  # each detection is its candidate's own numbers
        assert_close(out.scores[b][d.candidates, d.classes], dets[b].scores)
        boxes = out.boxes[b][d.candidates]
        if boxes.ndim == 3:
            boxes = boxes[torch.arange(len(d)), d.classes]
        assert_close(boxes, dets[b].boxes, atol=1e-3, rtol=0)


def test_shapes_detections_equal_torchvision_and_find_the_objects(shapes):
    x, _ = shapes.prepare(_shapes_image(0))
    d = shapes.detect(x)[0]
    with torch.no_grad():
        ref = shapes.detector(list(x))[0]
    assert torch.equal(d.boxes, ref["boxes"]) and torch.equal(d.scores, ref["scores"])
    assert (d.scores > 0.5).sum() >= 2 and set(d.levels) <= set(FPN[:3])


def test_output_fields_per_family(detectors, name):
    with torch.no_grad():
        out = TracedDetector(detectors[name])(_x())
    assert isinstance(out, TracedOutput) and len(out) == 1
    n, k = out.probs[0].shape
    assert out.scores[0].shape == (n, k) and out.levels[0].shape == (n,)
    assert out.boxes[0].shape == ((n, k, 4) if FAMILY[name] == "rcnn" else (n, 4))
    assert out.levels[0].min() >= 0 and out.levels[0].max() < len(out.feature_names)
    assert out.background == (FAMILY[name] in ("rcnn", "ssd"))
    if FAMILY[name] == "retinanet":
        assert out.objectness is None
    else:
        assert out.objectness[0].shape == (n,)
    if FAMILY[name] == "fcos":  # ranked by sqrt(class probability * centerness)
        assert_close(out.scores[0], torch.sqrt(out.probs[0] * out.objectness[0][:, None]))
    boxes = out.boxes[0].reshape(-1, 4)
    assert boxes[:, 0::2].max() <= W and boxes[:, 1::2].max() <= H and boxes.min() >= 0


def test_conf_overrides_the_models_threshold(detectors):
    adapter = TorchvisionDetectionAdapter(detectors["fcos"])
    x = _x()
    base = adapter.detect(x)[0]
    adapter.conf = float(base.scores[1])
    strict = adapter.detect(x)[0]
    assert len(strict) == 1 and strict.scores[0] == base.scores[0]
    assert detectors["fcos"].score_thresh == 0.01  # the model's own setting is untouched
    with pytest.raises(TaskcamError, match=r"score in \[0, 1\]"):
        adapter.conf = 1.5


def test_mask_rcnn_masks_equal_torchvision_when_nothing_is_padded(detectors):
    model = detectors["maskrcnn"]
    x = _x(size=(128, 128))
    d = detect(model, x)[0]
    with torch.no_grad():
        ref = model(list(x))[0]
    assert d.masks.dtype == torch.bool and d.masks.shape == (len(d), 128, 128)
    assert torch.equal(d.masks, ref["masks"][:, 0] > 0.5)
    padded = detect(model, _x())[0]  # 120 x 170 -> 90 x 128, padded to 96 x 128
    assert padded.masks.shape == (len(padded), H, W)


# -- placement -----------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(120, 170), (257, 31), (64, 64), (300, 90)])
def test_placement_follows_the_transform(detectors, size):
    for name in ("fasterrcnn", "ssdlite"):
        traced = TracedDetector(detectors[name])
        placement = traced.placement(*size)
        with torch.no_grad():
            images, _ = traced.transform([torch.zeros(3, *size)])
        assert images.image_sizes[0] == (placement.new_height, placement.new_width)
        assert images.tensors.shape[-2:] == (placement.padded_height, placement.padded_width)


def test_placement_maps_undo_the_padding_stretch():
    p = ResizePlacement(120, 170, 90, 128, 96, 128)  # 6 rows of padding at the bottom
    canvas = torch.zeros(2, 120, 170)
    canvas[:, :112] = 1.0  # the image region of the stretched canvas
    assert_close(p.map_to_image(canvas), torch.ones(2, 120, 170))
    image = torch.linspace(0, 1, 170).expand(1, 120, 170)
    back = p.map_to_image(p.image_to_map(image))
    assert (back - image).abs().max() < 0.02
    same = ResizePlacement(64, 64, 128, 128, 128, 128)
    assert torch.equal(same.map_to_image(image[..., :64, :64]), image[..., :64, :64])
    boxes = torch.tensor([[-3.0, 5.0, 200.0, 130.0]])
    assert p.boxes_to_image(boxes).tolist() == [[0.0, 5.0, 170.0, 120.0]]
    with pytest.raises(TaskcamError, match=r"Tensor\[\.\.\., 120, 170\]"):
        p.map_to_image(torch.zeros(1, 10, 10))


def test_score_cam_masks_cover_what_the_channels_saw_on_a_padded_canvas(shapes):
    # a 256x100 strip: the transform pads its width to 128. Padded by hand with the mean
    # colour, the model sees the same canvas, so the strip's maps must be the padded
    # image's, cropped (Score-CAM's masks used to stretch the canvas over the strip)
    strip = np.ascontiguousarray(make_sample(1, seed=123, size=256).image[:, 130:230])
    padded = np.concatenate([strip, np.full((256, 28, 3), 128, np.uint8)], 1)
    maps = []
    for image in (strip, padded):
        x, place = shapes.prepare(image)
        dets = shapes.detect(x)[0].select([0])
        exp = taskcam.explain(
            shapes.model, x, [shapes.targets(dets)], shapes.model.level_layers(), "fast-scorecam"
        )
        maps.append(place.map_to_image(exp.maps)[0, 0, :, :100].flatten())
    assert float(torch.corrcoef(torch.stack(maps))[0, 1]) > 0.999


@pytest.mark.parametrize("size", [(90, 300), (301, 77)])
def test_any_image_size_round_trips(detectors, size):
    adapter = TorchvisionDetectionAdapter(detectors["fasterrcnn"])
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    x, placement = adapter.prepare(image)
    assert x.shape == (1, 3, *size) and float(x.min()) >= 0 and float(x.max()) <= 1
    d = adapter.detect(x)[0]
    boxes = placement.boxes_to_image(d.boxes)
    assert torch.equal(boxes, d.boxes)  # already in the image's pixels
    exp = taskcam.explain(adapter.model, x, [adapter.targets(d.select([0, 1]))], layers=FPN[0])
    assert placement.map_to_image(exp.maps[0]).shape == (2, *size)


# -- targets and explanations --------------------------------------------------------------------
def test_k_detections_in_one_gradcam_call_reach_their_own_levels(detectors, name):
    adapter = TorchvisionDetectionAdapter(detectors[name])
    x = _x()
    dets = adapter.detect(x)[0]
    dets = dets.select(range(min(3, len(dets))))
    targets = adapter.targets(dets)
    assert [t.layer for t in targets] == dets.levels
    exp = taskcam.explain(adapter.model, x, [targets], layers=adapter.model.level_layers())
    assert exp.maps.shape == (1, len(dets), H, W)
    assert torch.isfinite(exp.maps).all()
    assert_close(exp.scores[0], dets.scores)
    layers = adapter.model.level_layers()
    for t, grads in zip(targets, _level_grads(adapter, x, targets)):
        own = layers.index(t.layer)
        assert grads[t.layer] > 0, (t, grads)
        assert all(grads[n] == 0 for n in layers[own + 1 :]), (t, grads)  # downstream levels
        if FAMILY[name] == "rcnn":  # RoIAlign pools from one level only
            assert all(g == 0 for n, g in grads.items() if n != t.layer), (t, grads)


def test_box_side_and_objectness_targets_read_the_candidate(detectors, quick):
    model = detectors[quick]
    x = _x()
    d = detect(model, x)[0].select([0])
    with torch.no_grad():
        out = TracedDetector(model)(x)
    c, k = int(d.candidates[0]), int(d.classes[0])
    for i, side in enumerate(("x1", "y1", "x2", "y2")):
        value = TorchvisionDetectionTarget(c, k, side)(out)
        assert_close(value, d.boxes[:, i], atol=1e-3, rtol=0)
    objectness = TorchvisionDetectionTarget(c, k, "objectness")
    if FAMILY[quick] == "retinanet":
        with pytest.raises(TaskcamError, match="no objectness.*'score', 'x1'"):
            objectness(out)
        with pytest.raises(TaskcamError, match="no objectness"):
            TorchvisionDetectionAdapter(model).targets(d, "objectness")
    else:
        value = objectness(out)
        assert value.shape == (1,) and 0 < float(value) <= 1
        if out.background:
            assert_close(value, 1 - out.probs[0][c, :1])


def test_two_stage_gradients_equal_the_full_box_head(detectors):
    """Only the kept detections' rows run the box head with gradients; the gradients of their
    scores and boxes equal those through torchvision's box head run on every proposal."""
    det = detectors["fasterrcnn"]
    adapter = TorchvisionDetectionAdapter(det)
    x = _x(batch=2, seed=3)
    dets = adapter.detect(x)
    heads = det.roi_heads
    with torch.enable_grad():
        leaf = x.clone().requires_grad_(True)
        out = adapter.model(leaf)
        # the reference: torchvision's own stages, the box head on all proposals with gradients
        ref_x = x.clone().requires_grad_(True)
        images, _ = det.transform(list(ref_x))
        features = det.backbone(images.tensors)
        proposals, _ = det.rpn(images, features)
        counts = [len(p) for p in proposals]
        pooled = heads.box_roi_pool(features, proposals, images.image_sizes)
        logits, deltas = heads.box_predictor(heads.box_head(pooled))
        probs = torch.softmax(logits, -1).split(counts)
        boxes = heads.box_coder.decode(deltas, proposals).split(counts)
        checked = 0
        for b, d in enumerate(dets):
            x_scale = W / images.image_sizes[b][1]  # the traced boxes are in x's pixels
            for cand, cls in zip(d.candidates.tolist()[:3], d.classes.tolist()[:3]):
                assert_close(out.probs[b][cand], probs[b][cand].detach())
                pairs = (
                    (TorchvisionDetectionTarget(cand, cls), probs[b][cand, cls], 1.0),
                    (TorchvisionDetectionTarget(cand, cls, "x2"), boxes[b][cand, cls, 2], x_scale),
                    (TorchvisionDetectionTarget(cand, cls, "objectness"), 1 - probs[b][cand, 0], 1),
                )
                for target, ref, scale in pairs:
                    value = target(out)[b]
                    assert_close(value, ref.detach() * scale)
                    (g,) = torch.autograd.grad(value, leaf, retain_graph=True)
                    (g_ref,) = torch.autograd.grad(ref, ref_x, retain_graph=True)
                    assert g.abs().sum() > 0
                    assert_close(g, g_ref * scale, rtol=1e-3, atol=1e-7)
                checked += 1
        assert checked >= 2


def test_out_of_range_candidates_score_zero(detectors):
    with torch.no_grad():
        out = TracedDetector(detectors["fasterrcnn"])(_x(2))
    for what in ("score", "x2", "objectness"):
        assert TorchvisionDetectionTarget(10**6, 1, what)(out).tolist() == [0.0, 0.0]
    inside = TorchvisionDetectionTarget(0, 1)(out)
    assert (inside > 0).all()


def test_target_errors_are_clear(detectors):
    model = detectors["fasterrcnn"]
    with torch.no_grad():
        out = TracedDetector(model)(_x())
        raw = model(list(_x()))
    with pytest.raises(TaskcamError, match="class_id 5 does not exist: the model has 5 classes"):
        TorchvisionDetectionTarget(0, 5)(out)
    with pytest.raises(TaskcamError, match="class_id 0 is the background"):
        TorchvisionDetectionTarget(0, 0)(out)
    with pytest.raises(TaskcamError, match="reads a TracedOutput, got a list"):
        TorchvisionDetectionTarget(0, 1)(raw)
    with pytest.raises(TaskcamError, match="what"):
        TorchvisionDetectionTarget(0, 1, "area")
    with pytest.raises(TaskcamError, match="candidate must be a non-negative int"):
        TorchvisionDetectionTarget(-1, 1)
    with pytest.raises(TaskcamError, match=r"Tensor\[B, 3, H, W\]"):
        TracedDetector(model)(torch.rand(3, 64, 64))
    with pytest.raises(TaskcamError, match="float"):
        TracedDetector(model)(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    adapter = TorchvisionDetectionAdapter(model)
    with pytest.raises(TaskcamError, match="uint8"):
        adapter.prepare(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(TaskcamError, match=r"\[H, W, 3\]"):
        adapter.prepare(np.zeros((8, 8), np.uint8))


def test_detection_targets_keep_box_class_and_level():
    d = Detections(
        torch.tensor([[1.0, 2, 3, 4]]), torch.ones(1), torch.tensor([2]), torch.tensor([7])
    )
    d.levels = ["backbone.fpn.layer_blocks.1"]
    (t,) = detection_targets([d], "y2")[0]
    assert (t.candidate, t.class_id, t.what, t.layer) == (7, 2, "y2", d.levels[0])
    assert t.box.tolist() == [1.0, 2.0, 3.0, 4.0]


# -- perturbation matching -----------------------------------------------------------------------
def test_perturbed_targets_score_about_objectness_on_the_unperturbed_output(shapes):
    x, _ = shapes.prepare(_shapes_image(1))
    d = shapes.detect(x)[0]
    d = d.select([i for i in range(len(d)) if d.scores[i] > 0.9])
    assert len(d) >= 2
    with torch.no_grad():
        out = shapes.model(x)
    for t in shapes.targets(d):
        objectness = TorchvisionDetectionTarget(t.candidate, t.class_id, "objectness")(out)
        matched = t.perturbed()(out)
        assert matched.shape == (1,)
        assert_close(matched, objectness, atol=0.05, rtol=0)


def test_perturbed_targets_match_at_least_their_own_candidate(detectors, quick):
    adapter = TorchvisionDetectionAdapter(detectors[quick])
    x = _x(2)
    d = adapter.detect(x)[0]
    with torch.no_grad():
        out = adapter.model(x)
    for t in adapter.targets(d.select(range(min(3, len(d))))):
        probs = out.probs[0][t.candidate].clone()
        if out.background:
            probs[0] = 0
        objectness = out.objectness[0] if out.background else out.scores[0].amax(-1)
        box = out.boxes[0][t.candidate]
        box = box[t.class_id] if box.ndim == 2 else box
        iou = torch.nan_to_num(box_iou(box[None], t.box[None])[0, 0])  # 0 for empty boxes
        own = iou * probs[t.class_id] / probs.norm() * objectness[t.candidate]
        matched = t.perturbed()(out)
        assert matched.shape == (2,) and float(matched.max()) <= 1 + 1e-6
        assert float(matched[0]) >= float(own) - 1e-5


def test_drise_explains_torchvision_detections(detectors):
    adapter = TorchvisionDetectionAdapter(detectors["fasterrcnn"])
    x = _x()
    d = adapter.detect(x)[0].select([0, 1])
    exp = taskcam.explain(
        adapter.model, x, [adapter.targets(d)], method="drise", n_masks=8, batch_size=4
    )
    assert exp.maps.shape == (1, 2, H, W) and torch.isfinite(exp.maps).all()


# -- the trained shapes detector -----------------------------------------------------------------
def test_shapes_maps_point_at_their_own_detections(shapes):
    g = torch.Generator().manual_seed(0)
    hits = wins = total = 0
    for i in range(4):
        x, placement = shapes.prepare(_shapes_image(i))
        d = shapes.detect(x)[0]
        d = d.select([j for j in range(len(d)) if d.scores[j] > 0.5])
        targets = shapes.targets(d)
        layers = shapes.model.level_layers()
        gradcam = taskcam.explain(shapes.model, x, [targets], layers=layers)
        assert gradcam.maps.shape == (1, len(d), 256, 256)
        assert torch.isfinite(gradcam.maps).all() and not gradcam.empty.any()
        # ODAM keeps each detection's gradients where they are: its map points at its box
        exp = taskcam.explain(shapes.model, x, [targets], layers=layers, method="odam")
        maps = placement.map_to_image(exp.maps[0])
        for t in range(len(d)):
            x1, y1, x2, y2 = d.boxes[t].round().long().tolist()
            y, xx = divmod(int(maps[t].argmax()), maps.shape[-1])
            hits += int(x1 <= xx < x2 and y1 <= y < y2)
            w, h = x2 - x1, y2 - y1
            ox = torch.randint(0, 256 - w + 1, (8,), generator=g).tolist()
            oy = torch.randint(0, 256 - h + 1, (8,), generator=g).tolist()
            rand = np.mean([float(maps[t, b : b + h, a : a + w].mean()) for a, b in zip(ox, oy)])
            wins += int(float(maps[t, y1:y2, x1:x2].mean()) > rand)
            total += 1
    assert total >= 8
    assert hits / total >= 0.8, (hits, total)
    assert wins / total >= 0.8, (wins, total)


# -- the user's model ----------------------------------------------------------------------------
def test_the_users_model_comes_back_as_it_was():
    torch.manual_seed(0)
    model = BUILDERS["fasterrcnn"]()
    model.train()
    model.backbone.body.eval()
    next(model.rpn.parameters()).requires_grad_(False)
    handle = model.roi_heads.box_head.register_forward_hook(lambda *args: None)
    before = _state(model)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        adapter = TorchvisionDetectionAdapter(model)
        x = _x()
        d = adapter.detect(x)[0].select([0, 1])
        targets = adapter.targets(d)
        taskcam.explain(adapter.model, x, [targets], layers=adapter.model.level_layers())
        taskcam.explain(adapter.model, x, [targets], method="drise", n_masks=4, batch_size=4)
        adapter.model(x)
        assert _state(model) == before
        assert model.training and model.roi_heads.box_roi_pool.scales is None
        after = model.state_dict()  # no BatchNorm statistics updated in train mode
        assert all(torch.equal(weights[k], after[k]) for k in weights)
    finally:
        handle.remove()
