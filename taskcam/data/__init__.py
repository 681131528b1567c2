"""Data with ground truth for checking explanations: synthetic shapes, and real photos of
people labelled by eye (:mod:`taskcam.data.people`)."""

from taskcam.data.people import PEOPLE_LABELS, write_people_dataset
from taskcam.data.shapes import (
    CLASSES,
    HELDOUT_SEED,
    ShapesDataset,
    ShapesSample,
    make_sample,
    write_yolo_dataset,
)

__all__ = [
    "CLASSES",
    "HELDOUT_SEED",
    "PEOPLE_LABELS",
    "ShapesDataset",
    "ShapesSample",
    "make_sample",
    "write_people_dataset",
    "write_yolo_dataset",
]
