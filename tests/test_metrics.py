"""Faithfulness and localisation metrics: deletion, insertion, ROAD, the pointing games,
Spearman correlation and the parameter randomisation check."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch import nn

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.errors import TaskcamError
from taskcam.metrics import (
    MetricCurve,
    boxes_to_masks,
    deletion,
    energy_pointing_game,
    insertion,
    linear_impute,
    pointing_game,
    randomization_check,
    road,
    spearman,
)

SIZE = 16


def _object_scene() -> tuple[torch.Tensor, torch.Tensor]:
    """A dark ``[3, 16, 16]`` image (0.1) with a bright 6×6 square (0.9), and its mask."""
    obj = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    obj[4:10, 5:11] = True
    image = torch.full((3, SIZE, SIZE), 0.1)
    image[:, obj] = 0.9
    return image, obj


def _region_score(region: torch.Tensor):
    """Score function: the mean intensity of ``region`` (the object's 'confidence')."""

    def score(x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        return x[:, :, region].mean(dim=(1, 2))

    return score


class _Recorder:
    """A score function that keeps every image it was given."""

    def __init__(self, score) -> None:
        self.score = score
        self.images: list[torch.Tensor] = []
        self.calls: list[int] = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.images.extend(x.clone())
        self.calls.append(x.shape[0])
        return self.score(x)


# -- deletion and insertion ---------------------------------------------------------------------
def test_deletion_by_hand_on_a_2x2_image():
    image = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    sal = torch.tensor([[0.1, 0.4], [0.3, 0.2]])  # order: (0,1), (1,0), (1,1), (0,0)
    total = lambda x: x.sum(dim=(1, 2, 3))  # noqa: E731
    curve = deletion(total, image, sal, steps=4, baseline="zero")
    assert curve.fractions.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert curve.scores.tolist() == [10.0, 8.0, 5.0, 1.0, 0.0]
    assert curve.auc == pytest.approx(0.25 * (10 / 2 + 8 + 5 + 1 + 0 / 2))
    ins = insertion(total, image, sal, steps=4, baseline="zero")
    assert ins.scores.tolist() == [0.0, 2.0, 5.0, 9.0, 10.0]
    # equal saliency: pixels go in row-major order
    flat = deletion(total, image, torch.ones(2, 2), steps=4, baseline="zero")
    assert flat.scores.tolist() == [10.0, 9.0, 7.0, 4.0, 0.0]


def test_deletion_object_first_beats_its_reverse():
    image, obj = _object_scene()
    score = _region_score(obj)
    first, reverse = obj.float(), (~obj).float()
    for baseline in ("zero", "mean", "blur"):
        good = deletion(score, image, first, steps=16, baseline=baseline)
        bad = deletion(score, image, reverse, steps=16, baseline=baseline)
        assert good.auc < bad.auc, baseline
        assert good.scores[0] == pytest.approx(0.9) and bad.scores[0] == pytest.approx(0.9)
        assert good.scores[-1] == pytest.approx(float(bad.scores[-1]))
    zero = deletion(score, image, first, steps=16, baseline="zero")
    assert zero.scores[-1] == 0.0
    assert zero.scores[3:].abs().max() == 0.0  # 48 pixels removed: the whole object is gone


def test_insertion_object_first_beats_its_reverse():
    image, obj = _object_scene()
    score = _region_score(obj)
    good = insertion(score, image, obj.float(), steps=16, baseline="zero")
    bad = insertion(score, image, (~obj).float(), steps=16, baseline="zero")
    assert good.auc > bad.auc
    assert good.scores[0] == 0.0 and good.scores[-1] == pytest.approx(0.9)
    assert good.scores[3] == pytest.approx(0.9)  # object fully back after 48 pixels
    assert bad.scores[:13].abs().max() == 0.0  # 208 < 220 background pixels first


def test_end_points_are_the_clean_and_the_baseline_scores():
    image, obj = _object_scene()
    image = image + 0.05 * torch.rand(3, SIZE, SIZE)
    score = _region_score(obj)
    sal = torch.rand(SIZE, SIZE)
    with torch.no_grad():
        clean = float(score(image[None])[0])
    blurred = TF.gaussian_blur(image, kernel_size=[7, 7], sigma=[1.0, 1.0])  # radius ceil(3σ)
    means = image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    custom = torch.rand(3, SIZE, SIZE)
    cases = {"zero": torch.zeros_like(image), "mean": means, "blur": blurred}
    for name, base in [*cases.items(), ("tensor", custom)]:
        baseline = custom if name == "tensor" else name
        with torch.no_grad():
            expected = float(score(base[None])[0])
        d = deletion(score, image, sal, steps=8, baseline=baseline, blur_sigma=1.0)
        i = insertion(score, image, sal, steps=8, baseline=baseline, blur_sigma=1.0)
        assert float(d.scores[0]) == pytest.approx(clean, abs=1e-6), name
        assert float(d.scores[-1]) == pytest.approx(expected, abs=1e-5), name
        assert float(i.scores[0]) == pytest.approx(expected, abs=1e-5), name
        assert float(i.scores[-1]) == pytest.approx(clean, abs=1e-6), name


def test_default_blur_runs_on_tiny_and_odd_images():
    image = torch.rand(3, 2, 5)
    curve = deletion(lambda x: x.mean(dim=(1, 2, 3)), image, torch.rand(2, 5), steps=2)
    assert torch.isfinite(curve.scores).all()


def test_steps_count_and_batching():
    image, obj = _object_scene()
    rec = _Recorder(_region_score(obj))
    sal = torch.rand(SIZE, SIZE)
    curve = deletion(rec, image, sal, steps=5, baseline="zero", batch_size=4)
    assert isinstance(curve, MetricCurve)
    assert len(curve.fractions) == len(curve.scores) == 6
    expected = torch.tensor([0, 51, 102, 154, 205, 256]) / 256  # round(i * 256 / 5)
    assert torch.allclose(curve.fractions, expected)
    assert rec.calls == [4, 2]
    one_batch = deletion(rec, image, sal, steps=5, baseline="zero", batch_size=32)
    assert torch.equal(curve.scores, one_batch.scores)
    # the images really are the image with the top-k pixels replaced
    removed = [(img == 0).all(dim=0).sum().item() for img in rec.images[:6]]
    assert removed == [0, 51, 102, 154, 205, 256]
    top = sal.flatten().argsort(descending=True)[:51]
    assert (rec.images[1].flatten(1)[:, top] == 0).all()


# -- ROAD ---------------------------------------------------------------------------------------
def _ramp(h: int = 12, w: int = 12) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(float(h)), torch.arange(float(w)), indexing="ij")
    return torch.stack([0.1 * x + 0.05 * y, 1.0 - 0.02 * x + 0.03 * y])  # [2, H, W]


def test_road_imputes_a_linear_ramp_exactly():
    image = _ramp()
    block = torch.zeros(12, 12, dtype=torch.bool)
    block[4:8, 3:9] = True  # 24 interior pixels
    rec = _Recorder(lambda x: x.mean(dim=(1, 2, 3)))
    curve = road(rec, image, block.float(), fractions=(24 / 144,), noise=0.0)
    assert curve.fractions.tolist() == pytest.approx([0.0, 24 / 144])
    assert len(rec.images) == 2
    assert torch.equal(rec.images[0], image)
    imputed = rec.images[1]
    assert torch.equal(imputed[:, ~block], image[:, ~block])  # known pixels untouched
    assert torch.allclose(imputed, image, atol=1e-4)  # the ramp is the unique solution


def test_linear_impute_weights_by_hand():
    torch.manual_seed(1)
    x = torch.rand(1, 3, 3)
    corner = torch.zeros(3, 3, dtype=torch.bool)
    corner[0, 0] = True
    expected = (x[0, 0, 1] / 6 + x[0, 1, 0] / 6 + x[0, 1, 1] / 12) / (5 / 12)
    assert linear_impute(x, corner)[0, 0, 0] == pytest.approx(float(expected), abs=1e-6)
    centre = torch.zeros(3, 3, dtype=torch.bool)
    centre[1, 1] = True
    direct = x[0, 0, 1] + x[0, 1, 0] + x[0, 1, 2] + x[0, 2, 1]
    diagonal = x[0, 0, 0] + x[0, 0, 2] + x[0, 2, 0] + x[0, 2, 2]
    expected = direct / 6 + diagonal / 12
    out = linear_impute(x, centre)
    assert out[0, 1, 1] == pytest.approx(float(expected), abs=1e-6)
    assert torch.equal(out[:, ~centre], x[:, ~centre])
    # batched: one mask per image, and an image with nothing known gets its channel mean
    batch = torch.rand(2, 2, 5, 5)
    masks = torch.stack([centre.new_zeros(5, 5), centre.new_ones(5, 5)])
    out = linear_impute(batch, masks)
    assert torch.equal(out[0], batch[0])
    assert torch.allclose(out[1], batch[1].mean(dim=(1, 2), keepdim=True).expand(2, 5, 5))


def test_linear_impute_warns_when_not_converged():
    image = torch.rand(1, 32, 32)
    hole = torch.zeros(32, 32, dtype=torch.bool)
    hole[2:30, 2:30] = True
    with pytest.warns(RuntimeWarning, match="not converged"):
        linear_impute(image, hole, max_iter=2)


def test_road_morf_drops_more_than_lerf():
    image, obj = _object_scene()
    score = _region_score(obj)
    morf = road(score, image, obj.float(), order="morf")
    lerf = road(score, image, obj.float(), order="lerf")
    assert morf.fractions.tolist() == pytest.approx([0.0, *[i / 10 for i in range(1, 10)]])
    assert morf.scores[0] == lerf.scores[0] == pytest.approx(0.9)
    assert morf.mean < lerf.mean - 0.3
    assert morf.auc < lerf.auc
    assert morf.scores[2:].max() < 0.2  # object gone, refilled from the dark background
    assert lerf.scores[:9].min() > 0.85  # background removed first


def test_road_noise_only_on_removed_pixels_and_seeded():
    image, obj = _object_scene()
    sal = torch.rand(SIZE, SIZE)
    rec = _Recorder(_region_score(obj))
    road(rec, image, sal, fractions=(0.5,), noise=0.1, seed=3)
    quiet = _Recorder(_region_score(obj))
    road(quiet, image, sal, fractions=(0.5,), noise=0.0)
    removed = sal >= sal.flatten().sort(descending=True).values[127]
    noisy, clean = rec.images[1], quiet.images[1]
    assert torch.equal(noisy[:, ~removed], image[:, ~removed])
    diff = (noisy - clean)[:, removed]
    assert diff.abs().min() > 0
    assert float(diff.std()) == pytest.approx(0.1 * float(image.std()), rel=0.2)
    a = road(_region_score(obj), image, sal, seed=5, batch_size=3)
    b = road(_region_score(obj), image, sal, seed=5, batch_size=32)
    c = road(_region_score(obj), image, sal, seed=6)
    assert torch.equal(a.scores, b.scores)
    assert not torch.equal(a.scores, c.scores)


def test_road_removing_everything_gives_the_channel_means():
    image = _ramp(6, 7)
    rec = _Recorder(lambda x: x.mean(dim=(1, 2, 3)))
    curve = road(rec, image, torch.rand(6, 7), fractions=(0.0, 1.0), noise=0.0)
    assert curve.fractions.tolist() == [0.0, 1.0]  # no duplicated 0
    means = image.mean(dim=(1, 2), keepdim=True).expand_as(image)
    assert torch.allclose(rec.images[1], means, atol=1e-6)
    assert torch.isfinite(curve.scores).all()


# -- pointing games -----------------------------------------------------------------------------
def test_boxes_to_masks_edges():
    full = boxes_to_masks(torch.tensor([0, 0, 6, 4]), 4, 6)
    assert full.shape == (1, 4, 6) and full.all()
    m = boxes_to_masks(torch.tensor([[2, 1, 5, 3], [1.4, 0, 4.5, 1], [3, 3, 3, 4]]), 4, 6)
    rows, cols = torch.nonzero(m[0], as_tuple=True)
    assert sorted(set(rows.tolist())) == [1, 2] and sorted(set(cols.tolist())) == [2, 3, 4]
    assert m[1, 0].nonzero().flatten().tolist() == [1, 2, 3]  # centres 1.5, 2.5, 3.5
    assert m[1, 1:].sum() == 0
    assert m[2].sum() == 0  # zero width
    outside = boxes_to_masks(torch.tensor([-5.0, -5.0, 1.0, 100.0]), 4, 6)
    assert outside[0, :, 0].all() and outside[0, :, 1:].sum() == 0


def test_pointing_game_hits_misses_and_tolerance():
    sal = torch.zeros(12, 12)
    sal[5, 7] = 1.0  # peak at x=7, y=5
    assert pointing_game(sal, torch.tensor([6, 4, 9, 8]), tolerance=0).tolist() == [True]
    right = torch.tensor([8, 4, 12, 8])  # one column right of the peak
    assert pointing_game(sal, right, tolerance=0).tolist() == [False]
    assert pointing_game(sal, right, tolerance=1).tolist() == [True]
    # a box edge at 7.6 leaves column 7 (centre 7.5) out
    assert pointing_game(sal, torch.tensor([7.6, 0, 12, 12]), tolerance=0).tolist() == [False]
    # Euclidean tolerance: the region's nearest pixel is 3 rows and 4 columns away
    mask = torch.zeros(12, 12, dtype=torch.bool)
    mask[8, 11] = True
    assert pointing_game(sal, mask, tolerance=5).tolist() == [True]
    assert pointing_game(sal, mask, tolerance=4.9).tolist() == [False]
    assert pointing_game(sal, mask).tolist() == [True]  # default tolerance 15


def test_pointing_game_ties_empty_maps_and_batches():
    sal = torch.zeros(2, 8, 8)
    sal[0, 0, 0] = sal[0, 5, 5] = 1.0  # two maxima: (0, 0) comes first
    sal[1, 3, 3] = 2.0
    at_55 = torch.zeros(8, 8, dtype=torch.bool)
    at_55[5, 5] = True
    assert pointing_game(sal[0], at_55, tolerance=0).tolist() == [False]
    assert pointing_game(sal[0], ~at_55, tolerance=0).tolist() == [True]
    everything = torch.ones(8, 8, dtype=torch.bool)
    assert pointing_game(torch.zeros(8, 8), everything).tolist() == [False]
    assert pointing_game(torch.full((8, 8), 0.3), everything).tolist() == [False]
    boxes = torch.tensor([[0, 0, 1, 1], [0, 0, 2, 2]])
    assert pointing_game(sal, boxes, tolerance=0).tolist() == [True, False]
    assert pointing_game(sal, boxes, tolerance=2.8).tolist() == [True, False]  # √8 ≈ 2.83
    assert pointing_game(sal, boxes, tolerance=2.9).tolist() == [True, True]
    assert pointing_game(sal, torch.tensor([3, 3, 4, 4]), tolerance=0).tolist() == [False, True]
    empty_region = torch.zeros(2, 8, 8, dtype=torch.bool)
    assert pointing_game(sal, empty_region).tolist() == [False, False]


def test_energy_pointing_game():
    _, obj = _object_scene()
    assert energy_pointing_game(obj.float(), obj).tolist() == [1.0]
    assert energy_pointing_game((~obj).float(), obj).tolist() == [0.0]
    half = torch.zeros(SIZE, SIZE)
    half[0, 0] = 1.0  # outside
    half[5, 6] = 1.0  # inside
    assert energy_pointing_game(half, obj).tolist() == [0.5]
    empty = energy_pointing_game(torch.zeros(2, SIZE, SIZE), obj)
    assert empty.tolist() == [0.0, 0.0] and not empty.isnan().any()
    negative = torch.where(obj, -1.0, 1.0)  # negative inside counts as 0
    assert energy_pointing_game(negative, obj).tolist() == [0.0]
    box = torch.tensor([5.0, 4.0, 11.0, 10.0])  # the object's box
    maps = torch.stack([obj.float(), half, torch.rand(SIZE, SIZE)])
    by_box = energy_pointing_game(maps, box)
    assert torch.allclose(by_box, energy_pointing_game(maps, obj))
    assert by_box[:2].tolist() == [1.0, 0.5] and 0 < by_box[2] < 1


# -- spearman -----------------------------------------------------------------------------------
def _np_spearman(a: np.ndarray, b: np.ndarray) -> float:
    def ranks(v: np.ndarray) -> np.ndarray:
        out = np.empty(len(v))
        out[np.argsort(v, kind="stable")] = np.arange(len(v))
        for value in np.unique(v):
            out[v == value] = out[v == value].mean()
        return out

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def test_spearman_matches_a_numpy_reference_with_ties():
    torch.manual_seed(2)
    a = torch.randint(0, 4, (5, 6, 7)).float()  # many ties
    b = a + torch.randint(0, 3, (5, 6, 7)).float()
    b[4] = torch.rand(6, 7)
    got = spearman(a, b)
    expected = [_np_spearman(x.flatten().numpy(), y.flatten().numpy()) for x, y in zip(a, b)]
    assert got.shape == (5,)
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    assert torch.equal(spearman(a.flatten(1), b.flatten(1)), got)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y = torch.tensor([5.0, 6.0, 7.0, 8.0, 7.0])  # ranks 1, 2, 3.5, 5, 3.5
    assert spearman(x, y).item() == pytest.approx(0.8207826816681233, abs=1e-6)


def test_spearman_extremes_and_constants():
    a = torch.rand(3, 4, 4)
    assert spearman(a, a).tolist() == [1.0, 1.0, 1.0]
    assert spearman(a, -a).tolist() == [-1.0, -1.0, -1.0]
    assert spearman(a, a.exp()).tolist() == [1.0, 1.0, 1.0]  # ranks only
    const = spearman(torch.zeros(2, 4, 4), torch.rand(2, 4, 4))
    assert const.tolist() == [0.0, 0.0]
    with pytest.raises(TaskcamError, match=r"\(2, 4, 4\).*\(2, 16\)"):
        spearman(torch.rand(2, 4, 4), torch.rand(2, 16))


# -- randomisation ------------------------------------------------------------------------------
def _gradcam(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return taskcam.explain(model, images, [ClassTarget(1)], layers="2").maps[:, 0]


def _first_conv_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Input-independent: the first conv's kernel energy per tap, ``[B, 3, 3]``."""
    return model[0].weight.detach().abs().sum(dim=(0, 1)).expand(images.shape[0], 3, 3)


def _head_map(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model[6].weight.detach().expand(images.shape[0], 5, 6)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_randomization_cascade_with_gradcam_leaves_the_model_alone(make_cnn):
    model = make_cnn()
    images = torch.rand(3, 3, SIZE, SIZE)
    for training in (False, True):
        model.train(training)
        before = _state(model)
        rng = torch.get_rng_state()
        steps = randomization_check(model, _gradcam, images, progress=False)
        assert [s.layer for s in steps] == ["6", "2", "0"]  # head first
        for s in steps:
            assert s.correlation.shape == (3,)
            assert ((s.correlation >= -1) & (s.correlation <= 1)).all()
        assert model.training is training
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
        assert torch.equal(torch.get_rng_state(), rng)
        again = randomization_check(model, _gradcam, images)
        assert all(torch.equal(a.correlation, b.correlation) for a, b in zip(steps, again))


def test_randomization_correlation_is_one_until_the_layer_is_random(make_cnn):
    model = make_cnn()
    images = torch.rand(2, 3, SIZE, SIZE)
    cascade = randomization_check(model, _first_conv_map, images)
    assert [s.correlation.tolist() for s in cascade[:2]] == [[1.0, 1.0], [1.0, 1.0]]
    assert cascade[2].layer == "0" and (cascade[2].correlation < 0.999).all()
    # the head's own map: randomised first and then left random in cascade order,
    # restored after its step in independent order
    cascade = randomization_check(model, _head_map, images)
    independent = randomization_check(model, _head_map, images, order="independent")
    assert [s.layer for s in independent] == ["6", "2", "0"]
    assert (cascade[0].correlation < 0.999).all()
    assert torch.equal(cascade[0].correlation, independent[0].correlation)  # same seed per layer
    assert torch.equal(cascade[2].correlation, cascade[0].correlation)
    assert [s.correlation.tolist() for s in independent[1:]] == [[1.0, 1.0], [1.0, 1.0]]


def test_randomization_max_steps_and_named_layers(make_cnn):
    model = make_cnn()
    images = torch.rand(1, 3, SIZE, SIZE)
    seen: list[dict[str, torch.Tensor]] = []

    def record(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(_state(m))
        return _first_conv_map(m, x)

    original = _state(model)
    steps = randomization_check(model, record, images, max_steps=1)
    assert [s.layer for s in steps] == ["0"]
    assert len(seen) == 2  # the original map, then one measurement
    assert all(not torch.equal(seen[1][k], original[k]) for k in original)  # all random
    two = randomization_check(model, _first_conv_map, images, max_steps=2)
    assert [s.layer for s in two] == ["6", "0"]
    one = randomization_check(model, _first_conv_map, images, order="independent", max_steps=1)
    assert [s.layer for s in one] == ["6"]
    named = randomization_check(model, _first_conv_map, images, layers=["2", "0"])
    assert [s.layer for s in named] == ["2", "0"]
    assert named[0].correlation.tolist() == [1.0]


def test_randomization_keeps_batchnorm_statistics_and_inits_bare_parameters():
    class Gain(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gain = nn.Parameter(2.0 + 0.5 * torch.randn(256))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.gain[: x.shape[1], None, None]

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), Gain())
    model.train()
    model(torch.rand(4, 3, 8, 8))  # running statistics away from their defaults
    model.eval()
    stats = model[1].running_mean.clone()
    gain_std = float(model[2].gain.detach().std())
    seen: list[dict[str, torch.Tensor]] = []

    def record(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        seen.append(_state(m))
        return m(x).sum(dim=1)

    steps = randomization_check(model, record, torch.rand(2, 3, 8, 8))
    assert [s.layer for s in steps] == ["2", "1", "0"]
    for state in seen:
        assert torch.equal(state["1.running_mean"], stats)
    gain = seen[1]["2.gain"]
    assert abs(float(gain.mean())) < 0.2  # mean 0, not 2
    assert float(gain.std()) == pytest.approx(gain_std, rel=0.3)
    assert torch.equal(seen[2]["1.weight"], torch.ones(4))  # BatchNorm's own reset


# -- bad inputs -----------------------------------------------------------------------------
def test_bad_inputs_name_the_argument_and_the_value():
    image, obj = _object_scene()
    score = _region_score(obj)
    with pytest.raises(TaskcamError) as e:
        deletion(score, image, torch.rand(8, 8))
    assert "(8, 8)" in str(e.value) and "(3, 16, 16)" in str(e.value)
    with pytest.raises(TaskcamError) as e:
        insertion(score, image, obj.float(), baseline="gray")
    assert all(word in str(e.value) for word in ("'blur'", "'mean'", "'zero'", "'gray'"))
    with pytest.raises(TaskcamError, match=r"baseline.*\(3, 16, 16\).*\(3, 8, 8\)"):
        deletion(score, image, obj.float(), baseline=torch.zeros(3, 8, 8))
    with pytest.raises(TaskcamError, match="steps"):
        deletion(score, image, obj.float(), steps=0)
    with pytest.raises(TaskcamError, match="batch_size"):
        deletion(score, image, obj.float(), batch_size=0)
    with pytest.raises(TaskcamError, match="floating"):
        deletion(score, (image * 255).byte(), obj.float())
    with pytest.raises(TaskcamError, match=r"Tensor\[17\].*\(17, 1\)"):
        deletion(lambda x: score(x)[:, None], image, obj.float(), steps=16)
    with pytest.raises(TaskcamError, match="fractions"):
        road(score, image, obj.float(), fractions=(0.5, 0.2))
    with pytest.raises(TaskcamError, match="fractions"):
        road(score, image, obj.float(), fractions=(1.5,))
    with pytest.raises(TaskcamError, match="'morf', 'lerf'"):
        road(score, image, obj.float(), order="best")
    with pytest.raises(TaskcamError, match=r"boxes.*\(2, 3\)"):
        pointing_game(obj.float(), torch.zeros(2, 3))
    with pytest.raises(TaskcamError, match=r"boxes.*\(5,\)"):
        boxes_to_masks(torch.zeros(5), 4, 4)
    with pytest.raises(TaskcamError, match=r"\(8, 8\).*\(16, 16\)"):
        energy_pointing_game(obj.float(), torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(TaskcamError, match="3 regions for 2"):
        energy_pointing_game(torch.rand(2, 4, 4), torch.zeros(3, 4))
    with pytest.raises(TaskcamError, match="tolerance"):
        pointing_game(obj.float(), obj, tolerance=-1)


def test_bad_randomization_inputs(make_cnn):
    model = make_cnn()
    images = torch.rand(1, 3, SIZE, SIZE)
    with pytest.raises(TaskcamError, match="order"):
        randomization_check(model, _first_conv_map, images, order="random")
    with pytest.raises(TaskcamError, match="'head'"):
        randomization_check(model, _first_conv_map, images, layers=["head"])
    with pytest.raises(TaskcamError, match="max_steps"):
        randomization_check(model, _first_conv_map, images, max_steps=0)
    calls = []

    def shrinking(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return torch.rand(1, 8, 8) if len(calls) == 1 else torch.rand(1, 4, 4)

    with pytest.raises(TaskcamError, match=r"\(1, 4, 4\).*\(1, 8, 8\)"):
        randomization_check(model, shrinking, images)
