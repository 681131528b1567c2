"""Classification: class-index, softmax and top-k targets, and target specs from the CLI.

:class:`~taskcam.targets.ClassTarget` (a class's logit) and :func:`~taskcam.outputs.logits_of`
(the class scores in any classifier's output) live in the core, which reads classifiers without
an adapter; they are named here too, beside the targets built on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from taskcam.errors import TaskcamError
from taskcam.outputs import logits_of
from taskcam.targets import ClassTarget

__all__ = ["ClassTarget", "SoftmaxTarget", "logits_of", "parse_targets", "top_k_targets"]


class SoftmaxTarget(ClassTarget):
    """The softmax probability of one class: ``softmax(output)[:, class_index]``.

    Example:
        >>> SoftmaxTarget(0)(torch.zeros(1, 4))
        tensor([0.2500])
    """

    def __call__(self, output: Any) -> torch.Tensor:
        return self._check(logits_of(output)).softmax(dim=1)[:, self.class_index]


def top_k_targets(output: Any, k: int = 1, *, softmax: bool = False) -> list[list[ClassTarget]]:
    """One list of ``k`` targets per image: its ``k`` highest-scoring classes, best first.

    Args:
        output: the classifier's output on the batch (``Tensor[B, K]`` or see :func:`logits_of`).
        k: how many classes per image.
        softmax: build :class:`SoftmaxTarget` instead of logit targets.

    Example:
        >>> top_k_targets(torch.tensor([[0.1, 3.0, 2.0]]), k=2)
        [[ClassTarget(1), ClassTarget(2)]]
    """
    logits = logits_of(output)
    if not isinstance(k, int) or not 1 <= k <= logits.shape[1]:
        raise TaskcamError(f"k must be between 1 and {logits.shape[1]} (the classes), got {k!r}")
    cls = SoftmaxTarget if softmax else ClassTarget
    top = logits.topk(k, dim=1).indices.tolist()
    return [[cls(int(i)) for i in row] for row in top]


def parse_targets(
    spec: str, output: Any, *, class_names: Sequence[str] | None = None, softmax: bool = False
) -> list[list[ClassTarget]]:
    """Targets from a CLI spec: ``top1`` (default), ``top3``, ``285,281`` or class names.

    Args:
        spec: the ``--targets`` value.
        output: the classifier's output on the batch, used for ``topK``.
        class_names: lets ``spec`` name classes (``"tabby,Egyptian cat"``).
        softmax: explain probabilities instead of logits.

    Raises:
        TaskcamError: an unreadable spec, or a class the model does not have (the message
            names the number of classes).

    Example:
        >>> parse_targets("2,0", torch.zeros(1, 3))
        [[ClassTarget(2), ClassTarget(0)]]
    """
    logits = logits_of(output)
    batch, n_classes = logits.shape
    spec = (spec or "top1").strip()
    if spec.lower().startswith("top"):
        try:
            k = int(spec[3:] or 1)
        except ValueError as e:
            raise TaskcamError(f"--targets {spec!r}: expected topK such as top3") from e
        return top_k_targets(logits, min(k, n_classes), softmax=softmax)
    indices = []
    lookup = {n.lower(): i for i, n in enumerate(class_names or [])}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.lstrip("-").isdigit():
            index = int(part)
        elif part.lower() in lookup:
            index = lookup[part.lower()]
        else:
            raise TaskcamError(f"--targets: {part!r} is neither a class index nor a class name")
        if not 0 <= index < n_classes:
            raise TaskcamError(
                f"--targets: class {index} does not exist: the model has {n_classes} classes"
            )
        indices.append(index)
    if not indices:
        raise TaskcamError(f"--targets {spec!r}: no class given")
    cls = SoftmaxTarget if softmax else ClassTarget
    row = [cls(i) for i in indices]
    return [row] * batch
