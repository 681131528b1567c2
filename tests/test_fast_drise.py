"""fast-drise (earlier name drise-fast): D-RISE with scrambled Sobol masks and a centred
estimator (fewer forwards).

On the trained zoo:shapes-yolo at 128 px (a few ms a forward): the mode is registered, is
reproducible, runs exactly the forwards it claims, and with the same number of forwards its
maps are closer to a many-mask D-RISE map than plain D-RISE's.
"""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

import taskcam
from taskcam.cli import main
from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.errors import TaskcamError
from taskcam.masking import mask_covariance, mask_patterns, patterns_to_masks, rise_masks
from taskcam.methods import DRISE, FastDRISE


@pytest.fixture(scope="module")
def shapes():
    """zoo:shapes-yolo at 128 px, two held-out images' inputs and detection targets."""
    from taskcam.adapters.ultralytics import YoloAdapter
    from taskcam.zoo import build_zoo_model

    loaded = build_zoo_model("shapes-yolo")
    adapter = YoloAdapter(loaded.model, size=128, class_names=loaded.class_names)
    cases = []
    for index in (1, 2):
        sample = make_sample(index, seed=HELDOUT_SEED, size=128, min_objects=2)
        x, _ = adapter.prepare(sample.image)
        dets = adapter.detect(x)[0]
        assert len(dets) >= 1
        cases.append((x, adapter.targets(dets)))
    return adapter.model, cases


def _corr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each pair of maps, ``Tensor[T]`` for ``Tensor[T, H, W]``."""
    a, b = a.flatten(1), b.flatten(1)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))


def test_fast_drise_is_registered_and_listed_and_its_old_name_still_works(capsys):
    method = taskcam.get_method("fast-drise")
    assert method.name == "fast-drise" and taskcam.get_method("drise-fast").name == "fast-drise"
    assert isinstance(method, FastDRISE) and isinstance(method, DRISE)
    assert method.n_masks == 256 and method.needs_detections and method.perturbation
    assert method.sampling == "sobol" and method.centered
    assert method.local and method.stop == 0.9 and method.min_masks == 64
    plain = taskcam.get_method("drise")  # the default is unchanged
    assert plain.sampling == "random" and not plain.local and plain.stop is None
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = [line.split()[0] for line in lines]
    assert "fast-drise" in listed and listed.index("fast-drise") < listed.index("drise")
    assert "drise-fast" not in listed  # an alias, named on its method's line
    assert lines[listed.index("fast-drise")].endswith("(also: drise-fast)")
    with pytest.raises(TaskcamError, match="needs p=0.5"):
        taskcam.get_method("fast-drise", sampling="antithetic", p=0.3)
    with pytest.raises(TaskcamError, match="sampling must be one of"):
        taskcam.get_method("drise", sampling="halton")


def test_a_method_named_like_another_ones_alias_is_refused():
    class Clash(taskcam.Method):
        name = "DRISE_fast"  # how names are looked up: case, - and _ ignored

    with pytest.raises(TaskcamError, match="already registered"):
        taskcam.register(Clash)
    assert "DRISE_fast" not in taskcam.available_methods()


def test_antithetic_sobol_patterns_balance_every_cell_and_pixel():
    g = torch.Generator().manual_seed(0)
    cells, shifts = mask_patterns(64, grid=4, sampling="sobol-antithetic", generator=g)
    assert cells.shape == (64, 1, 4, 4) and shifts.shape == (64, 2)
    assert torch.equal(cells.sum(0), torch.full((1, 4, 4), 32.0))  # each cell kept by half
    masks = patterns_to_masks(cells, shifts, (24, 40))
    assert_close(masks.sum(0), torch.full((1, 24, 40), 32.0))  # and so is every pixel
    sobol, _ = mask_patterns(64, grid=4, sampling="sobol", generator=g)
    assert (sobol.mean(0) - 0.5).abs().max() <= 2 / 64  # balanced without complements too
    # the default masks did not change: rise_masks still draws cells, then shifts
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    cells = (torch.rand(5, 1, 4, 4, generator=g2) < 0.5).float()
    dy, dx = torch.randint(0, 6, (5,), generator=g2), torch.randint(0, 10, (5,), generator=g2)
    old = patterns_to_masks(cells, torch.stack([dy / 6, dx / 10], 1) + 1e-4, (24, 40))
    assert torch.equal(rise_masks(5, (24, 40), grid=4, generator=g1), old)


def test_fast_drise_is_seeded_and_independent_of_the_batch_size(shapes):
    model, ((x, targets), _) = shapes

    def run(**kw):
        method = taskcam.get_method("fast-drise", n_masks=16, **kw)
        return taskcam.explain(model, x, [targets], method=method)

    a, b = run(batch_size=4), run(batch_size=4)
    assert torch.equal(a.maps, b.maps)
    assert_close(run(batch_size=7).maps, a.maps, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(run(batch_size=4, seed=1).maps, a.maps, atol=1e-3)
    assert a.maps.shape == (1, len(targets), *x.shape[-2:]) and not a.empty.any()


def test_fast_drise_runs_the_forwards_it_claims_and_can_be_cancelled(shapes):
    model, ((x, targets), _) = shapes
    rows = []
    handle = model.register_forward_pre_hook(lambda _m, args: rows.append(args[0].shape[0]))
    try:
        method = taskcam.get_method("fast-drise", n_masks=40, batch_size=16)
        taskcam.explain(model, x, [targets], method=method)
    finally:
        handle.remove()
    # one clean forward for the scores, then 40 masked inputs in batches of 16
    assert rows == [1, 16, 16, 8]
    import threading

    from taskcam.masking import Cancelled

    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        method = taskcam.get_method("fast-drise", n_masks=40, batch_size=16, cancel=stop)
        taskcam.explain(model, x, [targets], method=method)


def test_fast_drise_is_closer_to_a_many_mask_map_than_drise_with_the_same_forwards(shapes):
    model, ((x, targets), _) = shapes
    ref = taskcam.get_method("drise", grid=8, n_masks=512, seed=99, centered=True)
    ref = taskcam.explain(model, x, [targets], method=ref).maps[0]
    fast, plain = [], []
    for seed in (0, 1):
        kw = {"grid": 8, "n_masks": 48, "seed": seed, "batch_size": 48}
        f = taskcam.explain(model, x, [targets], method=taskcam.get_method("fast-drise", **kw))
        p = taskcam.explain(model, x, [targets], method=taskcam.get_method("drise", **kw))
        fast += _corr(f.maps[0], ref).tolist()
        plain += _corr(p.maps[0], ref).tolist()
    assert sum(fast) / len(fast) > sum(plain) / len(plain) + 0.15, (fast, plain)
    assert min(fast) > 0.5, fast


def test_mask_covariance_is_what_many_masks_measure():
    image = torch.zeros(1, 48, 40)
    image[0, 10:20, 8:16] = 1 / 80  # the mean over a patch
    want = mask_covariance(image, grid=6)[0]
    g = torch.Generator().manual_seed(0)
    masks = rise_masks(8000, (48, 40), grid=6, generator=g)[:, 0]
    kept = (masks * image).sum((1, 2))
    got = ((kept - kept.mean())[:, None, None] * (masks - masks.mean(0))).mean(0)
    assert float(_corr(want[None], got[None])) > 0.99
    assert float((want - got).abs().max()) < 0.1 * float(want.max())


def test_the_local_fit_finds_what_a_black_box_reads_from_few_masks():
    """A score that reads only one patch beside the box: the local fit's map peaks there
    with 64 masks, and with the same masks it is closer to a 4,000-mask map than the
    score-weighted mean is."""
    from taskcam.methods.local_fit import LocalFit
    from taskcam.methods.rise import SplitSums

    size, grid = (64, 64), 8
    box = torch.tensor([[24.0, 24.0, 40.0, 40.0]])
    weight = torch.zeros(*size)
    weight[26:38, 40:52] = 1.0  # right of the box, inside the fit's window

    def score(masks):
        return (masks * weight).sum((1, 2))[:, None] / weight.sum()

    g = torch.Generator().manual_seed(1)
    many = rise_masks(4000, size, grid=grid, generator=g)[:, 0]
    ref = SplitSums()
    ref.add(0, score(many), many)
    ref = ref.map(centered=True)
    cells, shifts = mask_patterns(64, grid=grid, sampling="sobol", generator=g)
    masks = patterns_to_masks(cells, shifts, size)[:, 0]
    local, mean = LocalFit(box, size, grid=grid, p=0.5), SplitSums()
    local.add(0, score(masks), masks)
    mean.add(0, score(masks), masks)
    fitted = local.map()
    peak = divmod(int(fitted[0].argmax()), size[1])
    assert 26 <= peak[0] < 38 and 40 <= peak[1] < 52, peak
    assert float(_corr(fitted, ref)) > float(_corr(mean.map(centered=True), ref)) + 0.1
    assert float(local.reliability()) > 0.9
