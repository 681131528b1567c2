"""``hf:DIR --text``: OWL-ViT, OWLv2 and Grounding DINO explained detection by detection, their
detections equal to the library's own post-processing on a real photo.

Real ``transformers`` classes from tiny configs (64-96 pixel inputs, 1-2 layers, hidden 32,
seeded random weights), saved with ``save_pretrained`` beside processors whose tokenizers are
built here from a few-word vocabulary (a CLIP byte-pair one, a BERT word-piece one holding
Grounding DINO's separator ids), so nothing is downloaded.
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch

import taskcam
from taskcam.adapters.huggingface.open_vocabulary import OpenVocabularyAdapter
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.io import read_image
from taskcam.models import load_model

transformers = pytest.importorskip("transformers")

TEXT = "a cat. a remote."
PHRASES = ["a cat", "a remote"]
FAMILIES = ("owlvit", "owlv2", "grounding-dino")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


def clip_tokenizer():
    """A CLIP byte-pair tokenizer over the letters, with merges for "cat" and "remote"."""
    vocab = {"!": 0}  # OWL-ViT reads a row whose first id is 0 as padding: no token 0 used
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
    for c in string.ascii_lowercase:
        vocab[c + "</w>"] = len(vocab)
    merges = [("c", "a"), ("ca", "t</w>"), ("r", "e"), ("m", "o"), ("re", "mo"), ("t", "e</w>")]
    merges.append(("remo", "te</w>"))
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the highest id: the token OWL-ViT pools
    return transformers.CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=16)


def bert_tokenizer():
    """A BERT word-piece tokenizer with Grounding DINO's separators at their ids."""
    vocab = [f"[unused{i}]" for i in range(1030)]
    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    for i, w in {**special, 1012: ".", 1029: "?"}.items():
        vocab[i] = w
    for i, w in enumerate(["a", "cat", "re", "##mote", "dog"]):
        vocab[200 + i] = w
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})


def _owl(family: str):
    tokenizer = clip_tokenizer()
    n = len(tokenizer)
    text = dict(
        vocab_size=n,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=n - 2,
        eos_token_id=n - 1,
        pad_token_id=n - 1,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=64,
        patch_size=16,
    )
    prefix = "OwlViT" if family == "owlvit" else "Owlv2"
    config = getattr(transformers, f"{prefix}Config")(
        text_config=text, vision_config=vision, projection_dim=32
    )
    torch.manual_seed(0)
    model = getattr(transformers, f"{prefix}ForObjectDetection")(config).eval()
    with torch.no_grad():  # boxes near their patches, as a trained head's, not degenerate
        for p in model.box_head.dense2.parameters():
            p.mul_(0.05)
    images = getattr(transformers, f"{prefix}ImageProcessor")(size={"height": 64, "width": 64})
    processor = getattr(transformers, f"{prefix}Processor")(images, tokenizer)
    return model, processor


def _grounding_dino():
    backbone = transformers.ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 16, 32],
        depths=[1, 1, 1, 1],
        out_features=["stage2", "stage3", "stage4"],
    )
    text = transformers.BertConfig(
        vocab_size=1030,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    config = transformers.GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        d_model=32,
        encoder_layers=1,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=10,
        num_feature_levels=4,
        encoder_n_points=1,
        decoder_n_points=1,
        max_text_len=32,
    )
    torch.manual_seed(0)
    model = transformers.GroundingDinoForObjectDetection(config).eval()
    with torch.no_grad():  # token logits of a few units, not saturated sigmoids
        model.model.text_projection.weight.mul_(0.02)
    size = {"shortest_edge": 64, "longest_edge": 96}
    images = transformers.GroundingDinoImageProcessor(size=size)
    return model, transformers.GroundingDinoProcessor(images, bert_tokenizer())


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = {}
    for family in FAMILIES:
        model, processor = _grounding_dino() if family == "grounding-dino" else _owl(family)
        folder = tmp_path_factory.mktemp(family)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        out[family] = (folder, model, processor)
    return out


@pytest.fixture(scope="module")
def photo(chelsea_png):
    return chelsea_png


def _library(family, model, processor, image, threshold):
    """The library's own detections: its processor, its model, its post-processing."""
    text = TEXT if family == "grounding-dino" else [PHRASES]
    inputs = processor(text=text, images=image, return_tensors="pt")
    with torch.no_grad():
        output = model(**inputs)
    size = [image.shape[:2]]
    if family == "grounding-dino":
        (result,) = processor.post_process_grounded_object_detection(
            output, inputs["input_ids"], threshold=threshold, text_threshold=0.3, target_sizes=size
        )
        result["phrases"] = result["text_labels"]
    else:
        (result,) = processor.image_processor.post_process_object_detection(
            output, threshold=threshold, target_sizes=size
        )
        result["phrases"] = [PHRASES[k] for k in result["labels"].tolist()]
    return inputs, output, result


def _threshold(output, family, keep=4):
    """A threshold keeping ``keep`` queries of this random model."""
    probs = output.logits.sigmoid()[0].amax(-1)
    return float(probs.sort(descending=True).values[keep - 1]) - 1e-6


def _rows(boxes, scores, phrases):
    rows = [[*(round(float(v), 2) for v in b), round(float(s), 5)] for b, s in zip(boxes, scores)]
    return sorted(zip(map(tuple, rows), phrases))


@pytest.mark.parametrize("family", FAMILIES)
def test_detections_equal_the_library_post_processing(saved, photo, family):
    folder, model, processor = saved[family]
    image = read_image(photo)
    loaded = load_model(f"hf:{folder}", text=TEXT)
    adapter = loaded.adapter
    assert isinstance(adapter, OpenVocabularyAdapter) and loaded.task == "detect"
    assert adapter.class_names == PHRASES and loaded.class_names == PHRASES
    x, placement = adapter.prepare(image)
    threshold = _threshold(_library(family, model, processor, image, 0.0)[1], family)
    inputs, output, theirs = _library(family, model, processor, image, threshold)
    assert torch.equal(x, inputs["pixel_values"])  # the processor's own input
    adapter.conf, adapter.text_threshold = threshold, 0.3
    ours = adapter.detect(x)[0]
    assert len(ours) == len(theirs["scores"]) == 4
    assert torch.equal(ours.scores.sort().values, theirs["scores"].sort().values)  # bit for bit
    # the library's boxes are not clipped: compare in its (unclipped) frame, then clipped
    h, w = image.shape[:2]
    side = max(h, w) if family == "owlv2" else None
    scale = torch.tensor([side or w, side or h] * 2) / torch.tensor(x.shape[-2:]).flip(0).repeat(2)
    mine = [f["phrase"] for f in ours.fields]
    # ours best first; the library lists its kept queries in query order
    order = theirs["scores"].argsort(descending=True, stable=True)
    assert mine == [theirs["phrases"][i] for i in order.tolist()]
    torch.testing.assert_close(ours.scores, theirs["scores"][order], atol=0, rtol=0)
    torch.testing.assert_close(ours.boxes * scale, theirs["boxes"][order], atol=1e-3, rtol=0)
    clipped = torch.minimum(theirs["boxes"].clamp(min=0), torch.tensor([w, h, w, h]))
    boxes = placement.boxes_to_image(ours.boxes)
    torch.testing.assert_close(boxes, clipped[order].to(boxes.dtype), atol=1e-3, rtol=0)
    if family != "grounding-dino":  # the class is the phrase the library labels it with
        assert [PHRASES[k] for k in ours.classes.tolist()] == mine


@pytest.mark.parametrize("family", FAMILIES)
def test_each_detection_is_its_phrase_score_and_is_matched_when_perturbed(saved, photo, family):
    folder, model, processor = saved[family]
    loaded = load_model(f"hf:{folder}", text=PHRASES)  # a list works as the string does
    adapter = loaded.adapter
    adapter.conf = 0.0
    x, _ = adapter.prepare(read_image(photo))
    dets = adapter.detect(x)[0].select([0, 1, 2])
    targets = adapter.targets(dets)
    with torch.no_grad():
        output = loaded.model(x)
    scores = torch.cat([t(output) for t in targets])
    if family == "grounding-dino":  # the phrase's best token: at most the best token's
        assert bool((scores <= dets.scores + 1e-6).all())
    else:
        torch.testing.assert_close(scores, dets.scores)
    # D-RISE: the class vector is the scores over phrases; an unperturbed output matches
    # each detection at its own query (IoU 1), scored cos × its detection score
    probs = adapter.candidates(output).scores[0, dets.candidates]  # [3, P]
    cos = probs[torch.arange(3), dets.classes] / probs.norm(dim=-1)
    matched = torch.cat([t.perturbed()(output) for t in targets])
    assert bool((matched >= cos * dets.scores - 1e-5).all())
    exp = taskcam.explain(loaded.model, x, [targets], adapter.default_layers())
    assert exp.maps.shape == (1, 3, *x.shape[-2:]) and torch.isfinite(exp.maps).all()
    assert not bool(exp.empty.any()), exp.empty


def _token_words_by_hand(model, family, x, text_inputs, query, phrase):
    """Gradient × input at the token embeddings, computed here with a hook of our own."""
    table = model.get_submodule(
        "model.text_backbone.embeddings.word_embeddings"
        if family == "grounding-dino"
        else f"{family}.text_model.embeddings.token_embedding"
    )
    kept = {}

    def hook(_module, _inputs, out):
        kept["e"] = out.detach().requires_grad_(True)
        return kept["e"]

    handle = table.register_forward_hook(hook)
    try:
        extra = {"pixel_mask": torch.ones_like(x[:, 0], dtype=torch.long)}
        out = model(pixel_values=x, **text_inputs, **(extra if family == "grounding-dino" else {}))
    finally:
        handle.remove()
    probs = out.logits.sigmoid()[0, query]
    if family == "grounding-dino":  # the phrase's tokens: "cat" (2) or "re ##mote" (5, 6)
        probs = probs[[1, 2] if phrase == 0 else [4, 5, 6]].amax()
    else:
        probs = probs[phrase]
    (grad,) = torch.autograd.grad(probs, kept["e"])
    return (grad * kept["e"]).sum(-1).detach()  # [R, T]


@pytest.mark.parametrize("family", FAMILIES)
def test_words_are_gradient_times_input_over_the_prompt_tokens(saved, photo, family):
    folder, model, processor = saved[family]
    adapter = load_model(f"hf:{folder}", text=TEXT).adapter
    adapter.conf = 0.0
    x, _ = adapter.prepare(read_image(photo))
    dets = adapter.detect(x)[0]
    fields = dets.select([0, 1]).fields
    for i, record in enumerate(fields):
        assert record["phrase"] == dets.fields[i]["phrase"]
        assert [w for w, _ in record["words"]] == ["a", "cat", "a", "remote"]
        query, phrase = int(dets.candidates[i]), int(dets.classes[i])
        tokens = _token_words_by_hand(model, family, x, adapter.prompt.inputs, query, phrase)
        if family == "grounding-dino":  # [CLS] a cat . a re ##mote . [SEP]
            by_hand = [tokens[0, 1], tokens[0, 2], tokens[0, 4], tokens[0, 5] + tokens[0, 6]]
        else:  # one row per phrase: <start> a cat <end>, <start> a remote <end>
            by_hand = [tokens[0, 1], tokens[0, 2], tokens[1, 1], tokens[1, 2]]
        weights = [v for _, v in record["words"]]
        assert weights == pytest.approx([float(v) for v in by_hand], rel=1e-5, abs=1e-12)
        assert any(abs(v) > 0 for v in weights)
        if family != "grounding-dino":  # OWL encodes each phrase alone: others weigh 0
            other = [0, 1] if phrase == 1 else [2, 3]
            assert [weights[j] for j in other] == [0.0, 0.0]


def test_the_command_line_explains_owlvit_detections_as_the_library_finds_them(
    saved, photo, tmp_path
):
    folder, model, processor = saved["owlvit"]
    image = read_image(photo)
    threshold = _threshold(_library("owlvit", model, processor, image, 0.0)[1], "owlvit")
    _, _, theirs = _library("owlvit", model, processor, image, threshold)
    out = tmp_path / "out"
    args = ["explain", str(photo), "--model", f"hf:{folder}", "--text", TEXT]
    args += ["--conf", str(threshold), "--method", "gradcam,fast-drise", "--out", str(out)]
    assert main(args) == 0
    result = json.loads((out / "results.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads((Path(__file__).parents[2] / "docs" / "results.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(result)  # phrase and words included
    assert result["layers"] == ["owlvit.vision_model.encoder.layers.1.layer_norm1"]
    records = result["items"][0]["targets"]
    assert sorted({r["method"] for r in records}) == ["fast-drise", "gradcam"]
    h, w = image.shape[:2]
    clipped = torch.minimum(theirs["boxes"].clamp(min=0), torch.tensor([w, h, w, h]))
    for method in ("gradcam", "fast-drise"):
        mine = [r for r in records if r["method"] == method]
        assert len(mine) == 4
        assert [r["class_name"] for r in mine] == [r["phrase"] for r in mine]
        got = _rows(
            [r["box"] for r in mine], [r["score"] for r in mine], [r["phrase"] for r in mine]
        )
        assert got == _rows(clipped, theirs["scores"], theirs["phrases"])
        for record in mine:
            assert [word for word, _ in record["words"]] == ["a", "cat", "a", "remote"]
            heatmap = np.load(out / record["heatmap"])
            assert heatmap.shape == (h, w) and np.isfinite(heatmap).all()


def test_grounding_dino_on_the_command_line(saved, photo, tmp_path):
    out = tmp_path / "out"
    args = ["explain", str(photo), "--model", f"hf:{saved['grounding-dino'][0]}"]
    args += ["--text", TEXT, "--conf", "0.0", "--targets", "0,1", "--out", str(out)]
    assert main([*args, "--method", "gradcam,fast-drise"]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["layers"] == [f"model.input_proj_vision.{i}" for i in range(4)]
    records = result["items"][0]["targets"]
    assert [r["method"] for r in records] == ["gradcam"] * 2 + ["fast-drise"] * 2
    for record in records:
        assert record["class_name"] in PHRASES and isinstance(record["phrase"], str)
        assert len(record["words"]) == 4
        assert np.load(out / record["heatmap"]).shape == (300, 451)


def test_the_users_model_comes_back_unchanged(saved, photo):
    folder, _, processor = saved["owlvit"]
    model = transformers.OwlViTForObjectDetection.from_pretrained(folder).train()
    model.class_head.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapter = OpenVocabularyAdapter(model, processor, TEXT, conf=0.0)
    x, _ = adapter.prepare(read_image(photo))
    dets = adapter.detect(x)[0].select([0, 1])
    assert all(len(f["words"]) == 4 for f in dets.fields)
    for method in ("gradcam", "fast-drise"):
        taskcam.explain(
            adapter.model, x, [adapter.targets(dets)], adapter.default_layers(), method=method
        )
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_text_is_required_and_a_folder_without_its_processor_is_refused(saved, photo, tmp_path):
    folder = saved["owlvit"][0]
    with pytest.raises(TaskcamError, match=r"--text: an open-vocabulary detector needs phrases"):
        load_model(f"hf:{folder}")
    with pytest.raises(TaskcamError, match=r"--text: no phrase in ' \. '"):
        load_model(f"hf:{folder}", text=" . ")
    with pytest.raises(TaskcamError, match=r"--prompt: hf:.* is a OwlViT.*, which takes --text"):
        load_model(f"hf:{folder}", text=TEXT, prompts=["point=1,1"])
    assert main(["explain", str(photo), "--model", f"hf:{folder}", "--out", str(tmp_path)]) == 2
    bare = tmp_path / "bare"
    saved["owlvit"][1].save_pretrained(bare)
    with pytest.raises(TaskcamError, match=r"processor .*save_pretrained"):
        load_model(f"hf:{bare}", text=TEXT)


@pytest.mark.parametrize("family", FAMILIES)
def test_size_mean_and_std_reach_the_image_processor(saved, photo, family):
    folder, _, processor = saved[family]
    size = [96] if family != "grounding-dino" else [80, 120]
    loaded = load_model(f"hf:{folder}", text=TEXT, size=size, mean=[0.5] * 3, std=[0.25] * 3)
    image = read_image(photo)
    x, placement = loaded.adapter.prepare(image)
    sides = {"height": 96, "width": 96}
    if family == "grounding-dino":
        sides = {"shortest_edge": 80, "longest_edge": 120}
    pixels = processor.image_processor(
        images=image, size=sides, image_mean=[0.5] * 3, image_std=[0.25] * 3, return_tensors="pt"
    )["pixel_values"]
    assert torch.equal(x, pixels)
    assert len(loaded.adapter.detect(x)[0]) > 0  # OWL at another size: positions interpolated
    assert placement.map_to_image(torch.zeros(2, *x.shape[-2:])).shape == (2, *image.shape[:2])


def test_a_factory_returning_the_adapter_takes_size_mean_and_std(
    saved, photo, tmp_path, monkeypatch
):
    """``--model package.module:factory`` returning the adapter: the run's preprocessing is the
    adapter's own, so --size/--mean/--std change the input it prepares."""
    folder = saved["owlvit"][0]
    (tmp_path / "my_owl.py").write_text(
        "from taskcam.models import load_model\n\n\ndef build():\n"
        f"    return load_model(r'hf:{folder}', text={TEXT!r}).adapter\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_model("my_owl:build", size=[96], mean=[0.5] * 3, std=[0.25] * 3)
    assert loaded.preprocess is loaded.adapter.preprocess
    x, _ = loaded.adapter.prepare(read_image(photo))
    processor = saved["owlvit"][2]
    pixels = processor.image_processor(
        images=read_image(photo),
        size={"height": 96, "width": 96},
        image_mean=[0.5] * 3,
        image_std=[0.25] * 3,
        return_tensors="pt",
    )["pixel_values"]
    assert torch.equal(x, pixels)
