"""Tests for taskcam.render: overlays, labels, grids, filters, feature maps and image files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from skimage import data
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.io import load_image, to_tensor
from taskcam.render import (
    COLORMAPS,
    colorize,
    draw_label,
    feature_map_grid,
    filter_grid,
    grid,
    overlay,
    save_image,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18(weights=None)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()


def solid(color: tuple[int, int, int], h: int = 20, w: int = 30) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[:] = color
    return img


def no_hooks_left(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------------------- overlay


def quadrant_heatmap(n: int = 64) -> np.ndarray:
    hm = np.zeros((n, n), np.float32)
    hm[: n // 2, : n // 2] = 1.0
    return hm


def test_overlay_high_is_red_in_rgb_order() -> None:
    img = solid((128, 128, 128), 64, 64)
    out = overlay(img, quadrant_heatmap(), colormap="jet", alpha=0.5)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    hot = out[:32, :32].reshape(-1, 3).astype(int).mean(0)
    cold = out[32:, 32:].reshape(-1, 3).astype(int).mean(0)
    assert hot[0] > hot[2] + 40  # red over blue where the heatmap is 1
    assert cold[2] > cold[0] + 40  # blue over red where it is 0
    np.testing.assert_array_equal(img, 128)  # input untouched


def test_overlay_resizes_heatmap_and_accepts_tensors(chelsea: np.ndarray) -> None:
    small = quadrant_heatmap(8)
    out = overlay(chelsea, torch.from_numpy(small)[None], alpha=1.0)  # [1, 8, 8] tensor
    assert out.shape == chelsea.shape
    h, w = chelsea.shape[:2]
    assert out[h // 8, w // 8].tolist() == [128, 0, 0]  # jet top colour, RGB
    assert out[-h // 8, -w // 8].tolist() == [0, 0, 128]  # jet bottom colour, RGB
    from_chw = overlay(torch.from_numpy(chelsea).permute(2, 0, 1), small, alpha=0.3)
    np.testing.assert_array_equal(from_chw, overlay(chelsea, small, alpha=0.3))


def test_overlay_blend_formula_and_alpha_bounds() -> None:
    img = solid((200, 100, 0), 16, 16)
    hm = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    np.testing.assert_array_equal(overlay(img, hm, alpha=0.0), img)
    colored = colorize(hm, "turbo")
    np.testing.assert_array_equal(overlay(img, hm, colormap="turbo", alpha=1.0), colored)
    mid = overlay(img, hm, colormap="turbo", alpha=0.25)
    expected = np.rint(0.75 * img + 0.25 * colored.astype(np.float64))
    assert np.abs(mid.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(TaskcamError, match="alpha"):
        overlay(img, hm, alpha=1.5)


def test_overlay_clips_and_zeroes_nan() -> None:
    img = solid((50, 50, 50), 4, 4)
    wild = np.array([[np.nan, 3.0], [-2.0, 0.0]], np.float32)
    clean = np.array([[0.0, 1.0], [0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(overlay(img, wild), overlay(img, clean))


def test_colormap_names_case_insensitive_and_unknown_listed() -> None:
    hm = quadrant_heatmap(8)
    for name in ["jet", "turbo", "inferno", "viridis", "magma", "hot"]:
        assert name in COLORMAPS
    np.testing.assert_array_equal(colorize(hm, "JET"), colorize(hm, "jet"))
    assert not np.array_equal(colorize(hm, "viridis"), colorize(hm, "jet"))
    with pytest.raises(TaskcamError, match="nosuchmap") as e:
        overlay(solid((0, 0, 0), 8, 8), hm, colormap="nosuchmap")
    assert "turbo" in str(e.value) and "viridis" in str(e.value)


def test_overlay_bad_heatmap_shape_named() -> None:
    with pytest.raises(TaskcamError, match=re.escape("(2, 8, 8)")):
        overlay(solid((0, 0, 0), 8, 8), np.zeros((2, 8, 8)))


# ---------------------------------------------------------------------------------- draw_label


def test_draw_label_writes_outlined_text_on_a_copy() -> None:
    img = solid((128, 128, 128), 60, 200)
    out = draw_label(img, "cat 0.93", origin=(5, 5), font_scale=0.6)
    assert out is not img
    np.testing.assert_array_equal(img, 128)
    region = out[:30, :120]
    assert (region.min(axis=2) > 220).any()  # white letters
    assert (region.max(axis=2) < 30).any()  # black outline
    np.testing.assert_array_equal(out[40:, 150:], 128)  # far away: untouched


def test_draw_label_origin_and_lines() -> None:
    img = solid((0, 0, 0), 80, 80)
    out = draw_label(img, "A\nB", origin=(40, 10), font_scale=0.5, outline=None)
    ys, xs = np.nonzero(out.max(axis=2))
    assert xs.min() >= 39 and ys.min() >= 9  # nothing drawn above/left of the origin
    rows_with_ink = np.unique(ys)
    assert rows_with_ink.max() - rows_with_ink.min() > 20  # two lines stacked


# ---------------------------------------------------------------------------------------- grid


def test_grid_layout_cells_and_sizes() -> None:
    red, green, blue = solid((255, 0, 0)), solid((0, 255, 0), 40, 40), solid((0, 0, 255))
    g = grid([[red, green], [blue, None, red]], pad=3)
    ch, cw = 20, 30  # the first image's size
    assert g.shape == (2 * ch + 3 * 3, 3 * cw + 4 * 3, 3)
    cell = lambda i, j: g[3 + i * (ch + 3) : 3 + i * (ch + 3) + ch, 3 + j * (cw + 3) :][:, :cw]  # noqa: E731
    np.testing.assert_array_equal(cell(0, 0), red)
    np.testing.assert_array_equal(cell(0, 1), solid((0, 255, 0)))  # resized to the cell
    np.testing.assert_array_equal(cell(1, 0), blue)
    assert (cell(1, 1) == 255).all() and (cell(0, 2) == 255).all()  # blanks are background
    np.testing.assert_array_equal(cell(1, 2), red)

    sized = grid([[red, blue]], pad=0, cell_size=(10, 12))
    assert sized.shape == (10, 24, 3)
    assert grid([[red]], pad=0, cell_size=16).shape == (16, 16, 3)


def test_grid_labels_add_strips_with_text(chelsea: np.ndarray) -> None:
    rows = [[chelsea, chelsea], [chelsea, chelsea]]
    plain = grid(rows, cell_size=100, pad=4)
    labelled = grid(
        rows, row_labels=["gradcam", "scorecam"], col_labels=["tabby", "tiger"], cell_size=100
    )
    assert labelled.shape[0] > plain.shape[0] and labelled.shape[1] > plain.shape[1]
    top = labelled.shape[0] - plain.shape[0]
    left = labelled.shape[1] - plain.shape[1]
    np.testing.assert_array_equal(labelled[top:, left:], plain)  # the cells are unchanged
    assert (labelled[:top, left:].max(axis=2) < 100).any()  # dark column-label text
    assert (labelled[top:, :left].max(axis=2) < 100).any()  # dark row-label text


def test_grid_errors() -> None:
    img = solid((1, 2, 3))
    with pytest.raises(TaskcamError, match="col_labels"):
        grid([[img, img]], col_labels=["only one"])
    with pytest.raises(TaskcamError, match="row_labels"):
        grid([[img], [img]], row_labels=["a", "b", "c"])
    with pytest.raises(TaskcamError, match="at least one image"):
        grid([[None], []])
    with pytest.raises(TaskcamError, match="cell_size"):
        grid([[img]], cell_size=(0, 4))


# --------------------------------------------------------------------------------- filter_grid


def test_filter_grid_rgb_tiles_minmax_per_filter() -> None:
    conv = nn.Conv2d(3, 4, 3, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0  # R high, G mid, B low after min-max
        conv.weight[0, 2] = -1.0
        conv.weight[1] = 5.0  # constant filter -> mid gray
        conv.weight[2, 1, 0, 0] = 2.0  # one green pixel
        conv.weight[3] = torch.randn(3, 3, 3)
    scale, pad = 4, 1
    g = filter_grid(conv, scale=scale, pad=pad)
    t = 3 * scale
    assert g.shape == (2 * t + 3 * pad, 2 * t + 3 * pad, 3)  # 4 filters -> 2 x 2
    tile = lambda k: g[pad + (k // 2) * (t + pad) :][:t, pad + (k % 2) * (t + pad) :][:, :t]  # noqa: E731
    assert (tile(0).reshape(-1, 3) == [255, 128, 0]).all()
    assert (tile(1).reshape(-1, 3) == [128, 128, 128]).all()
    assert tile(2)[:scale, :scale].reshape(-1, 3).tolist() == [[0, 255, 0]] * scale * scale
    assert (tile(2)[scale:, scale:] == 0).all()
    assert tile(3).min() == 0 and tile(3).max() == 255  # min-max per filter
    # the same weights given as a tensor draw the same picture; symmetric keeps 0 at mid gray
    np.testing.assert_array_equal(filter_grid(conv.weight, scale=scale, pad=pad), g)
    sym = filter_grid(conv.weight[2:3], scale=1, pad=0, symmetric=True)
    assert sym[0, 0].tolist() == [128, 255, 128] and sym[2, 2].tolist() == [128, 128, 128]


def test_filter_grid_gray_for_other_channel_counts() -> None:
    conv = nn.Conv2d(5, 3, 2)
    g = filter_grid(conv, scale=2, pad=2)
    assert g.shape == (2 * 4 + 3 * 2, 2 * 4 + 3 * 2, 3)  # 3 filters -> 2 x 2 grid
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()


def test_filter_grid_resnet_first_layer(resnet: nn.Module) -> None:
    g = filter_grid(resnet.conv1)  # 64 filters of 3 x 7 x 7
    assert g.shape == (8 * 56 + 9 * 2, 8 * 56 + 9 * 2, 3) and g.dtype == np.uint8
    assert len(np.unique(g.reshape(-1, 3), axis=0)) > 1000  # colourful, not gray
    ten = filter_grid(resnet.conv1, max_filters=10, scale=1, pad=1)
    assert ten.shape == (3 * 7 + 4, 4 * 7 + 5, 3)  # 10 tiles -> 3 rows x 4 columns


def test_filter_grid_bad_input_named() -> None:
    with pytest.raises(TaskcamError, match=re.escape("(8, 3, 3)")):
        filter_grid(torch.zeros(8, 3, 3))
    with pytest.raises(TaskcamError, match="Linear"):
        filter_grid(nn.Linear(3, 3))  # type: ignore[arg-type]
    with pytest.raises(TaskcamError, match="scale"):
        filter_grid(nn.Conv2d(3, 2, 3), scale=0)


# ---------------------------------------------------------------------------- feature_map_grid


def test_feature_map_grid_resnet_restores_mode_and_hooks(
    resnet: nn.Module, chelsea: np.ndarray
) -> None:
    resnet.train()
    resnet.layer2.eval()  # mixed modes must come back exactly
    x = to_tensor(chelsea, 64, MEAN, STD)
    bn_mean = resnet.bn1.running_mean.clone()
    g = feature_map_grid(resnet, "layer1", x, tile=16, max_maps=64)
    assert g.shape == (8 * 16 + 9 * 2, 8 * 16 + 9 * 2, 3) and g.dtype == np.uint8
    assert resnet.training and resnet.layer1.training and resnet.bn1.training
    assert not resnet.layer2.training and not resnet.layer2[0].bn1.training
    assert no_hooks_left(resnet)
    torch.testing.assert_close(resnet.bn1.running_mean, bn_mean)  # ran in eval: stats untouched

    by_module = feature_map_grid(resnet, resnet.layer1, x, tile=16, max_maps=64)
    np.testing.assert_array_equal(by_module, g)
    resnet.eval()
    feature_map_grid(resnet, "layer3.1.conv2", x, max_maps=5, tile=8)
    assert not any(m.training for m in resnet.modules())


def test_feature_map_grid_orders_by_mean_and_normalises() -> None:
    ramp = torch.linspace(0, 1, 8)
    x = torch.zeros(1, 3, 8, 8)
    x[0, 0] = ramp.view(1, 8) * 1.0  # horizontal ramp, mean 0.5
    x[0, 1] = ramp.view(8, 1) * 10.0  # vertical ramp, mean 5
    x[0, 2] = 3.0  # constant, mean 3
    model = nn.Sequential(nn.Identity(), nn.Flatten())
    g = feature_map_grid(model, "0", x, tile=8, pad=1, colormap="viridis")
    assert g.shape == (2 * 8 + 3, 2 * 8 + 3, 3)  # 3 maps -> 2 x 2
    tile = lambda r, c: g[1 + r * 9 : 1 + r * 9 + 8, 1 + c * 9 : 1 + c * 9 + 8]  # noqa: E731
    vertical = ramp.view(8, 1).expand(8, 8).numpy()
    horizontal = ramp.view(1, 8).expand(8, 8).numpy()
    np.testing.assert_array_equal(tile(0, 0), colorize(vertical, "viridis"))  # strongest first
    np.testing.assert_array_equal(tile(0, 1), colorize(np.zeros((8, 8)), "viridis"))
    np.testing.assert_array_equal(tile(1, 0), colorize(horizontal, "viridis"))
    assert (tile(1, 1) == 255).all()  # empty slot
    one = feature_map_grid(model, "0", x, max_maps=1, tile=8, pad=0)
    np.testing.assert_array_equal(one, tile(0, 0))


def test_feature_map_grid_errors_leave_model_clean(resnet: nn.Module) -> None:
    resnet.train()
    x = torch.rand(1, 3, 32, 32)
    with pytest.raises(TaskcamError, match="layer9"):
        feature_map_grid(resnet, "layer9", x)
    with pytest.raises(TaskcamError, match=r"'fc'.*\(1, 1000\)"):
        feature_map_grid(resnet, "fc", x)  # a 2-D output
    assert resnet.training and no_hooks_left(resnet)
    with pytest.raises(RuntimeError):
        feature_map_grid(resnet, "layer1", torch.rand(1, 1, 32, 32))  # model itself fails
    assert resnet.training and all(m.training for m in resnet.modules())
    assert no_hooks_left(resnet)
    with pytest.raises(TaskcamError, match="not a submodule"):
        feature_map_grid(resnet, nn.Conv2d(3, 3, 1), x)
    with pytest.raises(TaskcamError, match=re.escape("(2, 3, 32, 32)")):
        feature_map_grid(resnet, "layer1", torch.rand(2, 3, 32, 32))


# ---------------------------------------------------------------------------------- save_image


def test_save_image_roundtrip_keeps_rgb(tmp_path: Path, chelsea: np.ndarray) -> None:
    p = save_image(tmp_path / "deep" / "er" / "cat.png", chelsea)
    assert p.exists()
    np.testing.assert_array_equal(load_image(p), chelsea)
    red = solid((255, 0, 0), 16, 16)
    j = save_image(str(tmp_path / "red.jpg"), red)
    got = load_image(j)[8, 8]
    assert got[0] > 240 and got[2] < 15


def test_save_image_bad_extension_names_path(tmp_path: Path) -> None:
    with pytest.raises(TaskcamError, match="out.nope"):
        save_image(tmp_path / "out.nope", solid((0, 0, 0)))


def test_detections_picture_draws_each_map_inside_its_own_box_only():
    from taskcam.render import box_normalized, detections_picture

    image = np.full((60, 80, 3), 100, np.uint8)
    maps = np.zeros((2, 60, 80), np.float32)
    maps[0, 10:20, 10:20] = 0.2  # a faint map, inside its box
    maps[0, 40:50, 60:70] = 1.0  # the same map's peak, outside its box: not drawn
    maps[1, 35:55, 55:75] = 1.0
    boxes = [[5, 5, 25, 25], [50, 30, 78, 58]]
    out = detections_picture(image, maps, boxes, None, alpha=1.0)
    assert out[2, 40].tolist() == [100, 100, 100]  # outside every box: the image
    assert out[45, 65].tolist() == [128, 0, 0]  # detection 1's peak in its box: red
    faint = out[15, 15].tolist()
    normed = detections_picture(image, maps, boxes, None, alpha=1.0, box_norm=True)
    assert normed[15, 15].tolist() == [128, 0, 0] != faint  # rescaled inside its box
    assert box_normalized(maps[0], boxes[0]).max() == 1.0 and maps[0, 15, 15] == 0.2
    labelled = detections_picture(image, maps, boxes, ["0: a", "1: b"])
    assert (labelled != detections_picture(image, maps, boxes, None)).any()
    with pytest.raises(TaskcamError, match="one map \\(and label\\) per box"):
        detections_picture(image, maps, boxes[:1])


# ------------------------------------------------------------- outcomes: colours, dashed boxes


def _old_box(image: np.ndarray, box: list[float]) -> np.ndarray:
    """``draw_box``'s box as it was before supervision drew it (the reference an unlabelled
    box must still match pixel for pixel on a picture under 800 pixels a side)."""
    import cv2

    out = image.copy()
    h, w = out.shape[:2]
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
    y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 0), 4)
    cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 255), 2)
    return out


@pytest.fixture
def detections() -> tuple[np.ndarray, np.ndarray, list[list[float]]]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    maps = rng.random((2, 60, 90)).astype(np.float32)
    return image, maps, [[5.4, 6, 40, 50.6], [30, 10, 85, 40]]


def test_boxes_by_default_are_drawn_as_before(detections) -> None:
    import cv2

    from taskcam.boxes import boxes_to_masks
    from taskcam.render import detections_picture, draw_box
    from taskcam.render.text import WHITE

    image, maps, boxes = detections
    for box in boxes:
        assert np.array_equal(draw_box(image, box), _old_box(image, box))
    inside = boxes_to_masks(torch.tensor(boxes), 60, 90).any(0).numpy()
    combined = np.where(boxes_to_masks(torch.tensor(boxes), 60, 90).numpy(), maps, 0).max(0)
    before = np.where(inside[..., None], overlay(image, combined), image)
    # every box's dark edge first, then every box: no edge cuts across another box's line
    both = before.copy()
    for shade, width in (((0, 0, 0), 4), ((255, 255, 255), 2)):
        for box in boxes:
            x1, y1, x2, y2 = (int(round(float(v))) for v in box)
            cv2.rectangle(both, (x1, y1), (x2, y2), shade, width)
    assert np.array_equal(detections_picture(image, maps, boxes, None), both)
    labels = ["0: cat 0.90", "1: dog 0.40"]
    labelled = detections_picture(image, maps, boxes, labels)
    white = detections_picture(
        image, maps, boxes, labels, colors=[WHITE, WHITE], label_boxes=[None, None]
    )
    assert np.array_equal(white, labelled)
    changed = (labelled != both).any(-1)  # only the labels: white backgrounds, dark text
    assert changed.any() and (labelled[changed] == 255).all(-1).mean() > 0.5


def _fills(picture: np.ndarray, color: tuple[int, int, int], rows: slice) -> tuple[int, ...]:
    """The bounding rectangle (x1, y1, x2, y2) of the pixels of exactly ``color`` in
    ``rows``, and the share of it they fill."""
    ys, xs = np.nonzero((picture[rows] == color).all(-1))
    assert len(xs), f"no {color} pixels"
    y0 = rows.start or 0
    rect = (int(xs.min()), int(ys.min()) + y0, int(xs.max()), int(ys.max()) + y0)
    area = (rect[2] - rect[0] + 1) * (rect[3] - rect[1] + 1)
    return (*rect, len(xs) / area)


def test_labels_of_close_boxes_are_filled_in_their_colours_and_do_not_overlap() -> None:
    from taskcam.render import detections_picture, draw_boxes

    red, blue = (255, 0, 0), (0, 0, 255)
    image = np.zeros((200, 400, 3), np.uint8)
    boxes = [[130, 100, 190, 180], [195, 100, 255, 180]]  # 5 px apart
    labels = ["0: person 0.91", "1: person 0.88"]  # each much wider than its box
    maps = np.zeros((2, 200, 400), np.float32)
    for out in (
        draw_boxes(image, boxes, labels, colors=[red, blue]),
        detections_picture(image, maps, boxes, labels, colors=[red, blue]),
    ):
        above = slice(0, 100 - 3)  # above the boxes and their dark edges
        a, b = _fills(out, red, above), _fills(out, blue, above)
        for x1, y1, x2, y2, filled in (a, b):
            assert x2 - x1 > 100 and filled > 0.6  # a filled background, its text in it
            label = out[y1 : y2 + 1, x1 : x2 + 1]
            assert ((label == 255).all(-1)).any()  # white text on a dark colour
        assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]  # disjoint
        assert out[140, 130].tolist() == list(red) and out[140, 255].tolist() == list(blue)


def test_label_text_is_readable_and_sized_to_the_picture() -> None:
    from taskcam.render import draw_box
    from taskcam.render.text import label_font, text_color_on

    green = (0, 230, 0)
    assert text_color_on(green) == (0, 0, 0) and text_color_on((255, 80, 0)) == (255, 255, 255)
    heights = []
    for scale in (0.4, 1, 8):  # 60 x 80, 150 x 200, 1200 x 1600
        image = np.zeros((round(150 * scale), round(200 * scale), 3), np.uint8)
        box = [50 * scale, 80 * scale, 150 * scale, 140 * scale]
        out = draw_box(image, box, "0: cat 0.90", color=green)
        x1, y1, x2, y2, filled = _fills(out, green, slice(0, round(80 * scale) - 3))
        assert filled > 0.6 and ((out[y1 : y2 + 1, x1 : x2 + 1] == 0).all(-1)).any()  # black text
        heights.append(y2 - y1 + 1)
    assert heights[0] < heights[1] and heights[2] > 2 * heights[1]  # sized to the picture
    assert label_font(60, 80)[0] < label_font(150, 200)[0] < label_font(1200, 1600)[0]


def test_masks_keypoints_and_rotated_boxes_are_still_drawn() -> None:
    from taskcam.render import draw_keypoints, draw_polygon, outline

    image = solid((90, 90, 90), 80, 100)
    mask = np.zeros((80, 100), bool)
    mask[20:60, 30:70] = True
    drawn = outline(image, mask, (0, 255, 0))
    assert drawn[20, 50].tolist() == [0, 255, 0] and drawn[40, 30].tolist() == [0, 255, 0]
    assert drawn[18, 50].tolist() == [0, 0, 0]  # its dark edge
    assert (drawn[25:55, 35:65] == 90).all() and (drawn[:10] == 90).all()  # nothing else
    assert np.array_equal(outline(image, np.zeros_like(mask)), image)
    points = [[20, 20, 0.9], [80, 20, 0.9], [50, 60, 0.2]]
    kp = draw_keypoints(image, points, skeleton=[(0, 1), (1, 2)], highlight=0)
    assert kp[20, 50].tolist() == [255, 255, 255]  # the visible edge
    assert (kp[40, 65] == 90).all() and (kp[60, 50] == 90).all()  # the hidden point, its edge
    assert kp[20, 25].tolist() == [255, 255, 255] and kp[20, 85].tolist() != [255, 255, 255]
    poly = draw_polygon(
        image, [[20, 40], [50, 10], [80, 40], [50, 70]], "3: plane", color=(255, 0, 255)
    )
    assert poly[40, 20].tolist() == [255, 0, 255] and (poly[40, 50] == 90).all()
    assert (poly[:10] == (255, 0, 255)).all(-1).any()  # its label's background, above it


def test_outcome_colours_land_on_their_boxes_and_labels_are_dashed(detections) -> None:
    from taskcam.render import OUTCOME_COLORS, detections_picture

    image, maps, boxes = detections
    assert set(OUTCOME_COLORS) == {"hit", "missed", "false_positive", "label"}
    assert len(set(OUTCOME_COLORS.values())) == 4
    hit, fp, label = (OUTCOME_COLORS[k] for k in ("hit", "false_positive", "label"))
    out = detections_picture(image, maps, boxes, None, colors=[hit, fp])
    assert out[30, 5].tolist() == list(hit) and out[6, 20].tolist() == list(hit)  # box 0's edges
    assert out[25, 85].tolist() == list(fp) and out[40, 60].tolist() == list(fp)  # box 1's
    gt = [20.0, 20.0, 70.0, 55.0]
    dashed = detections_picture(image, maps, boxes, None, colors=[hit, fp], label_boxes=[gt, None])
    assert np.array_equal(dashed[:, :16], out[:, :16])  # nothing else changes
    assert dashed[20, 20].tolist() == list(label) and dashed[55, 70].tolist() == list(label)
    top = dashed[20, 20:71]
    assert (top == label).all(1).sum() >= 15 and (top != label).any(1).sum() >= 15
    with pytest.raises(TaskcamError, match="1 colors for 2 boxes"):
        detections_picture(image, maps, boxes, colors=[hit])
    with pytest.raises(TaskcamError, match="3 label_boxes for 2 boxes"):
        detections_picture(image, maps, boxes, label_boxes=[gt, gt, gt])


def test_a_dashed_box_has_gaps_the_picture_shows_through() -> None:
    from taskcam.render import draw_box

    image = solid((90, 90, 90), 60, 100)
    solid_box = draw_box(image, [10, 15, 90, 50], color=(255, 0, 255))
    dashed = draw_box(image, [10, 15, 90, 50], color=(255, 0, 255), dashed=True)
    for side in (solid_box[15, 10:91], solid_box[15:51, 90]):
        assert (side == (255, 0, 255)).all()
    runs = []
    for side in (dashed[15, 10:91], dashed[50, 10:91], dashed[15:51, 10], dashed[15:51, 90]):
        on = (side == (255, 0, 255)).all(1)
        assert on[0]  # each side starts with a dash at its corner
        assert (side[~on] == (90, 90, 90)).all(1).any()  # the picture between the dashes
        runs.append(int((np.diff(on.astype(int)) == 1).sum()) + int(on[0]))
    assert min(runs) >= 2 and max(runs) >= 4
    assert (dashed[18:48, 13:88] == 90).all()  # inside untouched
    labelled = draw_box(image, [10, 25, 90, 50], "gt: cat", dashed=True)
    assert (labelled[:24] != 90).any()  # its label above it
