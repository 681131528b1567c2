"""Faster forwards for the black-box methods (taskcam.runtime), mixed precision and the
split-half stop rule, on the trained zoo:shapes-yolo at 128 px.

OpenVINO and ONNX Runtime give the maps PyTorch gives, up to float rounding; what cannot run
in them (layer and gradient methods, bound extra inputs, an export that computes something
else) is refused by name and the model comes back as it was. The stop rule ends sampling
when each map is reproducible and records the masks it used.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.testing import assert_close

import taskcam
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.methods.rise import SplitSums
from taskcam.runtime import _CACHE, AutocastForward, compiled_forward

pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def shapes():
    """zoo:shapes-yolo at 128 px: the model, one held-out image's input and its targets."""
    from taskcam.adapters.ultralytics import YoloAdapter
    from taskcam.data.shapes import HELDOUT_SEED, make_sample
    from taskcam.zoo import build_zoo_model

    loaded = build_zoo_model("shapes-yolo")
    adapter = YoloAdapter(loaded.model, size=128, class_names=loaded.class_names)
    x, _ = adapter.prepare(make_sample(1, seed=HELDOUT_SEED, size=128, min_objects=2).image)
    dets = adapter.detect(x)[0]
    assert len(dets) >= 2
    return adapter.model, x, adapter.targets(dets)


def _fast(**kw):
    return taskcam.get_method("fast-drise", **{"n_masks": 48, "batch_size": 16, **kw})


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtime_gives_pytorchs_maps_and_leaves_the_model_as_it_was(shapes, runtime):
    pytest.importorskip(runtime)
    model, x, targets = shapes
    want = taskcam.explain(model, x, [targets], method=_fast())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    got = taskcam.explain(model, x, [targets], method=_fast(), runtime=runtime)
    assert_close(got.maps, want.maps, atol=1e-4, rtol=1e-4)
    assert got.forwards == want.forwards == [48] and got.scores.equal(want.scores)
    assert not model.training and [p.requires_grad for p in model.parameters()] == flags
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    # exported once per input size and reused; changed weights are exported anew
    compiled = [c for k, c in _CACHE[model].items() if k[0] == runtime]
    assert len(compiled) == 1
    again = taskcam.explain(model, x, [targets], method=_fast(), runtime=runtime)
    assert torch.equal(again.maps, got.maps)
    assert [c for k, c in _CACHE[model].items() if k[0] == runtime] == compiled
    bias = next(m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None)
    try:
        with torch.no_grad():
            bias.bias.add_(0.5)
        changed = taskcam.explain(model, x, [targets], method=_fast())
        assert_close(
            taskcam.explain(model, x, [targets], method=_fast(), runtime=runtime).maps,
            changed.maps,
            atol=1e-4,
            rtol=1e-4,
        )
    finally:
        with torch.no_grad():
            bias.bias.sub_(0.5)


def test_what_a_runtime_cannot_run_is_refused_by_name(shapes):
    model, x, targets = shapes
    with pytest.raises(TaskcamError, match="runtime openvino: only the methods .* gradcam"):
        taskcam.Explainer(model, method="gradcam", runtime="openvino")
    with pytest.raises(TaskcamError, match="onnxruntime: only the methods .* fast-scorecam"):
        taskcam.Explainer(model, method="fast-scorecam", runtime="onnxruntime")
    with pytest.raises(TaskcamError, match="forward_kwargs, input_builder"):
        taskcam.Explainer(model, method="rise", runtime="openvino", input_builder=lambda v: v)
    with pytest.raises(TaskcamError, match="runtime: expected one of torch, openvino"):
        taskcam.Explainer(model, method="rise", runtime="tensorrt")
    with pytest.raises(TaskcamError, match="precision fp16: .* odam reads gradients"):
        taskcam.Explainer(model, method="odam", precision="fp16")
    with pytest.raises(TaskcamError, match="runtime onnxruntime runs in fp32"):
        taskcam.Explainer(model, method="rise", runtime="onnxruntime", precision="bf16")
    with pytest.raises(TaskcamError, match="precision: expected one of auto, fp32"):
        taskcam.Explainer(model, method="rise", precision="half")


def test_the_command_lines_choices_are_the_runtime_modules():
    """taskcam.cli writes them out so that --help imports no torch: they must not drift."""
    from taskcam.cli import _parser
    from taskcam.runtime import PRECISIONS, RUNTIMES

    explain = _parser()._subparsers._group_actions[0].choices["explain"]
    choices = {a.dest: tuple(a.choices) for a in explain._actions if a.choices}
    assert choices["runtime"] == RUNTIMES
    assert choices["precision"] == PRECISIONS


class _Counting(nn.Module):
    """Gives another output at every call: its export cannot equal it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.calls = nn.Conv2d(3, 4, 3), 0

    def forward(self, x):
        self.calls += 1
        return self.conv(x).mean(dim=(2, 3)) * self.calls


class _Baked(nn.Module):
    """What it computes in numpy is a constant of the trace: right on the traced image only."""

    def forward(self, x):
        return torch.from_numpy(x.numpy().mean(axis=(2, 3)))


class _Unexportable(nn.Module):
    def forward(self, x):
        m = x.mean(1).flatten(1)[:, :9].reshape(-1, 3, 3)
        return torch.linalg.eigh(m @ m.transpose(1, 2)).eigenvalues  # no ONNX op


def test_an_export_that_differs_or_fails_is_refused_before_any_mask():
    pytest.importorskip("onnxruntime")
    from taskcam.targets import ClassTarget

    x = torch.rand(1, 3, 16, 16)
    for model in (_Counting(), _Baked()):
        with pytest.raises(TaskcamError, match=f"{type(model).__name__} gives other outputs"):
            taskcam.explain(model, x, ClassTarget(1), method="rise", runtime="onnxruntime")
    model = _Unexportable()
    with pytest.raises(TaskcamError, match="_Unexportable could not be exported to ONNX"):
        compiled_forward(model, x, "onnxruntime", model(x))


def test_the_stop_rule_ends_sampling_once_each_map_is_reproducible(shapes):
    model, x, targets = shapes
    full = taskcam.explain(model, x, [targets], method=_fast(n_masks=256, stop=None))
    stopped = taskcam.explain(
        model, x, [targets], method=_fast(n_masks=256, stop=0.5, min_masks=32)
    )
    assert full.forwards == [256] and 32 <= stopped.forwards[0] < 256
    # its maps are those of a run of exactly that many masks (the same Sobol prefix)
    same = taskcam.explain(model, x, [targets], method=_fast(n_masks=stopped.forwards[0]))
    assert_close(stopped.maps, same.maps, atol=1e-5, rtol=1e-5)
    never = taskcam.explain(model, x, [targets], method=_fast(n_masks=64, stop=1.0))
    assert never.forwards == [64]
    with pytest.raises(TaskcamError, match="stop must be in"):
        taskcam.get_method("fast-drise", stop=1.5)


def test_split_sums_give_the_whole_map_and_a_reliability_that_grows_with_masks():
    g = torch.Generator().manual_seed(0)
    truth = torch.zeros(8, 8)
    truth[2:5, 3:6] = 1.0
    sums, masks, scores = SplitSums(), [], []
    for start in range(0, 512, 64):
        m = (torch.rand(64, 8, 8, generator=g) < 0.5).float()
        s = (m * truth).sum((1, 2))[:, None] + 0.5 * torch.randn(64, 1, generator=g)
        sums.add(start, s, m)
        masks.append(m)
        scores.append(s)
        if start == 0:
            early = float(sums.reliability(centered=True))
    m, s = torch.cat(masks), torch.cat(scores)
    want = torch.einsum("nt,nhw->thw", s - s.mean(0), m) / len(m)
    assert_close(sums.map(centered=True), want, atol=1e-5, rtol=1e-5)
    late = float(sums.reliability(centered=True))
    assert 0 < early < late <= 1
    flat = SplitSums()
    flat.add(0, torch.ones(4, 1), torch.rand(4, 8, 8, generator=g))
    assert float(flat.reliability(centered=True)) == 1.0  # a score that never moved


def test_bf16_forwards_on_the_cpu_give_nearly_the_fp32_maps(shapes):
    model, x, targets = shapes
    fp32 = taskcam.explain(model, x, [targets], method=_fast())
    bf16 = taskcam.explain(model, x, [targets], method=_fast(), precision="bf16")
    a, b = fp32.maps.flatten(2), bf16.maps.flatten(2)
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    corr = (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))
    assert (corr > 0.9).all(), corr
    wrapped = AutocastForward(model, "cpu", torch.bfloat16)
    out = wrapped(x)
    assert out[0].dtype == torch.float32  # what is summed downstream stays fp32
    assert torch.equal(wrapped.stride, model.stride)  # the model's attributes, read through


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_kind_of_method_runs_on_a_gpu_with_fp16_forwards():
    from taskcam.adapters.ultralytics import YoloAdapter
    from taskcam.data.shapes import HELDOUT_SEED, make_sample
    from taskcam.zoo import build_zoo_model

    image = make_sample(1, seed=HELDOUT_SEED, size=128, min_objects=2).image
    maps = {}
    for device in ("cpu", "cuda"):
        loaded = build_zoo_model("shapes-yolo")
        adapter = YoloAdapter(loaded.model.to(device), size=128)
        x, _ = adapter.prepare(image)
        targets = adapter.targets(adapter.detect(x.to(device))[0])
        for name in ("odam", "gradcam", "fast-scorecam", "drise", "fast-drise"):
            exp = taskcam.explain(adapter.model, x.to(device), [targets], method=name)
            assert exp.maps.device.type == device and not exp.empty.any()
            maps[device, name] = exp.maps.cpu()
    for name in ("odam", "gradcam"):  # fp32 gradients
        assert_close(maps["cuda", name], maps["cpu", name], atol=0.05, rtol=0.05)
    for name in ("fast-scorecam", "drise", "fast-drise"):  # fp16 forwards: close maps
        a, b = maps["cuda", name].flatten(2), maps["cpu", name].flatten(2)
        a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
        assert ((a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1)) > 0.95).all()


def test_the_command_line_runs_fast_drise_in_onnx_runtime_and_records_the_masks(tmp_path):
    pytest.importorskip("onnxruntime")
    from PIL import Image

    from taskcam.data.shapes import HELDOUT_SEED, make_sample

    image = tmp_path / "shapes.png"
    Image.fromarray(make_sample(1, seed=HELDOUT_SEED, size=128, min_objects=2).image).save(image)
    out = tmp_path / "out"
    args = ["explain", str(image), "--model", "zoo:shapes-yolo", "--size", "128", "--no-progress"]
    fast = ["--method", "fast-drise", "--out", str(out), "--runtime", "onnxruntime"]
    assert main([*args, *fast]) == 0
    records = json.loads((out / "results.json").read_text())["items"][0]["targets"]
    # the stop rule's masks, one count for the image: from min_masks to n_masks
    assert records and all(r["method"] == "fast-drise" for r in records)
    assert len({r["masks"] for r in records}) == 1 and 64 <= records[0]["masks"] <= 256
    assert json.loads((out / "run.json").read_text())["runtime"] == "onnxruntime"
    bad = ["--method", "odam", "--out", str(tmp_path / "bad"), "--runtime", "openvino"]
    assert main([*args, *bad]) == 2
