"""transformer_defaults: a loaded transformer classifier's default layer and token reshape."""

import pytest
import torch
import torchvision
from timm.models.vision_transformer import VisionTransformer

from taskcam.adapters.transformers import transformer_defaults
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess
from taskcam.reshape import TokensToGrid


def _vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    return VisionTransformer(**{**args, **kw}).eval()


def test_fills_the_layer_and_the_reshape_at_the_preprocessing_size():
    loaded = LoadedModel(_vit(reg_tokens=2), "pkg.mod:vit", preprocess=Preprocess((32, 32)))
    transformer_defaults(loaded, "cpu")
    assert loaded.layers == ["blocks.1.norm1"]
    assert loaded.reshape == TokensToGrid((4, 4), 3)


def test_leaves_set_defaults_and_models_without_blocks_alone():
    preset = LoadedModel(_vit(), "pkg.mod:vit", preprocess=Preprocess((32, 32)), layers=["x"])
    transformer_defaults(preset, "cpu")
    assert preset.layers == ["x"] and preset.reshape is None
    cnn = LoadedModel(torchvision.models.resnet18(), "torchvision:resnet18")
    transformer_defaults(cnn, "cpu")
    assert cnn.layers is None and cnn.reshape is None


def test_a_size_the_model_does_not_take_is_named():
    loaded = LoadedModel(_vit(), "pkg.mod:vit", preprocess=Preprocess((48, 40)))
    with pytest.raises(TaskcamError, match=r"--size 48,40: pkg\.mod:vit does not take a 48x40"):
        transformer_defaults(loaded, "cpu")
