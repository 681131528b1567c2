"""The batched masking engine and the perturbation methods' batching, fast modes and
cancellation."""

from __future__ import annotations

import threading

import pytest
import torch
import torchvision

from taskcam import explain, get_method
from taskcam.adapters.classification import ClassTarget
from taskcam.errors import TaskcamError
from taskcam.masking import Cancelled, auto_batch_size, rise_masks, run_batches, sample_bytes
from taskcam.methods.perturbation import select_channels


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_run_batches_concatenates_in_order_and_checks_batch_size():
    seen = []

    def evaluate(sl):
        seen.append((sl.start, sl.stop))
        return torch.arange(sl.start, sl.stop)[:, None].float()

    out = run_batches(7, evaluate, batch_size=3)
    assert out[:, 0].tolist() == list(range(7))
    assert seen == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(TaskcamError, match="batch_size"):
        run_batches(3, evaluate, batch_size=0)


def test_cancel_stops_before_the_next_batch():
    cancel = threading.Event()
    calls = []

    def evaluate(sl):
        calls.append(sl.start)
        if sl.start == 2:
            cancel.set()
        return torch.zeros(sl.stop - sl.start)

    with pytest.raises(Cancelled, match="after 4 of 10"):
        run_batches(10, evaluate, batch_size=2, cancel=cancel)
    assert calls == [0, 2]


def test_auto_batch_size_follows_the_budget(net):
    one = torch.rand(1, 3, 64, 64)
    per = sample_bytes(net, one)
    # ResNet-18's largest output at 64x64 is conv1's 64x32x32 floats
    assert per >= 3 * 64 * 32 * 32 * 4
    assert auto_batch_size(per, one.device, budget=10 * per) == 10
    assert auto_batch_size(per, one.device, budget=per // 2) == 1
    assert auto_batch_size(per, one.device, budget=1 << 40) == 256
    # the CPU default keeps a batch of full forwards about cache-sized (48 MiB); a tail-only
    # caller raises that ceiling
    default = auto_batch_size(per, one.device)
    assert 1 <= default <= max(1, (48 << 20) // per)
    assert auto_batch_size(per, one.device, cpu_budget=1 << 40) > default


def test_rise_masks_are_seeded_smooth_and_keep_p():
    a = rise_masks(64, (40, 56), grid=6, p=0.3, generator=torch.Generator().manual_seed(1))
    b = rise_masks(64, (40, 56), grid=6, p=0.3, generator=torch.Generator().manual_seed(1))
    assert a.shape == (64, 1, 40, 56) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert abs(float(a.mean()) - 0.3) < 0.06
    # smooth: values strictly between 0 and 1 exist (bilinear up-sampling)
    assert ((a > 0.05) & (a < 0.95)).float().mean() > 0.1


def test_select_channels_by_spatial_variance():
    acts = torch.zeros(2, 40, 4, 4)
    acts[0, 7, 0, 0] = 9.0
    acts[1, 3, 1, 1] = 5.0
    acts[1, 30] = 4.0  # constant: no variance
    assert select_channels(acts, 1).tolist() == [[7], [3]]
    assert select_channels(acts, 0.5).shape == (2, 20)
    assert select_channels(acts, 0.01).shape == (2, 16)  # a fraction keeps at least 16
    with pytest.raises(TaskcamError, match="top_k"):
        get_method("scorecam", top_k=0)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_auto_batch_gives_the_same_maps_as_a_fixed_batch(net, method):
    x = torch.rand(1, 3, 64, 64)
    targets = [ClassTarget(2), ClassTarget(5)]
    fixed = explain(net, x, targets, "layer3", get_method(method, batch_size=16))
    auto = explain(net, x, targets, "layer3", get_method(method, memory_budget=64 << 20))
    torch.testing.assert_close(auto.raw["layer3"], fixed.raw["layer3"], rtol=1e-4, atol=1e-5)


def test_scorecam_constant_channels_scored_once_with_the_same_result(net):
    """Channels that are constant over space share the all-zero mask: one forward for all."""
    x = torch.rand(1, 3, 64, 64)
    forwards = []
    handle = net.register_forward_pre_hook(lambda _m, inp: forwards.append(inp[0].shape[0]))
    try:
        exp = explain(net, x, [ClassTarget(1)], "layer4", get_method("scorecam", batch_size=600))
    finally:
        handle.remove()
    acts = {}
    h = net.layer4.register_forward_hook(lambda _m, _i, o: acts.setdefault("a", o))
    with torch.no_grad():
        net(x)
    h.remove()
    a = acts["a"][0]
    n_constant = int(((a.amax(dim=(1, 2)) - a.amin(dim=(1, 2))) <= 0).sum())
    assert n_constant > 0  # post-ReLU 2x2 maps: some channels are all zero
    # the original forward, one zero-input forward, then the live channels in one batch
    assert forwards == [1, 1, 512 - n_constant]
    assert torch.isfinite(exp.maps).all() and not exp.empty.any()


@pytest.mark.parametrize("method", ["fast-scorecam", "fast-ablationcam"])
def test_fast_modes_perturb_fewer_channels_and_stay_close(net, method):
    x = torch.rand(1, 3, 96, 96)
    exact_name = method.removeprefix("fast-")
    exact = explain(net, x, [ClassTarget(3)], "layer3", get_method(exact_name, batch_size=64))
    fast_method = get_method(method, top_k=0.5, batch_size=64)
    fast = explain(net, x, [ClassTarget(3)], "layer3", fast_method)
    assert fast_method.top_k == 0.5
    assert _corr(exact.maps, fast.maps) > 0.8


def test_ablationcam_tail_only_matches_full_forwards(net):
    x = torch.rand(2, 3, 64, 64)
    targets = [ClassTarget(0), ClassTarget(7)]
    tail = get_method("ablationcam", batch_size=64)
    full = get_method("ablationcam", batch_size=64, tail_only=False)
    a = explain(net, x, targets, "layer3", tail)
    b = explain(net, x, targets, "layer3", full)
    assert not tail.fell_back
    torch.testing.assert_close(a.raw["layer3"], b.raw["layer3"], rtol=1e-3, atol=1e-4)


def test_ablationcam_falls_back_where_the_tail_cannot_batch():
    class Concat(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)
            self.fc = torch.nn.Linear(16, 4)

        def forward(self, x):
            a = self.c1(x)
            return self.fc(torch.cat([a, self.c2(a)], 1).mean((2, 3)))

    torch.manual_seed(0)
    model = Concat().eval()
    x = torch.rand(1, 3, 16, 16)
    tail = get_method("ablationcam")
    a = explain(model, x, [ClassTarget(1)], "c2", tail)
    b = explain(model, x, [ClassTarget(1)], "c2", get_method("ablationcam", tail_only=False))
    assert tail.fell_back
    torch.testing.assert_close(a.raw["c2"], b.raw["c2"])


def test_cancelled_explanation_leaves_the_model_as_it_was(net):
    cancel = threading.Event()
    cancel.set()
    hooks_before = {n: len(m._forward_hooks) for n, m in net.named_modules()}
    with pytest.raises(Cancelled):
        explain(
            net,
            torch.rand(1, 3, 64, 64),
            [ClassTarget(0)],
            "layer3",
            get_method("scorecam", cancel=cancel),
        )
    assert {n: len(m._forward_hooks) for n, m in net.named_modules()} == hooks_before
    assert not net.training


def test_scorecam_falls_back_to_contiguous_inputs_for_view_models():
    """A model that .view()s a conv output cannot take channels-last inputs: same maps."""

    class Viewer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            a = self.conv(x)
            return self.fc(a.view(a.shape[0], -1))

    torch.manual_seed(0)
    model = Viewer().eval()
    x = torch.rand(1, 3, 8, 8)
    method = get_method("scorecam", batch_size=4)
    exp = explain(model, x, [ClassTarget(1)], "conv", method)
    assert method._channels_last is False
    reference = explain(model, x, [ClassTarget(1)], "conv", get_method("scorecam", batch_size=1))
    torch.testing.assert_close(exp.raw["conv"], reference.raw["conv"])


class _QuadrantScore(torch.nn.Module):
    """A black box whose class-0 score is the mean of the top-left quadrant's pixels."""

    def forward(self, x):
        h, w = x.shape[-2:]
        s = x[:, :, : h // 2, : w // 2].mean(dim=(1, 2, 3))
        return torch.stack([s, -s], dim=1)


def test_rise_finds_the_region_the_black_box_reads():
    x = torch.ones(2, 3, 32, 32)
    method = get_method("rise", n_masks=500, grid=4, batch_size=100)
    exp = explain(_QuadrantScore(), x, [ClassTarget(0)], None, method)
    assert exp.layers == [] and exp.maps.shape == (2, 1, 32, 32)
    m = exp.maps[0, 0]
    assert m[:16, :16].mean() > m[16:, 16:].mean() + 0.3
    again = explain(_QuadrantScore(), x, [ClassTarget(0)], None, method)
    torch.testing.assert_close(again.maps, exp.maps)  # seeded
    other = explain(
        _QuadrantScore(),
        x,
        [ClassTarget(0)],
        None,
        get_method("rise", seed=1, n_masks=500, grid=4, batch_size=100),
    )
    assert not torch.equal(other.maps, exp.maps)
    with pytest.raises(TaskcamError, match="n_masks"):
        get_method("rise", n_masks=0)
