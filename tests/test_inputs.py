"""Models with more than one input: ``forward_kwargs`` and ``input_builder`` reach every forward."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import taskcam
from taskcam.adapters.classification import ClassTarget
from taskcam.faithfulness import target_faithfulness
from taskcam.inputs import BoundInputs, bind_inputs


class RgbDepth(nn.Module):
    """A two-stream RGB-D classifier: a ResNet-18 on the image, a small CNN on the depth map,
    their logits summed (late fusion), divided by a temperature."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.rgb = torchvision.models.resnet18(weights=None, num_classes=classes)
        self.depth = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, classes),
        )

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, temperature: float = 1.0):
        return (self.rgb(rgb) + self.depth(depth)) / temperature


class ImageOnly(nn.Module):
    """The same model with the depth map and temperature written in by hand."""

    def __init__(self, model: RgbDepth, depth: torch.Tensor, temperature: float) -> None:
        super().__init__()
        self.model, self.depth, self.temperature = model, depth, temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        depth = self.depth.expand(len(x), -1, -1, -1)
        return self.model(x, depth, temperature=self.temperature)


@pytest.fixture()
def model():
    torch.manual_seed(0)
    return RgbDepth().eval()


@pytest.fixture()
def depth():
    return torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))


def _builder(depth):
    return lambda x: (x, depth.expand(len(x), -1, -1, -1))


@pytest.mark.parametrize(
    ("method", "options"), [("gradcam", {}), ("scorecam", {}), ("rise", {"n_masks": 64})]
)
def test_maps_equal_those_of_a_hand_written_single_input_model(model, depth, method, options):
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    targets = [ClassTarget(1), ClassTarget(3)]
    by_hand = ImageOnly(model, depth, 2.0)
    layers = None if method == "rise" else "model.rgb.layer4"
    expected = taskcam.explain(by_hand, x, targets, layers, method, **options)
    bound = taskcam.explain(
        model,
        x,
        targets,
        None if method == "rise" else "rgb.layer4",
        method,
        input_builder=_builder(depth),
        forward_kwargs={"temperature": 2.0},
        **options,
    )
    torch.testing.assert_close(bound.scores, expected.scores)
    torch.testing.assert_close(bound.maps, expected.maps, atol=1e-5, rtol=1e-4)
    assert bound.layers == ([] if method == "rise" else ["rgb.layer4"])


def test_the_default_layer_is_on_the_explained_image_path(model, depth):
    x = torch.rand(1, 3, 64, 64)
    exp = taskcam.explain(model, x, [ClassTarget(0)], input_builder=_builder(depth))
    # the depth stream's convolution runs last, but does not see the image
    assert exp.layers == ["rgb.layer4"]


def test_batch_one_keyword_tensors_follow_each_forward_batch(depth):
    class Conditioned(nn.Module):  # FiLM-style: the image's features scaled by a vector
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x, gamma):
            assert gamma.shape[0] == x.shape[0], "the condition has one row per image"
            feats = self.conv(x) * gamma[:, :, None, None]
            return self.head(feats.mean((2, 3)))

    torch.manual_seed(0)
    net = Conditioned().eval()
    gamma = torch.rand(1, 4)
    x = torch.rand(1, 3, 32, 32)
    exp = taskcam.explain(
        net, x, [ClassTarget(1)], "conv", "scorecam", batch_size=8, forward_kwargs={"gamma": gamma}
    )
    assert exp.maps.shape == (1, 1, 32, 32) and not bool(exp.empty[0, 0])
    with pytest.raises(TypeError):  # what taskcam saves the user from: no gamma, no forward
        net(x)


def test_keyword_arguments_reach_the_model(model, depth):
    x = torch.rand(1, 3, 64, 64)
    hot = taskcam.explain(
        model, x, [ClassTarget(1)], input_builder=_builder(depth), forward_kwargs={"temperature": 4}
    )
    cold = taskcam.explain(model, x, [ClassTarget(1)], input_builder=_builder(depth))
    torch.testing.assert_close(hot.scores * 4, cold.scores)


def test_a_builder_may_name_the_arguments(model, depth):
    x = torch.rand(1, 3, 64, 64)

    def named(x):
        return {"rgb": x, "depth": depth.expand(len(x), -1, -1, -1), "temperature": 2.0}

    by_name = taskcam.explain(model, x, [ClassTarget(2)], "rgb.layer3", input_builder=named)
    by_hand = taskcam.explain(ImageOnly(model, depth, 2.0), x, [ClassTarget(2)], "model.rgb.layer3")
    torch.testing.assert_close(by_name.maps, by_hand.maps)


def _hooks(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


@pytest.mark.parametrize(("method", "batch"), [("gradcam", 1), ("scorecam", 2)])
def test_the_model_comes_back_as_it_was(model, depth, method, batch):
    model.train()
    model.rgb.fc.weight.requires_grad_(False)
    model.rgb.layer4.register_forward_hook(lambda *_: None)  # the user's own hook stays
    hooks, modules = _hooks(model), dict(model.named_modules())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    taskcam.explain(
        model,
        torch.rand(batch, 3, 64, 64),
        [ClassTarget(0)],
        None if batch == 1 else "rgb.layer4",
        method,
        input_builder=lambda x, rows: (x, depth.expand(2, -1, -1, -1)[rows]),
        batch_size=16,
    )
    assert all(m.training for m in model.modules())
    assert not model.rgb.fc.weight.requires_grad and model.rgb.conv1.weight.requires_grad
    assert _hooks(model) == hooks == 1
    assert dict(model.named_modules()) == modules  # nothing attached, nothing replaced
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_faithfulness_takes_the_extras_as_the_explainer_does(model, depth):
    x = torch.rand(1, 3, 64, 64)
    bound = bind_inputs(model, {"temperature": 2.0}, _builder(depth))
    assert isinstance(bound, BoundInputs) and bind_inputs(model) is model
    extras = {"forward_kwargs": {"temperature": 2.0}, "input_builder": _builder(depth)}
    exp = taskcam.explain(model, x, [ClassTarget(1)], **extras)
    (row,) = target_faithfulness(model, x, [ClassTarget(1)], exp.maps[0], steps=4, **extras)
    (by_hand,) = target_faithfulness(
        ImageOnly(model, depth, 2.0), x, [ClassTarget(1)], exp.maps[0], steps=4
    )
    assert row[0].as_dict() == pytest.approx(by_hand[0].as_dict())
    assert row[0].clean == pytest.approx(float(exp.output.softmax(1)[0, 1]))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"input_builder": "x, depth"}, r"input_builder: expected a callable .* got str"),
        ({"forward_kwargs": [("temperature", 2)]}, r"forward_kwargs: expected a dict .* got list"),
        ({"forward_kwargs": {1: 2}}, r"forward_kwargs: .* with keys \[1\]"),
        ({"input_builder": lambda x: 3}, r"input_builder .*<lambda> returned a int"),
        (
            {"input_builder": lambda x: (x,)},
            r"RgbDepth.forward\(rgb.* does not take .*<lambda> gave: missing .* 'depth'",
        ),
        ({"input_builder": lambda x: 1 / 0}, r"input_builder .* failed .*ZeroDivisionError"),
    ],
)
def test_bad_extras_are_named(model, depth, options, message):
    with pytest.raises(taskcam.TaskcamError, match=message):
        taskcam.explain(model, torch.rand(1, 3, 64, 64), [ClassTarget(0)], "rgb.layer4", **options)


def test_a_builder_that_drops_the_batch_is_named(model, depth):
    def first_only(x):  # keeps one row of a batch of two
        return x[:1], depth

    with pytest.raises(taskcam.TaskcamError, match=r"first_only was given 2 images .* 2 rows"):
        taskcam.explain(
            model,
            torch.rand(2, 3, 64, 64),
            [ClassTarget(0)],
            "rgb.layer4",
            input_builder=first_only,
        )


def test_attention_methods_say_they_take_the_image_alone(model, depth):
    with pytest.raises(taskcam.TaskcamError, match="rollout .* forward_kwargs and input_builder"):
        taskcam.Explainer(model, method="rollout", input_builder=_builder(depth))


class FilmNet(nn.Module):
    """A small image network whose features a metadata vector scales, FiLM-style."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU())
        self.block = nn.Conv2d(6, 6, 3, padding=1)
        self.film = nn.Linear(3, 6)
        self.head = nn.Linear(6, 4)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        assert meta.shape[0] == image.shape[0], "one metadata row per image"
        feats = self.block(self.stem(image)) * self.film(meta)[:, :, None, None]
        return self.head(feats.relu().mean((2, 3)))  # [B, 4]


class OneImage(nn.Module):
    """FilmNet with one image's metadata row written in by hand."""

    def __init__(self, model: FilmNet, meta: torch.Tensor) -> None:
        super().__init__()
        self.model, self.meta = model, meta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, self.meta.expand(len(x), -1))


@pytest.mark.parametrize(
    ("method", "options"),
    [
        ("gradcam", {}),
        ("scorecam", {"batch_size": 2}),  # batches as large as the image batch: the trap
        ("ablationcam", {"batch_size": 4}),
        ("rise", {"n_masks": 16, "batch_size": 2}),
    ],
)
@pytest.mark.parametrize("way", ["forward_kwargs", "input_builder"])
def test_each_image_gets_its_own_extras_in_every_forward(method, options, way):
    torch.manual_seed(0)
    net = FilmNet().eval()
    gen = torch.Generator().manual_seed(3)
    x, meta = torch.rand(2, 3, 24, 24, generator=gen), torch.rand(2, 3, generator=gen) * 4
    targets = [ClassTarget(2)]
    layer = None if method == "rise" else "block"
    if way == "forward_kwargs":
        extras = {"forward_kwargs": {"meta": meta}}
    else:
        extras = {"input_builder": lambda x, rows: {"image": x, "meta": meta[rows]}}
    bound = taskcam.explain(net, x, targets, layer, method, **extras, **options)
    for b in range(2):
        hand = OneImage(net, meta[b : b + 1])
        one = taskcam.explain(
            hand, x[b : b + 1], targets, layer and "model.block", method, **options
        )
        torch.testing.assert_close(bound.scores[b], one.scores[0])
        torch.testing.assert_close(bound.maps[b], one.maps[0], atol=1e-5, rtol=1e-4)


def test_smoothing_and_pixel_methods_forward_with_the_extras(model, depth):
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    by_hand = ImageOnly(model, depth, 2.0)
    extras = {"input_builder": _builder(depth), "forward_kwargs": {"temperature": 2.0}}
    for method, options in [("gradcam", {"aug_smooth": True}), ("guided-gradcam", {})]:
        bound = taskcam.explain(
            model, x, [ClassTarget(4)], "rgb.layer4", method, **extras, **options
        )
        hand = taskcam.explain(by_hand, x, [ClassTarget(4)], "model.rgb.layer4", method, **options)
        torch.testing.assert_close(bound.maps, hand.maps, atol=1e-5, rtol=1e-4)


def test_a_builder_may_give_positional_and_keyword_arguments(model, depth):
    x = torch.rand(1, 3, 64, 64)

    def pair(x):
        return (x,), {"depth": depth, "temperature": 2.0}

    got = taskcam.explain(model, x, [ClassTarget(2)], "rgb.layer3", input_builder=pair)
    hand = taskcam.explain(ImageOnly(model, depth, 2.0), x, [ClassTarget(2)], "model.rgb.layer3")
    torch.testing.assert_close(got.maps, hand.maps)


def test_a_builder_that_drops_the_image_is_named(model, depth):
    def depth_twice(x):  # builds both inputs from the depth map alone
        return depth.expand(-1, 3, -1, -1), depth

    with pytest.raises(taskcam.TaskcamError, match=r"depth_twice returned no argument computed"):
        taskcam.explain(
            model,
            torch.rand(1, 3, 64, 64),
            [ClassTarget(0)],
            "rgb.layer4",
            input_builder=depth_twice,
        )


def test_per_image_inputs_without_rows_are_refused_under_perturbation():
    net = FilmNet().eval()
    meta = torch.rand(2, 3)

    def no_rows(x):  # right for the two images, wrong for 3 masked copies of one
        return x, meta

    with pytest.raises(taskcam.TaskcamError, match=r"no_rows returned a tensor of 2 rows .* rows"):
        taskcam.explain(
            net,
            torch.rand(2, 3, 16, 16),
            [ClassTarget(0)],
            "block",
            "scorecam",
            batch_size=3,
            input_builder=no_rows,
        )


def test_an_argument_given_twice_is_named(model, depth):
    def named(x):
        return {"rgb": x, "depth": depth, "temperature": 2.0}

    with pytest.raises(taskcam.TaskcamError, match=r"forward_kwargs\['temperature'\]: .*named"):
        taskcam.explain(
            model,
            torch.rand(1, 3, 64, 64),
            [ClassTarget(0)],
            "rgb.layer4",
            input_builder=named,
            forward_kwargs={"temperature": 1.0},
        )


def test_a_model_that_refuses_the_arguments_inside_is_named(depth):
    class Packed(nn.Module):  # takes anything, checks inside, as wrappers of models do
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)

        def forward(self, *args, **kwargs):
            if len(args) != 1 or kwargs:
                raise TypeError(f"Packed takes the image alone, got {len(args)} and {kwargs}")
            return self.conv(args[0]).mean((2, 3))

    with pytest.raises(
        taskcam.TaskcamError, match=r"Packed refused the 2 positional .*<lambda> gave: Packed takes"
    ):
        taskcam.explain(
            Packed(),
            torch.rand(1, 3, 16, 16),
            [ClassTarget(0)],
            "conv",
            input_builder=lambda x: (x, depth),
        )


def test_a_list_of_images_and_a_one_element_tensor_pass_as_they_are():
    class Listed(nn.Module):  # takes a list of images, as detectors do, and a scale
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, images, scale):
            return self.head(self.conv(torch.stack(images)).relu().mean((2, 3))) * scale

    torch.manual_seed(0)
    net, scale = Listed().eval(), torch.tensor([3.0])  # Tensor[1]: broadcast, not repeated
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    got = taskcam.explain(
        net,
        x,
        [ClassTarget(1)],
        "conv",
        "scorecam",
        batch_size=3,
        input_builder=lambda x: (list(x),),
        forward_kwargs={"scale": scale},
    )
    hand = nn.Module()
    hand.net = net
    hand.forward = lambda x: net(list(x), scale)
    want = taskcam.explain(hand, x, [ClassTarget(1)], "net.conv", "scorecam", batch_size=3)
    torch.testing.assert_close(got.maps, want.maps)
    assert not got.empty.any()
