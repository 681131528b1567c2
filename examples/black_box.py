"""A deployed detector with no PyTorch graph, explained as a black box: D-RISE through ONNX Runtime.

The model is a real trained detector shipped as ONNX: NudeNet's YOLOv8n (``pip install
nudenet`` ships ``320n.onnx``, an ultralytics export trained on people: faces, feet, armpits,
...). Nothing here needs PyTorch to run it: ONNX Runtime runs it on masked copies of the photo
and D-RISE (Petsiuk et al., CVPR 2021) weighs each mask by how much of each detection survives.
The gradient methods (Grad-CAM, ODAM, ...) need the graph and are refused with the reason.

Two ways in:

1. the command line, ``--model onnx:PATH``: an ultralytics export is read by its metadata
   (classes, size, stride) and predicted as ``yolo predict`` predicts it::

       taskcam explain bus.jpg --model onnx:320n.onnx --method fast-drise

2. Python, :class:`taskcam.adapters.blackbox.BlackBox` around any callable from a batch of
   images to boxes and per-class scores (here the same file through an ONNX Runtime session
   of our own, read with a decode written here: what you would do for a TensorRT engine, a
   remote service or another framework's model).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import cv2
import nudenet
import numpy as np
import onnxruntime
import torch
import ultralytics

import taskcam
from taskcam.adapters.blackbox import BlackBox
from taskcam.cli import main as taskcam_command
from taskcam.render import detections_picture, save_image

ONNX = Path(nudenet.__file__).parent / "320n.onnx"
PHOTO = Path(ultralytics.__file__).parent / "assets" / "bus.jpg"


def onnx_service(path: Path):
    """A detector known only by its answers: ``Tensor[B, 3, h, w]`` in [0, 1] -> per image,
    boxes ``[N, 4]`` (x1, y1, x2, y2 in input pixels) and class scores ``[N, K]``."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(x: torch.Tensor) -> list[tuple[np.ndarray, np.ndarray]]:
        (raw,) = session.run(None, {name: x.numpy().astype(np.float32)})  # [B, 4 + K, anchors]
        answers = []
        for rows in raw.transpose(0, 2, 1):  # [anchors, 4 + K]
            xy, wh = rows[:, :2], rows[:, 2:4]
            answers.append((np.concatenate([xy - wh / 2, xy + wh / 2], 1), rows[:, 4:]))
        return answers

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="taskcam-examples/black_box")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)

    # 1. the command line: one record and one map per detection
    args = ["explain", str(PHOTO), "--model", f"onnx:{ONNX}", "--method", "fast-drise"]
    taskcam_command([*args, "--conf", "0.2", "--out", str(out / "cli"), "--no-progress"])
    results = json.loads((out / "cli" / "results.json").read_text())
    for r in results["items"][0]["targets"]:
        box = ", ".join(f"{v:.0f}" for v in r["box"])
        print(f"  det {r['index']} {r['class_name']:14s} {r['score']:.2f} [{box}]")
    print(f"wrote {out / 'cli' / 'results.json'}")
    # the gradient methods need a PyTorch graph: refused, with the reason (exit status 2)
    assert taskcam_command([*args[:4], "--method", "gradcam", "--out", str(out / "no")]) == 2

    # 2. any callable: the same file through a session of our own
    names = taskcam.load_model(f"onnx:{ONNX}").class_names
    box = BlackBox(onnx_service(ONNX), size=320, rect=True, conf=0.2, iou=0.7, class_names=names)
    image = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)
    x, placement = box.prepare(image)
    dets = box.detect(x)[0]
    exp = taskcam.explain(box.model, x, [box.targets(dets)], method="fast-drise")
    maps = placement.map_to_image(exp.maps)[0]  # [K, H, W] on the photo
    labels = [f"{k}: {names[c]} {p:.2f}" for k, (c, p) in enumerate(zip(dets.classes, dets.scores))]
    boxes = placement.boxes_to_image(dets.boxes).tolist()
    save_image(out / "callable.png", detections_picture(image, maps, boxes, labels))
    print(f"{len(dets)} detections from the callable; wrote {out / 'callable.png'}")


if __name__ == "__main__":
    main()
