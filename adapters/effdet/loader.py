"""``--model effdet:NAME``: an effdet model by name, its weights, preprocessing and class names."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.effdet.adapter import EffDetAdapter
from taskcam.adapters.effdet.library import effdet_module
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess

__all__ = ["effdet_loaded", "load_effdet", "read_state_dict"]

_NESTED = ("state_dict", "model", "model_state_dict")  # effdet's train.py saves "state_dict"


def effdet_loaded(model: nn.Module, spec: str) -> LoadedModel:
    """An EfficientDet (or a bench wrapping one) as a loaded detector: the model, its
    :class:`EffDetAdapter`, effdet's input size, mean and std, and its class names.

    Example:
        >>> net = effdet_module().create_model("tf_efficientdet_d0", pretrained_backbone=False,
        ...                                    image_size=(128, 128))
        >>> loaded = effdet_loaded(net, "pkg.mod:net")
        >>> loaded.task, loaded.preprocess.size, loaded.class_names[90]
        ('detect', (128, 128), 'toothbrush')
    """
    adapter = EffDetAdapter(model)
    h, w = adapter.size  # type: ignore[misc]
    pre = Preprocess((int(h), int(w)), adapter.mean, adapter.std)  # type: ignore[arg-type]
    return LoadedModel(
        model, spec, task="detect", preprocess=pre, class_names=adapter.class_names, adapter=adapter
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict of an EfficientDet checkpoint: a plain state dict, effdet's training
    checkpoint (timm's ``{"state_dict": ..., "state_dict_ema": ..., "args": Namespace}``: the
    first, as effdet's ``validate.py`` reads it without ``--use-ema``) or a bench's state dict
    (``model.`` prefixes and the bench's anchors dropped); ``module.`` (DataParallel)
    prefixes dropped. Read with ``weights_only`` (tensors, containers and an
    ``argparse.Namespace``: no code runs).

    Raises:
        TaskcamError: a missing file, or one that holds no state dict (the message names it).
    """
    path = Path(path)
    if not path.is_file():
        raise TaskcamError(f"--weights: no such file {path}")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):  # timm's saver keeps args
            obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a checkpoint
        raise TaskcamError(f"--weights {path}: cannot read it as a checkpoint ({e})") from e
    while isinstance(obj, dict) and any(isinstance(obj.get(k), dict) for k in _NESTED):
        obj = next(obj[k] for k in _NESTED if isinstance(obj.get(k), dict))
    if (
        not isinstance(obj, dict)
        or not obj
        or not all(isinstance(v, torch.Tensor) for v in obj.values())
    ):
        raise TaskcamError(
            f"--weights {path}: holds no state dict (found {type(obj).__name__}); save one "
            "with torch.save(model.state_dict(), path)"
        )
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    if all(k.startswith("model.") or k == "anchors.boxes" for k in state):  # a bench's
        state = {k[len("model.") :]: v for k, v in state.items() if k != "anchors.boxes"}
    return state


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: str, name: str) -> None:
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes that differ
        raise TaskcamError(f"--weights {path} does not fit effdet:{name}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise TaskcamError(
            f"--weights {path} does not fit effdet:{name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]} ({len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected)"
        )


def _head_classes(state: dict[str, torch.Tensor], anchors: int) -> Optional[int]:
    """The classes a checkpoint's class head predicts (a model fine-tuned on other data)."""
    for key in ("class_net.predict.conv_pw.bias", "class_net.predict.conv.bias"):
        if key in state:
            return int(state[key].shape[0]) // anchors
    return None


def _build(name: str, weights: Optional[str]) -> nn.Module:
    """The effdet model ``name`` with the weights asked for (see :func:`load_effdet`)."""
    effdet = effdet_module()
    config = effdet.get_efficientdet_config(name)
    pretrained = weights is None
    if pretrained and not config.get("url"):
        raise TaskcamError(
            f"effdet:{name}: effdet has no pretrained weights for it; pass --weights none "
            "(random weights) or --weights PATH (a checkpoint of it)"
        )
    try:
        model = effdet.create_model(name, pretrained=pretrained, pretrained_backbone=False)
    except Exception as e:  # noqa: BLE001 - hub and network errors come in many types
        if not pretrained:
            raise TaskcamError(f"effdet:{name}: cannot build it ({type(e).__name__}: {e})") from e
        raise TaskcamError(
            f"effdet:{name}: could not load effdet's pretrained weights, fetched by effdet "
            f"({type(e).__name__}: "
            f"{e}); pass --weights none (random weights) or --weights PATH (a checkpoint of it)"
        ) from e
    if weights is not None and weights.lower() != "none":
        state = read_state_dict(weights)
        classes = _head_classes(state, len(config.aspect_ratios) * int(config.num_scales))
        if classes is not None and classes != int(config.num_classes):
            model.reset_head(num_classes=classes)  # fine-tuned on other classes
        _load_state(model, state, weights, name)
    return model


def load_effdet(rest: str, weights: Optional[str] = None) -> LoadedModel:
    """``--model effdet:NAME``: an effdet model by name (``tf_efficientdet_d0``,
    ``efficientdet_d0``, ``tf_efficientdet_lite0``, ...), in eval mode.

    Args:
        rest: the model's name in effdet (``effdet.create_model``'s).
        weights: ``None``: effdet's pretrained COCO weights (fetched by effdet); ``"none"``:
            random weights; a path: a checkpoint of that model (a state dict, effdet's
            training checkpoint or a bench's state dict; a class head of another size is
            rebuilt to fit it).

    Returns:
        The model with its :class:`EffDetAdapter`, effdet's input size, mean and std, and
        COCO's names for a 90-class model (effdet's ids are COCO category ids).

    Raises:
        TaskcamError: an unknown name (the message suggests close ones), pretrained weights
            that cannot be fetched or do not exist (it says to pass ``--weights none`` or
            ``--weights PATH``), a weights file that is missing or does not fit.

    Example:
        >>> loaded = load_effdet("tf_efficientdet_lite0", "none")
        >>> loaded.spec, loaded.preprocess.size, loaded.preprocess.mean, loaded.class_names[1]
        ('effdet:tf_efficientdet_lite0', (320, 320), (0.5, 0.5, 0.5), 'person')
    """
    name = rest.strip()
    known = list(effdet_module("config.model_config").efficientdet_model_param_dict)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TaskcamError(
            f"effdet:{name}: effdet has no model of that name (it has {len(known)}, e.g. "
            f"tf_efficientdet_d0, efficientdet_d0, tf_efficientdet_lite0){hint}"
        )
    model = _build(name, weights).eval()
    return effdet_loaded(model, f"effdet:{name}")
