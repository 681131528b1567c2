"""Reading a Hugging Face ``save_pretrained`` folder (``hf:DIR``): its config, the architecture
it names, the task taskcam explains it for, its preprocessing and class names, its weights."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

from taskcam.adapters.detection.families import adapter_for
from taskcam.adapters.huggingface.classifiers import hf_class_names, is_classifier
from taskcam.adapters.huggingface.detr import DETR_TYPES
from taskcam.adapters.huggingface.segmenters import (
    DEFAULT_LAYERS,
    UNIVERSAL,
    SemanticSegmenter,
    UniversalSegmenter,
)
from taskcam.errors import TaskcamError
from taskcam.loaded import IMAGENET_MEAN, IMAGENET_STD, LoadedModel, Preprocess

__all__ = ["hf_preprocess", "load_hf"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TaskcamError(f"hf:{path.parent}: cannot read {path.name}: {e}") from e


def _side(value: Any) -> Optional[tuple[int, int]]:
    """``(h, w)`` from a processor's or config's size: an int, ``[h, w]``, or a dict with
    ``height``/``width`` or ``shortest_edge`` (a square of that side)."""
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return (int(value["height"]), int(value["width"]))
        if "shortest_edge" in value:
            return (int(value["shortest_edge"]),) * 2
    return None


def hf_preprocess(folder: str | Path, config: Any, default_size: int = 224) -> Preprocess:
    """The input size and normalisation of a ``save_pretrained`` folder.

    Read from ``preprocessor_config.json`` when the folder has one (``crop_size`` when it
    crops, else ``size``; ``image_mean``/``image_std``, none with ``do_normalize: false``),
    else the config's ``image_size`` and ImageNet's mean and std. ``--size/--mean/--std``
    override them.

    Example:
        >>> import tempfile, transformers
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / "preprocessor_config.json").write_text(
        ...     '{"size": {"height": 96, "width": 128}, "image_mean": [0.5, 0.5, 0.5],'
        ...     ' "image_std": [0.5, 0.5, 0.5]}')
        >>> hf_preprocess(folder, transformers.ViTConfig())
        Preprocess(size=(96, 128), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    """
    path = Path(folder) / "preprocessor_config.json"
    proc = _read_json(path) if path.is_file() else {}
    size = None
    if proc.get("do_center_crop"):
        size = _side(proc.get("crop_size"))
    size = size or _side(proc.get("size")) or _side(getattr(config, "image_size", None))
    mean = tuple(float(v) for v in proc.get("image_mean", IMAGENET_MEAN))
    std = tuple(float(v) for v in proc.get("image_std", IMAGENET_STD))
    if proc.get("do_normalize") is False:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if len(mean) != 3 or len(std) != 3:  # a grey-scale processor: one value per channel
        mean, std = (mean[0],) * 3, (std[0],) * 3
    return Preprocess(size or (default_size, default_size), mean, std)


def _architecture(folder: Path) -> tuple[Any, str, Any]:
    """The folder's config, its first architecture's name and class."""
    if not folder.is_dir():
        raise TaskcamError(f"--model hf:{folder}: no such folder (a save_pretrained folder)")
    if not (folder / "config.json").is_file():
        raise TaskcamError(
            f"--model hf:{folder}: no config.json there; a Hugging Face save_pretrained folder "
            "holds the model's config.json (and its weights)"
        )
    try:
        import transformers
    except ImportError as e:
        raise TaskcamError(
            "hf: models need Hugging Face transformers (pip install transformers)"
        ) from e
    try:
        config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise TaskcamError(f"--model hf:{folder}: cannot read its config.json: {e}") from e
    names = list(getattr(config, "architectures", None) or [])
    if not names:
        raise TaskcamError(
            f"--model hf:{folder}: its config.json names no architecture ('architectures'); "
            "save the model itself (model.save_pretrained), not only its config"
        )
    cls = getattr(transformers, names[0], None)
    if cls is None:
        raise TaskcamError(
            f"--model hf:{folder}: architecture {names[0]} is not in transformers "
            f"{transformers.__version__} (remote code is never run)"
        )
    return config, names[0], cls


SAM_TYPES = ("sam", "sam2")
"""Promptable segmenters (Segment Anything and SAM 2): a mask per ``--prompt``."""

OPEN_VOCABULARY_TYPES = ("owlvit", "owlv2", "grounding-dino")
"""Open-vocabulary detectors: boxes for the phrases of ``--text``."""


def _task(name: str, model_type: str, folder: Path) -> str:
    if model_type in SAM_TYPES:
        return "segment"
    if model_type in OPEN_VOCABULARY_TYPES:
        return "detect"
    if is_classifier(name):
        return "classify"
    if name.endswith("ForSemanticSegmentation") or model_type in UNIVERSAL:
        return "segment"
    if name.endswith("ForObjectDetection") and model_type in DETR_TYPES:
        return "detect"
    raise TaskcamError(
        f"--model hf:{folder}: taskcam cannot explain a {name} ({model_type}); hf: folders "
        "hold image classifiers (*ForImageClassification), semantic segmenters "
        "(*ForSemanticSegmentation), Mask2Former/MaskFormer, DETR, Conditional DETR and "
        "Deformable DETR detectors, SAM (--prompt) or OWL-ViT, OWLv2 and Grounding DINO (--text)"
    )


def load_hf(
    folder: str | Path,
    weights: Optional[str] = None,
    *,
    prompts: Optional[Sequence[str]] = None,
    text: Optional[Union[str, Sequence[str]]] = None,
) -> LoadedModel:
    """A Hugging Face vision model from a local ``save_pretrained`` folder (``hf:DIR``).

    Args:
        folder: the folder (``config.json``, the weights, optionally
            ``preprocessor_config.json``).
        weights: ``None``: the folder's weights; ``"none"`` or a path: the architecture built
            from the config with random weights (a path is then loaded by
            :func:`taskcam.models.load_model`).

    Raises:
        TaskcamError: no such folder, no ``config.json``, an architecture transformers does
            not have or taskcam cannot explain (the message names it), missing weights.
    """
    folder = Path(folder)
    config, name, cls = _architecture(folder)
    model_type = str(getattr(config, "model_type", ""))
    task = _task(name, model_type, folder)
    try:
        if weights is None:
            model = cls.from_pretrained(str(folder), local_files_only=True)
        else:
            model = cls(config)
    except (OSError, ValueError, RuntimeError) as e:
        hint = "; pass --weights none for random weights" if weights is None else ""
        raise TaskcamError(f"--model hf:{folder}: cannot build {name}: {e}{hint}") from e
    takes = {
        **dict.fromkeys(SAM_TYPES, "--prompt"),
        **dict.fromkeys(OPEN_VOCABULARY_TYPES, "--text"),
    }
    takes = takes.get(model_type)
    for flag, given in (("--prompt", prompts), ("--text", text)):
        if given and flag != takes:
            raise TaskcamError(
                f"{flag}: hf:{folder} is a {name}, which takes {takes or 'no prompt'} (SAM "
                "takes --prompt; OWL-ViT, OWLv2 and Grounding DINO take --text)"
            )
    if model_type in SAM_TYPES:
        from taskcam.adapters.huggingface.sam import sam_loaded

        return sam_loaded(folder, model.eval(), prompts or ())
    if model_type in OPEN_VOCABULARY_TYPES:
        from taskcam.adapters.huggingface.open_vocabulary import open_vocabulary_loaded

        return open_vocabulary_loaded(folder, model.eval(), text)
    layers = None
    if task == "segment":
        if model_type in UNIVERSAL:
            model = UniversalSegmenter(model, UNIVERSAL[model_type])
        else:
            model = SemanticSegmenter(model)
        layers = [DEFAULT_LAYERS[model_type]] if model_type in DEFAULT_LAYERS else None
    pre = hf_preprocess(folder, config, 512 if task == "segment" else 224)
    names = hf_class_names(config)
    if task == "detect":
        pre.size = _detection_sides(folder)
    loaded = LoadedModel(
        model.eval(), f"hf:{folder}", task=task, preprocess=pre, class_names=names, layers=layers
    )
    if task == "detect":
        adapter_for(loaded)  # its adapter reads the processor's sizes at each image
    return loaded


def _detection_sides(folder: Path) -> tuple[int, int]:
    """``(short side, longest side)`` a DETR-family processor resizes to (800, 1333 if the
    folder has no processor config)."""
    path = folder / "preprocessor_config.json"
    size = _read_json(path).get("size", {}) if path.is_file() else {}
    if isinstance(size, dict) and "shortest_edge" in size:
        return int(size["shortest_edge"]), int(size.get("longest_edge", 1333))
    return _side(size) or (800, 1333)
