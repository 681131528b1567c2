"""The engine's contracts: the model left as it was, one forward, clear errors, fusion."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn.modules import module as module_mod
from torch.testing import assert_close

import taskcam
from taskcam import Explainer, TaskcamError, default_layer, explain, normalize_maps
from taskcam.adapters.classification import ClassTarget, top_k_targets
from taskcam.methods.eigen import principal_projection

# every method that explains any target through a layer or the input (D-RISE explains
# detections only: tests/adapters; the attention methods need a ViT: tests/attention)
METHODS = [
    m
    for m in taskcam.available_methods()
    if not (taskcam.get_method(m).needs_detections or taskcam.get_method(m).attention)
]
TARGETS = [ClassTarget(1), ClassTarget(3)]
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)
GLOBAL_HOOKS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_forward_hooks_always_called",
)


class StateNet(nn.Module):
    """``[B, 3, 16, 16] -> [B, 5]`` with BatchNorm (non-default running stats), Dropout and an
    in-place ReLU: everything that eval/train and a careless engine could change."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 5)
        )
        with torch.no_grad():
            for bn in (self.features[1], self.features[4]):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.num_batches_tracked.fill_(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Boom(nn.Module):
    """Identity that raises while ``armed``."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.armed:
            raise RuntimeError("boom in forward")
        return x


class BoomNet(StateNet):
    def __init__(self) -> None:
        super().__init__()
        self.boom = Boom()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.boom(self.features(x)))


def snapshot(model: nn.Module) -> dict:
    return {
        "modules": [(n, id(m)) for n, m in model.named_modules()],
        "params": [(n, id(p)) for n, p in model.named_parameters()],
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "hooks": {
            n: {d: dict(getattr(m, d)) for d in HOOK_DICTS if hasattr(m, d)}
            for n, m in model.named_modules()
        },
        "global": {d: dict(getattr(module_mod, d)) for d in GLOBAL_HOOKS if hasattr(module_mod, d)},
    }


def assert_unchanged(before: dict, model: nn.Module) -> None:
    after = snapshot(model)
    for key in ("modules", "params", "training", "requires_grad", "hooks", "global"):
        assert after[key] == before[key], key
    assert after["grads"].keys() == before["grads"].keys()
    for name, grad in before["grads"].items():
        if grad is None:
            assert after["grads"][name] is None, name
        else:
            assert torch.equal(after["grads"][name], grad), name
    assert after["state"].keys() == before["state"].keys()
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), name  # bitwise, BN stats included


def _layer_for(method: str) -> str:
    return "features.5" if method == "cam" else "features.3"


# -- the model is left exactly as it was -------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "eval", "mixed"])
@pytest.mark.parametrize("method", METHODS)
def test_model_unchanged(method, mode):
    net = StateNet()
    net.train(mode != "eval")
    if mode == "mixed":
        net.features[4].eval()  # a submodule the user put in eval keeps it
    net.features[0].bias.requires_grad_(False)  # a frozen parameter stays frozen
    net.head[3].weight.grad = torch.full_like(net.head[3].weight, 0.25)  # user's own .grad
    before = snapshot(net)
    exp = explain(net, torch.rand(2, 3, 16, 16), TARGETS, _layer_for(method), method)
    assert exp.maps.shape == (2, 2, 16, 16)
    assert_unchanged(before, net)
    assert net.training is (mode != "eval")
    assert net.features[4].training is (mode == "train")


@pytest.mark.parametrize("option", ["aug_smooth", "eigen_smooth"])
def test_model_unchanged_with_smoothing(option):
    net = StateNet().train()
    before = snapshot(net)
    explain(net, torch.rand(2, 3, 16, 16), TARGETS, "features.3", "gradcam++", **{option: True})
    assert_unchanged(before, net)


def test_aug_smooth_on_a_fixed_grid_transformer_is_refused_and_leaves_it_as_it_was():
    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2)
    before = snapshot(vit.train())
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TaskcamError, match=r"aug_smooth: .*does not take the 1.1x.*35x35"):
        explain(vit, x, TARGETS, "blocks.0.norm1", "gradcam", aug_smooth=True)
    assert_unchanged(before, vit)


def test_batchnorm_in_train_mode_does_not_learn_from_the_explained_batch():
    net = StateNet().train()
    mean = net.features[1].running_mean.clone()
    x = torch.rand(4, 3, 16, 16) * 5 + 3  # far from the running stats
    with torch.no_grad():
        ref = net.eval()(x)
    net.train()
    exp = explain(net, x, TARGETS, "features.3", "gradcam")
    assert torch.equal(net.features[1].running_mean, mean)
    assert int(net.features[1].num_batches_tracked) == 7
    assert_close(exp.output, ref)  # the explained output is the eval-mode one


def test_user_hooks_still_fire_and_stay_registered():
    net = StateNet().eval()
    calls: list[str] = []
    handles = [
        net.features[3].register_forward_hook(lambda m, i, o: calls.append("layer")),
        net.register_forward_pre_hook(lambda m, i: calls.append("pre")),
        net.head[3].register_full_backward_hook(lambda m, gi, go: calls.append("backward")),
    ]
    try:
        before = snapshot(net)
        x = torch.rand(2, 3, 16, 16)
        exp = explain(net, x, TARGETS, "features.3", "gradcam")
        assert calls.count("layer") == 1 and calls.count("pre") == 1
        assert exp.maps.shape == (2, 2, 16, 16)
        assert_unchanged(before, net)
        calls.clear()
        net(x).sum().backward()
        assert calls == ["pre", "layer", "backward"]
    finally:
        for h in handles:
            h.remove()


def test_user_hook_changing_the_layer_output_is_respected():
    net = StateNet().eval()
    x = torch.rand(2, 3, 16, 16)
    plain = explain(net, x, TARGETS, "features.3", "eigencam")
    handle = net.features[3].register_forward_hook(lambda m, i, o: o.flip(-1))
    try:
        flipped = explain(net, x, TARGETS, "features.3", "eigencam")
    finally:
        handle.remove()
    assert_close(flipped.raw["features.3"], plain.raw["features.3"].flip(-1))


# -- exceptions -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method", ["gradcam", "eigencam", "scorecam", "guided-backprop", "guided-gradcam"]
)
def test_state_restored_after_exception_in_forward(method):
    net = BoomNet().train()
    net.boom.armed = True
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom in forward"):
        explain(net, torch.rand(2, 3, 16, 16), TARGETS, "features.3", method)
    assert_unchanged(before, net)
    net.boom.armed = False
    net.eval()
    assert explain(net, torch.rand(1, 3, 16, 16), TARGETS, "features.3", method).maps.shape == (
        1,
        2,
        16,
        16,
    )


@pytest.mark.parametrize("method", ["gradcam", "eigencam", "ablationcam", "guided-backprop"])
def test_state_restored_after_exception_in_target(method):
    net = StateNet().train()
    before = snapshot(net)

    def bad_target(output):
        raise KeyError("bad target")

    with pytest.raises(KeyError, match="bad target"):
        explain(net, torch.rand(2, 3, 16, 16), [bad_target], "features.3", method)
    assert_unchanged(before, net)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_state_restored_after_exception_in_a_perturbed_forward(method):
    net = StateNet().eval()
    x = torch.rand(2, 3, 16, 16)
    before = snapshot(net)

    def flaky(output):  # fine on the real batch of 2, fails on the perturbed batches
        if output.shape[0] != 2:
            raise ArithmeticError("perturbed")
        return output[:, 1]

    with pytest.raises(ArithmeticError, match="perturbed"):
        explain(net, x, [flaky], "features.3", method, batch_size=8)
    assert_unchanged(before, net)
    # nothing left half-edited: a plain forward and a new explanation are as before
    with torch.no_grad():
        assert_close(net(x), StateNet().eval()(x))
    again = explain(net, x, [ClassTarget(1)], "features.3", method, batch_size=8)
    fresh = explain(StateNet().eval(), x, [ClassTarget(1)], "features.3", method, batch_size=8)
    assert_close(again.raw, fresh.raw)


def test_taskcam_error_in_target_restores_state(resnet18):
    before = snapshot(resnet18)
    with pytest.raises(TaskcamError, match="1000 classes"):
        explain(resnet18, torch.rand(1, 3, 64, 64), [ClassTarget(1000)], "layer4")
    assert_unchanged(before, resnet18)


# -- grad modes ---------------------------------------------------------------------------------
GRAD_MODE_METHODS = [
    "gradcam",
    "gradcam++",
    "cam",
    "eigencam",
    "eigengradcam",
    "scorecam",
    "ablationcam",
    "guided-backprop",
    "guided-gradcam",
]


@pytest.mark.parametrize("context", ["no_grad", "inference_mode"])
@pytest.mark.parametrize("method", GRAD_MODE_METHODS)
def test_no_grad_and_inference_mode(make_cnn, method, context):
    net = make_cnn()
    layer = "3" if method == "cam" else "2"
    x = torch.rand(2, 3, 16, 16)
    ref = explain(net, x, TARGETS, layer, method)
    ctx = torch.no_grad() if context == "no_grad" else torch.inference_mode()
    with ctx:
        xi = x.clone()  # under inference_mode this is an inference tensor
        exp = explain(net, xi, TARGETS, layer, method)
        assert not torch.is_grad_enabled()  # the caller's mode is back
        assert torch.is_inference_mode_enabled() is (context == "inference_mode")
    assert not ref.empty.all()
    assert_close(exp.maps, ref.maps)
    assert_close(exp.raw, ref.raw)
    assert_close(exp.scores, ref.scores)


def test_frozen_parameters(make_cnn):
    x = torch.rand(2, 3, 16, 16)
    free = make_cnn()
    frozen = make_cnn()
    frozen.requires_grad_(False)
    partly = make_cnn()
    partly[0].requires_grad_(False)
    ref = explain(free, x, TARGETS, "2", "gradcam")
    assert not ref.empty.all()
    for net in (frozen, partly):
        flags = [p.requires_grad for p in net.parameters()]
        exp = explain(net, x, TARGETS, "2", "gradcam")
        assert_close(exp.maps, ref.maps)
        assert [p.requires_grad for p in net.parameters()] == flags
    assert all(p.requires_grad for p in free.parameters())


def test_input_that_requires_grad(make_cnn):
    net = make_cnn()
    x = torch.rand(2, 3, 16, 16)
    ref = explain(net, x, TARGETS, "2", "gradcam")
    exp = explain(net, x.clone().requires_grad_(True), TARGETS, "2", "gradcam")
    assert_close(exp.raw, ref.raw)


@pytest.mark.parametrize("method", METHODS)
def test_inplace_relu_after_layer_gives_same_result(make_cnn, method):
    x = torch.rand(2, 3, 16, 16)
    layer = "3" if method == "cam" else "2"  # "2" is followed by ReLU(inplace=...)
    plain = explain(make_cnn(inplace=False), x, TARGETS, layer, method)
    inplace = explain(make_cnn(inplace=True), x, TARGETS, layer, method)
    assert not plain.empty.all()
    assert_close(inplace.maps, plain.maps)
    assert_close(inplace.raw, plain.raw)
    if plain.pixel_grads is not None:
        assert_close(inplace.pixel_grads, plain.pixel_grads)


def test_capture_is_the_layer_output_before_a_later_inplace_add(resnet18):
    # in a BasicBlock, bn2's output is changed in place by `out += identity` and the ReLU
    x = torch.rand(2, 3, 64, 64)
    seen = []
    handle = resnet18.layer4[1].bn2.register_forward_hook(lambda m, i, o: seen.append(o.clone()))
    try:
        exp = explain(resnet18, x, TARGETS, "layer4.1.bn2", "eigencam")
    finally:
        handle.remove()
    assert (seen[0] < 0).any()  # the in-place ReLU would have removed these
    expected = principal_projection(seen[0]).clamp(min=0)  # [B, h, w]
    assert_close(exp.raw["layer4.1.bn2"], expected[:, None].expand(-1, 2, -1, -1))


# -- one forward for all images and targets -----------------------------------------------------
ONE_FORWARD = ["gradcam", "gradcam++", "layercam", "hirescam", "eigengradcam", "eigencam", "cam"]


@pytest.mark.parametrize("method", [*ONE_FORWARD, "guided-backprop"])
def test_one_forward_for_all_images_and_targets(resnet18, method):
    x = torch.rand(3, 3, 64, 64)
    targets = [ClassTarget(k) for k in (0, 7, 42, 999)]
    batches: list[int] = []
    handle = resnet18.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        exp = explain(resnet18, x, targets, "layer4", method)
    finally:
        handle.remove()
    assert batches == [3]
    assert exp.maps.shape == (3, 4, 64, 64)
    # the batched gradients are each target's own
    for t in (0, 3):
        single = explain(resnet18, x, [targets[t]], "layer4", method)
        assert_close(exp.maps[:, t], single.maps[:, 0], rtol=1e-4, atol=1e-4)
        assert_close(exp.scores[:, t], single.scores[:, 0])


class _BranchOnGrad(torch.autograd.Function):
    """Identity whose backward branches on the gradient's values (no vmap rule for that)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        if bool((grad != 0).any()):
            return grad
        return torch.zeros_like(grad)


class BranchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x).mean(dim=(2, 3))
        return self.fc2(_BranchOnGrad.apply(self.fc1(a)))


def test_batched_gradient_fallback_for_ops_without_vmap_support():
    net = BranchNet().eval()
    x = torch.rand(2, 3, 8, 8)
    exp = explain(net, x, TARGETS, "conv", "gradcam")
    for t in range(2):
        single = explain(net, x, [TARGETS[t]], "conv", "gradcam")
        assert_close(exp.raw["conv"][:, t], single.raw["conv"][:, 0])


# -- errors ------------------------------------------------------------------------------------
def test_wrong_number_of_target_lists(cnn):
    x = torch.rand(3, 3, 16, 16)
    with pytest.raises(TaskcamError, match=r"\b2\b.*\b3\b"):
        explain(cnn, x, [[ClassTarget(0)], [ClassTarget(1)]], "2")
    with pytest.raises(TaskcamError, match=r"\b4\b.*\b3\b"):
        explain(cnn, x, [[ClassTarget(0)]] * 4, "2")
    with pytest.raises(TaskcamError, match=r"\[1, 2, 1\]"):
        explain(cnn, x, [[ClassTarget(0)], [ClassTarget(0), ClassTarget(1)], [ClassTarget(2)]], "2")
    with pytest.raises(TaskcamError, match="targets"):
        explain(cnn, x, [], "2")


def test_unknown_layer_suggests_close_names(resnet18):
    with pytest.raises(TaskcamError, match="layer5") as info:
        explain(resnet18, torch.rand(1, 3, 64, 64), TARGETS, "layer5")
    assert "layer4" in str(info.value)
    with pytest.raises(TaskcamError, match="not a submodule"):
        explain(resnet18, torch.rand(1, 3, 64, 64), TARGETS, nn.Conv2d(3, 3, 1))


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (lambda out: out, r"\(2, 5\)"),
        (lambda out: out.sum(), r"\(\)"),
        (lambda out: out[:1, 0], r"\(1,\)"),
        (lambda out: 1.0, "float"),
    ],
)
def test_target_with_wrong_shape(cnn, target, shown):
    before = snapshot(cnn)
    with pytest.raises(TaskcamError, match=shown) as info:
        explain(cnn, torch.rand(2, 3, 16, 16), [target], "2")
    assert "Tensor[2]" in str(info.value)
    assert_unchanged(before, cnn)


def test_unknown_method_lists_available(cnn):
    with pytest.raises(TaskcamError, match="gradcamz") as info:
        explain(cnn, torch.rand(1, 3, 16, 16), TARGETS, "2", "gradcamz")
    for name in METHODS:
        assert name in str(info.value)
    # lookup ignores case, "-" and "_"
    assert taskcam.get_method("Grad_CAM").name == "gradcam"
    assert taskcam.get_method("Guided-GradCAM").name == "guided-gradcam"


def test_class_index_out_of_range_names_the_number_of_classes(cnn):
    with pytest.raises(TaskcamError, match=r"\b5 classes"):
        explain(cnn, torch.rand(2, 3, 16, 16), [ClassTarget(0), ClassTarget(5)], "2")


def test_bad_options(cnn):
    with pytest.raises(TaskcamError, match="fuse"):
        Explainer(cnn, "2", fuse="max")
    with pytest.raises(TaskcamError, match="batch_size"):
        Explainer(cnn, "2", "scorecam", batch_size=0)
    with pytest.raises(TaskcamError, match="nn.Module"):
        Explainer(lambda x: x, "2")  # type: ignore[arg-type]
    with pytest.raises(TaskcamError, match=r"\(3, 16\)"):
        explain(cnn, torch.rand(3, 16), TARGETS, "2")


# -- fusion and normalisation --------------------------------------------------------------------
@pytest.mark.parametrize("fuse", ["mean", "product"])
def test_multi_layer_fusion(resnet18, fuse):
    x = torch.rand(2, 3, 64, 64)
    l3 = explain(resnet18, x, TARGETS, "layer3", "gradcam")
    l4 = explain(resnet18, x, TARGETS, "layer4", "gradcam")
    both = explain(resnet18, x, TARGETS, ["layer3", "layer4"], "gradcam", fuse=fuse)
    combined = (l3.maps + l4.maps) / 2 if fuse == "mean" else l3.maps * l4.maps
    assert_close(both.maps, normalize_maps(combined)[0], rtol=1e-4, atol=1e-4)
    assert both.layers == ["layer3", "layer4"]
    assert_close(both.raw["layer3"], l3.raw["layer3"], rtol=1e-4, atol=1e-6)
    assert_close(both.raw["layer4"], l4.raw["layer4"], rtol=1e-4, atol=1e-6)
    other = (l3.maps * l4.maps) if fuse == "mean" else (l3.maps + l4.maps) / 2
    assert not torch.allclose(both.maps, normalize_maps(other)[0], atol=1e-3)


def test_normalize_maps_flags_empty_maps_without_nan():
    maps = torch.stack(
        [
            torch.zeros(3, 4),
            torch.full((3, 4), 2.5),
            torch.tensor([[float("nan"), 2.0, 0.0, 1.0]] * 3),
            torch.full((3, 4), float("nan")),
            torch.arange(12.0).reshape(3, 4) - 4,
        ]
    )
    out, empty = normalize_maps(maps)
    assert not torch.isnan(out).any()
    assert empty.tolist() == [True, True, False, True, False]
    assert (out[empty] == 0).all()
    assert_close(out[2, 0], torch.tensor([0.0, 1.0, 0.0, 0.5]))
    assert out[4].min() == 0 and out[4].max() == 1
    assert_close(out[4], (torch.arange(12.0).reshape(3, 4)) / 11)


CONSTANT_TARGET_METHODS = [
    "gradcam",
    "gradcam++",
    "xgradcam",
    "hirescam",
    "gradcam-elementwise",
    "layercam",
    "eigengradcam",
    "ablationcam",
    "guided-backprop",
    "guided-gradcam",
    "scorecam",
]


@pytest.mark.parametrize("alone", [True, False], ids=["alone", "with_another"])
@pytest.mark.parametrize("kind", ["detached", "times_zero"])
@pytest.mark.parametrize("method", CONSTANT_TARGET_METHODS)
def test_constant_zero_target_gives_empty_map(cnn, method, kind, alone):
    def zero(output):
        if kind == "detached":
            return torch.zeros(output.shape[0])
        return output[:, 0] * 0

    targets = [zero] if alone else [zero, ClassTarget(1)]
    exp = explain(cnn, torch.rand(2, 3, 16, 16), targets, "2", method)
    assert exp.maps.shape == (2, len(targets), 16, 16)
    assert exp.empty[:, 0].all()
    assert (exp.maps[:, 0] == 0).all()
    assert torch.isfinite(exp.maps).all()
    for raw in exp.raw.values():
        assert torch.isfinite(raw).all()
    if not alone:
        assert not exp.empty[:, 1].any()


# -- default layer ------------------------------------------------------------------------------
def test_default_layer_resnet18():
    net = torchvision.models.resnet18(weights=None).train()
    assert default_layer(net, torch.rand(1, 3, 64, 64)) == "layer4"
    assert all(m.training for m in net.modules())
    mean = net.bn1.running_mean.clone()
    exp = explain(net, torch.rand(2, 3, 64, 64), TARGETS)
    assert exp.layers == ["layer4"]
    assert torch.equal(net.bn1.running_mean, mean)


def test_default_layer_timm_efficientnet_lite0():
    net = timm.create_model("efficientnet_lite0", pretrained=False)
    x = torch.rand(1, 3, 64, 64)
    name = default_layer(net, x)
    assert name == "bn2"  # conv_head's BatchNorm+ReLU6: the last spatial map, before pooling
    assert net.training
    exp = explain(net, x, TARGETS)
    assert exp.layers == ["bn2"]
    assert exp.raw["bn2"].shape == (1, 2, 2, 2)


@pytest.mark.parametrize("inplace", [False, True])
def test_default_layer_plain_sequential(make_cnn, inplace):
    net = make_cnn(inplace=inplace)
    assert default_layer(net, torch.rand(1, 3, 16, 16)) == "3"  # last ReLU before pooling
    exp = Explainer(net)(torch.rand(1, 3, 16, 16), TARGETS)
    assert exp.layers == ["3"]


def test_default_layer_without_spatial_output():
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(TaskcamError, match="spatial"):
        default_layer(net, torch.rand(1, 3, 2, 2))


# -- per-image targets ----------------------------------------------------------------------------
PER_IMAGE = [
    [ClassTarget(0), ClassTarget(1)],
    [ClassTarget(2), ClassTarget(3)],
    [ClassTarget(4), ClassTarget(0)],
]


@pytest.mark.parametrize(
    "method",
    ["gradcam", "layercam", "cam", "eigengradcam", "scorecam", "ablationcam", "guided-backprop"],
)
def test_per_image_targets_equal_single_image_calls(make_cnn, method):
    net = make_cnn()
    layer = "3" if method == "cam" else "2"
    x = torch.rand(3, 3, 16, 16)
    exp = explain(net, x, PER_IMAGE, layer, method)
    with torch.no_grad():
        logits = net(x)
    for b, row in enumerate(PER_IMAGE):
        single = explain(net, x[b : b + 1], [row], layer, method)
        assert_close(exp.maps[b], single.maps[0], rtol=1e-4, atol=1e-5)
        assert_close(exp.scores[b], single.scores[0])
        assert_close(exp.scores[b], logits[b, [t.class_index for t in row]])
        if method != "guided-backprop":
            assert_close(exp.raw[layer][b], single.raw[layer][0], rtol=1e-4, atol=1e-6)
    # different classes really give different maps
    assert not torch.allclose(exp.maps[0, 0], exp.maps[0, 1])


def test_top_k_targets_per_image_on_resnet18(resnet18):
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        logits = resnet18(x)
    targets = top_k_targets(logits, k=2)
    exp = explain(resnet18, x, targets, "layer4", "gradcam")
    assert_close(exp.scores, logits.topk(2, dim=1).values)
    for b in range(2):
        single = explain(resnet18, x[b : b + 1], [targets[b]], "layer4", "gradcam")
        assert_close(exp.maps[b], single.maps[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["rise", "rollout"])
def test_eigen_smooth_is_refused_for_methods_that_read_no_layer(cnn, method):
    with pytest.raises(TaskcamError, match=f"eigen_smooth: {method} reads no layer"):
        Explainer(cnn, None, method, eigen_smooth=True)


def test_a_view_of_the_users_model_gives_it_back_in_its_own_mode():
    """Wrappers that share a model's modules (Hugging Face segmenters, YOLO classifiers,
    SAM, OWL-ViT) run it in eval mode; the user's model itself, not only the view, comes back
    in training mode with its flags."""
    from taskcam.loaded import SharedModules

    class Logits(SharedModules):
        def forward(self, x):
            return self.wrapped(x).mean(dim=(2, 3))

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout()).train()
    net[0].weight.requires_grad_(False)
    view = Logits(net)
    exp = taskcam.explain(view, torch.rand(1, 3, 8, 8), [ClassTarget(1)], "0")
    assert exp.maps.shape == (1, 1, 8, 8)
    assert net.training and net[1].training and view.training
    assert not net[0].weight.requires_grad and net[0].bias.requires_grad
