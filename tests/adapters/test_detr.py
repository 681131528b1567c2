"""``hf:DIR`` DETR-family detectors: one target per kept query, equal to the library's own
``post_process_object_detection``.

Real ``transformers`` DETR, Conditional DETR and Deformable DETR classes from tiny configs
(a small ResNet backbone built by ``transformers``, random weights), saved with
``save_pretrained``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import taskcam
from taskcam.adapters.huggingface.detr import DetrAdapter, DetrTarget
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

transformers = pytest.importorskip("transformers")

FAMILIES = {
    "detr": ("DetrConfig", "DetrForObjectDetection", "DetrImageProcessor"),
    "conditional_detr": (
        "ConditionalDetrConfig",
        "ConditionalDetrForObjectDetection",
        "ConditionalDetrImageProcessor",
    ),
    "deformable_detr": (
        "DeformableDetrConfig",
        "DeformableDetrForObjectDetection",
        "DeformableDetrImageProcessor",
    ),
}


def _build(family: str):
    config_cls, model_cls, _ = FAMILIES[family]
    backbone = transformers.ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
    )
    options = dict(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_queries=12,
        num_labels=3,
        id2label={0: "cat", 1: "dog", 2: "owl"},
        label2id={"cat": 0, "dog": 1, "owl": 2},
    )
    if family == "deformable_detr":
        options.update(num_feature_levels=4, encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(0)
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**options)).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for family in FAMILIES:
        model = _build(family)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        out[family] = (folder, model)
    return out


@pytest.fixture(scope="module")
def photo(chelsea_png):
    return chelsea_png


def _rows(boxes, scores, labels):
    rows = torch.cat([boxes, scores[:, None], labels[:, None].float()], dim=1)
    return sorted(tuple(round(float(v), 3) for v in row) for row in rows)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_detections_equal_the_library_post_processing(saved, family):
    folder, model = saved[family]
    loaded = load_model(f"hf:{folder}", size=[96, 160])
    adapter = loaded.adapter
    assert isinstance(adapter, DetrAdapter) and loaded.task == "detect"
    adapter.conf = 0.2
    image = (np.random.default_rng(0).random((90, 150, 3)) * 255).astype(np.uint8)
    x, placement = adapter.prepare(image)
    ours = adapter.detect(x)[0]
    processor = getattr(transformers, FAMILIES[family][2])()
    with torch.no_grad():
        output = model(pixel_values=x)
    (theirs,) = processor.post_process_object_detection(
        output, threshold=0.2, target_sizes=[(90, 150)]
    )
    assert len(ours) == len(theirs["scores"]) > 0
    expected = _rows(theirs["boxes"], theirs["scores"], theirs["labels"])
    assert _rows(placement.boxes_to_image(ours.boxes), ours.scores, ours.classes) == expected


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_query_is_explained_in_one_call(saved, family):
    loaded = load_model(f"hf:{saved[family][0]}", size=[128])
    adapter = loaded.adapter
    adapter.conf = 0.0
    image = (np.random.default_rng(1).random((100, 120, 3)) * 255).astype(np.uint8)
    x, _ = adapter.prepare(image)
    dets = adapter.detect(x)[0].select([0, 1, 2])
    targets = adapter.targets(dets)
    assert all(type(t) is DetrTarget for t in targets)
    with torch.no_grad():
        output = loaded.model(pixel_values=x)
    torch.testing.assert_close(torch.cat([t(output) for t in targets]), dets.scores)
    sides = torch.cat([t(output) for t in adapter.targets(dets, "x2")])
    torch.testing.assert_close(sides, dets.boxes[:, 2], atol=1e-4, rtol=0)
    exp = taskcam.explain(loaded.model, x, [targets], adapter.default_layers())
    assert exp.maps.shape == (1, 3, *x.shape[-2:]) and torch.isfinite(exp.maps).all()
    assert not bool(exp.empty.all())


def test_the_command_line_explains_detr_detections(saved, photo, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(photo), "--model", f"hf:{saved['detr'][0]}", "--conf", "0.0"]
    assert main([*args, "--targets", "0,1", "--size", "128", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == ["model.input_projection"]
    records = result["items"][0]["targets"]
    assert [r["kind"] for r in records] == ["detection"] * 2
    for record in records:
        assert record["class_name"] in ("cat", "dog", "owl")
        x1, y1, x2, y2 = record["box"]
        assert 0 <= x1 <= x2 <= 451 and 0 <= y1 <= y2 <= 300
        assert np.load(out / record["heatmap"]).shape == (300, 451)


def test_a_detector_taskcam_does_not_know_is_refused_naming_it(tmp_path):
    config = transformers.YolosConfig(
        image_size=[64, 64],
        patch_size=16,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_detection_tokens=4,
        num_labels=2,
    )
    transformers.YolosForObjectDetection(config).save_pretrained(tmp_path)
    with pytest.raises(TaskcamError, match=r"cannot explain a YolosForObjectDetection \(yolos\)"):
        load_model(f"hf:{tmp_path}", weights="none")


def test_detr_attention_is_the_query_cross_attention_and_changes_nothing(saved):
    folder, model = saved["detr"]
    loaded = load_model(f"hf:{folder}", size=[96, 160])
    adapter = loaded.adapter
    adapter.conf = 0.0
    x = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    dets = adapter.detect(x)[0].select([0, 1])
    targets = adapter.targets(dets)
    before = loaded.model.config._attn_implementation
    with torch.no_grad():
        plain = loaded.model(pixel_values=x).logits
    exp = taskcam.explain(loaded.model, x, [targets], method="detr-attention")
    assert loaded.model.config._attn_implementation == before
    with torch.no_grad():
        assert torch.equal(loaded.model(pixel_values=x).logits, plain)
    # the library's own weights, asked for the documented way
    eager = _build("detr")
    eager.load_state_dict(model.state_dict())
    eager.config._attn_implementation = "eager"
    with torch.no_grad():
        weights = eager(pixel_values=x, output_attentions=True).cross_attentions[-1]
    grid = weights.mean(1)[0, dets.candidates].reshape(2, 3, 4)  # 96 x 128 / 32
    torch.testing.assert_close(exp.raw["cross-attention"][0], grid)
    torch.testing.assert_close(exp.scores[0], dets.scores)
    assert exp.maps.shape == (1, 2, 96, 128)


def test_detr_attention_refuses_deformable_detr(saved):
    loaded = load_model(f"hf:{saved['deformable_detr'][0]}", size=[96, 128])
    adapter = loaded.adapter
    adapter.conf = 0.0
    x = torch.rand(1, 3, 96, 128)
    targets = adapter.targets(adapter.detect(x)[0].select([0]))
    with pytest.raises(TaskcamError, match=r"detr-attention: .* \(deformable_detr\) has none"):
        taskcam.explain(loaded.model, x, [targets], method="detr-attention")


@pytest.mark.parametrize("family", ["detr", "deformable_detr"])
def test_a_missed_label_is_explained_through_its_best_query(saved, photo, family):
    """No NMS: a label of another class at a kept query's box is missed because of that
    query's scores (the label class's below the threshold, or another class above it)."""
    from taskcam.adapters.detection.labels import Labels
    from taskcam.adapters.detection.outcomes import label_outcomes
    from taskcam.capture import predict
    from taskcam.io import read_image

    folder, model = saved[family]
    adapter = DetrAdapter(model, conf=0.0)
    image = read_image(photo)
    x, placement = adapter.prepare(image)
    dets = adapter.detect(x)[0]
    box = placement.boxes_to_image(dets.boxes[:1].float())
    k = int(dets.classes[0])
    other = (k + 1) % 3
    adapter.conf = float(dets.scores[0]) - 1e-4  # the best pair passes, the label's does not
    result = label_outcomes(adapter, image, Labels(box.repeat(2, 1), torch.tensor([k, other])))
    assert result.match.detection_of[0] == 0  # the query's own class: a hit
    (miss,) = result.missed
    assert miss.label == 1 and miss.reason in ("wrong_class", "below_conf")
    cands = adapter.candidates(predict(adapter.model, x))
    scores = cands.scores[0, :, other]
    assert miss.candidate_score == pytest.approx(float(scores[miss.candidate]), abs=1e-5)
    assert miss.candidate_score <= adapter.conf
    targets = [t for o in result.outcomes for _, t in o.targets]
    exp = taskcam.explain(adapter.model, x, [targets], layers=adapter.default_layers())
    assert exp.maps.shape[1] == len(targets) and torch.isfinite(exp.maps).all()
    first = len(targets) - len(miss.targets)  # the miss's own score comes after the detections
    assert float(exp.scores[0, first]) == pytest.approx(miss.candidate_score, abs=1e-4)
