"""Synthetic data with ground truth for checking explanations."""

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
    "ShapesDataset",
    "ShapesSample",
    "make_sample",
    "write_yolo_dataset",
]
