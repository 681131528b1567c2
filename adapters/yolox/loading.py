"""``--model yolox:NAME``: libreyolo's YOLOX (Ge et al., 2021, "YOLOX: Exceeding YOLO Series in
2021") by size, with its pretrained weights, random weights or a checkpoint of yours; or
``yolox:PATH``, a libreyolo or original YOLOX checkpoint."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from taskcam.adapters.yolox.adapter import YoloxAdapter
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess

__all__ = ["SIZES", "load_yolox", "yolox_size"]

SIZES = {"nano": "n", "tiny": "t", "s": "s", "m": "m", "l": "l", "x": "x", "n": "n", "t": "t"}
"""``yolox:NAME`` -> libreyolo's size code (``LibreYOLOX(size=...)``); a ``yolox`` prefix is
allowed (``yolox_s``, ``yolox-nano``, as the YOLOX repository names its models)."""

_OFFLINE = ("1", "true", "yes", "on")


def yolox_size(name: str) -> Optional[str]:
    """libreyolo's size code for a YOLOX name, or None.

    Example:
        >>> yolox_size("nano"), yolox_size("yolox_s"), yolox_size("YOLOX-Tiny"), yolox_size("q")
        ('n', 's', 't', None)
    """
    key = name.lower()
    if key.startswith("yolox") and key != "yolox":
        key = key[5:].lstrip("-_")
    return SIZES.get(key)


def _libreyolox() -> Any:
    """libreyolo's ``LibreYOLOX`` class, or an error saying how to install it."""
    try:
        from libreyolo.models.yolox.model import LibreYOLOX
    except ImportError as e:
        raise TaskcamError(
            f"yolox: models need libreyolo (pip install 'taskcam[yolox]') ({type(e).__name__}: {e})"
        ) from e
    return LibreYOLOX


def _checkpoint_size(path: Path, spec: str) -> Optional[str]:
    """The size code of the YOLOX weights in a checkpoint (read as libreyolo reads it).

    Raises:
        TaskcamError: a file that cannot be read or holds no YOLOX weights.
    """
    from libreyolo.utils.serialization import load_untrusted_torch_file

    cls = _libreyolox()
    try:
        obj = load_untrusted_torch_file(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise TaskcamError(f"{spec}: cannot read {path} ({type(e).__name__}: {e})") from e
    state = obj
    if isinstance(obj, dict):
        state = obj.get("model", obj.get("state_dict", obj))
    if not isinstance(state, dict) or not cls.can_load(state):
        raise TaskcamError(f"{spec}: {path} holds no YOLOX weights (libreyolo or YOLOX layout)")
    return cls.detect_size({str(k).removeprefix("module."): v for k, v in state.items()})


def _from_checkpoint(path: Path, want: Optional[str], spec: str) -> Any:
    """A ``LibreYOLOX`` with the weights of ``path`` (its size read from them).

    Raises:
        TaskcamError: a missing file, one without YOLOX weights, or weights of another size
            than ``want`` (the message names the file and both sizes).
    """
    if not path.is_file():
        raise TaskcamError(f"{spec}: no such checkpoint file {path}")
    found = _checkpoint_size(path, spec)
    if want is not None and found is not None and found != want:
        raise TaskcamError(
            f"{spec}: {path} holds YOLOX-{found} weights, not YOLOX-{want}; pass "
            f"--model yolox:{found} or --model yolox:{path}"
        )
    try:
        return _libreyolox()(str(path), size=found or want or "s", device="cpu")
    except Exception as e:  # noqa: BLE001 - libreyolo wraps load errors in RuntimeError
        raise TaskcamError(f"{spec}: cannot load {path} ({type(e).__name__}: {e})") from e


def _pretrained(code: str, spec: str) -> Any:
    """libreyolo's pretrained ``LibreYOLOX{code}.pt``, fetched from the Hugging Face Hub into
    ``weights/`` as libreyolo does (none fetched when ``HF_HUB_OFFLINE`` is set).

    Raises:
        TaskcamError: the weights cannot be fetched; the message says to pass ``--weights
            none`` or ``--weights PATH``.
    """
    name = f"LibreYOLOX{code}.pt"
    hint = "pass --weights none (random weights) or --weights PATH (a checkpoint)"
    local = Path(name).is_file() or (Path("weights") / name).is_file()
    if not local and os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFFLINE:
        raise TaskcamError(
            f"{spec}: libreyolo's pretrained {name} is not in ./weights and HF_HUB_OFFLINE is "
            f"set, so it is not fetched; {hint}"
        )
    try:
        return _libreyolox()(name, size=code, device="cpu")
    except TaskcamError:
        raise
    except Exception as e:  # noqa: BLE001 - network errors come in many types
        raise TaskcamError(
            f"{spec}: could not fetch libreyolo's pretrained {name} ({type(e).__name__}: {e}); "
            f"{hint}"
        ) from e


def load_yolox(rest: str, weights: Optional[str]) -> LoadedModel:
    """``--model yolox:NAME`` as a loaded detector with its :class:`YoloxAdapter`.

    Args:
        rest: a size (``nano``/``n``, ``tiny``/``t``, ``s``, ``m``, ``l``, ``x``; a ``yolox``
            prefix allowed: ``yolox_s``) or the path of a libreyolo or original YOLOX
            checkpoint (its size read from its weights).
        weights: for a size: None for libreyolo's pretrained weights (downloaded from the
            Hugging Face Hub), ``"none"`` for random weights, or a checkpoint path of that
            size. A checkpoint path as ``rest`` holds its weights already: None only.

    Returns:
        The inner ``LibreYOLOXModel`` in eval mode at libreyolo's input size (416 for nano and
        tiny, 640 otherwise), with the COCO names (or the checkpoint's) and its adapter.

    Raises:
        TaskcamError: an unknown name, a missing or unreadable checkpoint, weights of another
            size, pretrained weights that cannot be fetched, or libreyolo not installed.

    Example:
        >>> loaded = load_yolox("nano", "none")
        >>> loaded.task, loaded.preprocess.size, loaded.class_names[0], loaded.adapter.family
        ('detect', (416, 416), 'person', 'yolox')
    """
    spec = f"yolox:{rest}"
    code = yolox_size(rest)
    if code is None:
        path = Path(rest).expanduser()
        if not path.is_file():
            raise TaskcamError(
                f"--model {spec}: no YOLOX size or checkpoint file named {rest!r}; libreyolo's "
                f"YOLOX sizes are nano (n), tiny (t), s, m, l, x"
            )
        if weights is not None:
            raise TaskcamError(f"--model {spec} holds its weights already; drop --weights")
        wrapper = _from_checkpoint(path, None, spec)
    elif weights is None:
        wrapper = _pretrained(code, spec)
    elif str(weights).lower() == "none":
        wrapper = _libreyolox()(None, size=code, device="cpu")
    else:
        wrapper = _from_checkpoint(Path(weights).expanduser(), code, f"--weights {weights}")
    wrapper.model.eval()
    adapter = YoloxAdapter(wrapper)
    side = int(adapter.size)  # type: ignore[arg-type]
    return LoadedModel(
        adapter.model,
        spec,
        task="detect",
        preprocess=Preprocess((side, side), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        class_names=adapter.class_names,
        adapter=adapter,
    )
