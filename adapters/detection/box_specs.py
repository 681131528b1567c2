"""Labels named by hand, for one image: ``--box X1,Y1,X2,Y2[:CLASS]`` (:func:`parse_box`,
:func:`box_labels`), a box without a class taking the class of the detection it overlaps
(:func:`hand_labels`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch

from taskcam.adapters.detection.labels import Labels, find_class, show_names
from taskcam.errors import TaskcamError

__all__ = ["box_labels", "hand_labels", "parse_box"]


def parse_box(
    spec: str, class_names: Optional[Sequence[str]] = None
) -> tuple[list[float], Optional[int]]:
    """One ``--box X1,Y1,X2,Y2[:CLASS]``: the box in image pixels and its class id.

    Args:
        spec: four numbers, the box's corners in the original image's pixels, then optionally
            ``:CLASS``, a class id or a class name of the model (matched exactly, then
            ignoring case).
        class_names: the model's class names by id, or None when it has none (then ids are
            taken as they are and names refused).

    Returns:
        ``([x1, y1, x2, y2], class_id)``, ``class_id`` None where the spec names no class.

    Raises:
        TaskcamError: not four numbers, ``x2 <= x1`` or ``y2 <= y1``, or a class the model
            does not have (naming the spec and the model's classes).

    Example:
        >>> parse_box("10,20,110,220:Dog", ["cat", "dog"])
        ([10.0, 20.0, 110.0, 220.0], 1)
        >>> parse_box("10,20,110,220")
        ([10.0, 20.0, 110.0, 220.0], None)
    """
    coords, sep, wanted = str(spec).strip().partition(":")
    try:
        box = [float(p) for p in coords.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise TaskcamError(
            f"--box {spec!r}: expected X1,Y1,X2,Y2[:CLASS], four numbers in image pixels "
            "and optionally a class id or name (e.g. 10,20,110,220:person)"
        )
    if box[2] <= box[0] or box[3] <= box[1]:
        raise TaskcamError(
            f"--box {spec!r}: X1,Y1,X2,Y2 are the top-left and bottom-right corners, so X2 "
            "must exceed X1 and Y2 exceed Y1"
        )
    return box, (_box_class(spec, wanted.strip(), class_names) if sep else None)


def _box_class(spec: str, wanted: str, class_names: Optional[Sequence[str]]) -> int:
    """The class id ``wanted`` (an id or a name) names, for ``--box``."""
    names = None if class_names is None else [str(n) for n in class_names]
    if wanted.isdecimal() and (names is None or int(wanted) < len(names)):
        return int(wanted)
    cid = None if names is None or wanted.isdecimal() else find_class(wanted, names)
    if cid is None:
        known = "has no class names" if names is None else f"has classes {show_names(names)}"
        raise TaskcamError(
            f"--box {spec!r}: no class {wanted!r} (a class id or name of the model): the model "
            f"{known}"
        )
    return cid


def box_labels(
    specs: Sequence[str],
    class_names: Optional[Sequence[str]] = None,
    default_class: Union[int, Callable[[list[float], str], int], None] = None,
) -> Labels:
    """The labels of ``--box`` specs (see :func:`parse_box`), for one image.

    Args:
        specs: ``X1,Y1,X2,Y2[:CLASS]`` each.
        class_names: the model's class names by id, or None when it has none.
        default_class: the class of a box that names none, or ``(box, spec) -> class``
            choosing it per box (which raises where it cannot); None refuses such a box.

    Raises:
        TaskcamError: a bad spec, a box without a class when ``default_class`` is None, or a
            ``default_class`` the model does not have.

    Example:
        >>> labels = box_labels(["0,0,50,40:cat", "5,5,9,9"], ["cat", "dog"], default_class=1)
        >>> labels.classes.tolist(), labels.names
        ([0, 1], ['cat', 'dog'])
    """
    names = None if class_names is None else [str(n) for n in class_names]
    fixed = default_class if isinstance(default_class, int) else None
    beyond = names is not None and fixed is not None and fixed >= len(names)
    if fixed is not None and (fixed < 0 or beyond):
        raise TaskcamError(
            f"--box: default class {default_class} does not exist; the model's classes are "
            f"{show_names(names or [])}"
        )
    boxes, classes = [], []
    for spec in specs:
        box, cid = parse_box(spec, names)
        if cid is None and default_class is None:
            known = f" ({show_names(names)})" if names is not None else ""
            raise TaskcamError(
                f"--box {spec!r} has no class: write X1,Y1,X2,Y2:CLASS with a class id or name "
                f"of the model{known}"
            )
        if cid is None:
            cid = default_class(box, spec) if callable(default_class) else default_class
        boxes.append(box)
        classes.append(cid)
    return Labels(
        torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(classes, dtype=torch.long),
        [names[c] if names is not None else str(c) for c in classes],
    )


def hand_labels(
    specs: Any,
    class_names: Optional[list[str]],
    boxes: torch.Tensor,
    classes: torch.Tensor,
) -> Any:
    """Labels named by hand (``--box X1,Y1,X2,Y2[:CLASS]``, image pixels); a box without a
    class takes the class of the detection that overlaps it most (``boxes``, ``classes``: the
    image's detections in image pixels).

    Raises:
        TaskcamError: a malformed spec, an unknown class, or a box without a class that no
            detection overlaps (the message names the spec).

    Example:
        >>> labels = hand_labels(["0,0,10,10", "20,20,30,30:1"], ["cat", "dog"],
        ...                      torch.tensor([[1.0, 0, 10, 10]]), torch.tensor([0]))
        >>> labels.classes.tolist()
        [0, 1]
    """
    from torchvision.ops import box_iou

    def overlapping_class(box: list[float], spec: str) -> int:
        overlap = (
            box_iou(torch.tensor([box]), boxes.float().cpu())[0] if len(boxes) else torch.zeros(0)
        )
        if len(overlap) == 0 or float(overlap.max()) <= 0:
            raise TaskcamError(
                f"--box {spec}: no detection overlaps it to take its class from; name the "
                "class: X1,Y1,X2,Y2:CLASS"
            )
        return int(classes[int(overlap.argmax())])

    return box_labels(specs, class_names, overlapping_class)
