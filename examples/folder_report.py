"""Explain a folder of images in one call and browse the results in an offline HTML report.

The same run as ``taskcam explain FOLDER --model zoo:shapes-fasterrcnn --report``: every image's
detections, a map and overlay per detection and method, a grid and an ``all.png`` per image,
``results.json`` (its format: docs/results.md), and ``report.html``: a gallery with filters by
class, kind and method, sorting by score or by how much of a map lies in its box, and a view
comparing methods side by side. The run resumes where it stopped if interrupted.

Run: ``python examples/folder_report.py [--out DIR]``
"""

import argparse
from pathlib import Path

from taskcam.data import HELDOUT_SEED, make_sample
from taskcam.models import load_model
from taskcam.options import RunOptions
from taskcam.pipeline import explain_files
from taskcam.render import save_image
from taskcam.report import write_report

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="taskcam-examples/folder-report", help="output folder")
out = Path(parser.parse_args().out)

images = out / "images"
for i in range(4):  # four held-out shapes images stand in for your folder
    save_image(images / f"shapes{i}.png", make_sample(i, seed=HELDOUT_SEED, size=256).image)

loaded = load_model("zoo:shapes-fasterrcnn")
options = RunOptions(methods=("odam", "eigencam"), progress=False, overwrite=True)
summary = explain_files(loaded, [images], out / "run", options)
for item in summary.results["items"]:
    found = ", ".join(
        f"{t['class_name']} {t['score']:.2f}" for t in item["targets"] if t["method"] == "odam"
    )
    print(f"{Path(item['image']).name}: {found or item.get('message')}")
print(f"{summary.n_targets} maps; report: {write_report(summary.out_dir)}")
