"""Your own detector, explained through taskcam's detector contract (``taskcam.Detector``).

The detector below is written here and taskcam knows nothing about it: an anchor-free head in
the style of FCOS (Tian et al., ICCV 2019) that predicts, for every cell of a stride-8 grid, a
score per class and the distances from the cell's centre to the four sides of a box, and its own
post-processing (sigmoid scores, the best class per cell, per-class NMS). It trains here for
about 20 seconds on taskcam's shapes benchmark.

Joining taskcam takes a decode function (its raw output -> ``taskcam.Candidates``: boxes in
input pixels and per-class scores) and its post-processing settings. Then every detection gets
its own map from one forward and one backward, D-RISE matching under perturbation, deletion and
insertion, the report and the command line, as a built-in detector family does::

    python examples/own_detector.py              # -> taskcam-examples/own_detector/
    taskcam explain photo.png --model own_detector:build --weights tiny_detector.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

import taskcam
from taskcam.cli import main as taskcam_command
from taskcam.data.shapes import CLASSES, HELDOUT_SEED, make_sample
from taskcam.render import detections_picture, save_image

STRIDE, SIZE = 8, 128


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()
    )


class TinyDetector(nn.Module):
    """``x: [B, 3, H, W]`` in [0, 1] -> ``(class logits [B, K, h, w], box [B, 4, h, w])`` on
    the stride-8 grid (``h, w = H / 8, W / 8``)."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.stem = _block(3, 16, 2)
        self.stage1 = nn.Sequential(_block(16, 32, 2), _block(32, 32, 1))
        self.stage2 = nn.Sequential(_block(32, 64, 2), _block(64, 64, 1))
        self.neck = _block(64, 64, 1)
        self.cls = nn.Conv2d(64, classes, 1)
        self.box = nn.Conv2d(64, 4, 1)
        nn.init.constant_(self.cls.bias, -4.0)  # few cells hold an object

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.neck(self.stage2(self.stage1(self.stem(x))))
        return self.cls(f), self.box(f)

    @staticmethod
    def boxes(box: torch.Tensor) -> torch.Tensor:
        """``[B, 4, h, w]`` distances -> ``[B, h*w, 4]`` xyxy boxes in input pixels."""
        h, w = box.shape[-2:]
        ys, xs = torch.meshgrid(
            torch.arange(h, device=box.device), torch.arange(w, device=box.device), indexing="ij"
        )
        cx, cy = (xs.flatten() + 0.5) * STRIDE, (ys.flatten() + 0.5) * STRIDE
        d = F.softplus(box).flatten(2).transpose(1, 2) * STRIDE  # left, top, right, bottom
        return torch.stack([cx - d[..., 0], cy - d[..., 1], cx + d[..., 2], cy + d[..., 3]], -1)

    @torch.no_grad()
    def postprocess(
        self, output: tuple[torch.Tensor, torch.Tensor], conf=0.3, iou=0.5, max_det=50
    ) -> list[dict[str, torch.Tensor]]:
        """The model's own post-processing: per image, boxes, scores and labels."""
        cls, box = output
        scores, boxes = cls.sigmoid().flatten(2).transpose(1, 2), self.boxes(box)
        results = []
        for s, b in zip(scores, boxes):
            best, label = s.max(dim=1)
            cells = torch.nonzero(best > conf).flatten()
            keep = cells[batched_nms(b[cells], best[cells], label[cells], iou)[:max_det]]
            results.append({"boxes": b[keep], "scores": best[keep], "labels": label[keep]})
        return results


def build() -> taskcam.Detector:
    """The detector as taskcam explains it (``--model own_detector:build``)."""
    model = TinyDetector().eval()

    def decode(output) -> taskcam.Candidates:  # differentiable: maps follow its gradients
        cls, box = output
        return taskcam.Candidates(model.boxes(box), cls.sigmoid().flatten(2).transpose(1, 2))

    return taskcam.Detector(
        model,
        decode,
        size=SIZE,  # ultralytics-style letterbox to 128 × 128, pixels in [0, 1]
        conf=0.3,
        iou=0.5,
        max_det=50,
        class_names=CLASSES,
        layers=["stage1", "stage2", "neck"],  # their maps fused
    )


def train(model: TinyDetector, steps: int = 300) -> None:
    """A short FCOS-style training: focal loss on the cells near each box's centre, GIoU loss
    on their boxes (the smaller of two overlapping boxes keeps a shared cell)."""
    torch.manual_seed(0)
    samples = [make_sample(i, seed=1, size=SIZE) for i in range(384)]
    images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in samples]) / 255
    cells = (torch.arange(SIZE // STRIDE) + 0.5) * STRIDE
    cy, cx = (g.flatten() for g in torch.meshgrid(cells, cells, indexing="ij"))
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=steps)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(samples), (16,)).tolist()
        cls, box = model(images[batch])
        labels = torch.zeros(len(batch), cx.numel(), len(CLASSES))
        targets = torch.zeros(len(batch), cx.numel(), 4)
        positive = torch.zeros(len(batch), cx.numel(), dtype=torch.bool)
        for j, i in enumerate(batch):
            s = samples[i]
            areas = (s.boxes[:, 2] - s.boxes[:, 0]) * (s.boxes[:, 3] - s.boxes[:, 1])
            for k in np.argsort(-areas):  # larger first: a smaller box takes a shared cell
                x1, y1, x2, y2 = s.boxes[k]
                r = max(STRIDE, 0.25 * min(x2 - x1, y2 - y1))
                near = ((cx - (x1 + x2) / 2).abs() <= r) & ((cy - (y1 + y2) / 2).abs() <= r)
                near &= (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
                labels[j, near] = F.one_hot(torch.tensor(int(s.labels[k])), len(CLASSES)).float()
                targets[j, near], positive[j, near] = torch.tensor(s.boxes[k]), True
        count = max(1, int(positive.sum()))
        logits = cls.flatten(2).transpose(1, 2)
        loss = sigmoid_focal_loss(logits, labels, reduction="sum") / count
        if positive.any():
            pred = model.boxes(box)[positive]
            giou = generalized_box_iou_loss(pred, targets[positive], reduction="sum")
            loss = loss + 2 * giou / count
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="taskcam-examples/own_detector")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    detector = build()
    train(detector.model)
    weights = out / "tiny_detector.pt"
    torch.save(detector.model.state_dict(), weights)

    image = make_sample(3, seed=HELDOUT_SEED, size=256, min_objects=3).image  # not seen
    x, placement = detector.prepare(image)
    dets = detector.detect(x)[0]  # taskcam's selection, each detection with its cell
    (own,) = detector.model.postprocess(detector.model(x))  # the model's own
    same = torch.equal(dets.boxes, own["boxes"]) and torch.equal(dets.classes, own["labels"])
    print(f"{len(dets)} detections, the same as its own post-processing: {same}")

    # every detection's own map: one forward, one backward
    exp = taskcam.explain(
        detector.model, x, [detector.targets(dets)], detector.default_layers(), method="odam"
    )
    maps = placement.map_to_image(exp.maps)[0]  # [K, H, W] on the image
    boxes = placement.boxes_to_image(dets.boxes).tolist()
    names = [CLASSES[c] for c in dets.classes]
    labels = [f"{k}: {name} {p:.2f}" for k, (name, p) in enumerate(zip(names, dets.scores))]
    save_image(out / "all.png", detections_picture(image, maps, boxes, labels))
    print(f"wrote {out / 'all.png'}")

    # the command line, as for any built-in family: --model MODULE:FACTORY --weights PATH
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    save_image(out / "heldout.png", image)
    args = ["explain", str(out / "heldout.png"), "--model", "own_detector:build"]
    args += ["--weights", str(weights), "--method", "odam,fast-drise", "--faithfulness"]
    taskcam_command([*args, "--out", str(out / "cli"), "--no-progress"])
    results = json.loads((out / "cli" / "results.json").read_text())
    for record in results["items"][0]["targets"]:
        print(
            f"  {record['method']:10s} det {record['index']} {record['class_name']:8s} "
            f"faithfulness {record['faithfulness']:+.2f}"
        )
    print(f"wrote {out / 'cli' / 'results.json'}")


if __name__ == "__main__":
    main()
