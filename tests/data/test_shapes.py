"""The shapes generator: deterministic, consistent ground truth, every task's view of it."""

import numpy as np
import pytest
import torch

from taskcam.data import CLASSES, HELDOUT_SEED, ShapesDataset, make_sample, write_yolo_dataset
from taskcam.errors import TaskcamError


def test_same_seed_and_index_give_the_same_sample_in_any_order():
    a = make_sample(5, seed=3, size=128)
    make_sample(4, seed=3, size=128)  # drawing another sample first changes nothing
    b = make_sample(5, seed=3, size=128)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, make_sample(5, seed=4, size=128).image)
    assert not np.array_equal(a.image, make_sample(6, seed=3, size=128).image)


@pytest.mark.parametrize("size", [64, 256, 320])
def test_ground_truth_is_consistent(size):
    seen_counts, seen_labels = set(), set()
    for i in range(40):
        s = make_sample(i, seed=HELDOUT_SEED, size=size)
        k = len(s.labels)
        seen_counts.add(k)
        seen_labels.update(s.labels.tolist())
        assert s.image.shape == (size, size, 3) and s.image.dtype == np.uint8
        assert s.masks.shape == (k, size, size) and s.boxes.shape == (k, 4)
        # Instance masks are disjoint (visible pixels only) and paint the semantic mask.
        assert (s.masks.sum(0) <= 1).all()
        for label, mask, box in zip(s.labels, s.masks, s.boxes):
            assert (s.semantic[mask] == label + 1).all()
            ys, xs = np.nonzero(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        assert ((s.semantic > 0) == s.masks.any(0)).all()
    assert seen_counts <= {1, 2, 3, 4} and len(seen_counts) >= 3
    assert seen_labels == set(range(len(CLASSES)))


def test_objects_overlap_only_partially_and_backgrounds_are_textured():
    overlaps = 0
    for i in range(60):
        s = make_sample(i, seed=0, size=256)
        b = s.boxes
        for p in range(len(b)):
            for q in range(p + 1, len(b)):
                ix = max(0, min(b[p, 2], b[q, 2]) - max(b[p, 0], b[q, 0]))
                iy = max(0, min(b[p, 3], b[q, 3]) - max(b[p, 1], b[q, 1]))
                overlaps += ix * iy > 0
        background = s.image[s.semantic == 0].astype(float)
        assert background.std() > 8  # texture and noise, not a flat colour
    assert overlaps > 0


def test_classification_samples_hold_one_object_of_every_class_equally_often():
    labels = [int(make_sample(i, seed=0, size=64, max_objects=1).labels[0]) for i in range(400)]
    counts = np.bincount(labels, minlength=len(CLASSES))
    assert counts.min() > 60


def test_dataset_views_per_task():
    image, label = ShapesDataset(3, seed=0, size=64, task="classify")[1]
    assert image.shape == (3, 64, 64) and image.min() >= 0.0 and image.max() <= 1.0
    assert label == int(make_sample(1, seed=0, size=64, max_objects=1).labels[0])
    image, target = ShapesDataset(3, seed=0, size=128, task="detect")[0]
    assert set(target) == {"boxes", "labels", "masks"}
    assert target["labels"].min() >= 1  # torchvision detectors keep 0 for background
    _, semantic = ShapesDataset(3, seed=0, size=128, task="segment")[0]
    assert semantic.dtype == torch.int64 and semantic.shape == (128, 128)
    with pytest.raises(IndexError, match="out of range for 3"):
        ShapesDataset(3, task="segment")[3]


def test_bad_arguments_are_named():
    with pytest.raises(TaskcamError, match="size must be at least 32"):
        make_sample(0, size=16)
    with pytest.raises(TaskcamError, match="min_objects=3, max_objects=2"):
        make_sample(0, min_objects=3, max_objects=2)
    with pytest.raises(TaskcamError, match="task must be"):
        ShapesDataset(2, task="pose")


def test_yolo_dataset_labels_match_the_boxes(tmp_path):
    yaml = write_yolo_dataset(tmp_path, n_train=3, n_val=2, size=128)
    text = yaml.read_text()
    assert "train: images/train" in text and "3: cross" in text
    assert len(list((tmp_path / "images" / "train").glob("*.png"))) == 3
    rows = np.loadtxt(tmp_path / "labels" / "val" / "val00001.txt", ndmin=2)
    s = make_sample(1, seed=1, size=128)
    assert rows[:, 0].tolist() == s.labels.tolist()
    np.testing.assert_allclose(rows[:, 1], (s.boxes[:, 0] + s.boxes[:, 2]) / 2 / 128, atol=1e-5)
    np.testing.assert_allclose(rows[:, 3], (s.boxes[:, 2] - s.boxes[:, 0]) / 128, atol=1e-5)
