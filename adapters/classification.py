"""Classification: class-index, softmax and top-k targets, and target specs from the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from taskcam.errors import TaskcamError

__all__ = ["ClassTarget", "SoftmaxTarget", "logits_of", "parse_targets", "top_k_targets"]


def logits_of(output: Any) -> torch.Tensor:
    """``Tensor[B, K]``: the class scores in a classifier's output.

    Accepts a tensor, an object with ``.logits`` (Hugging Face), a dict with ``"logits"`` or
    ``"out"``, or a tuple whose first element is the logits.
    """
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, dict) and ("logits" in output or "out" in output):
        logits = output.get("logits", output.get("out"))
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise TaskcamError(f"cannot find class scores in a {type(output).__name__} output")
    if logits.ndim != 2:
        raise TaskcamError(f"class scores must be Tensor[B, K], got {tuple(logits.shape)}")
    return logits


class ClassTarget:
    """The pre-softmax score (logit) of one class: ``output[:, class_index]``.

    Args:
        class_index: the class, ``0 <= class_index < K``.

    Example:
        >>> ClassTarget(1)(torch.tensor([[0.5, 2.0], [1.0, -1.0]]))
        tensor([ 2., -1.])
    """

    def __init__(self, class_index: int) -> None:
        if isinstance(class_index, bool) or not isinstance(class_index, int) or class_index < 0:
            raise TaskcamError(f"class_index must be a non-negative int, got {class_index!r}")
        self.class_index = class_index

    def _check(self, logits: torch.Tensor) -> torch.Tensor:
        if self.class_index >= logits.shape[1]:
            raise TaskcamError(
                f"class index {self.class_index} does not exist: the model has "
                f"{logits.shape[1]} classes"
            )
        return logits

    def __call__(self, output: Any) -> torch.Tensor:
        return self._check(logits_of(output))[:, self.class_index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.class_index})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.class_index == self.class_index  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.class_index))


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
