"""Every CAM method checked against its published formula, computed by hand on tiny nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

import taskcam
from taskcam import explain, normalize_maps
from taskcam.adapters.classification import ClassTarget

CLASSES = (0, 2)
TARGETS = [ClassTarget(k) for k in CLASSES]


# -- the published formulas, on A: [B, C, h, w] and g: [B, T, C, h, w] -------------------------
def _weighted(weights: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """relu(sum_c w_c A_c): [B, T, h, w]."""
    return (weights[..., None, None] * a[:, None]).sum(dim=2).clamp(min=0)


def f_gradcam(a, g):
    return _weighted(g.mean(dim=(-2, -1)), a)


def f_gradcampp(a, g):
    g2, g3 = g**2, g**3
    sum_a = a.sum(dim=(-2, -1))[:, None, :, None, None]
    alpha = torch.where(g != 0, g2 / (2 * g2 + sum_a * g3), torch.zeros_like(g))
    return _weighted((alpha * g.clamp(min=0)).sum(dim=(-2, -1)), a)


def f_xgradcam(a, g):
    norm = a / a.sum(dim=(-2, -1), keepdim=True)
    return _weighted((g * norm[:, None]).sum(dim=(-2, -1)), a)


def f_hirescam(a, g):
    return (g * a[:, None]).sum(dim=2).clamp(min=0)


def f_gradcam_elementwise(a, g):
    return (g * a[:, None]).clamp(min=0).sum(dim=2)


def f_layercam(a, g):
    return (g.clamp(min=0) * a[:, None]).sum(dim=2).clamp(min=0)


FORMULAS = {
    "gradcam": f_gradcam,
    "gradcam++": f_gradcampp,
    "xgradcam": f_xgradcam,
    "hirescam": f_hirescam,
    "gradcam-elementwise": f_gradcam_elementwise,
    "layercam": f_layercam,
}


def hand_principal(x: torch.Tensor) -> torch.Tensor:
    """First principal component of ``x: [N, C, h, w]`` per item, via the C×C covariance's
    eigenvectors (not an SVD), signed to correlate with the channel sum; rectified."""
    out = []
    for item in x.double():
        flat = item.flatten(1).T  # [hw, C]
        flat = flat - flat.mean(dim=0)
        _, vecs = torch.linalg.eigh(flat.T @ flat)
        proj = flat @ vecs[:, -1]
        if (proj * flat.sum(dim=1)).sum() < 0:
            proj = -proj
        out.append(proj.reshape(item.shape[1:]))
    return torch.stack(out).clamp(min=0)


# -- a tiny net with closed-form activations and gradients ----------------------------------
W_CONV = torch.tensor([[[[1.0, 0.5], [0.25, 2.0]]], [[[0.5, 1.5], [1.0, 0.2]]]])  # [2, 1, 2, 2]
B_CONV = torch.tensor([0.1, -0.2])


class QuadHead(nn.Module):
    """``feat`` (the target layer, giving ``A``) then logits ``y_k = sum(M_k A) + sum(Q_k A²)/2``,
    so ``dy_k / dA = M_k + Q_k A``: a gradient that changes over space and between images."""

    def __init__(self, feat: nn.Module, m: torch.Tensor, q: torch.Tensor) -> None:
        super().__init__()
        self.feat = feat
        self.register_buffer("m", m)  # [K, C, h, w]
        self.register_buffer("q", q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.feat(x)[:, None]  # [B, 1, C, h, w]
        return (a * (self.m + self.q * a / 2)).sum(dim=(2, 3, 4))

    def hand_grads(self, a: torch.Tensor, classes=CLASSES) -> torch.Tensor:
        """``[B, T, C, h, w]`` in closed form."""
        m, q = self.m.double(), self.q.double()
        return torch.stack([m[k] + q[k] * a.double() for k in classes], dim=1)

    def hand_logits(self, a: torch.Tensor) -> torch.Tensor:
        a = a.double()[:, None]
        return (a * (self.m.double() + self.q.double() * a / 2)).sum(dim=(2, 3, 4))


def quad_net() -> QuadHead:
    """``x: [B, 1, 5, 5]`` -> a 2×2 conv with fixed weights (``A: [B, 2, 4, 4]``) -> QuadHead."""
    conv = nn.Conv2d(1, 2, 2)
    with torch.no_grad():
        conv.weight.copy_(W_CONV)
        conv.bias.copy_(B_CONV)
    g = torch.Generator().manual_seed(1)
    m = torch.randn(3, 2, 4, 4, generator=g)
    q = torch.rand(3, 2, 4, 4, generator=g) / 2
    return QuadHead(conv, m, q).eval()


def hand_conv(x: torch.Tensor) -> torch.Tensor:
    """The 2×2 valid convolution of ``quad_net`` written out: ``[B, 1, 5, 5] -> [B, 2, 4, 4]``."""
    x, w, b = x.double(), W_CONV.double(), B_CONV.double()
    out = torch.empty(x.shape[0], 2, 4, 4, dtype=torch.float64)
    for c in range(2):
        out[:, c] = b[c]
        for di in range(2):
            for dj in range(2):
                out[:, c] += w[c, 0, di, dj] * x[:, 0, di : di + 4, dj : dj + 4]
    return out


@pytest.fixture
def quad():
    x = torch.rand(2, 1, 5, 5) + 0.5  # positive inputs and weights: A > 0 like post-ReLU maps
    net = quad_net()
    a = hand_conv(x)
    return net, x, a, net.hand_grads(a)


def test_quad_net_fixture_is_what_the_tests_need(quad):
    net, x, a, g = quad
    assert (a > 0).all()
    assert (g < 0).any() and (g > 0).any()
    assert g.std(dim=(-2, -1)).min() > 0.05  # the gradient is not spatially constant
    with torch.no_grad():
        assert_close(net(x), net.hand_logits(a).float())


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "hirescam"])
def test_hand_values_on_tiny_net(quad, method):
    net, x, a, g = quad
    exp = explain(net, x, TARGETS, "feat", method)
    assert exp.layers == ["feat"]
    assert_close(exp.raw["feat"], FORMULAS[method](a, g).float())
    assert_close(exp.scores, net.hand_logits(a)[:, list(CLASSES)].float())


def test_gradcam_and_hirescam_differ_when_gradient_varies_over_space(quad):
    net, x, a, g = quad
    grad = explain(net, x, TARGETS, "feat", "gradcam").raw["feat"]
    hires = explain(net, x, TARGETS, "feat", "hirescam").raw["feat"]
    assert (grad - hires).abs().max() > 0.1
    # and each is its own formula, not the other's
    assert not torch.allclose(grad, f_hirescam(a, g).float(), atol=1e-3)


@pytest.mark.parametrize("method", list(FORMULAS))
def test_formulas_on_random_activations_and_gradients(method):
    # the target layer is an Identity: A is the input itself, g = M_k + Q_k A in closed form
    a = torch.rand(3, 5, 6, 7) + 0.05
    m, q = torch.randn(4, 5, 6, 7), torch.randn(4, 5, 6, 7)
    net = QuadHead(nn.Identity(), m, q)
    exp = explain(net, a, TARGETS, "feat", method)
    expected = FORMULAS[method](a.double(), net.hand_grads(a)).float()
    assert expected.abs().max() > 0  # the check is not vacuous
    assert_close(exp.raw["feat"], expected, rtol=1e-4, atol=1e-5)
    assert exp.raw["feat"].shape == (3, 2, 6, 7)
    # the layer is at the input's resolution: the maps are the normalised raw maps
    assert_close(exp.maps, normalize_maps(expected)[0], rtol=1e-4, atol=1e-4)


def test_hirescam_keeps_negative_evidence_apart_from_elementwise():
    a = torch.rand(2, 5, 6, 7) + 0.05
    net = QuadHead(nn.Identity(), torch.randn(4, 5, 6, 7), torch.zeros(4, 5, 6, 7))
    hires = explain(net, a, TARGETS, "feat", "hirescam").raw["feat"]
    elem = explain(net, a, TARGETS, "feat", "gradcam-elementwise").raw["feat"]
    assert (elem >= hires - 1e-6).all()
    assert (elem - hires).max() > 0.01


# -- eigen methods ---------------------------------------------------------------------------
def _blob(h: int, w: int, cy: float, cx: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 4.0)


def test_eigencam_finds_a_rank_one_pattern_with_positive_sign():
    h, w = 8, 10
    blobs = torch.stack([_blob(h, w, 2, 3), _blob(h, w, 5, 7)])  # [B, h, w], one per image
    v = torch.rand(8) + 0.5  # channel loadings
    a = v[None, :, None, None] * blobs[:, None] + 0.01 * torch.randn(2, 8, h, w)
    net = QuadHead(nn.Identity(), torch.randn(3, 8, h, w), torch.zeros(3, 8, h, w))
    exp = explain(net, a, TARGETS, "feat", "eigencam")
    raw = exp.raw["feat"]  # [B, T, h, w]
    for b in range(2):
        peak = int(blobs[b].argmax())
        assert int(raw[b, 0].argmax()) == peak
        assert raw[b, 0].flatten()[peak] > 0
        expected = normalize_maps((blobs[b] - blobs[b].mean()).clamp(min=0))[0]
        assert_close(exp.maps[b, 0], expected, atol=0.05, rtol=0)
    # class-agnostic: both targets get the same map
    assert_close(raw[:, 0], raw[:, 1])
    assert_close(raw[:, 0], hand_principal(a).float(), rtol=1e-4, atol=1e-4)


def test_eigengradcam_is_the_principal_component_of_grad_times_act(quad):
    net, x, a, g = quad
    exp = explain(net, x, TARGETS, "feat", "eigengradcam")
    raw = exp.raw["feat"]
    assert torch.isfinite(raw).all() and torch.isfinite(exp.maps).all()
    assert raw.shape == (2, 2, 4, 4)
    expected = hand_principal((g * a[:, None]).flatten(0, 1)).reshape(2, 2, 4, 4)
    assert_close(raw, expected.float(), rtol=1e-4, atol=1e-4)


def test_eigen_smooth_projects_the_weighted_activations(quad):
    net, x, a, g = quad
    exp = explain(net, x, TARGETS, "feat", "gradcam", eigen_smooth=True)
    weighted = g.mean(dim=(-2, -1))[..., None, None] * a[:, None]  # [B, T, C, h, w]
    expected = hand_principal(weighted.flatten(0, 1)).reshape(2, 2, 4, 4)
    assert_close(exp.raw["feat"], expected.float(), rtol=1e-4, atol=1e-4)


# -- CAM ---------------------------------------------------------------------------------------
def test_cam_equals_gradcam_on_gap_linear_net(cnn):
    x = torch.rand(2, 3, 16, 16)
    targets = [ClassTarget(1), ClassTarget(4)]
    cam = explain(cnn, x, targets, "3", "cam")  # layer "3" feeds GAP then the linear layer
    grad = explain(cnn, x, targets, "3", "gradcam")
    assert cam.raw["3"].abs().max() > 0
    assert_close(cam.raw["3"], grad.raw["3"] * 8 * 8)  # 1 / (h * w) of the average pool
    assert_close(cam.maps, grad.maps, rtol=1e-4, atol=1e-5)
    # the classifier may be given explicitly, by name or module
    by_name = explain(cnn, x, targets, "3", "cam", fc="6")
    by_module = explain(cnn, x, targets, "3", "cam", fc=cnn[6])
    assert_close(by_name.raw["3"], cam.raw["3"])
    assert_close(by_module.raw["3"], cam.raw["3"])


def test_cam_equals_gradcam_on_resnet18(resnet18):
    x = torch.rand(2, 3, 64, 64)
    cam = explain(resnet18, x, TARGETS, "layer4", "cam")
    grad = explain(resnet18, x, TARGETS, "layer4", "gradcam")
    assert_close(cam.raw["layer4"], grad.raw["layer4"] * 2 * 2, rtol=1e-4, atol=1e-6)
    assert_close(cam.maps, grad.maps, rtol=1e-3, atol=1e-4)


# -- perturbation methods against a slow reference loop --------------------------------------
def _reference_weighted(acts: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """acts [B, C, h, w], weights [B, C, T] -> relu(sum_c w A): [B, T, h, w]."""
    return torch.einsum("bct,bchw->bthw", weights, acts).clamp(min=0)


@pytest.mark.parametrize("batch_size", [4, None])
def test_scorecam_matches_reference_loop(cnn, batch_size):
    x = torch.rand(2, 3, 16, 16)
    targets = [ClassTarget(1), ClassTarget(3)]
    exp = explain(cnn, x, targets, "2", "scorecam", batch_size=batch_size)
    with torch.no_grad():
        acts = cnn[:3](x)  # [2, 6, 8, 8], the output of layer "2"
        weights = torch.empty(2, 6, 2)
        for b in range(2):
            scores = torch.empty(6, 2)
            for c in range(6):
                up = F.interpolate(
                    acts[b, c][None, None], size=(16, 16), mode="bilinear", align_corners=False
                )[0, 0]
                mask = (up - up.min()) / (up.max() - up.min())
                out = cnn(x[b : b + 1] * mask)  # one forward per channel
                scores[c] = torch.stack([t(out)[0] for t in targets])
            weights[b] = scores.softmax(dim=0)
    expected = _reference_weighted(acts, weights)
    assert expected.abs().max() > 0
    assert_close(exp.raw["2"], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("inplace", [False, True])
def test_ablationcam_matches_reference_loop(make_cnn, inplace):
    cnn = make_cnn(inplace=inplace)
    x = torch.rand(2, 3, 16, 16)
    targets = [ClassTarget(1), ClassTarget(3)]
    exp = explain(cnn, x, targets, "2", "ablationcam", batch_size=4)
    with torch.no_grad():
        acts = cnn[:3](x)
        y = cnn(x)[:, [1, 3]]  # [B, T]
        weights = torch.empty(2, 6, 2)
        for b in range(2):
            for c in range(6):
                ablated = acts[b : b + 1].clone()
                ablated[:, c] = 0
                y_k = cnn[3:](ablated)[0, [1, 3]]  # one forward per channel
                weights[b, c] = (y[b] - y_k) / y[b]
    expected = _reference_weighted(acts, weights)
    assert expected.abs().max() > 0
    assert_close(exp.raw["2"], expected, rtol=1e-4, atol=1e-5)


# -- guided backpropagation ------------------------------------------------------------------
class GuidedNet(nn.Module):
    """``[B, 3, 6, 6]`` -> conv1, relu, conv2, relu, fc (4 classes); ReLUs as modules (in
    place or not) or ``F.relu``."""

    def __init__(self, relu: str) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 6 * 6, 4)
        self.kind = relu
        if relu != "functional":
            self.act1 = nn.ReLU(inplace=relu == "inplace")
            self.act2 = nn.ReLU(inplace=relu == "inplace")

    def _relu(self, i: int, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "functional":
            return F.relu(x)
        return getattr(self, f"act{i}")(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._relu(1, self.conv1(x))
        x = self._relu(2, self.conv2(x))
        return self.fc(x.flatten(1))


def hand_backprop(net: GuidedNet, x: torch.Tensor, k: int, guided: bool) -> torch.Tensor:
    """d logit_k / d x by hand (transposed convolutions); ``guided`` zeroes negative gradients
    at each ReLU on top of the ReLU's own gate."""
    with torch.no_grad():
        z1 = F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1)
        z2 = F.conv2d(z1.clamp(min=0), net.conv2.weight, net.conv2.bias, padding=1)
        g = net.fc.weight[k].reshape(1, 3, 6, 6).expand(x.shape[0], -1, -1, -1)
        g = g * (z2 > 0) * ((g > 0) if guided else 1)
        g = F.conv_transpose2d(g, net.conv2.weight, padding=1)
        g = g * (z1 > 0) * ((g > 0) if guided else 1)
        return F.conv_transpose2d(g, net.conv1.weight, padding=1)


@pytest.mark.parametrize("relu", ["module", "inplace", "functional"])
def test_guided_backprop_equals_hand_implementation(relu):
    net = GuidedNet(relu).eval()
    x = torch.randn(2, 3, 6, 6)
    targets = [ClassTarget(1), ClassTarget(2)]
    modules = list(net.named_modules())
    relu_fn = F.relu
    xr = x.clone().requires_grad_(True)
    plain = torch.autograd.grad(net(xr)[:, 1].sum(), xr)[0]

    exp = explain(net, x, targets, "conv2", "guided-backprop")

    expected = torch.stack([hand_backprop(net, x, k, guided=True) for k in (1, 2)], dim=1)
    assert exp.pixel_grads is not None and exp.pixel_grads.shape == (2, 2, 3, 6, 6)
    assert expected.abs().max() > 0
    assert_close(exp.pixel_grads, expected)
    assert_close(exp.maps, normalize_maps(expected.abs().amax(dim=2))[0])
    # guided is not the plain gradient (the hand reference of which matches autograd)
    assert_close(plain, hand_backprop(net, x, 1, guided=False))
    assert not torch.allclose(expected[:, 0], plain, atol=1e-4)
    # the model keeps its very modules, unpatched, and a normal backward is unchanged
    after = list(net.named_modules())
    assert [n for n, _ in after] == [n for n, _ in modules]
    assert all(m_after is m_before for (_, m_after), (_, m_before) in zip(after, modules))
    assert all("forward" not in vars(m) for _, m in after)
    assert F.relu is relu_fn
    xr = x.clone().requires_grad_(True)
    assert_close(torch.autograd.grad(net(xr)[:, 1].sum(), xr)[0], plain, rtol=0, atol=0)


def test_guided_gradcam_is_guided_grads_times_gradcam():
    net = GuidedNet("inplace").eval()
    x = torch.randn(2, 3, 6, 6)
    targets = [ClassTarget(0), ClassTarget(3)]
    gg = explain(net, x, targets, "conv2", "guided-gradcam")
    gb = explain(net, x, targets, "conv2", "guided-backprop")
    gc = explain(net, x, targets, "conv2", "gradcam")
    assert gc.maps.abs().max() > 0
    assert_close(gg.pixel_grads, gb.pixel_grads * gc.maps[:, :, None])
    assert_close(gg.maps, normalize_maps(gg.pixel_grads.abs().amax(dim=2))[0])
    assert_close(gg.raw["conv2"], gc.raw["conv2"])


# -- every method × layer forms × batch sizes on a real torchvision ResNet-18 -------------------
# every method that explains any target through a layer or the input (D-RISE explains
# detections only: tests/adapters; the attention methods need a ViT: tests/attention)
METHODS = [
    m
    for m in taskcam.available_methods()
    if not (taskcam.get_method(m).needs_detections or taskcam.get_method(m).attention)
]


def _is_perturbation(method: str) -> bool:
    return taskcam.get_method(method).perturbation


def _layer_spec(model: nn.Module, method: str, form: str):
    if _is_perturbation(method):  # on the small CNN: one forward per channel stays cheap
        one, pair = "2", ("0", "2")
    elif method == "cam":  # CAM needs layers with the classifier's 512 input channels
        one, pair = "layer4", ("layer4.0", "layer4")
    else:
        one, pair = "layer4", ("layer3", "layer4")
    if form == "name":
        return one, [one]
    if form == "module":
        return model.get_submodule(one), [one]
    return [pair[0], model.get_submodule(pair[1])], list(pair)


def _check_maps(exp, batch: int, n_targets: int, size: int = 64) -> None:
    assert exp.maps.shape == (batch, n_targets, size, size)
    assert torch.isfinite(exp.maps).all()
    assert exp.maps.min() >= 0 and exp.maps.max() <= 1
    assert exp.empty.shape == (batch, n_targets)
    assert exp.scores.shape == (batch, n_targets)


def test_every_method_is_covered():
    assert len(METHODS) >= 13 and len(set(METHODS)) == len(METHODS)
    for name in ("gradcam", "gradcam++", "scorecam", "ablationcam", "eigencam", "layercam"):
        assert name in METHODS


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("form", ["name", "module", "list"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_layer_form_and_batch(resnet18, cnn, method, form, batch):
    # perturbation methods run one forward per channel: they use the small CNN here and
    # ResNet-18 in test_perturbation_methods_on_resnet18
    model, size = (cnn, 16) if _is_perturbation(method) else (resnet18, 64)
    layers, names = _layer_spec(model, method, form)
    x = torch.rand(batch, 3, size, size)
    exp = explain(model, x, TARGETS, layers, method, batch_size=512)
    _check_maps(exp, batch, 2, size)
    assert exp.method == method
    assert not exp.empty.all()
    if taskcam.get_method(method).pixel_space:
        assert exp.pixel_grads is not None
        assert exp.pixel_grads.shape == (batch, 2, 3, size, size)
        assert torch.isfinite(exp.pixel_grads).all()
    if not taskcam.get_method(method).uses_layers:  # black-box methods ignore layers
        assert exp.layers == [] and exp.raw == {}
    elif method != "guided-backprop":
        assert exp.layers == names
        assert list(exp.raw) == names
        for raw in exp.raw.values():
            assert raw.shape[:2] == (batch, 2)
            assert torch.isfinite(raw).all() and (raw >= 0).all()


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_perturbation_methods_on_resnet18(resnet18, method):
    exp = explain(resnet18, torch.rand(1, 3, 64, 64), TARGETS[:1], "layer1", method, batch_size=512)
    _check_maps(exp, 1, 1)
    assert not exp.empty.any()
    assert exp.raw["layer1"].shape == (1, 1, 16, 16)


SMOOTHABLE = [m for m in METHODS if not _is_perturbation(m)]


@pytest.mark.parametrize(
    "method", ["gradcam", "gradcam++", "layercam", "eigencam", "guided-backprop"]
)
def test_aug_smooth_on_resnet18(resnet18, method):
    exp = explain(resnet18, torch.rand(2, 3, 64, 64), TARGETS, "layer4", method, aug_smooth=True)
    _check_maps(exp, 2, 2)
    assert not exp.empty.all()


@pytest.mark.parametrize("method", SMOOTHABLE)
def test_eigen_smooth_on_resnet18(resnet18, method):
    x = torch.rand(2, 3, 64, 64)
    layer = "layer4" if method == "cam" else "layer3"
    exp = explain(resnet18, x, TARGETS, layer, method, eigen_smooth=True)
    _check_maps(exp, 2, 2)
    assert not exp.empty.all()
    if method in ("gradcam", "layercam", "hirescam"):
        plain = explain(resnet18, x, TARGETS, layer, method)
        assert not torch.allclose(exp.maps, plain.maps, atol=1e-3)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("option", ["aug_smooth", "eigen_smooth"])
def test_smoothing_of_perturbation_methods(cnn, method, option):
    exp = explain(cnn, torch.rand(2, 3, 16, 16), TARGETS, "2", method, **{option: True})
    _check_maps(exp, 2, 2, size=16)
    assert not exp.empty.all()


def test_guided_backprop_gates_relu6_modules():
    """nn.ReLU6 runs as F.hardtanh(x, 0, 6): it must be guided like a ReLU (MobileNets,
    EfficientNet-Lite); a hardtanh that clips at -1 must not be."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU6(), nn.Conv2d(4, 3, 3, padding=1), nn.Flatten()
    ).eval()
    x = torch.rand(1, 3, 5, 5)

    def score(out):
        return out[:, :10].sum(1) - out[:, 10:40].sum(1)

    exp = explain(net, x, [score], None, "guided-backprop")
    # by hand: the conv before the ReLU6, gradient gated by (pre-activation in (0, 6)) and > 0
    xg = x.clone().requires_grad_(True)
    pre = net[0](xg)
    pre.retain_grad()
    post = pre.clamp(0, 6)
    out = net[3](net[2](post))
    (g_post,) = torch.autograd.grad(score(out).sum(), post, retain_graph=True)
    g_pre = g_post.clamp(min=0) * ((pre > 0) & (pre < 6)).float()
    (expected,) = torch.autograd.grad(pre, xg, g_pre)
    torch.testing.assert_close(exp.pixel_grads[:, 0], expected)
    (plain,) = torch.autograd.grad(score(net(xg)).sum(), xg)
    assert not torch.allclose(exp.pixel_grads[:, 0], plain)

    from taskcam.methods.guided import GuidedReLU

    z = torch.tensor([0.5, -0.5], requires_grad=True)
    with GuidedReLU():
        y = (torch.nn.Hardtanh()(z) * torch.tensor([-2.0, 3.0])).sum()
    assert torch.autograd.grad(y, z)[0].tolist() == [-2.0, 3.0]


def test_the_explainers_batch_size_reaches_black_box_methods():
    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    rise = taskcam.get_method("rise", n_masks=10)
    explain(net, torch.rand(1, 3, 16, 16), [ClassTarget(0)], method=rise, batch_size=4)
    assert calls == [1, 4, 4, 2]  # the clean forward, then 10 masks 4 at a time
    calls.clear()  # a method's own batch size comes first
    own = taskcam.get_method("rise", n_masks=10, batch_size=5)
    explain(net, torch.rand(1, 3, 16, 16), [ClassTarget(0)], method=own, batch_size=4)
    assert calls == [1, 5, 5]
