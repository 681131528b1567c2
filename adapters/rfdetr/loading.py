"""``--model rfdetr:NAME``: an RF-DETR detection model built by the ``rfdetr`` package.

``NAME`` is one of :data:`VARIANTS`. ``--weights`` picks the weights:

* none given: rfdetr's own COCO checkpoint, which rfdetr downloads to its cache (``RF_HOME``,
  ``~/.roboflow/models``) the first time; offline and not cached, the error says to pass
  ``--weights none`` or a checkpoint;
* ``none``: random weights, built offline by rfdetr's own builder
  (``rfdetr.models.lwdetr.build_model_from_config``) from the variant's config, exactly the
  module ``RFDETRNano(pretrain_weights=None)`` builds. rfdetr fetches DINOv2's backbone weights
  from the Hugging Face hub when a model is built without a checkpoint and its backbone matches
  DINOv2's patch and position grid (base); the builder is told a checkpoint will follow, so no
  variant fetches anything and the backbone is random too;
* ``PATH``: an RF-DETR checkpoint (a ``.pth`` rfdetr trained or published: ``{"model": state
  dict, "args": ...}``), loaded as rfdetr loads ``pretrain_weights=PATH``, its class names and
  class count included.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from taskcam.adapters.rfdetr.adapter import RFDETRAdapter
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess

__all__ = ["VARIANTS", "load_rfdetr", "random_rfdetr"]

VARIANTS = {
    "nano": ("RFDETRNano", "RFDETRNanoConfig"),
    "small": ("RFDETRSmall", "RFDETRSmallConfig"),
    "medium": ("RFDETRMedium", "RFDETRMediumConfig"),
    "base": ("RFDETRBase", "RFDETRBaseConfig"),
    "large": ("RFDETRLarge", "RFDETRLargeConfig"),
}
"""``rfdetr:NAME`` -> (the ``rfdetr`` model class, its config class in ``rfdetr.config``).
``base`` is the first RF-DETR, which rfdetr 1.7 deprecated; ``large`` is the 2026 Large."""


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """rfdetr's build-time notes (DINOv2 weights not loaded, a deprecated class, training from
    scratch) left out: taskcam says what it built."""
    log = logging.getLogger("rf-detr")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def _rfdetr() -> Any:
    try:
        import rfdetr
    except ImportError as e:
        raise TaskcamError(
            "rfdetr: models need the rfdetr package (pip install 'taskcam[rfdetr]')"
        ) from e
    return rfdetr


def random_rfdetr(name: str) -> Any:
    """The ``LWDETR`` module of the variant ``name`` with random weights, built offline.

    Args:
        name: one of :data:`VARIANTS`.

    Returns:
        ``rfdetr.models.lwdetr.LWDETR`` in eval mode, on the CPU.

    Example:
        >>> import torch
        >>> torch.manual_seed(0) and None
        >>> net = random_rfdetr("nano")
        >>> type(net).__name__, net.class_embed.out_features, net.num_queries
        ('LWDETR', 91, 300)
    """
    _rfdetr()
    from rfdetr import config
    from rfdetr.models.lwdetr import build_model_from_config

    # the config keeps its published checkpoint's name: the builder then skips DINOv2's hub
    # weights (it loads them only for a model without a checkpoint), and never reads the file
    settings = getattr(config, VARIANTS[_variant(name)][1])(device="cpu")
    with _quiet():
        return build_model_from_config(settings).eval()


def _variant(name: str) -> str:
    key = name.strip().lower()
    if key not in VARIANTS:
        raise TaskcamError(
            f"--model rfdetr:{name}: no RF-DETR named {name!r}; expected one of "
            f"{', '.join(VARIANTS)}"
        )
    return key


def _built(name: str, weights: Optional[str]) -> Any:
    """The wrapper (pretrained or from a checkpoint) or the random module."""
    if weights is not None and weights.lower() == "none":
        return random_rfdetr(name)
    path = None
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise TaskcamError(f"--weights: no such file {path}")
    model_class = getattr(_rfdetr(), VARIANTS[name][0])
    try:
        with _quiet():
            if path is None:
                return model_class(device="cpu")
            return model_class(pretrain_weights=str(path.resolve()), device="cpu")
    except Exception as e:  # noqa: BLE001 - download and unpickling errors come in many types
        if path is None:
            raise TaskcamError(
                f"rfdetr:{name}: could not load its pretrained weights, fetched by rfdetr "
                f"({type(e).__name__}: "
                f"{e}); pass --weights none (random weights) or --weights PATH.pth (an RF-DETR "
                "checkpoint)"
            ) from e
        raise TaskcamError(
            f"--weights {path}: not an RF-DETR {name} checkpoint rfdetr can load "
            f"({type(e).__name__}: {e})"
        ) from e


def load_rfdetr(rest: str, weights: Optional[str]) -> LoadedModel:
    """``--model rfdetr:NAME`` (see the module doc): the ``LWDETR`` module, its
    :class:`~taskcam.adapters.rfdetr.RFDETRAdapter`, and the preprocessing they share.

    Args:
        rest: ``NAME``, one of :data:`VARIANTS` (any case).
        weights: None for rfdetr's pretrained weights, ``"none"`` for random weights, or the
            path of an RF-DETR checkpoint.

    Raises:
        TaskcamError: an unknown ``NAME`` (the message lists the known ones), a weights file
            that does not exist or that rfdetr cannot load, pretrained weights that cannot be
            fetched (pass ``--weights none`` or a checkpoint), or rfdetr not installed.

    Example:
        >>> loaded = load_rfdetr("nano", "none")
        >>> loaded.task, loaded.preprocess.size, loaded.adapter.conf, loaded.class_names[18]
        ('detect', (384, 384), 0.5, 'dog')
    """
    name = _variant(rest)
    adapter = RFDETRAdapter(_built(name, weights))
    pre: Preprocess = adapter.preprocess
    return LoadedModel(
        adapter.model,
        f"rfdetr:{rest}",
        task="detect",
        preprocess=pre,
        class_names=adapter.class_names,
        adapter=adapter,
    )
