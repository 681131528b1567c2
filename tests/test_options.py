"""RunOptions: a run's options checked once, when made, and against the model before anything
is written."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from taskcam.errors import TaskcamError
from taskcam.models import load_model
from taskcam.options import RunOptions, run_options


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"stride": 0}, "--stride: expected a whole number >= 1, got 0"),
        ({"stride": 1.5}, "--stride"),
        ({"conf": 1.5}, r"--conf: expected a score in \[0, 1\], got 1.5"),
        ({"conf": True}, "--conf"),
        ({"what": "width"}, "--what: expected one of score, x1"),
        ({"methods": ["gradcam", "gradkam"]}, "unknown method 'gradkam'; available: gradcam"),
        ({"colormap": "rainbowish"}, "rainbowish"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"targets": 3}, "--targets: expected a string"),
        ({"layers": [3]}, "--layer: expected names"),
    ],
)
def test_bad_values_are_refused_when_made_naming_the_option(kwargs, message):
    with pytest.raises(TaskcamError, match=message):
        RunOptions(**kwargs)


def test_names_are_tuples_and_the_value_is_frozen_and_picklable():
    options = RunOptions(methods=["gradcam", "layercam"], layers="layer3, layer2", targets="top3")
    assert options.methods == ("gradcam", "layercam")
    assert options.layers == ("layer3", "layer2")
    assert RunOptions(methods=[], layers="").methods is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.stride = 2  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(options)) == options  # sent to Ray actors as is
    assert options.replace(progress=False) == dataclasses.replace(options, progress=False)
    with pytest.raises(TaskcamError, match="--stride"):
        options.replace(stride=-1)


def test_run_options_takes_a_value_or_keywords_and_names_unknown_ones():
    base = RunOptions(methods=("layercam",))
    assert run_options(base) is base
    assert run_options(base, progress=False).methods == ("layercam",)
    assert run_options(None, targets="top2").targets == "top2"
    with pytest.raises(TaskcamError, match=r"unknown run option\(s\) \['method'\]"):
        run_options(None, method="gradcam")
    with pytest.raises(TaskcamError, match="expected a RunOptions, got dict"):
        run_options({"methods": ["gradcam"]})  # type: ignore[arg-type]


def test_defaults_and_checks_follow_the_model():
    cnn, detector = load_model("zoo:shapes-cnn"), load_model("zoo:shapes-fasterrcnn")
    options = RunOptions(aug_smooth=True, what="y1", methods=("gradcam", "scorecam"))
    assert RunOptions().method_names(cnn) == ("gradcam",)
    assert RunOptions().method_names(detector) == ("odam",)
    options.check(cnn)  # a classifier smooths; what is a detector's option
    with pytest.raises(TaskcamError, match="--aug-smooth: not for detectors"):
        options.check(detector)
    with pytest.raises(TaskcamError, match="--what y1: scorecam explain a detection's score"):
        options.replace(aug_smooth=False).check(detector)
    RunOptions(what="y1", methods=("odam",)).check(detector)


def test_settings_are_what_run_json_records():
    cnn = load_model("zoo:shapes-cnn")
    images = RunOptions(methods=("gradcam",), targets="top2").settings(cnn)
    assert list(images) == [
        "version",
        "model",
        "task",
        "size",
        "mean",
        "std",
        "methods",
        "layers",
        "targets",
        "colormap",
        "aug_smooth",
        "eigen_smooth",
        "make_grid",
        "what",
        "conf",
    ]
    assert images["model"] == "zoo:shapes-cnn" and images["size"] == [64, 64]
    video = RunOptions(stride=3).settings(cnn, video=True)
    assert "make_grid" not in video and video["stride"] == 3
    # progress, overwrite and batch size do not change results, so resuming ignores them
    assert RunOptions(progress=False, overwrite=True, batch_size=4).settings(
        cnn
    ) == RunOptions().settings(cnn)


def test_attention_methods_on_a_model_without_vit_attention_are_refused_before_writing(
    tmp_path,
):
    from taskcam.pipeline import explain_files

    detector, cnn = load_model("zoo:shapes-fasterrcnn"), load_model("zoo:shapes-cnn")
    with pytest.raises(TaskcamError, match="--method legrad: explains a ViT classifier's"):
        explain_files(detector, [tmp_path], tmp_path / "a", methods=["odam", "legrad"])
    with pytest.raises(TaskcamError, match="ShapesResNet has no attention module taskcam can"):
        explain_files(cnn, [tmp_path], tmp_path / "b", methods=["rollout"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(TaskcamError, match="SwinTransformer is not a ViT-style model"):
        RunOptions(methods=("grad-rollout",)).check(load_model("zoo:shapes-swin"))
    RunOptions(methods=("rollout", "gradcam")).check(load_model("zoo:shapes-vit"))
    with pytest.raises(TaskcamError, match="--eigen-smooth: rise read no layer activations"):
        explain_files(
            cnn, [tmp_path], tmp_path / "c", methods=["gradcam", "rise"], eigen_smooth=True
        )
    assert not (tmp_path / "c").exists()
