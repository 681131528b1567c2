"""The target contract: taskcam.Target and its capabilities as protocols, met by the adapters'
targets and by a user's own."""

from __future__ import annotations

import pytest
import torch

import taskcam
from taskcam import ClassIndexTarget, LayerTarget, MaskTarget, PerturbableTarget, Target
from taskcam.adapters import adapter_for
from taskcam.adapters.classification import ClassTarget, SoftmaxTarget
from taskcam.adapters.segmentation import RegionTarget
from taskcam.errors import TaskcamError
from taskcam.models import load_model
from taskcam.targets import explained_layer, per_image_targets, target_scores


def test_the_adapters_targets_have_the_capabilities_they_claim():
    assert isinstance(ClassTarget(1), ClassIndexTarget)
    assert isinstance(SoftmaxTarget(1), Target)
    assert not isinstance(ClassTarget(1), (PerturbableTarget, LayerTarget, MaskTarget))
    region = RegionTarget(2)
    assert isinstance(region, MaskTarget) and isinstance(region, ClassIndexTarget)
    loaded = load_model("zoo:shapes-fasterrcnn")
    adapter = adapter_for(loaded)
    x, _ = adapter.prepare(torch.zeros(256, 256, 3, dtype=torch.uint8).numpy())
    dets = adapter.detect(x)[0]
    if not len(dets):  # a blank image may hold no detection: use a shapes image
        from taskcam.data.shapes import make_sample

        x, _ = adapter.prepare(make_sample(0, seed=9999, size=256).image)
        dets = adapter.detect(x)[0]
    (detection,) = adapter.targets(dets.select([0]))
    assert isinstance(detection, PerturbableTarget) and isinstance(detection, LayerTarget)
    assert isinstance(detection.perturbed(), Target)
    assert not isinstance(detection.perturbed(), PerturbableTarget)
    assert explained_layer(detection, adapter.model.level_layers()) == detection.layer
    assert explained_layer(detection, adapter.default_layers()) is None  # body stages, fused


class Level:
    """A user's own target: a class logit of a two-layer model, explained by one layer."""

    def __init__(self, k: int, layer):
        self.k, self.layer = k, layer

    def __call__(self, output):
        return output[:, self.k]


def test_a_users_layer_target_is_explained_by_its_layer_alone(make_cnn):
    net = make_cnn()
    x = torch.rand(2, 3, 16, 16)
    both = taskcam.explain(net, x, [Level(1, "0"), Level(1, "2"), Level(1, None)], ["0", "2"])
    only0 = taskcam.explain(net, x, [ClassTarget(1)], "0")
    only2 = taskcam.explain(net, x, [ClassTarget(1)], "2")
    torch.testing.assert_close(both.maps[:, 0], only0.maps[:, 0])
    torch.testing.assert_close(both.maps[:, 1], only2.maps[:, 0])
    assert not torch.allclose(both.maps[:, 2], both.maps[:, 0])  # None: the layers' mean


def test_a_plain_function_is_a_target_and_scores_per_image():
    def second(output):
        return output[:, 1]

    assert isinstance(second, Target) and not isinstance(second, PerturbableTarget)
    rows = per_image_targets([second, ClassTarget(0)], 2)
    assert target_scores(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), rows).tolist() == [
        [2.0, 1.0],
        [4.0, 3.0],
    ]
    with pytest.raises(TaskcamError, match="must return Tensor"):
        target_scores(torch.zeros(2, 3), per_image_targets(lambda out: out.sum(), 2))
    with pytest.raises(TaskcamError, match="got 1 target lists for 2 images"):
        per_image_targets([[second]], 2)
    with pytest.raises(TaskcamError, match="is not callable"):
        per_image_targets([[second], [3]], 2)


def test_the_contract_is_public_and_has_one_definition():
    import taskcam.engine
    import taskcam.methods.base

    assert "Target" in taskcam.__all__ and taskcam.Target is Target
    assert taskcam.methods.base.Target is Target
    assert (
        not hasattr(taskcam.engine, "Targets") or taskcam.engine.Targets is taskcam.targets.Targets
    )
