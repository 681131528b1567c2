"""Every script in examples/ runs as a user runs it (a fresh process, offline) and writes the
pictures it says it writes; the detection notebook runs top to bottom."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_the_examples_cover_every_task_and_are_listed():
    names = {p.stem for p in SCRIPTS}
    assert {"yolo_detection", "fasterrcnn_detections", "segmentation_classes"} <= names
    assert {"vit_and_swin", "custom_target", "folder_report", "evaluate_ground_truth"} <= names
    assert "classify_every_method" in names
    listed = (EXAMPLES / "README.md").read_text()
    for path in [*SCRIPTS, EXAMPLES / "detection_walkthrough.ipynb"]:
        assert f"]({path.name})" in listed, f"{path.name} is not in examples/README.md"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_example_runs_offline_and_writes_its_pictures(script, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1", "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "out")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,  # the bar: each example within 180 s
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "wrote" in done.stdout or "tables:" in done.stdout or "report:" in done.stdout
    written = [p for p in (tmp_path / "out").rglob("*") if p.suffix in (".png", ".csv", ".html")]
    assert written, f"{script.name} wrote nothing under --out"
    for line in done.stdout.splitlines():  # every path it names exists
        for word in line.replace(",", " ").split():
            if word.startswith(str(tmp_path)) and word.endswith((".png", ".html", ".csv")):
                assert Path(word).is_file(), word
    assert not list(tmp_path.glob("taskcam-examples*")), "ignored --out"


def test_the_detection_notebook_runs_top_to_bottom():
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    notebook = nbformat.read(EXAMPLES / "detection_walkthrough.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    NotebookClient(notebook, timeout=300, kernel_name="python3").execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4  # the Explanation itself, all detections, one detection, all.png
    text = "".join(o.get("text", "") for o in outputs)
    assert "odam:" in text and "gradcam:" in text
