"""A seeded synthetic benchmark with known object positions: shapes on cluttered backgrounds.

Every sample is drawn from its own generator seeded by ``(seed, index)``, so sample 17 of seed 0
is the same image on every machine and no matter which other samples were drawn. Each sample
carries what every task needs as ground truth: class labels, boxes, instance masks (visible
pixels only, after occlusion) and a semantic mask.

Four classes, told apart by shape; each has its own hue band, but distractor clutter (strokes,
dots, rings that are too small or thin to be objects) borrows every hue, so colour alone does not
find the object.

Example:
    >>> s = make_sample(0, seed=0, size=128)
    >>> s.image.shape, s.semantic.shape, len(s.labels) == len(s.boxes) == len(s.masks)
    ((128, 128, 3), (128, 128), True)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
import torch

from taskcam.errors import TaskcamError

__all__ = [
    "CLASSES",
    "HELDOUT_SEED",
    "ShapesDataset",
    "ShapesSample",
    "make_sample",
    "write_yolo_dataset",
]

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Class names; class id ``k`` is ``CLASSES[k]`` (the semantic mask stores ``k + 1``)."""

HELDOUT_SEED = 9_999
"""The seed of the held-out set used by tests and ``taskcam eval``; no zoo model trained on it."""

# Hue bands (OpenCV hue, 0..180) per class: red, green, blue, yellow.
_HUES = (0, 60, 115, 28)
_HUE_JITTER = 8


@dataclass(frozen=True)
class ShapesSample:
    """One synthetic image and its ground truth.

    Attributes:
        image: ``uint8[H, W, 3]`` RGB.
        labels: ``int64[K]`` class ids, one per object.
        boxes: ``float32[K, 4]`` xyxy pixel boxes of the visible part (x2, y2 exclusive).
        masks: ``bool[K, H, W]`` visible pixels of each object.
        semantic: ``uint8[H, W]`` 0 for background, ``label + 1`` on each object's pixels.
    """

    image: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray
    semantic: np.ndarray


def _rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index), 0x5A4E])


def _colour(rng: np.random.Generator, hue: Optional[float] = None) -> tuple[int, int, int]:
    h = rng.uniform(0, 180) if hue is None else (hue + rng.uniform(-_HUE_JITTER, _HUE_JITTER)) % 180
    hsv = np.array([[[h, rng.uniform(170, 255), rng.uniform(170, 255)]]], dtype=np.float32)
    rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0]
    return int(rgb[0]), int(rgb[1]), int(rgb[2])


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A textured, noisy, muted background: a smooth noise field, a grating and pixel noise."""
    coarse = rng.uniform(0, 1, (6, 6, 3)).astype(np.float32)
    field = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, math.pi)
    period = rng.uniform(6, 20)
    grating = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
    base = rng.uniform(60, 140)
    img = base + 50 * (field - 0.5) + rng.uniform(5, 15) * grating[..., None]
    img = img + rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clutter(rng: np.random.Generator, img: np.ndarray, scale: float) -> None:
    """Distractors in every hue: thin strokes, small dots and thin rings, none object-sized."""
    size = img.shape[0]
    for _ in range(int(rng.integers(3, 8))):
        colour = _colour(rng)
        kind = rng.integers(0, 3)
        if kind == 0:
            p1 = tuple(int(v) for v in rng.integers(0, size, 2))
            p2 = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, p1, p2, colour, 1, cv2.LINE_AA)
        elif kind == 1:
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            cv2.circle(img, centre, max(1, int(scale * rng.uniform(1, 2.5))), colour, -1)
        else:
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            radius = max(3, int(scale * rng.uniform(3, 7)))
            cv2.circle(img, centre, radius, colour, 1, cv2.LINE_AA)


def _shape_mask(label: int, size: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """The filled silhouette of one object of class ``label`` with circumradius about ``r``."""
    mask = np.zeros((size, size), np.uint8)
    if label == 0:  # circle
        cv2.circle(mask, (round(cx), round(cy)), max(2, round(r)), 1, -1)
        return mask.astype(bool)
    if label == 1:  # square
        k = np.arange(4)
        a = angle + k * math.pi / 2 + math.pi / 4
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
    elif label == 2:  # triangle
        k = np.arange(3)
        a = angle + k * 2 * math.pi / 3 - math.pi / 2
        pts = np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1)
    else:  # cross: a plus sign with arms a third of the span wide
        w, s = r / 3, r
        arm = np.array([[-w, -s], [w, -s], [w, -w], [s, -w], [s, w], [w, w], [w, s], [-w, s]])
        arm = np.concatenate([arm, [[-w, w], [-s, w], [-s, -w], [-w, -w]]])
        c, si = math.cos(angle), math.sin(angle)
        pts = arm @ np.array([[c, si], [-si, c]]) + [cx, cy]
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


def make_sample(
    index: int,
    *,
    seed: int = 0,
    size: int = 256,
    min_objects: int = 1,
    max_objects: int = 4,
    object_size: Optional[tuple[float, float]] = None,
) -> ShapesSample:
    """Draw sample ``index`` of the stream ``seed``.

    Args:
        index: which sample; the same ``(seed, index)`` always gives the same sample.
        seed: the stream; training, validation and the held-out set use different seeds.
        size: the square image's side in pixels (64-128 for classifiers, 256-320 for detectors).
        min_objects: fewest objects (>= 1).
        max_objects: most objects; objects may overlap partially (a box overlaps another by at
            most 30 % IoU) and each keeps at least half of its pixels visible.
        object_size: (min, max) circumradius as a fraction of ``size``; by default 0.14-0.28 for
            one object and 0.09-0.2 for several.

    Returns:
        A :class:`ShapesSample`.

    Example:
        >>> make_sample(3, seed=1, size=64, max_objects=1).labels.shape
        (1,)
    """
    if size < 32:
        raise TaskcamError(f"size must be at least 32 pixels, got {size}")
    if not 1 <= min_objects <= max_objects:
        raise TaskcamError(
            f"need 1 <= min_objects <= max_objects, got min_objects={min_objects}, "
            f"max_objects={max_objects}"
        )
    rng = _rng(seed, index)
    img = _background(rng, size)
    _clutter(rng, img, size / 64)
    n = int(rng.integers(min_objects, max_objects + 1))
    lo, hi = object_size or ((0.14, 0.28) if max_objects == 1 else (0.09, 0.2))

    labels: list[int] = []
    masks: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    for _ in range(n):
        for _attempt in range(50):
            label = int(rng.integers(0, len(CLASSES)))
            r = rng.uniform(lo, hi) * size
            margin = r + 1
            cx, cy = rng.uniform(margin, size - margin, 2)
            mask = _shape_mask(label, size, cx, cy, r, rng.uniform(0, 2 * math.pi))
            if mask.sum() < 12:
                continue
            box = _box(mask)
            if all(_iou(box, b) <= 0.3 for b in boxes) and all(
                (m & ~mask).sum() >= 0.5 * m.sum() for m in masks
            ):
                break
        else:
            continue  # no room left: fewer objects
        labels.append(label)
        masks = [m & ~mask for m in masks] + [mask]
        boxes = [_box(m) for m in masks]
        colour = np.array(_colour(rng, _HUES[label]), np.float32)
        shade = rng.normal(0, 6, (size, size, 1))
        img[mask] = np.clip(colour + shade[mask], 0, 255).astype(np.uint8)
    img = np.clip(img.astype(np.float32) + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)

    semantic = np.zeros((size, size), np.uint8)
    for label, m in zip(labels, masks):
        semantic[m] = label + 1
    return ShapesSample(
        image=img,
        labels=np.array(labels, np.int64),
        boxes=np.stack(boxes).astype(np.float32) if boxes else np.zeros((0, 4), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, size, size), bool),
        semantic=semantic,
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class ShapesDataset(torch.utils.data.Dataset):
    """``n`` samples of the stream ``seed`` as tensors, for training and evaluation loops.

    Items are ``(image, target)``: ``image`` is ``float32[3, H, W]`` in [0, 1]; ``target`` is
    the class id (``task="classify"``, one object per image), a torchvision detection dict
    ``{"boxes", "labels", "masks"}`` with labels starting at 1 (``"detect"``), or the
    ``int64[H, W]`` semantic mask (``"segment"``).

    Example:
        >>> ds = ShapesDataset(4, seed=0, size=64, task="classify")
        >>> ds[0][0].shape, isinstance(ds[0][1], int)
        (torch.Size([3, 64, 64]), True)
    """

    def __init__(self, n: int, *, seed: int = 0, size: int = 256, task: str = "detect"):
        if task not in ("classify", "detect", "segment"):
            raise TaskcamError(f"task must be classify, detect or segment, got {task!r}")
        self.n, self.seed, self.size, self.task = n, seed, size, task

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> ShapesSample:
        """The raw :class:`ShapesSample` behind item ``index``."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} samples")
        one = self.task == "classify"
        return make_sample(index, seed=self.seed, size=self.size, max_objects=1 if one else 4)

    def __getitem__(self, index: int):
        s = self.sample(index)
        image = torch.from_numpy(s.image).permute(2, 0, 1).float() / 255
        if self.task == "classify":
            return image, int(s.labels[0])
        if self.task == "segment":
            return image, torch.from_numpy(s.semantic.astype(np.int64))
        return image, {
            "boxes": torch.from_numpy(s.boxes),
            "labels": torch.from_numpy(s.labels) + 1,
            "masks": torch.from_numpy(s.masks),
        }

    def __iter__(self) -> Iterator:
        for i in range(self.n):
            yield self[i]


def write_yolo_dataset(
    root: Union[str, Path],
    *,
    n_train: int,
    n_val: int,
    seed: int = 0,
    val_seed: int = 1,
    size: int = 256,
) -> Path:
    """Write images and YOLO label files plus ``data.yaml`` for ultralytics' trainer.

    Returns:
        The path of ``data.yaml``.
    """
    root = Path(root)
    for split, n, s in (("train", n_train, seed), ("val", n_val, val_seed)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            sample = make_sample(i, seed=s, size=size)
            name = f"{split}{i:05d}"
            cv2.imwrite(str(root / "images" / split / f"{name}.png"), sample.image[..., ::-1])
            lines = []
            for label, (x1, y1, x2, y2) in zip(sample.labels, sample.boxes):
                cx, cy = (x1 + x2) / 2 / size, (y1 + y2) / 2 / size
                w, h = (x2 - x1) / size, (y2 - y1) / size
                lines.append(f"{label} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {i}: {c}" for i, c in enumerate(CLASSES))
    yaml = root / "data.yaml"
    yaml.write_text(
        f"path: {root.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n"
    )
    return yaml
