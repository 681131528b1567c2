"""Segment Anything through ``hf:DIR --prompt`` (:mod:`taskcam.adapters.huggingface.sam`).

The model is a tiny ``SamModel`` with seeded random weights (:func:`tiny_sam`), saved with its
``SamProcessor`` by ``save_pretrained``; masks and scores are compared with the library's own
pipeline on the same photo: ``SamProcessor`` -> ``SamModel`` -> ``post_process_masks``.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from skimage import data

import taskcam
from taskcam.adapters.huggingface.sam import (
    SamAdapter,
    SamMaskMatch,
    SamPrediction,
    default_processor,
    mask_boxes,
    parse_prompt,
    tiny_sam,
)
from taskcam.cli import main
from taskcam.errors import TaskcamError
from taskcam.models import load_model

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "results.schema.json").read_text())
BOX, POINT = "box=100,50,300,250", "point=200,100"  # chelsea's face, her left eye


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see tests/conftest.py


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """chelsea (451 × 300) as a PNG file."""
    path = tmp_path_factory.mktemp("photos") / "chelsea.png"
    Image.fromarray(data.chelsea()).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A tiny SAM and its processor, as ``save_pretrained`` writes them."""
    path = tmp_path_factory.mktemp("sam")
    model = tiny_sam()
    model.save_pretrained(path)
    default_processor(model).save_pretrained(path)
    return path


def library(folder: Path, image: np.ndarray, prompts: list[str]) -> tuple:
    """The library's own pipeline from the folder, one call per prompt: pixel values, masks
    ``BoolTensor[N, H, W]`` and predicted IoUs ``Tensor[N]`` in the prompts' order."""
    processor = transformers.SamProcessor.from_pretrained(folder)
    model = transformers.SamModel.from_pretrained(folder).eval()
    masks, scores = [], []
    for spec in prompts:
        prompt = parse_prompt(spec)
        if prompt.kind == "box":
            kwargs = {"input_boxes": [[list(prompt.coords)]]}
        else:
            kwargs = {"input_points": [[[list(prompt.coords)]]]}
        inputs = processor(images=image, return_tensors="pt", **kwargs)
        with torch.no_grad():
            out = model(**inputs)
        post = processor.post_process_masks(
            out.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]  # [1, M, H, W]
        masks.append(post[0])
        scores.append(out.iou_scores[0, 0])
    return inputs["pixel_values"], torch.cat(masks), torch.cat(scores)


def run(args: list[str], out: Path) -> list[dict]:
    assert main(["explain", *args, "--no-progress", "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())["items"][0]["targets"]


def test_masks_and_scores_equal_the_librarys_own_pipeline(folder, photo):
    """Prompts of both kinds in one run: the input, every mask (upscaled to the photo and
    thresholded) and every predicted IoU bit for bit, in the prompts' order."""
    image = np.array(Image.open(photo).convert("RGB"))
    prompts = [BOX, POINT, "box=10,10,60,80"]
    pixels, masks, scores = library(folder, image, prompts)
    model = transformers.SamModel.from_pretrained(folder).eval()
    processor = transformers.SamProcessor.from_pretrained(folder)
    adapter = SamAdapter(model, prompts, processor=processor)
    x, placement = adapter.prepare(image)
    dets = adapter.detect(x)[0]
    assert torch.equal(x, pixels) and len(dets) == len(masks) == 9
    assert torch.equal(adapter.post_process(adapter.model(x).masks[0].detach()), masks)
    assert torch.equal(dets.scores, scores) and dets.classes.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert [f["pixels"] for f in dets.fields] == masks.sum(dim=(1, 2)).tolist()
    boxes = placement.boxes_to_image(dets.boxes)
    torch.testing.assert_close(boxes, mask_boxes(masks), atol=1e-3, rtol=0)
    assert [f["prompt"] for f in dets.fields[::3]] == prompts
    assert dets.fields[3]["prompt_points"] == [[200.0, 100.0]]


def test_the_command_line_writes_one_record_per_mask(folder, photo, tmp_path):
    """A box prompt: SAM's three masks, each a ``region`` record with its predicted IoU, its
    mask's box and pixels, the prompt, and a map the size of the photo."""
    records = run([str(photo), "--model", f"hf:{folder}", "--prompt", BOX], tmp_path)
    image = np.array(Image.open(photo).convert("RGB"))
    _, masks, scores = library(folder, image, [BOX])
    assert len(records) == len(masks) == 3
    for i, record in enumerate(records):
        assert record["kind"] == "region" and record["method"] == "odam"
        assert record["score"] == float(scores[i]) and record["pixels"] == int(masks[i].sum())
        want = mask_boxes(masks[i : i + 1])[0].tolist()
        assert record["box"] == pytest.approx(want, abs=0.01)
        assert record["prompt"] == record["class_name"] == BOX and record["mask_index"] == i
        assert record["prompt_box"] == [100.0, 50.0, 300.0, 250.0]
        heatmap = np.load(tmp_path / record["heatmap"])
        assert heatmap.shape == (300, 451) and heatmap.dtype == np.float32
        assert heatmap.min() >= 0 and heatmap.max() <= 1 and not record["empty"]
        assert (tmp_path / record["overlay"]).is_file()
    document = json.loads((tmp_path / "results.json").read_text())
    assert document["task"] == "segment" and document["layers"] == ["vision_encoder.neck"]
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


def test_a_point_prompt_with_drise_and_a_gradient_method(folder, photo, tmp_path):
    """A point prompt on random weights (``--weights none``), explained by fast-drise and
    gradcam, and by D-RISE's perturbed score; deletion and insertion stay in [0, 1]."""
    args = [str(photo), "--model", f"hf:{folder}", "--weights", "none", "--prompt", POINT]
    args += ["--method", "fast-drise,gradcam", "--faithfulness", "--faithfulness-steps", "2"]
    records = run(args, tmp_path)
    assert [r["method"] for r in records] == ["fast-drise"] * 3 + ["gradcam"] * 3
    for record in records:
        assert record["prompt_points"] == [[200.0, 100.0]] and "prompt_box" not in record
        assert np.load(tmp_path / record["heatmap"]).shape == (300, 451)
        assert (
            not record["empty"] and 0 <= record["deletion"] <= 1 and 0 <= record["insertion"] <= 1
        )
        assert record["faithfulness"] == pytest.approx(
            record["insertion"] - record["deletion"], abs=1e-3
        )
    drise = run([*args[:7], "--method", "drise", "--targets", "1"], tmp_path / "drise")
    assert len(drise) == 1 and drise[0]["index"] == 1 and not drise[0]["empty"]


def test_targets_sum_the_masks_logits_over_its_own_pixels(folder, photo):
    """The gradient target is the post-processed logits summed over the clean mask (the
    adjoint read on the decoder's grid); it reaches the ViT blocks (channels-last, reshaped);
    the perturbed score is a soft IoU in [0, 1]."""
    image = np.array(Image.open(photo).convert("RGB"))
    adapter = SamAdapter(tiny_sam(), [POINT, BOX])
    x, _ = adapter.prepare(image)
    dets = adapter.detect(x)[0]
    targets = adapter.targets(dets, "mask")
    out = adapter.model(x)
    drawn = adapter.post_process(out.masks[0], binarize=False)  # [N, H, W]
    want = (drawn * adapter.post_process(out.masks[0].detach())).sum(dim=(1, 2))
    torch.testing.assert_close(torch.cat([t(out) for t in targets]), want, rtol=1e-4, atol=1e-4)
    clean = torch.cat([t.perturbed()(out) for t in targets]).detach()
    assert bool(((clean > 0) & (clean < 1)).all())
    exp = taskcam.explain(adapter.model, x, [targets], ["vision_encoder.layers.1"])
    assert exp.maps.shape == (1, 6, 64, 64) and not bool(exp.empty.any())
    sure = torch.where(targets[0].clean, 50.0, -50.0)[None, None]  # exactly the clean mask
    match = SamMaskMatch(0, targets[0].clean, targets[0].area)
    assert float(match(SamPrediction(sure, torch.ones(1, 1)))) == pytest.approx(1.0)
    assert float(match(SamPrediction(-sure, torch.ones(1, 1)))) < 1e-6
    assert float(SamMaskMatch(9, targets[0].clean, targets[0].area)(out)) == 0.0


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("point=5", "a point has 2 numbers, got 1"),
        ("box=1,2,3", "a box has 4 numbers, got 3"),
        ("box=50,50,10,80", "x1 < x2 and y1 < y2"),
        ("point=-3,4", "finite and >= 0"),
        ("point=a,b", "is not a list of numbers"),
        ("circle=1,2", ""),
    ],
)
def test_bad_prompts_are_refused_by_name(folder, photo, tmp_path, capsys, spec, why):
    args = ["explain", str(photo), "--model", f"hf:{folder}", "--prompt", spec]
    assert main([*args, "--out", str(tmp_path)]) == 2
    message = capsys.readouterr().err
    assert f"--prompt {spec!r}: expected point=X,Y or box=X1,Y1,X2,Y2" in message
    assert why in message


def test_a_sam_without_prompts_and_other_misuse_are_refused(folder, photo, tmp_path, capsys):
    assert main(["explain", str(photo), "--model", f"hf:{folder}", "--out", str(tmp_path)]) == 2
    assert "is a Segment Anything model" in capsys.readouterr().err
    args = ["explain", str(photo), "--model", f"hf:{folder}", "--prompt", POINT, "--box", "1,1,9,9"]
    assert main([*args, "--no-progress", "--out", str(tmp_path / "labels")]) == 2
    assert "--labels/--box: SAM's masks answer its prompts" in capsys.readouterr().err
    with pytest.raises(TaskcamError, match=r"--text: hf:.* is a SamModel, which takes --prompt"):
        load_model(f"hf:{folder}", prompts=[POINT], text="a cat")
    with pytest.raises(TaskcamError, match=r"pass --prompt point=X,Y or box=X1,Y1,X2,Y2"):
        SamAdapter(tiny_sam(), [])
    with pytest.raises(TaskcamError, match=r"--size 32: SAM's image encoder takes 64×64"):
        load_model(f"hf:{folder}", prompts=[POINT], size=[32])
    with pytest.raises(TaskcamError, match=r"SamModel or Sam2Model, got Linear"):
        SamAdapter(torch.nn.Linear(2, 2), [POINT])
    adapter = SamAdapter(tiny_sam(), ["point=500,10"])
    with pytest.raises(TaskcamError, match=r"point=500,10: outside the 451×300 image"):
        adapter.prepare(data.chelsea())
    with pytest.raises(TaskcamError, match=r"explain one of \('score', 'mask'\)"):
        adapter.check_what("x1")


def test_the_users_model_comes_back_unchanged(photo):
    """A SamModel in training mode, with a hook and a frozen parameter, after a gradient and
    a perturbation method."""
    model = tiny_sam().train()
    model.vision_encoder.layers[0].mlp.lin1.weight.requires_grad_(False)
    seen = []
    handle = model.vision_encoder.neck.register_forward_hook(lambda *a: seen.append(1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    adapter = SamAdapter(model, [BOX])
    x, _ = adapter.prepare(np.array(Image.open(photo).convert("RGB")))
    targets = adapter.targets(adapter.detect(x)[0])
    for method in ("gradcam", "fast-drise"):
        taskcam.explain(adapter.model, x, [targets], adapter.default_layers(), method=method)
    assert [m.training for m in model.modules()] == modes and model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(model.vision_encoder.neck._forward_hooks) == 1 and seen
    handle.remove()
    assert adapter.detector is model and adapter.model.wrapped is model


def tiny_sam2() -> transformers.Sam2Model:
    """A tiny SAM 2 (Hiera of 5 blocks over 4 stages, 64-pixel input) with seeded weights."""
    torch.manual_seed(0)
    hiera = transformers.Sam2HieraDetConfig(
        hidden_size=8,
        image_size=[64, 64],
        blocks_per_stage=[1, 1, 2, 1],
        embed_dim_per_stage=[8, 16, 32, 64],
        num_attention_heads_per_stage=[1, 1, 1, 1],
        window_size_per_stage=[4, 2, 2, 2],
        global_attention_blocks=[3],
        window_positional_embedding_background_size=[2, 2],
    )
    vision = transformers.Sam2VisionConfig(
        backbone_config=hiera,
        backbone_channel_list=[64, 32, 16, 8],
        backbone_feature_sizes=[[16, 16], [8, 8], [4, 4]],
        fpn_hidden_size=16,
    )
    prompt = transformers.Sam2PromptEncoderConfig(
        hidden_size=16, image_size=64, patch_size=16, mask_input_channels=4
    )
    decoder = transformers.Sam2MaskDecoderConfig(
        hidden_size=16,
        mlp_dim=32,
        num_hidden_layers=1,
        num_attention_heads=1,
        iou_head_hidden_dim=16,
    )
    config = transformers.Sam2Config(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    return transformers.Sam2Model(config).eval()


def test_sam2_masks_equal_its_library_and_the_command_line_explains_them(photo, tmp_path):
    """SAM 2: Sam2Processor's square input, each prompt's masks and predicted IoUs as
    Sam2Model and post_process_masks give them, bit for bit; the command line's records; the
    Hiera blocks (channels-last) explained too; the model keeps its mode and no hook."""
    model = tiny_sam2()
    folder = tmp_path / "sam2"
    model.save_pretrained(folder)
    default_processor(model).save_pretrained(folder)
    processor = transformers.Sam2Processor.from_pretrained(folder)
    image = np.array(Image.open(photo).convert("RGB"))
    adapter = SamAdapter(model, [BOX, POINT], processor=processor)
    x, placement = adapter.prepare(image)
    dets = adapter.detect(x)[0]
    ours = adapter.post_process(adapter.model(x).masks[0].detach())
    for p, kwargs in enumerate(
        ({"input_boxes": [[[100, 50, 300, 250]]]}, {"input_points": [[[[200, 100]]]]})
    ):
        inputs = processor(images=image, return_tensors="pt", **kwargs)
        with torch.no_grad():
            out = model(**inputs)
        masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
        assert torch.equal(x, inputs["pixel_values"]) and torch.equal(
            ours[3 * p : 3 * p + 3], masks
        )
        assert torch.equal(dets.scores[3 * p : 3 * p + 3], out.iou_scores[0, 0])
    assert adapter.family == "sam2" and placement.new_height == placement.new_width == 64
    targets = adapter.targets(dets)
    out = adapter.model(x)
    drawn = (adapter.post_process(out.masks[0], binarize=False) * ours).sum(dim=(1, 2))
    torch.testing.assert_close(torch.cat([t(out) for t in targets]), drawn, rtol=1e-4, atol=1e-4)
    exp = taskcam.explain(adapter.model, x, [targets], ["vision_encoder.backbone.blocks.3"])
    assert exp.maps.shape == (1, 6, 64, 64) and not bool(exp.empty.any())
    assert not model.training and all(not m._forward_hooks for m in model.modules())
    records = run(
        [str(photo), "--model", f"hf:{folder}", "--prompt", POINT, "--method", "fast-drise"],
        tmp_path / "out",
    )
    assert len(records) == 3 and all(r["prompt_points"] == [[200.0, 100.0]] for r in records)
    assert all(np.load(tmp_path / "out" / r["heatmap"]).shape == (300, 451) for r in records)
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["layers"] == ["vision_encoder.neck.convs.0", "vision_encoder.neck.convs.1"]
