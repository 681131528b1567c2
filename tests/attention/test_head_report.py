"""The attention report: head statistics, the grid and maps pictures, the JSON summary."""

import json

import pytest
import torch

from taskcam.attention import (
    attention_report,
    capture_attention,
    head_statistics,
    rollout,
    vit_layout,
)
from taskcam.cli import main
from taskcam.errors import TaskcamError

from .helpers import timm_vit


def test_head_statistics_flags_uniform_and_prefix_only_heads():
    n = 1 + 9
    uniform = torch.full((n, n), 1 / n)
    prefix = torch.zeros(n, n)
    prefix[:, 0] = 1.0
    local = torch.zeros(n, n)
    local[torch.arange(n), torch.arange(n)] = 1.0  # each token attends to itself
    stats = head_statistics(torch.stack([uniform, prefix, local]), (3, 3), 1, query=5)
    assert stats[0]["flags"] == ["uniform"]
    assert stats[0]["normalized_entropy"] == pytest.approx(1.0)
    assert stats[1]["flags"] == ["prefix-only"] and stats[1]["prefix_mass"] == 1.0
    assert stats[2]["flags"] == [] and stats[2]["mean_distance"] == 0.0
    assert stats[2]["query_distance"] == 0.0 and stats[2]["entropy"] == pytest.approx(0.0)


def test_attention_command_writes_the_grid_png_and_json(tmp_path):
    import cv2
    import numpy as np

    from taskcam.data.shapes import make_sample

    sample = make_sample(0, seed=123, size=64, max_objects=1)
    image = tmp_path / "shape.png"
    cv2.imwrite(str(image), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "att"
    code = main(["attention", str(image), "--model", "zoo:shapes-vit", "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "attention.json").read_text())
    assert summary["grid"] == [8, 8] and summary["prefix_tokens"] == 5  # class token, 4 registers
    assert summary["query"] == "cls"
    assert len(summary["layers"]) == 4 and len(summary["layers"][0]["heads"]) == 4
    for layer in summary["layers"]:
        for head in layer["heads"]:
            assert 0 <= head["normalized_entropy"] <= 1 and 0 <= head["prefix_mass"] <= 1
            assert 0 <= head["mean_distance"] <= 8 * 2**0.5
    grid = cv2.imread(str(out / summary["files"]["grid"]))
    assert grid is not None and grid.shape[0] > 4 * 64 and grid.shape[1] > 5 * 64
    assert cv2.imread(str(out / summary["files"]["maps"])) is not None
    # a patch query on a timm model with random weights
    out2 = tmp_path / "att2"
    code = main(
        [
            "attention",
            str(image),
            "--model",
            "timm:test_vit",  # timm's own tiny test ViT: 160 px, 16 px patches, 6 blocks
            "--weights",
            "none",
            "--query",
            "2,3",
            "--out",
            str(out2),
        ]
    )
    assert code == 0
    summary = json.loads((out2 / "attention.json").read_text())
    assert summary["query"] == [2, 3] and summary["grid"] == [10, 10]
    assert len(summary["layers"]) == 6
    assert all(h["query_distance"] is not None for h in summary["layers"][0]["heads"])
    assert np.isfinite(summary["layers"][-1]["heads"][0]["entropy"])


def test_registers_without_a_class_token_are_not_queried_as_cls(tmp_path):
    import numpy as np

    vit = timm_vit(class_token=False, reg_tokens=4, global_pool="avg")
    assert vit_layout(vit).prefix == 4 and not vit_layout(vit).class_token
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with pytest.raises(TaskcamError, match=r"no class token \(its 4 prefix.*registers\); pass a"):
        attention_report(vit, image, tmp_path, size=(32, 32))
    # rollout's "cls" on an average-pooled model is the mean over patch queries, not register 0
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(rollout(vit, x).maps, rollout(vit, x, query="mean").maps)
    summary = attention_report(vit, image, tmp_path, size=(32, 32), query=(1, 2))
    assert summary["query"] == [1, 2]


def test_report_queries_a_prefix_token_by_its_index(tmp_path):
    import numpy as np

    vit = timm_vit(reg_tokens=2)  # class token, 2 registers, 4x4 patches
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    summary = attention_report(vit, image, tmp_path, size=(32, 32), query=2)
    assert summary["query"] == 2  # the second register, not a patch
    x = _prepare_image(image)
    with capture_attention(vit) as cap, torch.no_grad():
        vit(x)
    row = cap.attentions["blocks.0.attn"][0, :, 2]  # [heads, N]: register 1's row
    heads = summary["layers"][0]["heads"]
    assert [h["prefix_mass"] for h in heads] == pytest.approx(row[:, :3].sum(-1).tolist())
    assert all(h["query_distance"] is None for h in heads)
    assert attention_report(vit, image, tmp_path, size=(32, 32), query=0)["query"] == "cls"
    assert attention_report(vit, image, tmp_path, size=(32, 32), query=3 + 6)["query"] == [1, 2]
    with pytest.raises(TaskcamError, match=r"query: token 19 outside 0\.\.18"):
        attention_report(vit, image, tmp_path, size=(32, 32), query=19)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"uniform_threshold": 1.5}, "uniform_threshold"),
        ({"uniform_threshold": -0.1}, "uniform_threshold"),
        ({"prefix_threshold": 2}, "prefix_threshold"),
        ({"prefix_threshold": float("nan")}, "prefix_threshold"),
    ],
)
def test_report_thresholds_must_be_fractions(tmp_path, kwargs, name):
    import numpy as np

    image = np.zeros((32, 32, 3), np.uint8)
    flag = "--" + name.replace("_", "-")
    pattern = rf"{name} \({flag}\): expected a fraction in \[0, 1\], got"
    with pytest.raises(TaskcamError, match=pattern):
        attention_report(timm_vit(), image, tmp_path, size=(32, 32), **kwargs)
    with pytest.raises(TaskcamError, match=pattern):
        head_statistics(torch.full((1, 5, 5), 0.2), (2, 2), 1, **kwargs)
    assert not list(tmp_path.iterdir())  # refused before anything is written


def _prepare_image(image):
    from taskcam.io import to_tensor

    return to_tensor(image, (32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
