"""``taskcam eval``: methods × zoo models on held-out shapes images, scored against ground truth.

For every (model, method) pair the table holds, averaged over the images:

- ``pointing_game``: the map's maximum falls on the explained object (within ``tolerance`` px);
For ``shapes-unet`` the object is the ground-truth region of the explained class.

- ``energy_pg``: share of the map's energy inside the object's box (the energy-based pointing
  game of Wang et al., CVPR-W 2020, is defined on boxes); ``energy_mask``: the same inside the
  object's mask (stricter: the box's corners do not count);
- ``deletion`` / ``insertion``: AUC of the explained target's own score as the most salient
  pixels are replaced by / put back into the image's mean colour (Petsiuk et al., BMVC 2018;
  lower / higher is better), divided by the clean image's score
  (:func:`taskcam.faithfulness.faithfulness`). Not the paper's blurred start: a blurred shape
  keeps its colour, which the shapes classes share, so its score starts near the top;
- ``faithfulness``: ``insertion - deletion`` (higher is better); ``beats_centre``: the share of
  targets whose faithfulness beats that of a Gaussian blob at the object's box centre;
- ``road_morf`` / ``road_lerf``: ROAD with noisy linear imputation, most / least relevant
  first (lower / higher is better);
- ``sanity``: Spearman correlation of the maps after every parameter of the model was
  re-initialised (cascading, head to input) with the original maps (near 0 is good);
- ``other_energy`` (detectors): share of the map's energy on the *other* detected objects'
  boxes (outside the explained detection's own box; lower is better);
- ``pointing_game_class`` (detectors): the map's maximum falls on *any* object of the
  detection's class, as Zhang et al. (ECCV 2016) score the pointing game, where every instance
  of the cued category counts. Next to ``pointing_game`` (its own object only) it tells a
  class-wide map (high here, low there) from an instance-specific one (high in both);
- ``median_s``: median seconds per explanation (one image, one target; for detectors, one
  image's call explaining all its detections, divided by their number).

Beside the methods, every model gets three rows of maps drawn without the model
(:func:`taskcam.faithfulness.baseline_maps`, method ``baseline:random``, ``baseline:box`` and
``baseline:centre``: uniform noise, the filled object box, a Gaussian at its centre with σ =
10 % of the image side), scored on the same targets: a method that does not beat them does
not explain the score.

Detectors (``shapes-fasterrcnn``, ``shapes-yolo``) explain every detection that matches a
ground-truth object (IoU > 0.5, same class), all detections of an image in one call; their
deletion/insertion score is the detection's D-RISE similarity with the perturbed image's
candidates (the detection itself may vanish or move), and ROAD and the randomisation check
are not computed for them (a re-initialised detector no longer produces the detection).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from taskcam.data.shapes import HELDOUT_SEED, make_sample
from taskcam.engine import Explainer
from taskcam.errors import TaskcamError
from taskcam.evaluate.tables import aligned_table, write_rows
from taskcam.faithfulness import BASELINE_MAPS, baseline_maps, faithfulness
from taskcam.methods import get_method
from taskcam.metrics import energy_pointing_game, pointing_game, randomization_check, road

__all__ = [
    "COLUMNS",
    "DEFAULT_METHODS",
    "EvalRow",
    "aligned_table",
    "evaluate",
    "format_table",
    "heldout_classification",
    "write_rows",
    "write_table",
]

DEFAULT_METHODS = ("gradcam", "gradcam++", "layercam", "eigencam", "scorecam")
COLUMNS = (
    "model",
    "method",
    "images",
    "pointing_game",
    "energy_pg",
    "energy_mask",
    "deletion",
    "insertion",
    "road_morf",
    "road_lerf",
    "sanity",
    "other_energy",
    "median_s",
    "pointing_game_class",
    "faithfulness",
    "beats_centre",
)


@dataclass
class EvalRow:
    """One (model, method) line of the table; metric values are means over the images."""

    model: str
    method: str
    images: int
    pointing_game: float
    energy_pg: float
    energy_mask: float
    deletion: float
    insertion: float
    road_morf: float
    road_lerf: float
    sanity: float
    median_s: float
    other_energy: float = float("nan")
    pointing_game_class: float = float("nan")
    faithfulness: float = float("nan")
    beats_centre: float = float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in COLUMNS}


def heldout_classification(
    n: int, seed: int = HELDOUT_SEED, size: int = 64
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` single-object held-out images.

    Returns:
        ``images: Tensor[N, 3, S, S]`` in [0, 1], ``labels: Tensor[N]``, object
        ``masks: BoolTensor[N, S, S]`` and ``boxes: Tensor[N, 4]`` (xyxy pixels).
    """
    images, labels, masks, boxes = [], [], [], []
    for i in range(n):
        s = make_sample(i, seed=seed, size=size, max_objects=1)
        images.append(torch.from_numpy(s.image).permute(2, 0, 1).float() / 255)
        labels.append(int(s.labels[0]))
        masks.append(torch.from_numpy(s.masks[0]))
        boxes.append(torch.from_numpy(s.boxes[0]))
    return torch.stack(images), torch.tensor(labels), torch.stack(masks), torch.stack(boxes)


class _Normalised(torch.nn.Module):
    """The zoo model with its normalisation folded in, so metrics perturb [0, 1] pixels."""

    def __init__(self, model: torch.nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def _class_score(model: torch.nn.Module, k: int):
    def score(x: torch.Tensor) -> torch.Tensor:
        return F.softmax(model(x), dim=1)[:, k]

    return score


def _explain_fn(layers, method, reshape, targets):
    def explain_fn(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return Explainer(model, layers, method, reshape=reshape)(x, targets).maps[:, 0]

    return explain_fn


@dataclass
class _Case:
    """One explanation to score: an image, its target, the ground truth and a score function."""

    image: torch.Tensor  # [3, S, S] in [0, 1]
    target: Any
    mask: torch.Tensor  # BoolTensor[S, S]
    box: torch.Tensor  # [4] xyxy
    score: Any  # images [N, 3, S, S] -> Tensor[N] in [0, 1]


def _classification_cases(model, n: int, seed: int, size: int) -> list[_Case]:
    from taskcam.targets import ClassTarget

    images, labels, masks, boxes = heldout_classification(n, seed, size)
    return [
        _Case(
            images[i],
            ClassTarget(int(labels[i])),
            masks[i],
            boxes[i],
            _class_score(model, int(labels[i])),
        )
        for i in range(n)
    ]


def _region_score(model: torch.nn.Module, k: int, region: torch.Tensor):
    def score(x: torch.Tensor) -> torch.Tensor:
        probs = F.softmax(model(x), dim=1)[:, k]  # [N, H, W]
        return (probs * region).sum(dim=(1, 2)) / region.sum().clamp(min=1)

    return score


def _segmentation_cases(model, n: int, seed: int, size: int) -> list[_Case]:
    """One case per (image, object class present): the class's predicted region is the target."""
    from taskcam.adapters.segmentation import RegionTarget

    cases = []
    for i in range(n):
        s = make_sample(i, seed=seed, size=size)
        image = torch.from_numpy(s.image).permute(2, 0, 1).float() / 255
        with torch.no_grad():
            pred = model(image[None]).argmax(1)[0]
        semantic = torch.from_numpy(s.semantic)
        for k in sorted(set(int(c) + 1 for c in s.labels)):
            gt = semantic == k
            ys, xs = torch.nonzero(gt, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            region = pred == k
            target = RegionTarget(k, region if region.any() else gt)
            cases.append(_Case(image, target, gt, box, _region_score(model, k, target.region)))
    return cases


def evaluate(
    models: Sequence[str] = ("shapes-cnn",),
    methods: Sequence[str] = DEFAULT_METHODS,
    *,
    n: int = 100,
    seed: int = HELDOUT_SEED,
    tolerance: Optional[int] = None,
    sanity_images: int = 8,
    steps: int = 16,
    baseline: str = "mean",
    road: bool = True,
    progress: bool = True,
) -> list[EvalRow]:
    """Score ``methods`` on the shapes zoo ``models`` over ``n`` held-out images.

    Classifiers explain each image's object class. ``shapes-unet`` explains each object class
    present in an image as a Seg-Grad-CAM region target (the pixels it predicts as that
    class); its metrics use the ground-truth class region, and its deletion/insertion/ROAD
    score is the class's mean probability over the predicted region.

    Args:
        models: zoo names of shapes models (``shapes-cnn``, ``shapes-vit``, ``shapes-swin``,
            ``shapes-unet``).
        methods: registered method names (``taskcam methods``), the attention methods
            ``rollout``, ``grad-rollout`` and ``legrad`` of ViT-style models included.
        n: held-out images per model.
        seed: the held-out stream (by default one no zoo model trained on).
        tolerance: pointing-game tolerance in pixels; default 15 px scaled from a 224-px image
            to the model's input size.
        sanity_images: explanations used by the randomisation sanity check.
        steps: deletion/insertion curve steps.
        baseline: what deleted pixels become (``"mean"``, ``"blur"``, ``"zero"``; see
            :func:`taskcam.metrics.deletion`).
        road: score ROAD too (classifiers and segmenters; most of an evaluation's time on a
            CPU: its noisy linear imputation solves a sparse system per step); False leaves
            ``road_morf`` and ``road_lerf`` NaN.
        progress: progress bar over (model, method, explanation).

    Returns:
        One :class:`EvalRow` per (model, method), then the model's three baseline rows.

    Example:
        >>> rows = evaluate(["shapes-cnn"], ["gradcam", "eigencam"], n=4, progress=False)
        >>> [(r.method, r.images, r.pointing_game) for r in rows[:2]]
        [('gradcam', 4, 1.0), ('eigencam', 4, 1.0)]
        >>> [r.method for r in rows[2:]]
        ['baseline:random', 'baseline:box', 'baseline:centre']
    """
    if n < 1:
        raise TaskcamError(f"-n: need at least one image, got {n}")
    if baseline not in ("mean", "blur", "zero"):
        raise TaskcamError(f"--baseline: expected mean, blur or zero, got {baseline!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TaskcamError(f"--steps: expected a whole number >= 1, got {steps!r}")
    method_objs = [get_method(m) for m in methods]
    loaded_models = _load_shapes_models(models)

    rows: list[EvalRow] = []
    bar = tqdm(desc="eval", unit="map", disable=not progress)
    for name, loaded in loaded_models:
        size = loaded.preprocess.size[0]
        tol = tolerance if tolerance is not None else max(1, round(15 * size / 224))
        if loaded.task == "detect":
            curve = (steps, baseline)
            rows += _detection_rows(name, loaded, method_objs, n, seed, tol, curve, bar)
            continue
        model = _Normalised(loaded.model, loaded.preprocess.mean, loaded.preprocess.std).eval()
        layers = loaded.layers
        if loaded.task == "segment":
            from taskcam.adapters.segmentation import default_segmentation_layers

            layers = layers or default_segmentation_layers(loaded.model)
            cases = _segmentation_cases(model, n, seed, size)
        else:
            cases = _classification_cases(model, n, seed, size)
        layers = [f"model.{layer}" for layer in layers or []] or None
        bar.total = (bar.total or 0) + len(cases) * len(method_objs)
        base_rows, centre = _baseline_rows(name, n, cases, tol, (steps, baseline))
        for method in method_objs:
            bar.set_postfix(model=name, method=method.name)
            cam = Explainer(model, layers, method, reshape=loaded.reshape)
            maps, times = _explain_cases(cam, cases, bar)
            sample = cases[: min(sanity_images, len(cases))]
            explain_fn = _explain_fn(layers, method, loaded.reshape, [[c.target] for c in sample])
            images = torch.stack([c.image for c in sample])
            steps_done = randomization_check(model, explain_fn, images, max_steps=1)
            scores, faith = _map_scores(maps, cases, tol, (steps, baseline), road_too=road)
            rows.append(
                EvalRow(
                    model=name,
                    method=method.name,
                    images=n,
                    **scores,
                    sanity=float(steps_done[-1].correlation.mean()),
                    median_s=float(statistics.median(times)),
                    beats_centre=float((faith > centre).mean()),
                )
            )
        rows += base_rows
    bar.close()
    return rows


def _baseline_rows(
    name: str, n: int, cases: list[_Case], tol: int, curve: tuple[int, str]
) -> tuple[list[EvalRow], np.ndarray]:
    """The rows of the maps drawn without the model, and each case's centre-blob
    faithfulness (what ``beats_centre`` compares with)."""
    size = cases[0].image.shape[-2:]
    drawn = [baseline_maps(c.box, *size, seed=i) for i, c in enumerate(cases)]
    rows, centre = [], np.zeros(len(cases))
    for kind in BASELINE_MAPS:
        maps = torch.stack([d[kind] for d in drawn])
        scores, faith = _map_scores(maps, cases, tol, curve, road_too=False)
        if kind == "centre":
            centre = faith
        rows.append(
            EvalRow(
                model=name,
                method=f"baseline:{kind}",
                images=n,
                **scores,
                sanity=float("nan"),
                median_s=float("nan"),
            )
        )
    return rows, centre


def _load_shapes_models(models: Sequence[str]) -> list[tuple[str, Any]]:
    """``(name, LoadedModel)`` of each shapes zoo model named in ``models`` (``zoo:`` optional).

    Raises:
        TaskcamError: a name the zoo lacks, or a zoo model without shapes ground truth.
    """
    from taskcam.zoo import available_zoo, build_zoo_model

    tasks = {entry.name: entry.task for entry in available_zoo()}
    names = [name.removeprefix("zoo:") for name in models]
    for name in names:
        if name not in tasks:
            raise TaskcamError(f"no zoo model {name!r}; the zoo has: {', '.join(tasks)}")
        if not name.startswith("shapes-"):
            raise TaskcamError(
                f"zoo:{name} is a {tasks[name]} model without shapes ground truth; eval "
                "scores the shapes zoo models (shapes-cnn, -vit, -swin, -unet, -fasterrcnn, "
                "-yolo)"
            )
    return [(name, build_zoo_model(name)) for name in names]


def _explain_cases(cam: Explainer, cases: list[_Case], bar: Any) -> tuple[torch.Tensor, list]:
    """Each case's map, ``Tensor[N, S, S]``, and the seconds each explanation took."""
    maps, times = [], []
    for case in cases:
        start = time.perf_counter()
        exp = cam(case.image[None], [case.target])
        times.append(time.perf_counter() - start)
        maps.append(exp.maps[0, 0])
        bar.update()
    return torch.stack(maps), times


def _map_scores(
    maps: torch.Tensor,
    cases: list[_Case],
    tol: int,
    curve: tuple[int, str],
    *,
    road_too: bool = True,
) -> tuple[dict[str, float], np.ndarray]:
    """The localisation and faithfulness columns of :class:`EvalRow` for ``maps``
    (``Tensor[N, S, S]``, one per case), averaged over the cases, and each case's
    faithfulness. ``road_too=False`` leaves ROAD out (NaN)."""
    masks = torch.stack([c.mask for c in cases])
    boxes = torch.stack([c.box for c in cases])
    faith: dict[str, list[float]] = {
        "deletion": [],
        "insertion": [],
        "faithfulness": [],
        "road_morf": [],
        "road_lerf": [],
    }
    for case, sal in zip(cases, maps):
        image, score = case.image, case.score
        f = faithfulness(score, image, sal, steps=curve[0], baseline=curve[1])
        for key, value in f.as_dict().items():
            faith[key].append(value)
        if road_too:
            faith["road_morf"].append(road(score, image, sal, order="morf").auc)
            faith["road_lerf"].append(road(score, image, sal, order="lerf").auc)
    return {
        "pointing_game": float(pointing_game(maps, masks, tolerance=tol).float().mean()),
        "energy_pg": float(energy_pointing_game(maps, boxes).mean()),
        "energy_mask": float(energy_pointing_game(maps, masks).mean()),
        **{
            key: float(np.mean(values)) if values else float("nan") for key, values in faith.items()
        },
    }, np.array(faith["faithfulness"])


def _detection_rows(name, loaded, methods, n, seed, tol, curve, bar) -> list[EvalRow]:
    """Every method, and the baselines, on the detections of ``n`` held-out images that match
    an object."""
    from taskcam.adapters import adapter_for

    attention = [m.name for m in methods if m.attention]
    if attention:
        raise TaskcamError(
            f"{name} is a detector; the attention methods {attention} explain ViT-style "
            "classifiers, not detections"
        )
    adapter = adapter_for(loaded)
    images = _detection_images(adapter, loaded, n, seed)
    bar.total = (bar.total or 0) + sum(len(d) for _, d, *_ in images) * len(methods)
    # per image: the detections' targets and their scores on perturbed copies
    targets = [adapter.targets(dets) for _, dets, *_ in images]
    scores = [[_match_score(adapter.model, t.perturbed()) for t in row] for row in targets]
    drawn = []
    for i, (x, dets, *_) in enumerate(images):
        per_det = [
            baseline_maps(b.float().cpu(), *x.shape[-2:], seed=1000 * i + k)
            for k, b in enumerate(dets.boxes)
        ]
        drawn.append({kind: torch.stack([d[kind] for d in per_det]) for kind in BASELINE_MAPS})
    base = {
        kind: _detection_scores(images, [d[kind] for d in drawn], scores, tol, curve)
        for kind in BASELINE_MAPS
    }
    centre = base["centre"][1]
    rows = []
    for method in methods:
        bar.set_postfix(model=name, method=method.name)
        cam = Explainer(adapter.model, adapter.default_layers(), method)
        maps, times = [], []
        for (x, *_), row in zip(images, targets):
            start = time.perf_counter()
            maps.append(cam(x, [row]).maps[0])  # [K, S, S]
            times.append((time.perf_counter() - start) / len(row))
            bar.update(len(row))
        values, faith = _detection_scores(images, maps, scores, tol, curve)
        values["median_s"] = float(statistics.median(times))
        values["beats_centre"] = float((faith > centre).mean())
        rows.append(EvalRow(model=name, method=method.name, images=n, **values))
    for kind, (values, _) in base.items():
        rows.append(EvalRow(model=name, method=f"baseline:{kind}", images=n, **values))
    return rows


def _detection_scores(
    images: list[tuple],
    maps: list[torch.Tensor],
    scores: list[list],
    tol: int,
    curve: tuple[int, str],
) -> tuple[dict[str, float], np.ndarray]:
    """The columns of one method's (or baseline's) detection maps, ``maps[i]``:
    ``Tensor[K, S, S]`` for image ``i``; and each detection's faithfulness."""
    from taskcam.boxes import boxes_to_masks

    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "pointing_game",
            "pointing_game_class",
            "energy_pg",
            "energy_mask",
            "other_energy",
            "deletion",
            "insertion",
            "faithfulness",
        )
    }
    for (x, dets, all_boxes, masks, class_masks, gt_boxes), m, fns in zip(images, maps, scores):
        cols["pointing_game"] += pointing_game(m, masks, tolerance=tol).tolist()
        cols["pointing_game_class"] += pointing_game(m, class_masks, tolerance=tol).tolist()
        cols["energy_pg"] += energy_pointing_game(m, gt_boxes).tolist()
        cols["energy_mask"] += energy_pointing_game(m, masks).tolist()
        all_masks = boxes_to_masks(all_boxes, *m.shape[-2:])  # [N, S, S]
        for k, score in enumerate(fns):
            own = boxes_to_masks(dets.boxes[k : k + 1].float().cpu(), *m.shape[-2:])[0]
            rest = all_masks.any(0) & ~own
            cols["other_energy"].append(float(energy_pointing_game(m[k], rest[None])[0]))
            f = faithfulness(score, x[0], m[k].to(x.device), steps=curve[0], baseline=curve[1])
            for key, value in f.as_dict().items():
                cols[key].append(value)
    values = {k: float(np.mean(v)) for k, v in cols.items()}
    values.update(road_morf=float("nan"), road_lerf=float("nan"), sanity=float("nan"))
    values.setdefault("median_s", float("nan"))
    return values, np.array(cols["faithfulness"])


def _detection_images(adapter: Any, loaded: Any, n: int, seed: int) -> list[tuple]:
    """The held-out images whose detections match ground-truth objects (IoU > 0.5, same
    class), each as ``(image [1, 3, S, S], matched detections, all detected boxes [N, 4],
    gt masks [K, S, S], gt masks of each detection's class [K, S, S], gt boxes [K, 4])``."""
    from torchvision.ops import box_iou

    size = loaded.preprocess.size[0]
    images = []
    for i in range(n):
        s = make_sample(i, seed=seed, size=size)
        x, _ = adapter.prepare(s.image)  # a square image: the letterbox is the identity
        dets = adapter.detect(x)[0]
        gt_boxes = torch.from_numpy(s.boxes).float()
        iou = box_iou(gt_boxes, dets.boxes.float().cpu())  # [G, N]
        keep, gts = [], []
        for g in range(len(gt_boxes)):
            same = dets.classes.cpu() == _detector_class(loaded, int(s.labels[g]))
            cand = torch.where(same & (iou[g] > 0.5), iou[g], torch.zeros_like(iou[g]))
            if len(dets) and cand.max() > 0 and int(cand.argmax()) not in keep:
                keep.append(int(cand.argmax()))
                gts.append(g)
        if not keep:
            continue
        others = dets.boxes.float().cpu()
        masks = torch.from_numpy(s.masks[gts])
        # [K, S, S] every object of each detection's class, its own included
        class_masks = torch.from_numpy(
            np.stack([s.masks[s.labels == s.labels[g]].any(0) for g in gts])
        )
        images.append((x, dets.select(keep), others, masks, class_masks, gt_boxes[gts]))
    return images


def _detector_class(loaded, label: int) -> int:
    """The detector's class id of shapes label ``label`` (two-stage models count background)."""
    names = loaded.class_names or []
    return label + 1 if names and names[0] == "background" else label


def _match_score(model: torch.nn.Module, match):
    def score(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return match(model(x))

    return score


def format_table(rows: Sequence[EvalRow]) -> str:
    """The rows as an aligned text table."""
    cells = []
    for r in rows:
        d = r.as_dict()
        cells.append(
            [
                d[c] if isinstance(d[c], str) else f"{d[c]:.4g}" if c != "images" else str(d[c])
                for c in COLUMNS
            ]
        )
    return aligned_table(COLUMNS, cells)


def write_table(rows: Sequence[EvalRow], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``eval.csv`` and ``eval.json`` to ``out_dir``; returns their paths."""
    return write_rows(COLUMNS, [r.as_dict() for r in rows], out_dir)
