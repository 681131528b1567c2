"""Image loading and preprocessing: files to uint8 RGB arrays, arrays to normalised tensors.

Everything here works on ``np.uint8`` RGB arrays of shape ``[H, W, 3]``; :func:`to_tensor` turns a
list of them into the ``Tensor[B, 3, h, w]`` a model eats.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from taskcam.errors import ImageError, TaskcamError

__all__ = [
    "IMAGE_EXTENSIONS",
    "list_images",
    "load_image",
    "read_image",
    "to_rgb_uint8",
    "to_tensor",
]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

PathLike = Union[str, "os.PathLike[str]"]
ImageLike = Union[np.ndarray, Image.Image, torch.Tensor]

_EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------------
# loading


def load_image(path: PathLike) -> np.ndarray:
    """Read an image file into a uint8 RGB array.

    OpenCV reads the file (``cv2.IMREAD_UNCHANGED``), Pillow is the fallback for what OpenCV
    cannot decode (GIF, some TIFF flavours). The EXIF orientation tag is applied, so phone photos
    come out the way viewers show them. Grayscale becomes 3 equal channels, an alpha channel is
    composited over white, 16-bit samples are scaled to 8 bits (``round(v / 257)``, full range
    kept), palette images are expanded, and multi-frame files give their first frame.

    Args:
        path: an image file (PNG, JPEG, BMP, TIFF, WebP, GIF, ...).

    Returns:
        ``np.ndarray[H, W, 3]`` of ``uint8``, RGB order.

    Raises:
        TaskcamError: the file is missing or cannot be decoded; the message names the path.

    Example:
        >>> import tempfile, numpy as np, cv2
        >>> p = tempfile.mkdtemp() + "/red.png"
        >>> _ = cv2.imwrite(p, np.full((2, 3, 3), (0, 0, 255), np.uint8))  # BGR red
        >>> img = load_image(p)
        >>> img.shape, img.dtype, img[0, 0].tolist()
        ((2, 3, 3), dtype('uint8'), [255, 0, 0])
    """
    path = Path(path)
    if not path.exists():
        raise TaskcamError(f"image file not found: '{path}'")
    if not path.is_file():
        raise TaskcamError(f"not an image file (a directory?): '{path}'")

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is not None and arr.size > 0:
        arr = _apply_exif_orientation(arr, _read_exif_orientation(path))
        return _normalise_array(arr, bgr=True)

    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            arr = _pil_to_array(im)
    except (UnidentifiedImageError, ImportError) as e:
        # ImportError: a plugin another library registered (ultralytics' HEIF opener) tried
        # its missing module on a file nothing recognised; the file is what is wrong
        raise TaskcamError(
            f"cannot read image file '{path}': not a format OpenCV or Pillow can decode"
        ) from e
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError, ...)
        raise TaskcamError(f"cannot read image file '{path}': {type(e).__name__}: {e}") from e
    return _normalise_array(_apply_exif_orientation(arr, orientation), bgr=False)


def read_image(path: PathLike) -> np.ndarray:
    """:func:`load_image` for a run over many files: its errors are marked as this image's
    (:class:`taskcam.errors.ImageError`), so a folder run records the failure and goes on.

    Example:
        >>> read_image("missing.png")
        Traceback (most recent call last):
        ...
        taskcam.errors.ImageError: image file not found: 'missing.png'
    """
    try:
        return load_image(path)
    except ImageError:
        raise
    except TaskcamError as e:
        raise ImageError(str(e)) from e


def list_images(inputs: Sequence[PathLike]) -> list[Path]:
    """Expand files and folders into the list of image files to explain.

    A file is kept as given, whatever its extension. A folder is searched recursively and gives
    its files whose extension is one of :data:`IMAGE_EXTENSIONS` (case-insensitive), sorted by path;
    hidden files and folders (name starting with ``.``) inside it are skipped. A path met twice is
    listed once, at its first place.

    Args:
        inputs: image files and/or folders.

    Returns:
        The image paths, in input order (each folder's files sorted). May be empty when the
        folders hold no images.

    Raises:
        TaskcamError: an input does not exist; the message names it.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for name in ["b.JPG", "a.png", "notes.txt"]:
        ...     _ = (d / name).write_bytes(b"")
        >>> [p.name for p in list_images([d])]
        ['a.png', 'b.JPG']
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            out.append(p)

    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise TaskcamError(f"input not found: '{p}'")
        if p.is_dir():
            found = [
                f
                for f in p.rglob("*")
                if f.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in f.relative_to(p).parts)
                and f.is_file()
            ]
            for f in sorted(found):
                add(f)
        else:
            add(p)
    return out


# --------------------------------------------------------------------------------------------
# conversion


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Convert an image in any common in-memory form to a uint8 RGB array.

    Accepted:

    * ``np.ndarray[H, W, 3]`` uint8 RGB (returned as is, no copy);
    * ``np.ndarray[H, W]`` gray, ``[H, W, 1]``, or ``[H, W, 4]`` RGBA (alpha composited over
      white);
    * float arrays, taken as values in [0, 1] (clipped; NaN becomes 0); uint16 arrays (``/257``);
      other integer arrays, taken as values in [0, 255] (clipped);
    * a PIL image of any mode (``P``, ``LA``, ``RGBA``, ``I;16``, ``CMYK``, ...);
    * a torch tensor ``[3, H, W]``, ``[1, 3, H, W]``, ``[H, W, 3]`` or ``[H, W]``, float in [0, 1]
      or uint8 (channel-first is preferred when both readings fit, as in ``[3, H, 3]``).

    Args:
        image: the image.

    Returns:
        ``np.ndarray[H, W, 3]`` of ``uint8``, RGB order.

    Raises:
        TaskcamError: the shape or type is not an image; the message names it.

    Example:
        >>> import torch
        >>> to_rgb_uint8(torch.ones(3, 2, 4)).shape
        (2, 4, 3)
        >>> to_rgb_uint8(np.array([[0.0, 1.0]]))[0].tolist()
        [[0, 0, 0], [255, 255, 255]]
    """
    if isinstance(image, Image.Image):
        return _normalise_array(_pil_to_array(image), bgr=False)
    if isinstance(image, torch.Tensor):
        t = image.detach()
        if t.dim() == 4 and t.shape[0] == 1:
            t = t[0]
        if t.dim() == 3 and t.shape[0] in (1, 3):  # [C, H, W]
            t = t.permute(1, 2, 0)
        elif not (t.dim() == 2 or (t.dim() == 3 and t.shape[-1] in (1, 3))):
            raise TaskcamError(
                "image tensor must be [3, H, W], [1, 3, H, W], [H, W, 3] or [H, W], "
                f"got shape {tuple(image.shape)}"
            )
        if t.dtype == torch.bool:
            t = t.to(torch.uint8) * 255
        elif t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()  # numpy has no bfloat16
        image = t.cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise TaskcamError(
            "image must be a numpy array, a PIL image or a torch tensor, "
            f"got {type(image).__name__}"
        )
    arr = image
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # [C, H, W] numpy
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (1, 3, 4))) or arr.size == 0:
        raise TaskcamError(
            f"image array must be [H, W, 3], [H, W, 4] or [H, W], got shape {tuple(image.shape)}"
        )
    return _normalise_array(arr, bgr=False)


def to_tensor(
    images: ImageLike | Sequence[ImageLike],
    size: int | tuple[int, int],
    mean: Sequence[float],
    std: Sequence[float],
) -> torch.Tensor:
    """Resize, scale and normalise images into a model's input batch.

    Each image is resized as a whole (no crop, aspect ratio not kept) to ``size`` with bilinear
    interpolation (``cv2.INTER_LINEAR``), scaled to [0, 1], then normalised: ``(x - mean) / std``
    per channel.

    Args:
        images: one image or a list of them, in any form :func:`to_rgb_uint8` accepts (typically
            ``np.ndarray[H, W, 3]`` uint8 RGB, or PIL images); sizes may differ.
        size: output size, ``int`` for a square or ``(h, w)``.
        mean: 3 per-channel means, RGB order, on the [0, 1] scale (e.g. ImageNet's
            ``(0.485, 0.456, 0.406)``).
        std: 3 per-channel standard deviations, RGB order, non-zero.

    Returns:
        ``Tensor[B, 3, h, w]`` float32 on the CPU.

    Raises:
        TaskcamError: ``size``, ``mean`` or ``std`` is malformed, ``images`` is empty, or an image
            has a bad shape.

    Example:
        >>> x = to_tensor(np.zeros((480, 640, 3), np.uint8), 224, (0.5,) * 3, (0.5,) * 3)
        >>> x.shape, x.dtype, x.min().item()
        (torch.Size([1, 3, 224, 224]), torch.float32, -1.0)
    """
    h, w = _check_size(size, "size")
    mean_arr = _check_triple(mean, "mean")
    std_arr = _check_triple(std, "std")
    if np.any(std_arr == 0):
        raise TaskcamError(f"std must be non-zero, got {list(std)}")

    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        batch: list[Any] = list(images)  # a stacked batch [B, ...]
    elif isinstance(images, (np.ndarray, torch.Tensor, Image.Image)):
        batch = [images]
    else:
        batch = list(images)
    if not batch:
        raise TaskcamError("images is empty: expected at least one image")

    out = np.empty((len(batch), h, w, 3), np.float32)
    for i, img in enumerate(batch):
        rgb = to_rgb_uint8(img)
        if rgb.shape[:2] != (h, w):
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_LINEAR)  # dsize is (w, h)
        out[i] = rgb
    out *= np.float32(1.0 / 255.0)
    out -= mean_arr.astype(np.float32)
    out /= std_arr.astype(np.float32)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # [B, 3, h, w]


# --------------------------------------------------------------------------------------------
# helpers


def _check_size(size: Any, name: str) -> tuple[int, int]:
    """``int`` or ``(h, w)`` of positive ints -> ``(h, w)``."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif (
        isinstance(size, Sequence)
        and not isinstance(size, str)
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        hw = (int(size[0]), int(size[1]))
    else:
        raise TaskcamError(f"{name} must be an int or a (h, w) pair of ints, got {size!r}")
    if min(hw) < 1:
        raise TaskcamError(f"{name} must be positive, got {size!r}")
    return hw


def _check_triple(values: Any, name: str) -> np.ndarray:
    """3 finite numbers -> float64 array, else an error naming ``name`` and the value."""
    try:
        arr = np.asarray(
            values.detach().cpu() if isinstance(values, torch.Tensor) else values, np.float64
        )
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (3,) or not np.all(np.isfinite(arr)):
        raise TaskcamError(f"{name} must be 3 finite numbers (one per RGB channel), got {values!r}")
    return arr


def _read_exif_orientation(path: Path) -> int:
    """The EXIF orientation tag (1..8) of a file; 1 when absent or unreadable."""
    try:
        with Image.open(path) as im:
            return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # no EXIF is the common case, never an error
        return 1


def _apply_exif_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Undo an EXIF orientation on ``[H, W(, C)]``, as PIL's ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.swapaxes(0, 1)
    elif orientation == 6:
        arr = np.rot90(arr, k=-1)
    elif orientation == 7:
        arr = arr.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        arr = np.rot90(arr, k=1)
    return np.ascontiguousarray(arr)


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> ``[H, W]``, ``[H, W, 2|3|4]`` array in RGB(A) order."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("PA", "RGBa", "RGBX"):
        im = im.convert("RGBA" if mode != "RGBX" else "RGB")
    elif mode == "La":
        im = im.convert("LA")
    elif mode == "1":
        im = im.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    arr = np.asarray(im)
    if mode == "I":  # 32-bit int samples: in practice 16-bit data
        arr = np.clip(arr, 0, 65535).astype(np.uint16)
    elif arr.dtype.kind == "u" and arr.dtype.itemsize == 2:
        arr = arr.astype(np.uint16)  # native byte order for I;16B
    return arr


def _normalise_array(arr: np.ndarray, *, bgr: bool) -> np.ndarray:
    """Any bit depth and channel layout -> contiguous ``uint8[H, W, 3]`` RGB.

    Layouts: ``[H, W]``, ``[H, W, 1]`` gray, ``[H, W, 2]`` gray+alpha, ``[H, W, 3]`` colour,
    ``[H, W, 4]`` colour+alpha (alpha composited over white). ``bgr``: colour is in OpenCV order.
    """
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))):
        raise TaskcamError(f"unsupported image shape {tuple(arr.shape)}")

    # depth: uint8 stays exact; everything else goes through float32 in [0, 1]
    x: np.ndarray
    if arr.dtype == np.uint8:
        x = arr
    elif arr.dtype == np.bool_:
        x = arr.astype(np.uint8) * 255
    elif arr.dtype == np.uint16:
        x = arr.astype(np.float32) * np.float32(1.0 / 65535.0)
    elif arr.dtype.kind in "iu":
        x = np.clip(arr, 0, 255).astype(np.uint8)
    elif arr.dtype.kind == "f":
        x = np.clip(np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
    else:
        raise TaskcamError(f"unsupported image dtype {arr.dtype} (shape {tuple(arr.shape)})")

    channels = 1 if x.ndim == 2 else x.shape[2]
    if channels in (2, 4):  # composite over white
        if x.dtype == np.uint8:
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
        color, alpha = x[:, :, :-1], x[:, :, -1:]
        x = color * alpha + (np.float32(1.0) - alpha)
        channels -= 1
        if channels == 1:
            x = x[:, :, 0]
    if x.dtype != np.uint8:
        x = np.rint(x * np.float32(255.0)).astype(np.uint8)

    if channels == 1:
        x = np.repeat(x[:, :, None], 3, axis=2)
    elif bgr:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)
