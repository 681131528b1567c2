"""The target contract: what the engine explains, and the optional capabilities a target has.

A **target** is any callable ``target(model_output) -> Tensor[B]``: one differentiable scalar
per image. Adapters build them (a class logit, one detection's score, a class region's summed
logits); the engine never knows the task. Some targets can do more, and each such capability
is a named protocol here, checked with ``isinstance``:

- :class:`PerturbableTarget`: ``perturbed()`` gives the target to score on perturbed copies of
  the input (a detection is re-found there by D-RISE similarity instead of its candidate);
- :class:`LayerTarget`: ``layer`` names the hooked layer whose map explains it (a detection's
  pyramid level), or is ``None`` for every layer;
- :class:`ClassIndexTarget`: ``class_index`` is the classifier row it reads (the original CAM
  needs it);
- :class:`MaskTarget`: ``mask(output)`` gives the pixels it sums over (segmentation regions).

:class:`ClassTarget`, one class's logit, is the target every classifier run starts from; the
adapters build the others.

A target that cannot be found in an output (a detection that vanished under perturbation)
scores 0; it never raises in the middle of a batch.

Example:
    >>> import torch
    >>> t = ClassTarget(1)
    >>> isinstance(t, Target), isinstance(t, ClassIndexTarget), isinstance(t, LayerTarget)
    (True, True, False)
    >>> target_scores(torch.tensor([[0.5, 2.0]]), per_image_targets([t], 1))
    tensor([[2.]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Protocol, Union, runtime_checkable

import torch

from taskcam.errors import TaskcamError
from taskcam.outputs import logits_of

__all__ = [
    "ClassIndexTarget",
    "ClassTarget",
    "LayerTarget",
    "MaskTarget",
    "PerturbableTarget",
    "Target",
    "Targets",
    "explained_layer",
    "per_image_targets",
    "perturbation_targets",
    "target_scores",
]


@runtime_checkable
class Target(Protocol):
    """``target(model_output) -> Tensor[B]``: one differentiable score per image."""

    def __call__(self, output: Any) -> torch.Tensor: ...


@runtime_checkable
class PerturbableTarget(Target, Protocol):
    """A target that is scored differently on perturbed inputs (detections: D-RISE matching)."""

    def perturbed(self) -> Target: ...


@runtime_checkable
class LayerTarget(Target, Protocol):
    """A target explained by one of several hooked layers: ``layer`` (``None``: all of them)."""

    layer: Optional[str]


@runtime_checkable
class ClassIndexTarget(Target, Protocol):
    """A target that reads one class row of a classifier: ``class_index``."""

    class_index: int


@runtime_checkable
class MaskTarget(Target, Protocol):
    """A target summed over pixels: ``mask(output) -> BoolTensor[B, H, W]``."""

    def mask(self, output: Any) -> torch.Tensor: ...


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


Targets = Union[Target, Sequence[Target], Sequence[Sequence[Target]]]
"""What explain calls take: a target, ``T`` targets for every image, or one list per image."""


def per_image_targets(targets: Targets, batch: int) -> list[list[Target]]:
    """Targets as one list per image; the same list object for every image when shared.

    Args:
        targets: a target, a list of ``T`` targets for every image, or ``batch`` lists of
            ``T`` targets each.
        batch: the number of images ``B``.

    Raises:
        TaskcamError: a non-callable target, a mix of targets and lists, a count of lists
            other than ``batch``, or lists of different (or zero) lengths.

    Example:
        >>> rows = per_image_targets([ClassTarget(0), ClassTarget(2)], 3)
        >>> len(rows), rows[0] is rows[2]
        (3, True)
    """
    if callable(targets):
        shared: list[Target] = [targets]
        return [shared] * batch
    if isinstance(targets, (str, bytes)) or not isinstance(targets, Sequence) or not targets:
        raise TaskcamError(f"targets: expected a target or a non-empty sequence, got {targets!r}")
    if all(callable(t) for t in targets):
        shared = list(targets)
        return [shared] * batch
    if not all(isinstance(t, Sequence) and not callable(t) for t in targets):
        raise TaskcamError(
            "targets: expected targets (callables) or one list of targets per image, not a mix"
        )
    if len(targets) != batch:
        raise TaskcamError(f"got {len(targets)} target lists for {batch} images")
    counts = {len(row) for row in targets}
    if len(counts) != 1 or 0 in counts:
        raise TaskcamError(
            "every image needs the same, non-zero number of targets; got "
            f"{[len(r) for r in targets]}"
        )
    for row in targets:
        for t in row:
            if not callable(t):
                raise TaskcamError(f"targets: {t!r} is not callable")
    return [list(row) for row in targets]


def _call_target(target: Target, output: Any, batch: int) -> torch.Tensor:
    score = target(output)
    if not isinstance(score, torch.Tensor) or score.shape != (batch,):
        shape = tuple(score.shape) if isinstance(score, torch.Tensor) else type(score).__name__
        raise TaskcamError(
            f"target {target!r} must return Tensor[{batch}] (one score per image), got {shape}"
        )
    return score


def target_scores(output: Any, targets: list[list[Target]]) -> torch.Tensor:
    """``Tensor[B, T]``: every image's targets evaluated on the batch output.

    Args:
        output: the model's output on the batch of ``B`` images.
        targets: one list of ``T`` targets per image (:func:`per_image_targets`).

    Raises:
        TaskcamError: a target that does not return ``Tensor[B]``.
    """
    batch = len(targets)
    if all(row is targets[0] for row in targets):
        return torch.stack([_call_target(t, output, batch) for t in targets[0]], dim=1)
    rows = [
        torch.stack([_call_target(t, output, batch)[b] for t in row])
        for b, row in enumerate(targets)
    ]
    return torch.stack(rows)


def perturbation_targets(targets: list[list[Target]]) -> list[list[Target]]:
    """Targets as perturbation methods score them: ``target.perturbed()`` for each
    :class:`PerturbableTarget` (detections are re-found by D-RISE similarity once candidates
    move), every other target unchanged. Shared rows stay shared."""

    def swap(row: list[Target]) -> list[Target]:
        return [t.perturbed() if isinstance(t, PerturbableTarget) else t for t in row]

    if all(row is targets[0] for row in targets):
        shared = swap(targets[0])
        return [shared] * len(targets)
    return [swap(row) for row in targets]


def explained_layer(target: Target, layers: Sequence[str]) -> Optional[str]:
    """The one layer of ``layers`` that explains ``target`` (a :class:`LayerTarget` naming one
    of them), else ``None`` (every layer does).

    Example:
        >>> class Level:
        ...     layer = "p4"
        ...     def __call__(self, output): return output
        >>> explained_layer(Level(), ["p3", "p4"]), explained_layer(Level(), ["p3"])
        ('p4', None)
    """
    if isinstance(target, LayerTarget):
        layer = target.layer
        if isinstance(layer, str) and layer in layers:
            return layer
    return None
