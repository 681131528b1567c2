"""Faithfulness and localisation metrics for saliency maps, batched in torch.

Every faithfulness metric takes a *score function* ``score_fn(images) -> Tensor[N]`` rather
than a model and a class index, so the same code measures a classifier's class probability,
one detection's confidence or one segmentation region's mean logit.

- :func:`deletion` and :func:`insertion` (RISE, Petsiuk et al., BMVC 2018),
- :func:`road` (Rong et al., ICML 2022) with noisy linear imputation (:func:`linear_impute`),
- :func:`pointing_game` (Zhang et al., ECCV 2016) and :func:`energy_pointing_game`
  (Wang et al., CVPR-W 2020) against boxes or masks (:func:`boxes_to_masks`),
- :func:`spearman` and :func:`randomization_check` (Adebayo et al., NeurIPS 2018).
"""

from taskcam.boxes import boxes_to_masks
from taskcam.metrics.curves import (
    Baseline,
    MetricCurve,
    ScoreFn,
    deletion,
    insertion,
    perturbation_start,
)
from taskcam.metrics.localisation import energy_pointing_game, pointing_game
from taskcam.metrics.randomization import (
    ExplainFn,
    RandomizationStep,
    randomization_check,
    spearman,
)
from taskcam.metrics.road import linear_impute, road

__all__ = [
    "Baseline",
    "ExplainFn",
    "MetricCurve",
    "RandomizationStep",
    "ScoreFn",
    "boxes_to_masks",
    "deletion",
    "energy_pointing_game",
    "insertion",
    "linear_impute",
    "perturbation_start",
    "pointing_game",
    "randomization_check",
    "road",
    "spearman",
]
