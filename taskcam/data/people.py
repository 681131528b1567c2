"""Real photos of people with labels drawn by eye, written as a YOLO dataset: a small labelled
set that needs no download, for explaining a trained detector's errors against labels.

The photos ship with the installed packages (ultralytics' ``bus.jpg`` and ``zidane.jpg``,
scikit-image's ``astronaut``); the labels are faces and shoes in the classes of NudeNet's
YOLOv8n (``FACE_MALE``, ``FACE_FEMALE``, ``FEET_COVERED``), the one trained YOLOv8 that installs
from the package registry (``pip install nudenet``: ``320n.onnx``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Union

__all__ = ["PEOPLE_LABELS", "write_people_dataset"]

PEOPLE_LABELS: dict[str, list[tuple[str, int, int, int, int]]] = {
    "bus.jpg": [
        ("FACE_MALE", 100, 408, 158, 466),
        ("FACE_MALE", 268, 400, 315, 455),
        ("FEET_COVERED", 248, 803, 302, 862),
        ("FEET_COVERED", 665, 812, 748, 878),
        ("FEET_COVERED", 50, 845, 100, 895),
    ],
    "zidane.jpg": [("FACE_MALE", 490, 200, 665, 395), ("FACE_MALE", 900, 120, 1070, 300)],
    "astronaut.png": [("FACE_FEMALE", 170, 80, 275, 185)],
}
"""Per photo, its labels: ``(class name, x1, y1, x2, y2)`` in image pixels."""


def write_people_dataset(root: Union[str, Path], names: Mapping[int, str]) -> Path:
    """Write the photos to ``root/images``, their labels to ``root/labels`` (YOLO format, in
    the numbering of ``names``, the model's ``{id: name}``) and ``root/data.yaml``.

    Returns:
        The path of ``data.yaml``.

    Raises:
        KeyError: a labelled class that ``names`` lacks.
    """
    import cv2
    import ultralytics
    from skimage import data

    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    assets = Path(ultralytics.__file__).parent / "assets"
    for name in ("bus.jpg", "zidane.jpg"):
        (root / "images" / name).write_bytes((assets / name).read_bytes())
    cv2.imwrite(str(root / "images" / "astronaut.png"), data.astronaut()[..., ::-1])
    ids = {v: k for k, v in names.items()}
    for image, rows in PEOPLE_LABELS.items():
        h, w = cv2.imread(str(root / "images" / image)).shape[:2]
        lines = [
            f"{ids[c]} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} "
            f"{(y2 - y1) / h:.6f}"
            for c, x1, y1, x2, y2 in rows
        ]
        (root / "labels" / f"{Path(image).stem}.txt").write_text("\n".join(lines) + "\n")
    listed = "\n".join(f"  {k}: {v}" for k, v in sorted(names.items()))
    (root / "data.yaml").write_text(f"path: {root}\nval: images\nnames:\n{listed}\n")
    return root / "data.yaml"
