"""Segment Anything's prompts as taskcam reads them (``--prompt point=X,Y`` or
``box=X1,Y1,X2,Y2``, image pixels), and where SAM's processor puts an image on its input
(:class:`SamPlacement`), so masks, boxes and maps come back to the photo.
See :mod:`taskcam.adapters.huggingface.sam`."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from taskcam.adapters.detection.placement import resize_maps
from taskcam.errors import ImageError, TaskcamError

__all__ = ["FORMS", "Prompt", "SamPlacement", "mask_boxes", "parse_prompt", "read_prompts"]

FORMS = "point=X,Y or box=X1,Y1,X2,Y2 (image pixels)"
"""The prompts SAM takes, as messages name them."""

_PROMPT = re.compile(r"(point|box)=(.*)")


@dataclass(frozen=True)
class Prompt:
    """One prompt: a point ``(x, y)`` or a box ``(x1, y1, x2, y2)`` in image pixels.

    Attributes:
        kind: ``"point"`` or ``"box"``.
        coords: its numbers, in the spec's order.
        spec: the text it was read from (the record's ``prompt``).
    """

    kind: str
    coords: tuple[float, ...]
    spec: str

    def fields(self) -> dict[str, Any]:
        """The record fields it adds: ``prompt`` and ``prompt_box`` or ``prompt_points``."""
        if self.kind == "box":
            return {"prompt": self.spec, "prompt_box": list(self.coords)}
        return {"prompt": self.spec, "prompt_points": [list(self.coords)]}

    def check_inside(self, height: int, width: int) -> None:
        """Refuse a prompt that leaves an image of ``height × width`` (an :class:`ImageError`:
        a run goes on with its other images)."""
        xs, ys = self.coords[0::2], self.coords[1::2]
        if max(xs) > width or max(ys) > height:
            raise ImageError(
                f"--prompt {self.spec}: outside the {width}×{height} image (x in 0..{width}, "
                f"y in 0..{height})"
            )


def parse_prompt(spec: str) -> Prompt:
    """A ``--prompt`` read: ``point=X,Y`` or ``box=X1,Y1,X2,Y2`` in image pixels.

    Raises:
        TaskcamError: another form, numbers that are not finite and >= 0, or a box whose
            corners are not ``x1 < x2`` and ``y1 < y2``; the message names the spec and the
            accepted forms.

    Example:
        >>> parse_prompt("box=10,20,110,90")
        Prompt(kind='box', coords=(10.0, 20.0, 110.0, 90.0), spec='box=10,20,110,90')
        >>> parse_prompt("point=5")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: --prompt 'point=5': expected ...: a point has 2 numbers, got 1
    """
    text = spec.strip().replace(" ", "") if isinstance(spec, str) else ""
    match = _PROMPT.fullmatch(text)

    def bad(why: str) -> TaskcamError:
        return TaskcamError(f"--prompt {spec!r}: expected {FORMS}{why}")

    if match is None:
        raise bad("")
    kind, body = match.groups()
    try:
        coords = tuple(float(v) for v in body.split(","))
    except ValueError:
        raise bad(f": {body!r} is not a list of numbers") from None
    want = 2 if kind == "point" else 4
    if len(coords) != want:
        raise bad(f": a {kind} has {want} numbers, got {len(coords)}")
    if not all(math.isfinite(v) and v >= 0 for v in coords):
        raise bad(": the numbers must be finite and >= 0")
    if kind == "box" and not (coords[0] < coords[2] and coords[1] < coords[3]):
        raise bad(": a box's corners are x1 < x2 and y1 < y2")
    return Prompt(kind, coords, text)


def read_prompts(prompts: Sequence[str | Prompt], who: str) -> list[Prompt]:
    """``prompts`` read (specs or :class:`Prompt` s), or an error naming ``who`` and how to
    pass one when there is none.

    Example:
        >>> [p.kind for p in read_prompts(["point=1,2", "box=0,0,5,5"], "hf:sam")]
        ['point', 'box']
    """
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts]
    out = [p if isinstance(p, Prompt) else parse_prompt(p) for p in prompts or ()]
    if not out:
        raise TaskcamError(
            f"{who} is a Segment Anything model, which segments what a prompt points at: pass "
            f"--prompt {FORMS} (repeat it for more objects)"
        )
    return out


def mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``Tensor[N, 4]``: each mask's bounding box, ``x1, y1, x2, y2`` in continuous pixel
    coordinates (pixel ``(x, y)`` covers ``[x, x+1) × [y, y+1)``), zeros for an empty mask.

    Args:
        masks: ``BoolTensor[N, H, W]``.

    Example:
        >>> m = torch.zeros(2, 4, 5, dtype=torch.bool); m[0, 1:3, 2:4] = True
        >>> mask_boxes(m).tolist()
        [[2.0, 1.0, 4.0, 3.0], [0.0, 0.0, 0.0, 0.0]]
    """
    rows, cols = masks.any(dim=2), masks.any(dim=1)  # [N, H], [N, W]
    out = masks.new_zeros(masks.shape[0], 4, dtype=torch.float32)
    for i in range(masks.shape[0]):
        ys, xs = rows[i].nonzero()[:, 0], cols[i].nonzero()[:, 0]
        if len(ys):
            out[i] = torch.stack([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1]).float()
    return out


@dataclass(frozen=True)
class SamPlacement:
    """How ``SamProcessor`` placed an image: resized to ``new_height × new_width`` (longest
    side the encoder's, aspect ratio kept), padded right and below to ``input_size``; and how
    boxes and maps come back (the crop and bilinear resize of ``post_process_masks``).

    Example:
        >>> p = SamPlacement(300, 451, 43, 64, (64, 64))
        >>> p.map_to_image(torch.ones(2, 64, 64)).shape
        torch.Size([2, 300, 451])
    """

    height: int
    width: int
    new_height: int
    new_width: int
    input_size: tuple[int, int]

    def _scale(self, like: torch.Tensor) -> torch.Tensor:
        sx, sy = self.new_width / self.width, self.new_height / self.height
        return like.new_tensor([sx, sy, sx, sy])

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels, clipped to the image."""
        limit = boxes.new_tensor([self.width, self.height] * 2)
        return torch.minimum((boxes / self._scale(boxes)).clamp(min=0), limit)

    def boxes_to_input(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in image pixels -> input pixels (the processor's per-axis
        scale)."""
        return boxes * self._scale(boxes)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` on the input's grid -> ``Tensor[..., height, width]``."""
        if tuple(maps.shape[-2:]) != tuple(self.input_size):
            h, w = self.input_size
            raise TaskcamError(f"maps: expected Tensor[..., {h}, {w}], got {tuple(maps.shape)}")
        crop = maps[..., : self.new_height, : self.new_width]
        return resize_maps(crop.float(), (self.height, self.width))
