"""Why did my detector miss this object? A detector explained against your labels.

Held-out shapes images are written with their YOLO labels (``labels/*.txt`` and a
``data.yaml``, as ultralytics datasets are laid out), and the zoo's trained YOLOv8n is run
against them at a threshold high enough that it misses some objects. Every label gets an
outcome: ``hit``, or ``missed`` with the reason (``below_conf``, ``suppressed``,
``wrong_class``, ``no_candidate``) and a map of the candidate that was there; every detection
no label matches is a ``false_positive``. The same in Python: :func:`taskcam.label_outcomes`
on one image whose label names the wrong class::

    python examples/why_missed.py            # -> taskcam-examples/why_missed/
    taskcam explain images/ --model yolo:best.pt --labels data.yaml --report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import taskcam
from taskcam.adapters import adapter_for
from taskcam.data.shapes import write_yolo_dataset
from taskcam.io import read_image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="taskcam-examples/why_missed")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # a small labelled dataset, as ultralytics lays one out
    data = write_yolo_dataset(out / "dataset", n_train=0, n_val=4, size=256)
    images = data.parent / "images" / "val"

    # 1. a whole folder against its labels: what `taskcam explain --labels` does
    detector = taskcam.load_model("zoo:shapes-yolo")
    summary = taskcam.explain_files(
        detector, [images], out / "run", labels_from=str(data), conf=0.9, progress=False
    )
    for item in summary.results["items"]:
        print(Path(item["image"]).name, item["outcomes"])
        for r in item["targets"]:
            if r["outcome"] == "missed":
                print(
                    f"  missed label {r['label']} ({r['label_class']}): {r['reason']}, "
                    f"candidate score {r['candidate_score']:.2f}"
                )

    # 2. the same in Python, one image whose first label names the wrong class
    adapter = adapter_for(detector)  # its taskcam.Detector (ultralytics YOLO here)
    image = read_image(images / "val00000.png")
    labels = taskcam.read_labels(data, [images / "val00000.png"], adapter.class_names)
    mine = labels[str(images / "val00000.png")]
    wrong = taskcam.Labels(
        mine.boxes, (mine.classes + torch.tensor([1] + [0] * (len(mine) - 1))) % 4
    )
    result = taskcam.label_outcomes(adapter, image, wrong)
    print("relabelled:", result.counts)
    for o in result.missed:
        names = adapter.class_names
        print(
            f"  label {o.label} ({names[o.label_class]}): {o.reason}; the detector saw "
            f"{names[o.versus_class]} there ({o.versus_score:.2f} against "
            f"{o.candidate_score:.2f})"
            if o.reason == "wrong_class"
            else f"  label {o.label}: {o.reason}"
        )
    targets = [t for o in result.outcomes for _, t in o.targets]
    maps = taskcam.explain(
        adapter.model, result.x, [targets], layers=adapter.default_layers(), method="odam"
    ).maps
    print("maps:", tuple(maps.shape), "(one per hit, false positive and missed label's target)")
    (out / "relabelled.json").write_text(json.dumps(result.counts))
    pictures = sorted((out / "run").glob("*/all.png"))
    print(f"wrote {out / 'run' / 'results.json'} and {len(pictures)} all.png, e.g. {pictures[0]}")


if __name__ == "__main__":
    main()
