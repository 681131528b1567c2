"""Train the shapes zoo: ``taskcam zoo train NAME`` (seeded, with a progress bar).

Training data come from :func:`taskcam.data.make_sample` with seed 0, validation from seed 1;
the held-out set that tests and ``taskcam eval`` use (:data:`taskcam.data.HELDOUT_SEED`) is never
seen here. Classifiers and the Unet train with AdamW and a cosine schedule, Faster R-CNN with
SGD, and YOLO with ultralytics' own trainer.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from taskcam.data.shapes import CLASSES, HELDOUT_SEED, make_sample, write_yolo_dataset
from taskcam.errors import TaskcamError
from taskcam.zoo.shapes_models import (
    CLASSIFY_SIZE,
    DETECT_SIZE,
    NAMES,
    SHAPES_MEAN,
    SHAPES_STD,
    build_architecture,
    weights_path,
    yolo_yaml,
)

__all__ = ["TRAIN_SEED", "VAL_SEED", "heldout_score", "map50", "train_zoo_model"]

TRAIN_SEED = 0
VAL_SEED = 1

# name -> (training samples, epochs, batch size, learning rate)
_RECIPES = {
    "shapes-cnn": (4000, 5, 64, 2e-3),
    "shapes-vit": (8000, 10, 64, 1e-3),
    "shapes-swin": (4000, 5, 64, 1e-3),
    "shapes-unet": (1000, 6, 8, 3e-3),
    "shapes-fasterrcnn": (1200, 6, 4, 0.02),
    "shapes-yolo": (2000, 6, 32, 0.002),
}


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(SHAPES_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SHAPES_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(seed: int, n: int, size: int, max_objects: int, progress: bool, what: str):
    imgs, labels, semantic = [], [], []
    for i in tqdm(range(n), desc=f"generating {what}", disable=not progress, leave=False):
        s = make_sample(i, seed=seed, size=size, max_objects=max_objects)
        imgs.append(torch.from_numpy(s.image))
        labels.append(int(s.labels[0]))
        semantic.append(torch.from_numpy(s.semantic))
    x = torch.stack(imgs).permute(0, 3, 1, 2).contiguous()  # [N, 3, H, W] uint8
    return x, torch.tensor(labels), torch.stack(semantic).long()


def _schedule(opt: torch.optim.Optimizer, total: int, base: float):
    warm = max(1, total // 20)

    def lr(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, lr)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and 90-degree turns: shapes keep their class under both."""
    if torch.rand((), generator=gen) < 0.5:
        x = x.flip(-1)
    k = int(torch.randint(0, 4, (), generator=gen))
    return torch.rot90(x, k, (-2, -1))


def _train_classifier(name: str, recipe: tuple, progress: bool) -> tuple[torch.nn.Module, dict]:
    n, epochs, bs, lr = recipe
    x, y, _ = _images(TRAIN_SEED, n, CLASSIFY_SIZE, 1, progress, "train")
    vx, vy, _ = _images(VAL_SEED, min(500, n), CLASSIFY_SIZE, 1, progress, "val")
    model = build_architecture(name)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * (n // bs)
    sched = _schedule(opt, steps, lr)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    bar = tqdm(total=steps, desc=f"training {name}", disable=not progress)
    for _epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(n // bs):
            idx = order[i * bs : (i + 1) * bs]
            xb = _augment(_normalise(x[idx].float() / 255), gen)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        acc = classifier_accuracy(model, vx, vy)
        bar.write(f"{name} epoch {_epoch + 1}/{epochs}: val accuracy {acc:.4f}")
    bar.close()
    return model.eval(), {"val_accuracy": classifier_accuracy(model, vx, vy)}


@torch.no_grad()
def classifier_accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on uint8 images ``x`` ``[N, 3, H, W]`` and labels ``y``."""
    was = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), 128):
        logits = model(_normalise(x[i : i + 128].float() / 255))
        correct += int((logits.argmax(1) == y[i : i + 128]).sum())
    model.train(was)
    return correct / max(1, len(x))


@torch.no_grad()
def segmentation_miou(model: torch.nn.Module, x: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean IoU over background and the classes, pooled over all images."""
    was = model.training
    model.eval()
    k = len(CLASSES) + 1
    inter = torch.zeros(k)
    union = torch.zeros(k)
    for i in range(0, len(x), 16):
        pred = model(_normalise(x[i : i + 16].float() / 255)).argmax(1)
        gt = masks[i : i + 16]
        for c in range(k):
            inter[c] += ((pred == c) & (gt == c)).sum()
            union[c] += ((pred == c) | (gt == c)).sum()
    model.train(was)
    present = union > 0
    return float((inter[present] / union[present]).mean())


def _train_unet(recipe: tuple, progress: bool) -> tuple[torch.nn.Module, dict]:
    n, epochs, bs, lr = recipe
    x, _, m = _images(TRAIN_SEED, n, DETECT_SIZE, 4, progress, "train")
    vx, _, vm = _images(VAL_SEED, min(100, n), DETECT_SIZE, 4, progress, "val")
    model = build_architecture("shapes-unet")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * (n // bs)
    sched = _schedule(opt, steps, lr)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    bar = tqdm(total=steps, desc="training shapes-unet", disable=not progress)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for i in range(n // bs):
            idx = order[i * bs : (i + 1) * bs]
            both = torch.cat([x[idx].float() / 255, m[idx, None].float()], 1)
            both = _augment(both, gen)
            # Half-size crops: the Unet is fully convolutional, so it trains on crops 4x
            # cheaper and still segments whole 256-px images.
            top, left = (
                int(v) for v in torch.randint(0, DETECT_SIZE // 2 + 1, (2,), generator=gen)
            )
            both = both[..., top : top + DETECT_SIZE // 2, left : left + DETECT_SIZE // 2]
            xb, mb = _normalise(both[:, :3]), both[:, 3].long()
            loss = F.cross_entropy(model(xb), mb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        miou = segmentation_miou(model, vx, vm)
        bar.write(f"shapes-unet epoch {epoch + 1}/{epochs}: val mIoU {miou:.4f}")
    bar.close()
    return model.eval(), {"val_miou": segmentation_miou(model, vx, vm)}


def _detection_batch(seed: int, idx: list[int]):
    images, targets = [], []
    for i in idx:
        s = make_sample(i, seed=seed, size=DETECT_SIZE)
        images.append(torch.from_numpy(s.image).permute(2, 0, 1).float() / 255)
        targets.append(
            {"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels) + 1}
        )
    return images, targets


def _train_fasterrcnn(recipe: tuple, progress: bool) -> tuple[torch.nn.Module, dict]:
    n, epochs, bs, lr = recipe
    n_val = min(200, n)
    model = build_architecture("shapes-fasterrcnn")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps = epochs * (n // bs)
    sched = _schedule(opt, steps, lr)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    bar = tqdm(total=steps, desc="training shapes-fasterrcnn", disable=not progress)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen).tolist()
        for i in range(n // bs):
            images, targets = _detection_batch(TRAIN_SEED, order[i * bs : (i + 1) * bs])
            if torch.rand((), generator=gen) < 0.5:
                images = [im.flip(-1) for im in images]
                for t in targets:
                    b = t["boxes"].clone()
                    b[:, [0, 2]] = DETECT_SIZE - t["boxes"][:, [2, 0]]
                    t["boxes"] = b
            losses = model(images, targets)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        score = detection_map50(model, VAL_SEED, min(100, n_val))
        bar.write(f"shapes-fasterrcnn epoch {epoch + 1}/{epochs}: val mAP50 {score:.4f}")
    bar.close()
    return model.eval(), {"val_map50": detection_map50(model, VAL_SEED, n_val)}


@torch.no_grad()
def detection_map50(model: torch.nn.Module, seed: int, n: int) -> float:
    """COCO-style AP at IoU 0.5 (101 points), averaged over classes, of a torchvision detector."""
    from torchvision.ops import box_iou

    was = model.training
    model.eval()
    preds, gts = [], []
    for start in range(0, n, 8):
        images, targets = _detection_batch(seed, list(range(start, min(n, start + 8))))
        out = model(images)
        preds += [{k: v.cpu() for k, v in o.items()} for o in out]
        gts += targets
    model.train(was)
    return map50(
        [(p["boxes"], p["scores"], p["labels"] - 1) for p in preds],
        [(g["boxes"], g["labels"] - 1) for g in gts],
        box_iou,
    )


def map50(preds, gts, box_iou) -> float:
    """Mean over classes of AP at IoU 0.5 with 101-point interpolation.

    Args:
        preds: per image ``(boxes[N, 4], scores[N], labels[N])``.
        gts: per image ``(boxes[M, 4], labels[M])``.
    """
    aps = []
    for c in range(len(CLASSES)):
        records = []  # (score, is true positive)
        total = 0
        for (pb, ps, pl), (gb, gl) in zip(preds, gts):
            g = gb[gl == c]
            total += len(g)
            keep = pl == c
            b, s = pb[keep], ps[keep]
            order = s.argsort(descending=True)
            b, s = b[order], s[order]
            taken = torch.zeros(len(g), dtype=torch.bool)
            ious = box_iou(b, g) if len(g) and len(b) else torch.zeros(len(b), len(g))
            for j in range(len(b)):
                hit = False
                if len(g):
                    iou = ious[j].masked_fill(taken, -1)
                    best = int(iou.argmax())
                    if iou[best] >= 0.5:
                        taken[best] = True
                        hit = True
                records.append((float(s[j]), hit))
        if total == 0:
            continue
        records.sort(key=lambda r: -r[0])
        tp = np.cumsum([r[1] for r in records])
        fp = np.cumsum([not r[1] for r in records])
        recall = tp / total if len(records) else np.zeros(0)
        precision = tp / np.maximum(tp + fp, 1) if len(records) else np.zeros(0)
        # Precision envelope, then 101 recall points.
        for i in range(len(precision) - 2, -1, -1):
            precision[i] = max(precision[i], precision[i + 1])
        ap = 0.0
        for r in np.linspace(0, 1, 101):
            above = np.nonzero(recall >= r)[0]
            ap += precision[above[0]] if len(above) else 0.0
        aps.append(ap / 101)
    return float(np.mean(aps)) if aps else 0.0


def _train_yolo(recipe: tuple, progress: bool, out: Path) -> dict:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    from ultralytics import YOLO

    n, epochs, bs, lr = recipe
    with tempfile.TemporaryDirectory(prefix="taskcam-yolo-") as tmp:
        data = write_yolo_dataset(
            Path(tmp) / "data",
            n_train=n,
            n_val=min(200, n),
            seed=TRAIN_SEED,
            val_seed=VAL_SEED,
            size=DETECT_SIZE,
        )
        yolo = YOLO(yolo_yaml())
        yolo.train(
            data=str(data),
            epochs=epochs,
            imgsz=DETECT_SIZE,
            batch=bs,
            device="cpu",
            workers=0,
            seed=TRAIN_SEED,
            deterministic=True,
            optimizer="AdamW",
            lr0=lr,
            warmup_epochs=1,
            close_mosaic=3,
            plots=False,
            amp=False,
            project=str(Path(tmp) / "runs"),
            name="shapes",
            exist_ok=True,
            verbose=progress,
        )
        best = Path(tmp) / "runs" / "shapes" / "weights" / "best.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best, out)
        metrics = YOLO(str(out)).val(
            data=str(data), imgsz=DETECT_SIZE, batch=16, device="cpu", plots=False, verbose=False
        )
    return {"val_map50": float(metrics.box.map50)}


def train_zoo_model(
    name: str,
    out: Optional[Path] = None,
    *,
    recipe: Optional[tuple[int, int, int, float]] = None,
    progress: bool = True,
) -> dict:
    """Train zoo model ``name`` from scratch and save its weights to ``out``.

    Args:
        name: one of the shapes zoo names (``taskcam zoo`` lists them).
        out: the weights file; by default the shipped location in ``taskcam/weights``.
        recipe: ``(training samples, epochs, batch size, learning rate)``; by default the
            recipe the shipped weights were trained with.
        progress: show progress bars.

    Returns:
        The validation figures and the time taken.
    """
    if name not in NAMES:
        raise TaskcamError(f"cannot train {name!r}; trainable zoo models: {', '.join(NAMES)}")
    torch.manual_seed(TRAIN_SEED)
    np.random.seed(TRAIN_SEED)
    out = Path(out) if out is not None else weights_path(name)
    recipe = tuple(recipe) if recipe is not None else _RECIPES[name]
    if len(recipe) != 4 or min(recipe) <= 0:
        raise TaskcamError(f"recipe: expected (samples, epochs, batch size, lr) > 0, got {recipe}")
    start = time.perf_counter()
    if name == "shapes-yolo":
        result = _train_yolo(recipe, progress, out)
    else:
        from safetensors.torch import save_file

        if name == "shapes-unet":
            model, result = _train_unet(recipe, progress)
        elif name == "shapes-fasterrcnn":
            model, result = _train_fasterrcnn(recipe, progress)
        else:
            model, result = _train_classifier(name, recipe, progress)
        out.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(state, str(out))
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["weights"] = str(out)
    return result


@torch.no_grad()
def yolo_map50(yolo, seed: int, n: int) -> float:
    """mAP50 of an ultralytics ``YOLO`` on ``n`` samples of stream ``seed`` (its own predict)."""
    from torchvision.ops import box_iou

    preds, gts = [], []
    for start in range(0, n, 16):
        samples = [
            make_sample(i, seed=seed, size=DETECT_SIZE) for i in range(start, min(n, start + 16))
        ]
        results = yolo.predict(
            [np.ascontiguousarray(s.image[..., ::-1]) for s in samples],  # ultralytics wants BGR
            imgsz=DETECT_SIZE,
            conf=0.001,
            iou=0.7,
            device="cpu",
            verbose=False,
        )
        for s, r in zip(samples, results):
            b = r.boxes
            preds.append((b.xyxy.cpu().float(), b.conf.cpu().float(), b.cls.cpu().long()))
            gts.append((torch.from_numpy(s.boxes), torch.from_numpy(s.labels)))
    return map50(preds, gts, box_iou)


def heldout_score(name: str, n: int = 200, seed: int = HELDOUT_SEED) -> tuple[str, float]:
    """Load ``zoo:NAME`` as the CLI does and measure it on ``n`` held-out images.

    Returns:
        ``("accuracy" | "mAP50" | "mIoU", value)``.

    Example:
        >>> heldout_score("shapes-cnn", 50)
        ('accuracy', 1.0)
    """
    from taskcam.models import load_model

    if name not in NAMES:
        raise TaskcamError(f"no shapes zoo model {name!r}; known: {', '.join(NAMES)}")
    loaded = load_model(f"zoo:{name}")
    if name == "shapes-yolo":
        from ultralytics import YOLO

        from taskcam.zoo.shapes_models import weights_path

        return "mAP50", yolo_map50(YOLO(str(weights_path(name))), seed, n)
    if name == "shapes-fasterrcnn":
        return "mAP50", detection_map50(loaded.model, seed, n)
    if name == "shapes-unet":
        x, _, m = _images(seed, n, DETECT_SIZE, 4, False, "held-out")
        return "mIoU", segmentation_miou(loaded.model, x, m)
    x, y, _ = _images(seed, n, CLASSIFY_SIZE, 1, False, "held-out")
    return "accuracy", classifier_accuracy(loaded.model, x, y)
