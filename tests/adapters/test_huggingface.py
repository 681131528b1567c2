"""``hf:DIR``: Hugging Face classifiers and segmenters from ``save_pretrained`` folders.

Every model is a real ``transformers`` class built from a tiny config with random weights and
saved as ``save_pretrained`` saves it; the per-class logits are checked against the library's
own post-processing.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import taskcam
from taskcam.adapters.huggingface import SemanticSegmenter, UniversalSegmenter
from taskcam.adapters.segmentation import region_targets, seg_logits
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

transformers = pytest.importorskip("transformers")


def _swin():
    return transformers.SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 2, 2],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def _segformer():
    config = transformers.SegformerConfig(
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=32,
        num_labels=3,
        id2label={0: "road", 1: "car", 2: "sky"},
        label2id={"road": 0, "car": 1, "sky": 2},
    )
    return transformers.SegformerForSemanticSegmentation(config)


def _upernet():
    backbone = transformers.ConvNextConfig(
        hidden_sizes=[8, 16, 24, 32],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = transformers.UperNetConfig(
        backbone_config=backbone, hidden_size=32, auxiliary_in_channels=24, num_labels=3
    )
    return transformers.UperNetForSemanticSegmentation(config)


def _dpt():
    config = transformers.DPTConfig(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=64,
        patch_size=8,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 16, 24, 32],
        fusion_hidden_size=32,
        num_labels=3,
        use_auxiliary_head=False,
    )
    return transformers.DPTForSemanticSegmentation(config)


def _mask2former():
    config = transformers.Mask2FormerConfig(
        backbone_config=_swin(),
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        num_queries=8,
        decoder_layers=2,
        encoder_layers=1,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        num_attention_heads=2,
        num_labels=3,
    )
    return transformers.Mask2FormerForUniversalSegmentation(config)


def _maskformer():
    decoder = transformers.DetrConfig(
        d_model=32, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64
    )
    config = transformers.MaskFormerConfig(
        backbone_config=_swin(),
        decoder_config=decoder,
        mask_feature_size=32,
        fpn_feature_size=32,
        num_queries=8,
        num_labels=3,
    )
    return transformers.MaskFormerForInstanceSegmentation(config)


def _vit():
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=4,
        id2label={0: "cat", 1: "dog", 2: "fox", 3: "owl"},
        label2id={"cat": 0, "dog": 1, "fox": 2, "owl": 3},
    )
    return transformers.ViTForImageClassification(config)


BUILDERS = {
    "segformer": _segformer,
    "upernet": _upernet,
    "dpt": _dpt,
    "mask2former": _mask2former,
    "maskformer": _maskformer,
    "vit": _vit,
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny model saved with save_pretrained; the model itself beside its folder."""
    out = {}
    for name, build in BUILDERS.items():
        torch.manual_seed(0)
        model = build().eval()
        folder = tmp_path_factory.mktemp(name)
        model.save_pretrained(folder)
        out[name] = (folder, model)
    return out


@pytest.fixture(scope="module")
def photo(chelsea_png):
    return chelsea_png


def _scores(processor, output, size):
    """The library's own per-class logits at ``size`` (its semantic post-processing)."""
    rows = processor.post_process_semantic_segmentation(
        output, target_sizes=[size], return_segmentation_scores=True
    )
    return rows[0]["segmentation_scores"]


PROCESSORS = {
    "segformer": "SegformerImageProcessor",
    "upernet": "SegformerImageProcessor",
    "dpt": "DPTImageProcessor",
    "mask2former": "Mask2FormerImageProcessor",
    "maskformer": "MaskFormerImageProcessor",
}


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_per_class_logits_equal_the_library_post_processing(saved, name):
    folder, model = saved[name]
    loaded = load_model(f"hf:{folder}")
    wrapper = UniversalSegmenter if name.startswith("mask") else SemanticSegmenter
    assert isinstance(loaded.model, wrapper) and loaded.task == "segment"
    processor = getattr(transformers, PROCESSORS[name])()
    size = (64, 64) if name == "dpt" else (64, 80)  # DPT's neck takes square grids only
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        ours = loaded.model(x)  # [1, 3, H, W]
        expected = _scores(processor, model(pixel_values=x), size)
    assert ours.shape == (1, 3, *size)
    torch.testing.assert_close(ours[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_every_class_is_explained_in_one_call_at_the_default_layer(saved, name):
    loaded = load_model(f"hf:{saved[name][0]}", weights="none")
    assert loaded.layers, "a default layer that needs no name"
    x = torch.rand(1, 3, 64, 64)
    targets = region_targets(loaded.model(x), [0, 1, 2])
    exp = taskcam.explain(loaded.model, x, targets, layers=loaded.layers)
    assert exp.maps.shape == (1, 3, 64, 64)
    assert torch.isfinite(exp.maps).all()
    # the class painted on the most pixels has a map that is not flat
    painted = int(loaded.model(x).argmax(1).flatten().bincount(minlength=3).argmax())
    assert not bool(exp.empty[0, painted])
    assert exp.maps[0, painted].std() > 0


def test_the_wrapper_shares_the_library_model_and_its_names(saved):
    folder, model = saved["segformer"]
    loaded = load_model(f"hf:{folder}")
    inner = loaded.model.wrapped
    assert set(loaded.model.state_dict()) == set(inner.state_dict())
    assert dict(loaded.model.named_modules())["decode_head.activation"] is (
        inner.decode_head.activation
    )
    loaded.model.train()
    assert inner.training and inner.decode_head.training
    loaded.model.eval()
    assert not inner.training
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())


def test_weights_from_a_path_load_into_the_wrapper(saved, tmp_path):
    folder, model = saved["segformer"]
    torch.save(model.state_dict(), tmp_path / "segformer.pt")
    loaded = load_model(f"hf:{folder}", weights=str(tmp_path / "segformer.pt"))
    torch.testing.assert_close(loaded.model.state_dict(), model.state_dict())
    random = load_model(f"hf:{folder}", weights="none")
    w = "decode_head.classifier.weight"
    assert not torch.equal(random.model.state_dict()[w], model.state_dict()[w])


def test_preprocessing_comes_from_the_folder_processor(saved, tmp_path):
    folder, model = saved["segformer"]
    model.save_pretrained(tmp_path)
    transformers.SegformerImageProcessor(
        size={"height": 96, "width": 128}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2]
    ).save_pretrained(tmp_path)
    pre = load_model(f"hf:{tmp_path}").preprocess
    assert (pre.size, pre.mean, pre.std) == ((96, 128), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
    bare = load_model(f"hf:{folder}").preprocess  # no processor: 512 and ImageNet's
    assert bare.size == (512, 512) and bare.mean == taskcam.models.IMAGENET_MEAN
    assert load_model(f"hf:{folder}", size=[64]).preprocess.size == (64, 64)


def test_the_bar_two_region_records_with_maps_of_the_image_size(saved, photo, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(photo), "--model", f"hf:{saved['segformer'][0]}", "--targets", "0,1"]
    assert main([*args, "--weights", "none", "--out", str(out)]) == 0
    item = json.loads((out / "results.json").read_text())["items"][0]
    records = item["targets"]
    assert [(r["kind"], r["class_id"], r["class_name"]) for r in records] == [
        ("region", 0, "road"),
        ("region", 1, "car"),
    ]
    for record in records:
        heat = np.load(out / record["heatmap"])
        assert heat.shape == (item["height"], item["width"]) == (300, 451)
        assert heat.min() >= 0 and heat.max() <= 1


def test_a_universal_segmenter_on_the_command_line(saved, photo, tmp_path):
    out = tmp_path / "out"
    spec = f"hf:{saved['mask2former'][0]}"
    args = ["explain", str(photo), "--model", spec, "--size", "64", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == ["model.pixel_level_module.decoder.mask_projection"]
    records = result["items"][0]["targets"]
    assert records and all(r["kind"] == "region" for r in records)
    assert sum(r["pixels"] for r in records) == 64 * 64  # every pixel painted once


def test_a_classifier_folder_is_a_classifier_with_its_labels(saved, photo, tmp_path):
    folder, model = saved["vit"]
    loaded = load_model(f"hf:{folder}")
    assert loaded.task == "classify" and loaded.class_names == ["cat", "dog", "fox", "owl"]
    assert loaded.model is not model and type(loaded.model) is type(model)
    assert loaded.preprocess.size == (32, 32)  # the config's image_size
    # the last block's attention input, its tokens made a 4x4 grid (the CLS token dropped)
    assert loaded.layers[0].endswith("1.layernorm_before")
    assert (loaded.reshape.grid, loaded.reshape.prefix) == ((4, 4), 1)
    out = tmp_path / "out"
    assert main(["explain", str(photo), "--model", f"hf:{folder}", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())["items"][0]["targets"][0]
    x = taskcam.io.to_tensor(
        taskcam.io.load_image(photo), 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    )
    with torch.no_grad():
        top = int(model(x).logits.argmax())
    assert (record["kind"], record["class_id"]) == ("class", top)


def test_a_folder_without_config_is_refused_naming_it(tmp_path):
    with pytest.raises(TaskcamError, match=rf"hf:{tmp_path}: no config.json"):
        load_model(f"hf:{tmp_path}")
    with pytest.raises(TaskcamError, match="no such folder"):
        load_model(f"hf:{tmp_path / 'missing'}")


def test_an_architecture_taskcam_cannot_explain_is_refused_naming_it(tmp_path):
    config = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    transformers.ViTModel(config).save_pretrained(tmp_path)
    with pytest.raises(TaskcamError, match=r"cannot explain a ViTModel \(vit\)"):
        load_model(f"hf:{tmp_path}", weights="none")
    config_only = tmp_path / "config_only"
    transformers.SegformerConfig().save_pretrained(config_only)  # names no architecture
    with pytest.raises(TaskcamError, match="names no architecture"):
        load_model(f"hf:{config_only}")


def test_a_folder_without_weights_says_how_to_build_it_at_random(saved, tmp_path):
    saved["segformer"][1].config.save_pretrained(tmp_path)  # config.json only
    with pytest.raises(TaskcamError, match="--weights none"):
        load_model(f"hf:{tmp_path}")
    assert load_model(f"hf:{tmp_path}", weights="none").task == "segment"


def test_a_class_index_beyond_num_labels_is_refused_naming_the_count(
    saved, photo, tmp_path, capsys
):
    spec = f"hf:{saved['mask2former'][0]}"
    args = ["explain", str(photo), "--model", spec, "--targets", "0,3", "--size", "64"]
    assert main([*args, "--out", str(tmp_path / "out")]) != 0
    assert "class id(s) [3] do not exist: the model has 3 classes (0..2)" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["segformer", "mask2former"])
def test_the_library_model_itself_is_explained_from_its_model_output(saved, name):
    folder, model = saved[name]
    layer = load_model(f"hf:{folder}").layers[0]
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        output = model(pixel_values=x)  # a ModelOutput, not a tensor
    targets = region_targets(output, [0, 1])
    exp = taskcam.explain(model, x, targets, layers=layer)
    assert exp.maps.shape == (1, 2, 64, 64) and torch.isfinite(exp.maps).all()
    # the scores are the region sums of the per-class logits at the model's own resolution
    logits = seg_logits(output)  # [1, 3, 16, 16]
    assert logits.shape == (1, 3, 16, 16)
    for t, target in enumerate(targets[0]):
        expected = logits[0, target.class_id][logits[0].argmax(0) == target.class_id].sum()
        torch.testing.assert_close(exp.scores[0, t], expected, rtol=1e-4, atol=1e-5)
