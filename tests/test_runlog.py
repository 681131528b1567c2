"""Folder runs that survive interruption: resumed runs equal uninterrupted ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

import taskcam.pipeline as pipeline
from taskcam import TaskcamError
from taskcam.cli import main
from taskcam.data import make_sample
from taskcam.models import load_model
from taskcam.render import save_image
from taskcam.runlog import LOG_NAME, RunLog

SPECS = {"zoo:shapes-cnn": 64, "zoo:shapes-fasterrcnn": 256}


@pytest.fixture(scope="module", params=list(SPECS))
def case(request, tmp_path_factory):
    """A model and a folder of five real images, one of them not an image."""
    spec = request.param
    folder = tmp_path_factory.mktemp("images")
    for i in range(4):
        save_image(folder / f"img{i}.png", make_sample(i, seed=9999, size=SPECS[spec]).image)
    (folder / "img2_broken.png").write_bytes(b"not a png")
    return load_model(spec), folder


def _results(out):
    return json.loads((out / "results.json").read_text())


def _interrupt_at(monkeypatch, call: int):
    """Ctrl-C while the ``call``-th image is being read (as SIGINT would raise it there)."""
    real = pipeline.read_image
    calls = []

    def load(path):
        calls.append(path)
        if len(calls) == call:
            raise KeyboardInterrupt
        return real(path)

    monkeypatch.setattr(pipeline, "read_image", load)
    return calls


def test_an_interrupted_run_resumes_to_the_uninterrupted_results(case, tmp_path, monkeypatch):
    loaded, folder = case
    whole = pipeline.explain_files(loaded, [folder], tmp_path / "whole", progress=False)
    assert len(whole.results["items"]) == 4 and len(whole.failures) == 1
    assert whole.results["complete"] is True

    out = tmp_path / "resumed"
    _interrupt_at(monkeypatch, 5)  # after img0, img1, img2 and the broken file
    with pytest.raises(KeyboardInterrupt):
        pipeline.explain_files(loaded, [folder], out, progress=False)
    partial = _results(out)  # consistent: the finished images, marked incomplete
    assert partial["complete"] is False
    assert [item["image"] for item in partial["items"]] == [
        str(folder / f"img{i}.png") for i in (0, 1, 2)
    ]
    logged = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    assert sum("item" in e for e in logged) == 3 and sum("error" in e for e in logged) == 1

    calls = _interrupt_at(monkeypatch, 10**9)
    resumed = pipeline.explain_files(loaded, [folder], out, progress=False)
    # the three finished images are skipped; the failure is tried again
    assert [p.name for p in calls] == ["img2_broken.png", "img3.png"]
    assert resumed.resumed == 3
    assert resumed.results == whole.results
    for item in whole.results["items"]:
        for target in item["targets"]:
            a = np.load(tmp_path / "whole" / target["heatmap"])
            b = np.load(out / target["heatmap"])
            np.testing.assert_allclose(a, b, atol=1e-6)

    again = pipeline.explain_files(loaded, [folder], out, progress=False)
    assert [p.name for p in calls[2:]] == ["img2_broken.png"]  # only the failure is retried
    assert again.results == whole.results and again.resumed == 4


def test_a_partial_last_log_line_is_redone(case, tmp_path):
    loaded, folder = case
    out = tmp_path / "out"
    whole = pipeline.explain_files(loaded, [folder], out, progress=False)
    log = out / LOG_NAME
    lines = log.read_text().splitlines()
    last_item = max(i for i, line in enumerate(lines) if '"item"' in line)
    cut = "\n".join(lines[:last_item]) + "\n" + lines[last_item][:40]  # killed while writing
    log.write_text(cut)
    again = pipeline.explain_files(loaded, [folder], out, progress=False)
    assert again.resumed == 3
    assert again.results == whole.results


def test_another_run_in_the_same_folder_is_refused_unless_overwritten(case, tmp_path):
    loaded, folder = case
    out = tmp_path / "out"
    pipeline.explain_files(loaded, [folder], out, progress=False)
    with pytest.raises(TaskcamError, match=r"another run \(different methods\).*--overwrite"):
        pipeline.explain_files(loaded, [folder], out, methods=["layercam"], progress=False)
    redone = pipeline.explain_files(
        loaded, [folder], out, methods=["layercam"], overwrite=True, progress=False
    )
    assert redone.resumed == 0 and redone.results["methods"] == ["layercam"]
    assert all(t["method"] == "layercam" for i in redone.results["items"] for t in i["targets"])


def test_a_folder_with_results_but_no_log_is_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    with pytest.raises(TaskcamError, match="without a run log"):
        RunLog(tmp_path, {"model": "x"})
    assert RunLog(tmp_path, {"model": "x"}, overwrite=True).resumed == 0


def test_the_command_reports_ctrl_c_and_resumes(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        save_image(folder / f"img{i}.png", make_sample(i, seed=9999, size=64).image)
    argv = ["explain", str(folder), "--model", "zoo:shapes-cnn", "--out", str(tmp_path / "out")]
    _interrupt_at(monkeypatch, 2)
    assert main([*argv, "--no-progress"]) == 130
    assert "resumes the run" in capsys.readouterr().err
    _interrupt_at(monkeypatch, 10**9)
    assert main([*argv, "--no-progress"]) == 0
    assert "(1 done by an earlier run)" in capsys.readouterr().out
    assert len(_results(tmp_path / "out")["items"]) == 3
