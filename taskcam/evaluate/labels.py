"""``taskcam eval --labels``: which method explains *your* detector on *your* labelled images.

Every image's labels and detections get their outcome (:mod:`taskcam.adapters.detection.
outcomes`); each hit, missed label and false positive is explained by every method, and each
map is scored, split by outcome:

- ``pointing_game``: the map's maximum falls in the label's box (within ``tolerance`` px;
  Zhang et al., ECCV 2016); a false positive, which has no label, in its own box;
- ``energy_in_box``: the share of the map's energy in that box (Wang et al., CVPR-W 2020);
- ``deletion`` / ``insertion`` / ``faithfulness``: the explained score as the map's most
  salient pixels are removed / put back (Petsiuk et al., BMVC 2018), divided by the clean
  score, and ``insertion - deletion``;
- ``beats_centre`` / ``beats_random``: the share of targets whose faithfulness beats a
  Gaussian at the box centre / a random map, drawn without the model
  (:func:`taskcam.faithfulness.baseline_maps`); those baselines get rows of their own.

The detector's own ``precision`` and ``recall`` at the run's threshold and IoU head the table.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from taskcam.adapters import adapter_for
from taskcam.adapters.detection.labels import read_labels
from taskcam.adapters.detection.matching import MATCH_IOU
from taskcam.adapters.detection.outcomes import OUTCOMES, label_outcomes
from taskcam.engine import Explainer
from taskcam.errors import TaskcamError
from taskcam.evaluate.tables import aligned_table, write_rows
from taskcam.faithfulness import baseline_maps, target_faithfulness
from taskcam.io import list_images, read_image
from taskcam.loaded import LoadedModel
from taskcam.methods import get_method
from taskcam.metrics import energy_pointing_game, pointing_game

__all__ = ["LABEL_COLUMNS", "LabelEval", "LabelEvalRow", "evaluate_labels"]

LABEL_METHODS = ("odam", "gradcam", "layercam")
"""The methods ``taskcam eval --labels`` compares by default."""

BASELINES = ("centre", "random")
"""Maps drawn without the model that every method must beat."""

LABEL_COLUMNS = (
    "method",
    "outcome",
    "targets",
    "pointing_game",
    "energy_in_box",
    "deletion",
    "insertion",
    "faithfulness",
    "beats_centre",
    "beats_random",
    "median_s",
)


@dataclass
class LabelEvalRow:
    """One (method, outcome) line: means over that outcome's targets (``all``: every one)."""

    method: str
    outcome: str
    targets: int
    pointing_game: float
    energy_in_box: float
    deletion: float
    insertion: float
    faithfulness: float
    beats_centre: float
    beats_random: float
    median_s: float


@dataclass
class LabelEval:
    """The table and the detector's own numbers on the labelled images.

    Attributes:
        rows: per method (then per baseline), one row per outcome and one for ``all``.
        counts: labels hit, labels missed, false positives, over every image.
        images: how many images were scored.
    """

    rows: list[LabelEvalRow]
    counts: dict[str, int]
    images: int
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def precision(self) -> float:
        """Detections that hit a label, of all detections (NaN without detections)."""
        found = self.counts["hit"] + self.counts["false_positive"]
        return self.counts["hit"] / found if found else float("nan")

    @property
    def recall(self) -> float:
        """Labels hit, of all labels (NaN without labels)."""
        labels = self.counts["hit"] + self.counts["missed"]
        return self.counts["hit"] / labels if labels else float("nan")

    def format(self) -> str:
        """The table as aligned text, under the detector's precision and recall."""
        c = self.counts
        why = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        head = (
            f"{self.images} image(s): precision {self.precision:.3f}, recall "
            f"{self.recall:.3f} ({c['hit']} hit, {c['missed']} missed: {why}; "
            f"{c['false_positive']} false positive)"
        )
        cells = []
        for row in self.rows:
            values = asdict(row)
            cells.append(
                [
                    v if isinstance(v, str) else str(v) if isinstance(v, int) else f"{v:.3f}"
                    for v in (values[name] for name in LABEL_COLUMNS)
                ]
            )
        return "\n".join([head, aligned_table(LABEL_COLUMNS, cells)])

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        """``eval.csv`` (the rows) and ``eval.json`` (rows, counts, precision, recall)."""
        rows = [asdict(r) for r in self.rows]
        summary = {
            "images": self.images,
            "counts": self.counts,
            "reasons": self.reasons,
            "precision": self.precision,
            "recall": self.recall,
            "rows": rows,
        }
        return write_rows(LABEL_COLUMNS, rows, out_dir, summary)


@dataclass
class _Scored:
    """One explained target's numbers for one map."""

    outcome: str
    pointing: float
    energy: float
    deletion: float
    insertion: float
    beats: dict[str, bool]
    seconds: float = float("nan")


def evaluate_labels(
    loaded: LoadedModel,
    inputs: Sequence[str | Path],
    labels_from: str | Path,
    methods: Optional[Sequence[str]] = None,
    *,
    iou: float = MATCH_IOU,
    conf: Optional[float] = None,
    steps: int = 8,
    tolerance: float = 15,
    baseline: str = "blur",
    progress: bool = True,
) -> LabelEval:
    """Score ``methods`` on a detector's labelled images, split by outcome (module doc).

    Args:
        loaded: a detector (:func:`taskcam.models.load_model`).
        inputs: image files or folders.
        labels_from: their labels (a YOLO label folder or ``data.yaml``, COCO JSON, VOC XML).
        methods: method names (default :data:`LABEL_METHODS`).
        iou: the IoU a detection needs to hit a label.
        conf: the detector's score threshold (None: its own).
        steps: deletion/insertion steps.
        baseline: what deleted pixels become (``"blur"``, ``"mean"``, ``"zero"``: see
            :func:`taskcam.faithfulness.faithfulness`).
        tolerance: the pointing game's tolerance in pixels.
        progress: a progress bar over the images.

    Raises:
        TaskcamError: a model that is not a detector, no images, unreadable labels.
    """
    if not loaded.is_detector:
        raise TaskcamError(f"eval --labels: {loaded.spec} is a {loaded.task} model, not a detector")
    adapter = adapter_for(loaded, conf)
    names = list(methods or LABEL_METHODS)
    explainers = {
        m: Explainer(adapter.model, adapter.default_layers(), get_method(m), progress=False)
        for m in names
    }
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    truth = read_labels(labels_from, paths, adapter.class_names)
    scored: dict[str, list[_Scored]] = {m: [] for m in [*names, *BASELINES]}
    counts = {k: 0 for k in OUTCOMES}
    reasons: dict[str, int] = {}
    for path in tqdm(paths, desc="eval", unit="img", disable=not progress):
        result = label_outcomes(adapter, read_image(path), truth[str(path)], iou=iou)
        for k, v in result.counts.items():
            counts[k] += v
        for o in result.missed:
            reasons[o.reason or ""] = reasons.get(o.reason or "", 0) + 1
        if result.outcomes:
            _score_image(adapter, result, explainers, scored, steps, tolerance, baseline)
    rows = [row for m in scored for row in _rows(m, scored[m])]
    return LabelEval(rows, counts, len(paths), reasons)


def _score_image(
    adapter: Any,
    result: Any,
    explainers: dict[str, Explainer],
    scored: dict[str, list[_Scored]],
    steps: int,
    tolerance: float,
    baseline: str,
) -> None:
    """Every method's map of each outcome's own score on one image, scored (and the maps
    drawn without the model)."""
    outcomes = result.outcomes
    targets = [o.targets[0][1] for o in outcomes]  # the detection's, or the label class's
    x, placement = result.x, result.placement
    h, w = x.shape[-2:]
    boxes = [o.box.detach().float().cpu() for o in outcomes]  # input pixels
    where = [
        torch.as_tensor(o.label_box if o.label_box is not None else _image_box(o, placement))
        for o in outcomes
    ]
    drawn = [baseline_maps(b, h, w, seed=t) for t, b in enumerate(boxes)]
    for name, explainer in explainers.items():
        start = time.perf_counter()
        maps = explainer(x, [targets]).maps[0]  # [T, h, w]
        seconds = (time.perf_counter() - start) / len(targets)
        extra = [torch.stack([d[b] for b in BASELINES]) for d in drawn]
        rows = target_faithfulness(
            adapter.model,
            x,
            targets,
            maps,
            steps=steps,
            baseline=baseline,
            extra_maps=lambda t, extra=extra: extra[t],
        )
        every = torch.cat([maps[:, None], torch.stack(extra)], dim=1)  # [T, 1 + E, h, w]
        in_image = placement.map_to_image(every).clamp(0, 1).cpu()
        for t, o in enumerate(outcomes):
            own, *base = rows[t]
            local = _localised(in_image[t], where[t], tolerance)
            beats = {b: own.faithfulness > f.faithfulness for b, f in zip(BASELINES, base)}
            scored[name].append(
                _Scored(o.outcome, *local[0], own.deletion, own.insertion, beats, seconds)
            )
            if name == next(iter(explainers)):  # the baselines once
                for k, (b, f) in enumerate(zip(BASELINES, base)):
                    scored[b].append(_Scored(o.outcome, *local[1 + k], f.deletion, f.insertion, {}))


def _image_box(outcome: Any, placement: Any) -> list[float]:
    """A false positive's own box in image pixels (it has no label)."""
    return placement.boxes_to_image(outcome.box.float()[None]).cpu()[0].tolist()


def _localised(maps: torch.Tensor, box: torch.Tensor, tolerance: float) -> list[tuple]:
    """Per map ``[K, H, W]``: (pointing game, energy in ``box``)."""
    box = box.float()
    hits = pointing_game(maps, box[None].expand(len(maps), 4), tolerance=tolerance)
    energy = energy_pointing_game(maps, box[None].expand(len(maps), 4))
    return [(float(p), float(e)) for p, e in zip(hits, energy)]


def _rows(method: str, items: list[_Scored]) -> list[LabelEvalRow]:
    """The method's rows: one per outcome that has targets, then ``all``."""
    rows = []
    for outcome in (*OUTCOMES, "all"):
        part = [s for s in items if outcome in ("all", s.outcome)]
        if not part:
            continue

        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else float("nan")

        deletion = mean([s.deletion for s in part])
        insertion = mean([s.insertion for s in part])
        beats = {b: mean([float(s.beats[b]) for s in part if b in s.beats]) for b in BASELINES}
        seconds = [s.seconds for s in part if not np.isnan(s.seconds)]
        rows.append(
            LabelEvalRow(
                method=method if method not in BASELINES else f"baseline:{method}",
                outcome=outcome,
                targets=len(part),
                pointing_game=mean([s.pointing for s in part]),
                energy_in_box=mean([s.energy for s in part]),
                deletion=deletion,
                insertion=insertion,
                faithfulness=insertion - deletion,
                beats_centre=beats["centre"],
                beats_random=beats["random"],
                median_s=statistics.median(seconds) if seconds else float("nan"),
            )
        )
    return rows
