"""Does a map explain its target's score? Deletion and insertion of that score, and baselines.

A map is for telling which pixels the target's score rests on. So it is judged the way RISE
judged maps (Petsiuk et al., BMVC 2018) and D-RISE judged detection maps (Petsiuk et al., CVPR
2021): replace the most salient pixels by a blurred copy step by step and watch the score fall
(*deletion*, lower is better); start from the blurred image and put the most salient pixels back
(*insertion*, higher is better). Both areas are divided by the clean image's score, so a
detection at 0.9 and one at 0.3 are on one scale, and ``faithfulness = insertion - deletion``
sums them up (higher is better; 0 for a map that orders pixels no better than chance).

What the score is depends on the target (:func:`faithfulness_score`):

- a detection: its D-RISE similarity with the perturbed image's best candidate (IoU × class
  cosine), since the detection itself may move or vanish; a detection that vanishes scores 0;
- a segmentation region: the mean probability of its class over the pixels the clean image
  painted with it;
- a classifier's class: its softmax probability.

A map has to beat maps drawn without the model (:func:`baseline_maps`): a uniform random map,
the filled box (or region) and a Gaussian at the box's centre (σ = 10 % of the image side). A
detector's receptive fields are local, so the centre blob is a strong baseline: a map that
loses to it does not say more than "the object is here".

Example:
    >>> image = torch.ones(3, 16, 16)
    >>> score = lambda x: x[:, 0, :8].mean(dim=(1, 2))  # the top half's red channel
    >>> top = torch.zeros(16, 16); top[:8] = 1
    >>> good, bad = faithfulness(score, image, torch.stack([top, 1 - top]), baseline="zero")
    >>> good.deletion, good.insertion, good.faithfulness, bad.faithfulness
    (0.25, 0.75, 0.5, -0.5)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.boxes import boxes_to_masks
from taskcam.capture import ModelState
from taskcam.errors import TaskcamError
from taskcam.inputs import BoundInputs, InputBuilder, bind_inputs
from taskcam.masking import check_batch_size, run_batches
from taskcam.metrics.curves import (
    Baseline,
    MetricCurve,
    ScoreFn,
    call_score,
    metric_curve,
    perturbation_start,
    pixel_ranks,
    positive_int,
    step_counts,
)
from taskcam.outputs import logits_of, seg_logits
from taskcam.targets import ClassIndexTarget, MaskTarget, PerturbableTarget, Target

__all__ = [
    "BASELINE_MAPS",
    "Faithfulness",
    "baseline_maps",
    "faithfulness",
    "faithfulness_score",
    "target_faithfulness",
]

ABSENT = 1e-4
"""A clean score at or below this means the target is not in the image: its curves are 0 (a
ratio to a near-zero score would be noise)."""

BASELINE_MAPS = ("random", "box", "centre")
"""The maps drawn without the model that every method is compared with."""


@dataclass(frozen=True, eq=False)
class Faithfulness:
    """Deletion and insertion of one target's score for one map.

    Attributes:
        deletion: area under the deletion curve ÷ the clean score (lower is better).
        insertion: area under the insertion curve ÷ the clean score (higher is better).
        clean: the score on the unperturbed image.
        deletion_curve, insertion_curve: the curves, scores already divided by ``clean``.
    """

    deletion: float
    insertion: float
    clean: float
    deletion_curve: MetricCurve
    insertion_curve: MetricCurve

    @property
    def faithfulness(self) -> float:
        """``insertion - deletion``: high when the map's top pixels carry the score."""
        return self.insertion - self.deletion

    def as_dict(self) -> dict[str, float]:
        """The three numbers a results record holds."""
        return {
            "deletion": self.deletion,
            "insertion": self.insertion,
            "faithfulness": self.faithfulness,
        }


def _check_maps(image: object, saliency: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(image, torch.Tensor) or image.ndim != 3 or not image.is_floating_point():
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise TaskcamError(f"image: expected a floating Tensor[C, H, W], got {got}")
    if not isinstance(saliency, torch.Tensor) or saliency.ndim not in (2, 3):
        got = tuple(saliency.shape) if isinstance(saliency, torch.Tensor) else type(saliency)
        raise TaskcamError(f"saliency: expected Tensor[H, W] or Tensor[K, H, W], got {got}")
    maps = saliency if saliency.ndim == 3 else saliency[None]
    if maps.shape[-2:] != image.shape[-2:]:
        raise TaskcamError(
            f"saliency: maps of size {tuple(maps.shape[-2:])} do not match the image's "
            f"{tuple(image.shape[-2:])}; bring them to the image's size first"
        )
    if not torch.isfinite(maps).all():
        raise TaskcamError("saliency: the maps hold NaN or infinite values")
    return image, maps.detach().to(image.device, torch.float32)


def faithfulness(
    score_fn: ScoreFn,
    image: torch.Tensor,
    saliency: torch.Tensor,
    *,
    steps: int = 8,
    baseline: Baseline = "blur",
    blur_sigma: Optional[float] = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Any:
    """Deletion and insertion of ``score_fn`` for one map or ``K`` maps of the same target.

    Pixels are ranked by each map, highest first. Deletion step ``i`` of ``steps`` replaces
    the top ``round(i * H * W / steps)`` pixels by ``baseline``; insertion starts from the
    baseline and puts them back. The clean image and the baseline, the ends of every curve,
    are scored once, and each map's ``2 (steps - 1)`` points between them: ``2 + 2 K (steps -
    1)`` images in batches of ``batch_size``, under ``torch.no_grad()``. Both areas are
    divided by the clean score; when the clean score is at most :data:`ABSENT` (the target
    is not in the clean image) every curve is 0, never NaN.

    Args:
        score_fn: ``Tensor[N, C, H, W] -> Tensor[N]``, the target's score (see
            :func:`faithfulness_score`).
        image: ``Tensor[C, H, W]``, as ``score_fn`` expects it.
        saliency: ``Tensor[H, W]`` or ``Tensor[K, H, W]`` at the image's size.
        steps: increments per curve (the curve has ``steps + 1`` points).
        baseline: what removed pixels become: ``"blur"`` (default), ``"mean"``, ``"zero"``
            or a ``Tensor[C, H, W]`` (as :func:`taskcam.metrics.deletion`).
        blur_sigma: the blur's std in pixels (default ``max(0.5, 0.025 * max(H, W))``).
        batch_size: perturbed images per ``score_fn`` call.
        progress: show a progress bar.

    Returns:
        A :class:`Faithfulness` for a ``Tensor[H, W]`` map, a list of ``K`` for ``K`` maps.

    Raises:
        TaskcamError: an image that is not ``Tensor[C, H, W]``, maps of another size or with
            NaN, ``steps`` < 1, a bad baseline or batch size.
    """
    image, maps = _check_maps(image, saliency)
    steps = positive_int(steps, "steps")
    check_batch_size(batch_size)
    base = perturbation_start(image, baseline, blur_sigma)
    k_maps, (h, w) = maps.shape[0], maps.shape[-2:]
    n_pixels = h * w
    rank = torch.stack([pixel_ranks(m, descending=True) for m in maps]).view(k_maps, 1, h, w)
    k = step_counts(n_pixels, steps)
    inner = steps - 1  # the points between the clean image and the baseline
    # item 0: the clean image, item 1: the baseline (the ends of every curve, scored once);
    # then per map, deletion's inner points and insertion's
    item_map = torch.cat(
        [torch.zeros(2, dtype=torch.long), torch.arange(k_maps).repeat_interleave(2 * inner)]
    )
    item_insert = torch.cat(
        [
            torch.zeros(2, dtype=torch.bool),
            torch.tensor([False, True]).repeat_interleave(inner).repeat(k_maps),
        ]
    )
    item_step = torch.cat([torch.tensor([0, steps]), torch.arange(1, steps).repeat(2 * k_maps)])
    k_dev = k.to(image.device)

    def evaluate(sl: slice) -> torch.Tensor:
        which = item_map[sl].to(image.device)
        insert = item_insert[sl].to(image.device).view(-1, 1, 1, 1)
        changed = rank[which] < k_dev[item_step[sl].to(image.device)].view(-1, 1, 1, 1)
        start = torch.where(insert, base, image)
        end = torch.where(insert, image, base)
        return call_score(score_fn, torch.where(changed, end, start))

    with torch.no_grad():
        scored = run_batches(
            len(item_map),
            evaluate,
            batch_size=batch_size,
            desc="faithfulness",
            progress=progress,
            unit="image",
        )
    clean, blurred = scored[0], scored[1]
    middle = scored[2:].view(k_maps, 2, inner)
    ends = torch.stack([clean, blurred]).expand(k_maps, 2).reshape(k_maps, 2, 1)
    scores = torch.cat([ends, middle, ends.flip(1)], dim=2)  # [K, 2, steps + 1]
    fractions = k.double() / n_pixels
    clean = float(clean)
    usable = math.isfinite(clean) and clean > ABSENT
    scores = scores / clean if usable else torch.zeros_like(scores)
    scores = torch.nan_to_num(scores, nan=0.0, posinf=0.0, neginf=0.0)
    out = []
    for m in range(k_maps):
        curves = [metric_curve(fractions, s) for s in scores[m]]
        out.append(Faithfulness(curves[0].auc, curves[1].auc, clean, *curves))
    return out if saliency.ndim == 3 else out[0]


def baseline_maps(
    where: torch.Tensor, height: int, width: int, *, seed: int = 0, sigma: float = 0.1
) -> dict[str, torch.Tensor]:
    """Maps drawn without the model, for one box or region: what a method must beat.

    Args:
        where: a box ``Tensor[4]`` (``x1, y1, x2, y2`` in pixels of the ``height × width``
            grid) or a region ``BoolTensor[height, width]``.
        height, width: the map's size.
        seed: seed of the random map.
        sigma: the Gaussian's std as a share of the image's longer side.

    Returns:
        ``{"random": uniform noise, "box": 1 on the box (region), "centre": a Gaussian at the
        box's centre (the region's centroid)}``, each ``Tensor[height, width]``.

    Example:
        >>> maps = baseline_maps(torch.tensor([4.0, 4.0, 13.0, 9.0]), 16, 16)
        >>> sorted(maps), int(maps["box"].sum()), divmod(int(maps["centre"].argmax()), 16)
        (['box', 'centre', 'random'], 45, (6, 8))
    """
    if where.shape == (4,):
        box = where.detach().float().cpu()
        filled = boxes_to_masks(box[None], height, width)[0].float()
        cy, cx = float(box[1] + box[3]) / 2, float(box[0] + box[2]) / 2
    elif where.shape == (height, width):
        filled = where.detach().cpu().bool().float()
        ys, xs = torch.nonzero(filled, as_tuple=True)
        if len(ys) == 0:
            cy, cx = (height - 1) / 2, (width - 1) / 2
        else:
            cy, cx = float(ys.float().mean()), float(xs.float().mean())
    else:
        raise TaskcamError(
            f"baseline_maps: expected a box Tensor[4] or a region Tensor[{height}, {width}], "
            f"got {tuple(where.shape)}"
        )
    s = sigma * max(height, width)
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None] + 0.5
    centre = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * s * s))
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(height, width, generator=generator)
    return {"random": noise, "box": filled, "centre": centre}


class _RegionProbability:
    """Mean probability of one class over a fixed set of pixels (the clean prediction's)."""

    def __init__(self, class_id: int, region: torch.Tensor) -> None:
        self.class_id, self.region = class_id, region.float()

    def __call__(self, output: Any) -> torch.Tensor:
        probs = seg_logits(output).softmax(1)[:, self.class_id]  # [B, H, W]
        region = self.region.to(probs.device)
        return (probs * region).sum(dim=(1, 2)) / region.sum().clamp(min=1)


class _ClassProbability:
    """The softmax probability of one class of a classifier."""

    def __init__(self, class_index: int) -> None:
        self.class_index = class_index

    def __call__(self, output: Any) -> torch.Tensor:
        return logits_of(output).softmax(1)[:, self.class_index]


def faithfulness_score(target: Target, clean_output: Any = None) -> Target:
    """The score whose deletion and insertion judge ``target``'s map.

    Args:
        target: what was explained.
        clean_output: the model's output on the clean image (needed for region targets,
            whose pixels are fixed from it).

    Returns:
        ``target.perturbed()`` for a detection (D-RISE similarity, 0 when it vanishes; a
        detection's box side or objectness is judged by the detection's score too); the
        mean class probability over the clean prediction's pixels for a segmentation region;
        the softmax probability for a classifier's class; else ``target`` itself.
    """
    if isinstance(target, PerturbableTarget):
        if getattr(target, "what", "score") != "score":
            target = copy.copy(target)
            target.what = "score"  # type: ignore[attr-defined]
        return target.perturbed()
    class_id = getattr(target, "class_id", None)
    if isinstance(target, MaskTarget) and isinstance(class_id, int) and clean_output is not None:
        region = target.mask(clean_output).detach()[0]
        return _RegionProbability(class_id, region)
    if isinstance(target, ClassIndexTarget):
        return _ClassProbability(target.class_index)
    return target


def target_faithfulness(
    model: nn.Module,
    image: torch.Tensor,
    targets: Sequence[Target],
    maps: torch.Tensor,
    *,
    steps: int = 8,
    baseline: Baseline = "blur",
    blur_sigma: Optional[float] = None,
    batch_size: int = 32,
    progress: bool = False,
    extra_maps: Optional[Callable[[int], torch.Tensor]] = None,
    forward_kwargs: Optional[dict[str, Any]] = None,
    input_builder: Optional[InputBuilder] = None,
) -> list[list[Faithfulness]]:
    """Deletion and insertion of each target's own score for its map(s), one image.

    Args:
        model: the explained model; it runs in eval mode, and its train/eval flags are
            restored afterwards.
        image: ``Tensor[1, C, H, W]`` or ``Tensor[C, H, W]``, the model's input.
        targets: the ``T`` explained targets.
        maps: ``Tensor[T, H, W]`` or ``Tensor[T, K, H, W]`` (``K`` maps per target, e.g. several
            methods) at the input's size.
        steps, baseline, blur_sigma, batch_size, progress: as :func:`faithfulness`.
        extra_maps: ``extra_maps(t) -> Tensor[E, H, W]``, more maps scored with target ``t``'s
            (baselines), appended after its own.
        forward_kwargs, input_builder: the model's other inputs, as
            :class:`taskcam.Explainer` takes them, for this one image: every perturbed
            forward gets them, a one-row tensor repeated to its rows, a builder's ``rows``
            all 0.

    Returns:
        ``T`` lists of :class:`Faithfulness`, one per map.

    Example:
        >>> from taskcam.targets import ClassTarget
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> x = torch.rand(1, 3, 8, 8)
        >>> rows = target_faithfulness(net, x, [ClassTarget(0)], torch.rand(1, 8, 8), steps=2)
        >>> probability = float(net(x).softmax(1)[0, 0].detach())
        >>> len(rows), len(rows[0]), abs(rows[0][0].clean - probability) < 1e-6
        (1, 1, True)
    """
    x = image if image.ndim == 4 else image[None]
    if x.shape[0] != 1:
        raise TaskcamError(f"target_faithfulness: one image at a time, got {x.shape[0]}")
    grid = maps if maps.ndim == 4 else maps[:, None]
    if grid.shape[0] != len(targets):
        raise TaskcamError(f"got {grid.shape[0]} maps for {len(targets)} targets")
    state = ModelState(model)  # scored in eval mode, as explained; the flags come back after
    forward = bind_inputs(model, forward_kwargs, input_builder)
    if isinstance(forward, BoundInputs):  # every forward: copies of this one image
        forward = forward.for_image(0, 1)
    state.eval_and_freeze(False)
    try:
        with torch.no_grad():
            clean_output = forward(x)
        out = []
        for t, target in enumerate(targets):
            score = faithfulness_score(target, clean_output)

            def score_fn(batch: torch.Tensor, score: Target = score) -> torch.Tensor:
                return score(forward(batch))

            own = grid[t].to(x.device, torch.float32)
            if extra_maps is not None:
                own = torch.cat([own, extra_maps(t).to(own)])
            out.append(
                faithfulness(
                    score_fn,
                    x[0],
                    own,
                    steps=steps,
                    baseline=baseline,
                    blur_sigma=blur_sigma,
                    batch_size=batch_size,
                    progress=progress,
                )
            )
    finally:
        state.restore()
    return out
