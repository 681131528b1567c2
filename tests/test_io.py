"""Tests for taskcam.io: real files written to tmp_path, read back through load_image."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from skimage import data

from taskcam.errors import TaskcamError
from taskcam.io import list_images, load_image, to_rgb_uint8, to_tensor

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return data.chelsea()  # [300, 451, 3] uint8 RGB


def quadrants(h: int = 40, w: int = 60) -> np.ndarray:
    """RGB image with four solid quadrants of distinct colours (orientation-sensitive)."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2 :] = (0, 255, 0)
    img[h // 2 :, : w // 2] = (0, 0, 255)
    img[h // 2 :, w // 2 :] = (255, 255, 0)
    return img


# ---------------------------------------------------------------------------------- load_image


def test_png_roundtrip_is_exact_and_rgb(tmp_path: Path, chelsea: np.ndarray) -> None:
    p = tmp_path / "chelsea.png"
    Image.fromarray(chelsea).save(p)  # PIL writes RGB order
    img = load_image(p)
    assert img.dtype == np.uint8 and img.shape == chelsea.shape
    np.testing.assert_array_equal(img, chelsea)
    assert img.flags.c_contiguous


def test_load_image_accepts_str_path(tmp_path: Path) -> None:
    p = tmp_path / "q.png"
    Image.fromarray(quadrants()).save(p)
    np.testing.assert_array_equal(load_image(str(p)), quadrants())


def test_jpeg_is_close_and_not_channel_swapped(tmp_path: Path, chelsea: np.ndarray) -> None:
    p = tmp_path / "chelsea.jpg"
    Image.fromarray(chelsea).save(p, quality=95)
    img = load_image(p)
    assert img.shape == chelsea.shape
    assert np.abs(img.astype(int) - chelsea.astype(int)).mean() < 4
    q = tmp_path / "q.jpg"
    Image.fromarray(quadrants()).save(q, quality=100)
    top_left = load_image(q)[5, 5]
    assert top_left[0] > 230 and top_left[1] < 30 and top_left[2] < 30  # red, not blue


@pytest.mark.parametrize("ext", [".bmp", ".tif", ".webp"])
def test_other_formats(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"q{ext}"
    Image.fromarray(quadrants()).save(p, **({"lossless": True} if ext == ".webp" else {}))
    np.testing.assert_array_equal(load_image(p), quadrants())


def test_gif_palette_via_any_decoder(tmp_path: Path) -> None:
    p = tmp_path / "q.gif"
    Image.fromarray(quadrants()).save(p)
    np.testing.assert_array_equal(load_image(p), quadrants())


@pytest.mark.parametrize("ext", [".tga", ".pcx"])
def test_pillow_fallback_for_formats_opencv_cannot_read(tmp_path: Path, ext: str) -> None:
    p = tmp_path / f"q{ext}"
    Image.fromarray(quadrants()).save(p)
    assert cv2.imread(str(p), cv2.IMREAD_UNCHANGED) is None  # so the fallback is exercised
    np.testing.assert_array_equal(load_image(p), quadrants())

    rgba = np.dstack([quadrants(), np.zeros((40, 60), np.uint8)])  # all transparent
    t = tmp_path / "t.tga"
    Image.fromarray(rgba, "RGBA").save(t)
    assert (load_image(t) == 255).all()


def test_16bit_gray_png_scaled_by_257(tmp_path: Path) -> None:
    p = tmp_path / "deep.png"
    vals = np.array([[0, 257, 257 * 100, 65535, 1000, 65535 - 128]], np.uint16)
    assert cv2.imwrite(str(p), vals)
    img = load_image(p)
    assert img.shape == (1, 6, 3) and img.dtype == np.uint8
    assert img[0, :, 0].tolist() == [0, 1, 100, 255, 4, 255]  # 1000/257=3.89, 65407/257=254.5
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_16bit_color_png_keeps_rgb_order(tmp_path: Path) -> None:
    p = tmp_path / "deep_color.png"
    rgb16 = np.zeros((2, 2, 3), np.uint16)
    rgb16[..., 0] = 65535  # R
    rgb16[..., 1] = 257 * 10  # G
    rgb16[..., 2] = 0  # B
    assert cv2.imwrite(str(p), rgb16[..., ::-1].copy())  # cv2 wants BGR
    assert load_image(p)[0, 0].tolist() == [255, 10, 0]


def test_16bit_tiff(tmp_path: Path) -> None:
    p = tmp_path / "deep.tif"
    gray = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 257 * 20).astype(np.uint16)
    assert cv2.imwrite(str(p), gray)
    np.testing.assert_array_equal(load_image(p)[..., 1], np.arange(12).reshape(3, 4) * 20)


def test_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent blue -> white
    rgba[0, 2] = (255, 0, 0, 128)  # half red over white
    rgba[1, :] = (0, 0, 0, 255)  # opaque black
    p = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p)
    img = load_image(p)
    assert img.shape == (2, 3, 3)
    assert img[0, 0].tolist() == [255, 0, 0]
    assert img[0, 1].tolist() == [255, 255, 255]
    assert img[0, 2].tolist() == [255, 127, 127]  # 255 * (1 - 128/255) = 127
    assert img[1].tolist() == [[0, 0, 0]] * 3


def test_la_and_gray_png(tmp_path: Path) -> None:
    la = np.array([[[10, 255], [200, 0]]], np.uint8)  # [1, 2, 2]
    p = tmp_path / "la.png"
    Image.fromarray(la, "LA").save(p)
    assert load_image(p).tolist() == [[[10, 10, 10], [255, 255, 255]]]

    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    q = tmp_path / "gray.png"
    assert cv2.imwrite(str(q), gray)
    img = load_image(q)
    assert img.shape == (5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(img[..., c], gray)


def test_palette_png_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.fromarray(quadrants()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    p = tmp_path / "pal.png"
    pal.save(p)
    np.testing.assert_array_equal(load_image(p), quadrants())

    idx = np.array(pal)
    transparent_index = int(idx[0, 0])  # the red quadrant's palette entry
    t = tmp_path / "pal_t.png"
    pal.save(t, transparency=transparent_index)
    img = load_image(t)
    assert img[0, 0].tolist() == [255, 255, 255]  # transparent red -> white
    assert img[-1, 0].tolist() == [0, 0, 255]  # blue untouched


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pil(tmp_path: Path, orientation: int) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(quadrants(32, 48)).save(p, quality=100, exif=exif)
    with Image.open(p) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    img = load_image(p)
    assert img.shape == expected.shape
    assert np.abs(img.astype(int) - expected.astype(int)).max() < 40  # same layout, JPEG noise


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    p = tmp_path / "nope" / "missing.png"
    with pytest.raises(TaskcamError, match="missing.png") as e:
        load_image(p)
    assert isinstance(e.value, ValueError)
    assert str(p) in str(e.value)


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    p = tmp_path / "broken.png"
    p.write_bytes(b"this is not an image at all")
    with pytest.raises(TaskcamError, match="broken.png"):
        load_image(p)
    with pytest.raises(TaskcamError, match=str(tmp_path.name)):
        load_image(tmp_path)  # a directory


def test_unreadable_file_message_does_not_depend_on_pillow_plugins(tmp_path: Path) -> None:
    """ultralytics registers a HEIF opener whose module is missing here, and Pillow then
    raised ModuleNotFoundError for any unrecognised file; the error is about the file either
    way, and the same (results.json lists it)."""
    import subprocess
    import sys

    p = tmp_path / "broken.png"
    p.write_bytes(b"this is not an image at all")
    code = (
        "import sys\n"
        "if sys.argv[2] == 'ultralytics':\n"
        "    import ultralytics  # noqa: F401\n"
        "from taskcam.io import load_image\n"
        "try:\n"
        "    load_image(sys.argv[1])\n"
        "except Exception as e:\n"
        "    print(type(e).__name__, e)\n"
    )
    env = {**__import__("os").environ, "YOLO_OFFLINE": "1"}
    out = [
        subprocess.run(
            [sys.executable, "-c", code, str(p), mode], capture_output=True, text=True, env=env
        )
        .stdout.strip()
        .splitlines()[-1]  # ultralytics prints its requirement check first
        for mode in ("plain", "ultralytics")
    ]
    assert out[0] == out[1]
    assert out[0].startswith("TaskcamError cannot read image file") and "broken.png" in out[0]


# --------------------------------------------------------------------------------- list_images


def test_list_images_expands_folders_recursively_sorted(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for rel in [
        "b.png",
        "a.JPG",
        "c.jpeg",
        "notes.txt",
        "sub/z.bmp",
        "sub/deeper/y.tiff",
        "sub/x.webp",
        ".hidden/h.png",
        ".dot.png",
        "d.tif",
    ]:
        (root / rel).write_bytes(b"")
    got = [p.relative_to(root).as_posix() for p in list_images([root])]
    assert got == [
        "a.JPG",
        "b.png",
        "c.jpeg",
        "d.tif",
        "sub/deeper/y.tiff",
        "sub/x.webp",
        "sub/z.bmp",
    ]


def test_list_images_keeps_files_as_given_and_order(tmp_path: Path) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    odd = tmp_path / "scan.raw"
    odd.write_bytes(b"")
    got = list_images([str(odd), folder, folder / "a.png"])
    assert got == [odd, folder / "a.png"]  # the repeated a.png is listed once
    assert all(isinstance(p, Path) for p in got)
    assert list_images([]) == []


def test_list_images_missing_input_named(tmp_path: Path) -> None:
    with pytest.raises(TaskcamError, match="ghost_dir"):
        list_images([tmp_path, tmp_path / "ghost_dir"])


# ----------------------------------------------------------------------------------- to_tensor


def test_to_tensor_normalises_per_channel_in_rgb_order() -> None:
    img = np.empty((10, 20, 3), np.uint8)
    img[:] = (255, 0, 51)
    x = to_tensor(img, (10, 20), MEAN, STD)
    assert x.shape == (1, 3, 10, 20) and x.dtype == torch.float32
    expected = [(1 - MEAN[0]) / STD[0], (0 - MEAN[1]) / STD[1], (0.2 - MEAN[2]) / STD[2]]
    torch.testing.assert_close(x[0, :, 3, 7], torch.tensor(expected), atol=1e-5, rtol=0)


def test_to_tensor_resizes_whole_image_bilinear(chelsea: np.ndarray) -> None:
    x = to_tensor(chelsea, 224, (0.0,) * 3, (1.0,) * 3)
    assert x.shape == (1, 3, 224, 224)
    ref = cv2.resize(chelsea, (224, 224), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), ref, atol=1e-6)

    y = to_tensor(chelsea, (120, 200), (0.0,) * 3, (1.0,) * 3)  # (h, w)
    assert y.shape == (1, 3, 120, 200)


def test_to_tensor_batch_of_mixed_inputs(chelsea: np.ndarray) -> None:
    small = chelsea[:50, :80]
    x = to_tensor([chelsea, Image.fromarray(small), small], 32, MEAN, STD)
    assert x.shape == (3, 3, 32, 32)
    torch.testing.assert_close(x[1], x[2])  # PIL and numpy give the same tensor
    assert not torch.allclose(x[0], x[1])


def test_to_tensor_errors_name_argument_and_value() -> None:
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(TaskcamError, match=r"mean.*\[0\.5, 0\.5\]"):
        to_tensor(img, 8, [0.5, 0.5], STD)
    with pytest.raises(TaskcamError, match="std"):
        to_tensor(img, 8, MEAN, (0.2, 0.2, 0.2, 0.2))
    with pytest.raises(TaskcamError, match="std must be non-zero"):
        to_tensor(img, 8, MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(TaskcamError, match="size"):
        to_tensor(img, (8, 8, 8), MEAN, STD)
    with pytest.raises(TaskcamError, match="size"):
        to_tensor(img, 0, MEAN, STD)
    with pytest.raises(TaskcamError, match="empty"):
        to_tensor([], 8, MEAN, STD)


# -------------------------------------------------------------------------------- to_rgb_uint8


def test_to_rgb_uint8_numpy_forms() -> None:
    rgb = quadrants(4, 6)
    assert to_rgb_uint8(rgb) is rgb  # already right: no copy
    gray = np.arange(24, dtype=np.uint8).reshape(4, 6)
    out = to_rgb_uint8(gray)
    assert out.shape == (4, 6, 3) and (out[..., 2] == gray).all()
    f = np.array([[[0.0, 0.5, 1.0], [np.nan, 2.0, -1.0]]])
    assert to_rgb_uint8(f).tolist() == [[[0, 128, 255], [0, 255, 0]]]


def test_to_rgb_uint8_pil_modes() -> None:
    rgb = quadrants(4, 6)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(rgb)), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(rgb).convert("P")), rgb)
    assert to_rgb_uint8(Image.new("L", (3, 2), 77)).tolist() == [[[77] * 3] * 3] * 2
    assert to_rgb_uint8(Image.new("RGBA", (1, 1), (0, 0, 0, 0))).tolist() == [[[255] * 3]]
    cmyk = to_rgb_uint8(Image.new("CMYK", (1, 1), (0, 255, 255, 0)))  # red in CMYK
    assert cmyk.tolist() == [[[255, 0, 0]]]


def test_to_rgb_uint8_tensors() -> None:
    rgb = quadrants(4, 6)
    chw = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    np.testing.assert_array_equal(to_rgb_uint8(chw), rgb)
    np.testing.assert_array_equal(to_rgb_uint8(chw[None]), rgb)  # [1, 3, H, W]
    np.testing.assert_array_equal(to_rgb_uint8(torch.from_numpy(rgb)), rgb)  # [H, W, 3] uint8
    np.testing.assert_array_equal(to_rgb_uint8(chw.permute(1, 2, 0)), rgb)  # [H, W, 3] float
    assert to_rgb_uint8(torch.ones(2, 2)).shape == (2, 2, 3)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((4, 5, 6), np.uint8), np.zeros((2, 3, 4, 4, 3)), torch.zeros(2, 3, 4, 4)],
    ids=["6ch", "5d", "batch2"],
)
def test_to_rgb_uint8_bad_shape_named(bad: np.ndarray | torch.Tensor) -> None:
    with pytest.raises(TaskcamError, match=re.escape(str(tuple(bad.shape)))):
        to_rgb_uint8(bad)


def test_to_rgb_uint8_bad_type() -> None:
    with pytest.raises(TaskcamError, match="list"):
        to_rgb_uint8([[1, 2, 3]])  # type: ignore[arg-type]
