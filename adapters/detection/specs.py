"""Which detections a run explains: the ``--targets`` spec for detectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from taskcam.adapters.detection.candidates import Detections
from taskcam.errors import TaskcamError

__all__ = ["parse_detection_targets"]


def parse_detection_targets(
    spec: Optional[str],
    dets: Detections,
    class_names: Optional[Sequence[str]] = None,
    *,
    existing_only: bool = False,
) -> list[int]:
    """Which detections to explain: positions into ``dets`` (best first), each once.

    Args:
        spec: ``"all"`` (or None), ``"0,2"`` (indices in the model's own ranking) or
            ``"class=NAME"`` / ``"class=ID"`` (every detection of that class).
        dets: the image's detections.
        class_names: names by class id, for ``class=NAME``.
        existing_only: drop indices beyond the detections instead of refusing them (video
            frames, whose detections come and go).

    Raises:
        TaskcamError: an index beyond the detections (naming how many there are), an unknown
            class name or id, or a malformed spec.

    Example:
        >>> import torch
        >>> d = Detections(torch.zeros(3, 4), torch.ones(3), torch.tensor([0, 1, 0]),
        ...                torch.arange(3))
        >>> parse_detection_targets("class=cat", d, ["cat", "dog"])
        [0, 2]
    """
    n = len(dets)
    text = (spec or "all").strip()
    if text == "all":
        return list(range(n))
    if text.startswith("class="):
        wanted = text[len("class=") :].strip()
        names = list(class_names or [])
        if wanted.isdigit():
            cid = int(wanted)
            if names and cid >= len(names):
                raise TaskcamError(
                    f"--targets class={wanted}: class {cid} does not exist; the model has "
                    f"{len(names)} classes (0..{len(names) - 1})"
                )
        elif wanted in names:
            cid = names.index(wanted)
        else:
            raise TaskcamError(
                f"--targets class={wanted}: no such class; the model's classes are "
                f"{names[:20]}{' ...' if len(names) > 20 else ''}"
            )
        return [i for i, c in enumerate(dets.classes.tolist()) if c == cid]
    try:
        picks = [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError as e:
        raise TaskcamError(
            f"--targets {spec!r}: expected all, indices like 0,2 or class=NAME"
        ) from e
    picks = list(dict.fromkeys(picks))  # "1,1" explains detection 1 once
    bad = [i for i in picks if not 0 <= i < n]
    if existing_only and picks and min(picks) >= 0:
        return [i for i in picks if i < n]
    if bad or not picks:
        raise TaskcamError(
            f"--targets {spec!r}: detection {bad[0] if bad else spec} does not exist; "
            f"the image has {n} detection(s) (0..{n - 1})"
        )
    return picks
