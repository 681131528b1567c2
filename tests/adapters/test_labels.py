"""Ground-truth labels: YOLO, COCO and Pascal VOC datasets written here, read back in the
original images' pixels and the model's class numbering; ``--box`` specs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from taskcam.adapters.detection.box_specs import box_labels, parse_box
from taskcam.adapters.detection.labels import Labels, read_labels
from taskcam.errors import TaskcamError

pytest.importorskip("supervision")

COCO80 = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck"]
COCO80 += [f"class{i}" for i in range(8, 80)]


def _image(path: Path, w: int, h: int) -> Path:
    """A real PNG of ``w`` x ``h`` pixels."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(w * h)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return path


def _yolo_row(cls: int, box: list[float], w: int, h: int) -> str:
    """A YOLO row for a box in pixels (normalised as YOLO keeps it)."""
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
    return f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _close(labels: Labels, boxes: list[list[float]]) -> None:
    assert labels.boxes.dtype == torch.float32 and labels.classes.dtype == torch.long
    assert torch.allclose(labels.boxes, torch.tensor(boxes, dtype=torch.float32), atol=1e-3)


BOX_A = [[12.5, 30.0, 97.25, 150.0], [200.0, 10.0, 319.0, 60.5]]  # on a 320 x 200 image
BOX_B = [[3.0, 100.0, 140.0, 233.0]]  # on a 150 x 240 image


@pytest.fixture
def yolo(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A YOLO label folder without names: two labelled images of different sizes, one
    without a .txt."""
    images = [
        _image(tmp_path / "img" / "a.png", 320, 200),
        _image(tmp_path / "img" / "b.jpg", 150, 240),
        _image(tmp_path / "img" / "c.png", 64, 48),
    ]
    rows_a = [_yolo_row(2, BOX_A[0], 320, 200), _yolo_row(0, BOX_A[1], 320, 200)]
    _write(tmp_path / "labels" / "a.txt", "\n".join(rows_a) + "\n")
    _write(tmp_path / "labels" / "b.txt", _yolo_row(1, BOX_B[0], 150, 240) + "\n")
    return tmp_path / "labels", images


def test_yolo_folder_without_names_keeps_ids_in_image_pixels(yolo):
    folder, images = yolo
    out = read_labels(folder, [str(p) for p in images], COCO80)
    assert list(out) == [str(p) for p in images]
    a, b, c = out.values()
    _close(a, BOX_A)
    assert a.classes.tolist() == [2, 0] and a.names == ["car", "person"]
    _close(b, BOX_B)
    assert b.classes.tolist() == [1] and b.names == ["bicycle"]
    assert len(c) == 0 and c.boxes.shape == (0, 4)  # no .txt: no objects


def test_yolo_keys_as_given_and_same_stem_in_two_folders(tmp_path):
    """Images sharing a name get the same label file, each scaled to its own size."""
    small = _image(tmp_path / "x" / "p.png", 100, 50)
    large = _image(tmp_path / "y" / "p.png", 400, 300)
    _write(tmp_path / "labels" / "p.txt", "0 0.5 0.5 0.5 0.5\n")
    out = read_labels(tmp_path / "labels", [small, Path(large)], None)
    assert list(out) == [str(small), str(large)]
    _close(out[str(small)], [[25, 12.5, 75, 37.5]])
    _close(out[str(large)], [[100, 75, 300, 225]])
    assert out[str(small)].names == ["0"]  # no names anywhere: ids as text


def test_yolo_data_yaml_in_parent_same_ids(yolo):
    folder, images = yolo
    _write(folder.parent / "data.yaml", "names:\n  0: person\n  1: bicycle\n  2: car\n")
    out = read_labels(folder, images, COCO80)
    assert out[str(images[0])].classes.tolist() == [2, 0]
    assert out[str(images[0])].names == ["car", "person"]


def test_yolo_names_that_disagree_map_by_name_ignoring_case(yolo):
    folder, images = yolo
    _write(folder / "dataset.yaml", "names: [Bicycle, cow, CAR]\n")
    out = read_labels(folder, [images[0], images[2]], COCO80)  # b.txt's cow is not read
    assert out[str(images[0])].classes.tolist() == [2, 1]  # CAR -> car, Bicycle -> bicycle
    assert out[str(images[0])].names == ["car", "bicycle"]
    with pytest.raises(TaskcamError, match=r"class \['cow'\] not among") as e:
        read_labels(folder, images, ["bicycle", "car"])  # b.txt uses class 1: cow
    assert "['Bicycle', 'cow', 'CAR']" in str(e.value) and "['bicycle', 'car']" in str(e.value)


def test_yolo_classes_txt(yolo):
    folder, images = yolo
    _write(folder / "classes.txt", "dog\ncat\nperson\n")
    out = read_labels(folder, images, ["person", "dog", "cat"])
    assert out[str(images[0])].classes.tolist() == [0, 1]  # person, dog
    assert out[str(images[1])].names == ["cat"]


def test_yolo_id_beyond_the_model_is_refused_naming_the_file(yolo):
    folder, images = yolo
    with pytest.raises(TaskcamError, match=r"a\.txt: class 2 does not exist.*2 classes"):
        read_labels(folder, images, ["person", "bicycle"])


def test_yolo_bad_row_names_the_real_file(yolo):
    folder, images = yolo
    _write(folder / "b.txt", "1 0.5 0.5\n")
    with pytest.raises(TaskcamError) as e:
        read_labels(folder, images, COCO80)
    assert str(folder / "b.txt") in str(e.value) and "taskcam-labels-" not in str(e.value)


def test_yolo_data_yaml_finds_labels_beside_images(tmp_path):
    """A data.yaml: each image's .txt in ``labels/`` beside its ``images/`` folder (the
    run's images there), else by name in the labels folders of its splits."""
    root = tmp_path / "ds"
    val = _image(root / "images" / "val" / "v.png", 320, 200)
    elsewhere = _image(tmp_path / "copy" / "t.png", 150, 240)
    _write(root / "labels" / "val" / "v.txt", _yolo_row(1, BOX_A[0], 320, 200) + "\n")
    _write(root / "labels" / "train" / "t.txt", _yolo_row(0, BOX_B[0], 150, 240) + "\n")
    data = {"path": str(root), "train": "images/train", "val": "images/val", "names": ["a", "b"]}
    data_yaml = _write(root / "data.yaml", json.dumps(data))  # JSON is YAML
    for path in (data_yaml, root):  # the file, or the dataset folder holding it
        out = read_labels(path, [val, elsewhere], ["b", "a"])
        _close(out[str(val)], [BOX_A[0]])
        assert out[str(val)].classes.tolist() == [0] and out[str(val)].names == ["b"]
        _close(out[str(elsewhere)], BOX_B)
        assert out[str(elsewhere)].classes.tolist() == [1]


def _coco(tmp_path: Path) -> tuple[Path, list[Path]]:
    images = [
        _image(tmp_path / "photos" / "a.png", 320, 200),
        _image(tmp_path / "photos" / "b.png", 150, 240),
        _image(tmp_path / "photos" / "unlisted.png", 30, 20),
    ]
    data = {
        "images": [
            {"id": 10, "file_name": "val2017/a.png", "width": 320, "height": 200},
            {"id": 11, "file_name": "b.png", "width": 150, "height": 240},
            {"id": 12, "file_name": "other.png", "width": 10, "height": 10},
        ],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 3, "name": "car"},
            {"id": 18, "name": "dog"},
        ],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [12.5, 30, 84.75, 120]},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [200, 10, 119, 50.5]},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5], "iscrowd": 1},
            {"id": 4, "image_id": 11, "category_id": 18, "bbox": [3, 100, 137, 133]},
            {"id": 5, "image_id": 12, "category_id": 18, "bbox": [1, 1, 2, 2]},
        ],
    }
    return _write(tmp_path / "instances.json", json.dumps(data)), images


def test_coco_sparse_one_based_ids_map_by_name(tmp_path):
    path, images = _coco(tmp_path)
    model = ["dog", "car", "person"]
    out = read_labels(path, images, model)
    a, b, unlisted = (out[str(p)] for p in images)
    _close(a, BOX_A)  # the crowd annotation is left out
    assert a.classes.tolist() == [1, 2] and a.names == ["car", "person"]
    _close(b, BOX_B)
    assert b.classes.tolist() == [0] and b.names == ["dog"]
    assert len(unlisted) == 0


def test_coco_class_the_model_lacks_names_both_lists(tmp_path):
    path, images = _coco(tmp_path)
    with pytest.raises(TaskcamError) as e:
        read_labels(path, images, ["person", "car"] + [f"c{i}" for i in range(30)])
    message = str(e.value)
    assert "['dog'] not among the model's classes" in message
    assert "['person', 'car', 'dog']" in message and "(32 in all)" in message
    assert str(path) in message
    read_labels(path, images[:1], ["person", "car"])  # a.png has no dog: fine
    with pytest.raises(TaskcamError, match="model has no class names"):
        read_labels(path, images, None)
    with pytest.raises(TaskcamError, match=r"none of the run's images is in it.*unlisted\.png"):
        read_labels(path, images[2:], ["person"])
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 2
    _write(path, json.dumps(data))
    with pytest.raises(TaskcamError, match=r"instances\.json: category ids \[2\] not in"):
        read_labels(path, images, ["dog", "car", "person"])


def _voc(path: Path, objects: list[tuple[str, list[int]]]) -> Path:
    rows = "".join(
        f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b in objects
    )
    return _write(path, f"<annotation><filename>{path.stem}.png</filename>{rows}</annotation>")


def test_pascal_voc_folder_and_file(tmp_path):
    images = [_image(tmp_path / "a.png", 320, 200), _image(tmp_path / "b.png", 150, 240)]
    _voc(tmp_path / "xml" / "a.xml", [("car", [13, 31, 97, 150]), ("Person", [201, 11, 319, 60])])
    out = read_labels(tmp_path / "xml", images, COCO80)
    # VOC's 1-based xmin/ymin become 0-based pixel edges; xmax/ymax as written
    _close(out[str(images[0])], [[12, 30, 97, 150], [200, 10, 319, 60]])
    assert out[str(images[0])].classes.tolist() == [2, 0]
    assert out[str(images[0])].names == ["car", "person"]
    assert len(out[str(images[1])]) == 0
    one = read_labels(tmp_path / "xml" / "a.xml", images, COCO80)
    assert one[str(images[0])].classes.tolist() == [2, 0] and len(one[str(images[1])]) == 0
    _voc(tmp_path / "xml" / "b.xml", [("zebra", [1, 1, 9, 9])])
    with pytest.raises(TaskcamError, match=r"zebra.*not among the model's classes"):
        read_labels(tmp_path / "xml", images, COCO80)
    with pytest.raises(TaskcamError, match="no image of the run is named 'a'"):
        read_labels(tmp_path / "xml" / "a.xml", images[1:], COCO80)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda t: t / "missing.json", "missing.json: no such file or folder"),
        (lambda t: _write(t / "labels.csv", "a,b\n"), r"labels\.csv: unknown format"),
        (lambda t: _write(t / "empty" / "notes.md", "x"), r"empty: no label files"),
        (lambda t: _write(t / "bad.json", "{not json"), r"bad\.json: not a readable JSON"),
        (lambda t: _write(t / "list.json", "[1, 2]"), r"list\.json: not a COCO file"),
    ],
)
def test_bad_paths_are_named(tmp_path, make, match):
    path = make(tmp_path)
    with pytest.raises(TaskcamError, match=match):
        read_labels(path.parent if path.name == "notes.md" else path, [tmp_path / "a.png"], None)


def test_labelled_image_that_does_not_exist_is_named(tmp_path):
    _write(tmp_path / "labels" / "gone.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(TaskcamError, match=r"image .*gone\.png not found"):
        read_labels(tmp_path / "labels", [tmp_path / "gone.png"], None)


def test_parse_box():
    names = ["person", "Dog"]
    assert parse_box("1,2,30,40.5", names) == ([1.0, 2.0, 30.0, 40.5], None)
    assert parse_box(" 1, 2, 30, 40 :1", names) == ([1.0, 2.0, 30.0, 40.0], 1)
    assert parse_box("1,2,30,40:dog", names)[1] == 1  # ignoring case
    assert parse_box("1,2,30,40:person", names)[1] == 0
    assert parse_box("1,2,30,40:7", None)[1] == 7  # no names: ids as they are
    for spec, match in [
        ("1,2,30", "expected X1,Y1,X2,Y2"),
        ("1,2,30,40,50", "expected X1,Y1,X2,Y2"),
        ("a,2,30,40", "expected X1,Y1,X2,Y2"),
        ("1,2,nan,40", "expected X1,Y1,X2,Y2"),
        ("30,2,1,40", "X2 must exceed X1"),
        ("1,40,30,40", "X2 must exceed X1 and Y2 exceed Y1"),
        ("1,2,30,40:cat", r"no class 'cat'.*\['person', 'Dog'\]"),
        ("1,2,30,40:2", r"no class '2'.*\['person', 'Dog'\]"),
        ("1,2,30,40:", "no class ''"),
    ]:
        with pytest.raises(TaskcamError, match=match) as e:
            parse_box(spec, names)
        assert repr(spec) in str(e.value)
    with pytest.raises(TaskcamError, match="has no class names"):
        parse_box("1,2,30,40:cat", None)


def test_box_labels():
    labels = box_labels(["1,2,30,40:Dog", "5,5,9,9"], ["person", "dog"], default_class=0)
    _close(labels, [[1, 2, 30, 40], [5, 5, 9, 9]])
    assert labels.classes.tolist() == [1, 0] and labels.names == ["dog", "person"]
    assert box_labels(["1,2,3,4:5"], None).names == ["5"]
    assert box_labels(["1,2,3,4"], None, default_class=3).classes.tolist() == [3]
    assert len(box_labels([], ["a"])) == 0
    with pytest.raises(TaskcamError, match=r"'5,5,9,9' has no class.*\['person', 'dog'\]"):
        box_labels(["1,2,30,40:dog", "5,5,9,9"], ["person", "dog"])
    with pytest.raises(TaskcamError, match="default class 2 does not exist"):
        box_labels(["1,2,3,4"], ["person", "dog"], default_class=2)


def test_labels_checks_its_shapes():
    assert Labels(torch.tensor([[0.0, 0, 4, 4]]), torch.tensor([3])).names == ["3"]
    assert len(Labels([], [])) == 0
    with pytest.raises(TaskcamError, match="expected boxes Tensor"):
        Labels(torch.zeros(2, 4), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TaskcamError, match="expected boxes Tensor"):
        Labels(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), ["a", "b"])
    with pytest.raises(TaskcamError, match="negative"):
        Labels(torch.zeros(1, 4), torch.tensor([-1]))


def test_without_supervision_the_error_says_what_to_install(yolo, monkeypatch):
    folder, images = yolo
    monkeypatch.setitem(sys.modules, "supervision", None)  # import supervision: ImportError
    with pytest.raises(TaskcamError, match=r"pip install 'taskcam\[labels\]'"):
        read_labels(folder, images, None)
