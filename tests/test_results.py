"""``results.json`` as docs/results.md writes it down: every kind of run validates against
docs/results.schema.json, and the schema rejects documents that break the contract."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import cv2
import jsonschema
import pytest

from taskcam.data.shapes import make_sample
from taskcam.models import load_model
from taskcam.pipeline import explain_files
from taskcam.render import save_image
from taskcam.results import results_document

SCHEMA = json.loads((Path(__file__).parents[1] / "docs" / "results.schema.json").read_text())
SEED = 9999


def _validate(document: dict) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    for size in (64, 256):
        (folder / str(size)).mkdir()
        for i in range(2):
            save_image(
                folder / str(size) / f"img{i}.png", make_sample(i, seed=SEED, size=size).image
            )
        (folder / str(size) / "broken.png").write_bytes(b"not an image")
    clip = folder / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
    for i in range(3):
        writer.write(cv2.cvtColor(make_sample(i, seed=SEED, size=256).image, cv2.COLOR_RGB2BGR))
    writer.release()
    return folder


@pytest.mark.parametrize(
    "spec, folder, options",
    [
        ("zoo:shapes-cnn", "64", {"methods": ["gradcam", "cam"], "targets": "top2"}),
        ("zoo:shapes-unet", "256", {}),
        ("zoo:shapes-fasterrcnn", "256", {"what": "x2", "targets": "0"}),
        ("zoo:shapes-yolo", "256", {"targets": "class=triangle"}),
        ("zoo:shapes-fasterrcnn", "clip.mp4", {"stride": 2}),
    ],
)
def test_runs_write_results_the_schema_accepts(spec, folder, options, inputs, tmp_path):
    summary = explain_files(
        load_model(spec), [inputs / folder], tmp_path, progress=False, **options
    )
    document = json.loads((tmp_path / "results.json").read_text())
    assert document == summary.results
    _validate(document)
    targets = [t for item in document["items"] for t in item["targets"]]
    assert targets or any("message" in item for item in document["items"])
    for target in targets:
        assert (tmp_path / target["heatmap"]).is_file() and (tmp_path / target["overlay"]).is_file()
    if folder != "clip.mp4":
        assert [f["image"].rsplit("/", 1)[-1] for f in document["failures"]][:1] == ["broken.png"]


def _minimal() -> dict:
    record = {
        "kind": "detection",
        "index": 0,
        "class_id": 1,
        "class_name": "square",
        "score": 0.9,
        "box": [1.0, 2.0, 30.0, 40.0],
        "method": "odam",
        "heatmap": "a/det0_odam.npy",
        "overlay": "a/det0_odam.png",
        "empty": False,
    }
    item = {"image": "a.png", "width": 64, "height": 48, "targets": [record]}
    return results_document(
        model="zoo:shapes-yolo", task="detect", methods=["odam"], layers=["model.15"], items=[item]
    )


def test_the_schema_refuses_what_breaks_the_contract():
    _validate(_minimal())
    extra = _minimal()
    extra["items"][0]["targets"][0]["box_energy"] = 0.1  # fields are only ever added
    _validate(extra)
    extra["items"][0]["targets"][0].update(deletion=0.1, insertion=0.5, faithfulness=0.4)
    _validate(extra)
    broken = []
    for edit in (
        lambda d: d["items"][0]["targets"][0].pop("box"),  # a detection without its box
        lambda d: d["items"][0]["targets"][0].update(kind="class"),  # a class without probability
        lambda d: d["items"][0]["targets"][0].update(heatmap="/abs/det0.npy"),  # absolute path
        lambda d: d["items"][0]["targets"][0].update(box=[1, 2, 3]),
        lambda d: d.update(version=2),
        lambda d: d.update(task="track"),
        lambda d: d["items"][0].pop("width"),
        lambda d: d.pop("complete"),
        lambda d: d["items"][0]["targets"][0].update(deletion=0.1),  # --faithfulness: all three
    ):
        document = copy.deepcopy(_minimal())
        edit(document)
        with pytest.raises(jsonschema.ValidationError):
            _validate(document)
        broken.append(document)
    assert len(broken) == 9
