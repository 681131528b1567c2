"""Hugging Face image classifiers (``*ForImageClassification``: ViT, DeiT, Swin, ConvNeXt, ...):
explained as they are. Their ``ModelOutput.logits`` are the class scores
(:func:`taskcam.outputs.logits_of`), a ViT-style model gets the default layer and token reshape
every transformer classifier gets (:func:`taskcam.adapters.transformers.transformer_defaults`),
and their class names come from the config (:func:`hf_class_names`)."""

from __future__ import annotations

import re
from typing import Any, Optional

__all__ = ["CLASSIFIERS", "hf_class_names", "is_classifier"]

CLASSIFIERS = ("ForImageClassification", "ForImageClassificationWithTeacher")
"""How the architectures of image classifiers end (DeiT's distilled one has a teacher head)."""


def is_classifier(architecture: str) -> bool:
    """Whether ``architecture`` (a config's ``architectures`` entry) is an image classifier.

    Example:
        >>> is_classifier("ViTForImageClassification"), is_classifier("DetrForObjectDetection")
        (True, False)
    """
    return architecture.endswith(CLASSIFIERS)


def hf_class_names(config: Any) -> Optional[list[str]]:
    """``config.id2label`` in id order; ``None`` for the library's placeholder names
    (``LABEL_0``, ...) that a config without labels gets.

    Example:
        >>> import transformers
        >>> hf_class_names(transformers.ViTConfig(id2label={0: "cat", 1: "dog"}))
        ['cat', 'dog']
        >>> hf_class_names(transformers.ViTConfig(num_labels=3)) is None
        True
    """
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if not names or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names
