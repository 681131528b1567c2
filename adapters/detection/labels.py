"""A run's ground-truth labels (``--labels``, ``--box``): :func:`read_labels` reads YOLO,
COCO or Pascal VOC labels with supervision's dataset loaders (imported only then: ``pip install
'taskcam[labels]'``) and numbers their classes as the model does;  the boxes given on
the command line are read by :mod:`taskcam.adapters.detection.box_specs`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from taskcam.errors import TaskcamError

__all__ = ["Labels", "find_class", "read_labels", "show_names"]

PathLike = Union[str, "os.PathLike[str]"]
DATA_YAMLS = ("data.yaml", "dataset.yaml")  # a YOLO dataset's class names, beside its labels
SHOWN = 12  # class names shown in a message before the list is cut
# image suffixes both of supervision's YOLO and Pascal VOC loaders list (any other image is
# linked under ".png": Pillow and OpenCV read a file by its content, not its name)
INSTALL = "pip install 'taskcam[labels]'"
IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")


@dataclass
class Labels:
    """One image's ground-truth labels.

    Attributes:
        boxes: ``Tensor[N, 4]`` float32, ``x1, y1, x2, y2`` in the original image's pixels.
        classes: ``LongTensor[N]``, each box's class in the *model's* numbering.
        names: each box's class name (the model's, where it has names), for messages and
            records; left out, the class ids as text.

    Example:
        >>> import torch
        >>> labels = Labels(torch.tensor([[10.0, 20, 50, 60]]), torch.tensor([2]), ["car"])
        >>> len(labels), labels.names
        (1, ['car'])
        >>> len(Labels.empty()), Labels.empty().boxes.shape
        (0, torch.Size([0, 4]))
    """

    boxes: torch.Tensor
    classes: torch.Tensor
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        boxes = torch.as_tensor(self.boxes, dtype=torch.float32)
        classes = torch.as_tensor(self.classes, dtype=torch.long)
        self.boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
        self.classes = classes.reshape(0) if classes.numel() == 0 else classes
        self.names = list(self.names) or [str(c) for c in self.classes.tolist()]
        n = len(self.boxes)
        if self.boxes.shape != (n, 4) or self.classes.shape != (n,) or len(self.names) != n:
            raise TaskcamError(
                "Labels: expected boxes Tensor[N, 4], classes LongTensor[N] and N names, got "
                f"{tuple(self.boxes.shape)}, {tuple(self.classes.shape)} and {self.names}"
            )
        if bool((self.classes < 0).any()):
            raise TaskcamError(f"Labels.classes: negative class ids {self.classes.tolist()}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @classmethod
    def empty(cls) -> Labels:
        """An image without objects.

        Example:
            >>> Labels.empty().classes
            tensor([], dtype=torch.int64)
        """
        return cls(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), [])


def show_names(names: Sequence[str]) -> str:
    """A list of names for a message, cut after :data:`SHOWN` of them."""
    names = [str(n) for n in names]
    if len(names) <= SHOWN:
        return repr(names)
    return f"{repr(names[:SHOWN])[:-1]}, ... ({len(names)} in all)]"


def _same(a: str, b: str) -> bool:
    return a == b or a.casefold() == b.casefold()


def find_class(name: str, class_names: Sequence[str]) -> Optional[int]:
    """The id of ``name`` among ``class_names``: an exact match first, then ignoring case."""
    exact = [i for i, known in enumerate(class_names) if known == name]
    folded = [i for i, known in enumerate(class_names) if _same(known, name)]
    return (exact or folded or [None])[0]


def read_labels(
    path: PathLike,
    images: Sequence[PathLike],
    class_names: Optional[Sequence[str]] = None,
) -> dict[str, Labels]:
    """The labels of each of a run's images, read from a YOLO, COCO or Pascal VOC dataset.

    ``path`` is a YOLO label folder (a ``.txt`` of ``class cx cy w h`` rows, normalised, per
    image; class names from a ``data.yaml`` / ``dataset.yaml`` in it or up to two folders
    above it, else its ``classes.txt``, else none), a YOLO ``data.yaml`` (each image's ``.txt``
    found as ultralytics does, ``images/`` -> ``labels/``, else by name in the labels folders
    of its train/val/test folders), a COCO ``.json`` file (crowd annotations left out, as
    COCO's evaluation ignores them), or Pascal VOC ``.xml`` (a folder, one per image, or one
    file). Images are matched by file name (the stem of a YOLO or VOC file, the base name of
    COCO's ``file_name``); an image without labels has none (YOLO's convention).

    Classes are numbered as the model does: by id where the labels' class names equal the
    model's at each id (a YOLO dataset of the same model), else by name (COCO's category ids
    are often 1-based and sparse), exactly first, then ignoring case; YOLO labels without
    names keep their ids.

    Args:
        path: the labels.
        images: the run's image paths.
        class_names: the model's class names by id, or None when it has none.

    Returns:
        ``{str(image): Labels}`` for every image, keyed exactly as given.

    Raises:
        TaskcamError: a missing path or unknown format, unreadable labels (naming the file),
            a class the model lacks (naming it and both class lists), a class id beyond the
            classes (naming the file), a COCO file or VOC file labelling none of the images,
            or supervision missing.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from PIL import Image
        >>> folder = Path(tempfile.mkdtemp()) / "ds" / "labels"
        >>> folder.mkdir(parents=True)
        >>> Image.new("RGB", (200, 100)).save(folder / "a.png")
        >>> _ = (folder / "a.txt").write_text("1 0.5 0.5 0.2 0.4\\n")
        >>> labels = read_labels(folder, [folder / "a.png"], ["cat", "dog"])[str(folder / "a.png")]
        >>> labels.boxes.round().tolist(), labels.classes.tolist(), labels.names
        ([[80.0, 30.0, 120.0, 70.0]], [1], ['dog'])
    """
    source = Path(path)
    keys = list(dict.fromkeys(str(image) for image in images))
    names = None if class_names is None else [str(n) for n in class_names]
    if not source.exists():
        raise TaskcamError(f"--labels {source}: no such file or folder")
    kind, source = _kind(source, keys)
    try:
        import supervision  # noqa: F401
    except ImportError as e:
        raise TaskcamError(f"reading --labels needs supervision: {INSTALL}") from e
    readers = {"yolo": _read_yolo_folder, "yaml": _read_yolo_yaml, "coco": _read_coco}
    with tempfile.TemporaryDirectory(prefix="taskcam-labels-") as tmp:
        found = readers.get(kind, _read_voc)(source, keys, names, Path(tmp))
    return {key: found.get(key, Labels.empty()) for key in keys}


def _files(folder: Path, suffix: str) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` with ``suffix`` (any case)."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == suffix and p.is_file())
    return {p.stem: p for p in files if p.name.lower() != "classes.txt"}


def _kind(source: Path, keys: Sequence[str]) -> tuple[str, Path]:
    """Which format ``source`` holds: ``yolo`` (a label folder), ``yaml`` (a YOLO data.yaml),
    ``coco`` or ``voc``, and the path to read it from."""
    suffix = source.suffix.lower()
    kinds = {".yaml": "yaml", ".yml": "yaml", ".json": "coco", ".xml": "voc"}
    if source.is_file():
        if suffix not in kinds:
            raise TaskcamError(
                f"--labels {source}: unknown format; give a YOLO label folder or its data.yaml, "
                "a COCO .json file, or Pascal VOC .xml (one file or a folder of them)"
            )
        return kinds[suffix], source
    txts, xmls = _files(source, ".txt"), _files(source, ".xml")
    if not txts and not xmls:
        yamls = [source / n for n in DATA_YAMLS if (source / n).is_file()]
        if yamls:
            return "yaml", yamls[0]
        raise TaskcamError(
            f"--labels {source}: no label files in this folder (YOLO .txt or Pascal VOC .xml, "
            "one per image), and no data.yaml"
        )
    stems = {Path(k).stem for k in keys}  # both kinds of file: the one that labels more images
    yolo = bool(txts) and len(stems & set(txts)) >= len(stems & set(xmls))
    return ("yolo" if yolo else "voc"), source


def _link(src: Path, dst: Path) -> None:
    """``dst`` pointing at ``src``: a symbolic link, a copy where links are not allowed."""
    try:
        os.symlink(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _place(
    label_for: dict[str, Path], tmp: Path, suffix: str
) -> tuple[Path, Path, list[str], dict[str, str]]:
    """supervision's layout (one folder of images, one of labels, paired by stem) of the
    labelled images, which live in any folders and may share names: ``tmp/images/000000.png``
    and ``tmp/labels/000000.txt`` linked to the real files. Returns the two folders,
    the image keys in order and ``{linked path: real path}`` (for supervision's messages)."""
    images, labels = tmp / "images", tmp / "labels"
    images.mkdir()
    labels.mkdir()
    order, renames = list(label_for), {}
    for i, (key, label) in enumerate(label_for.items()):
        image = Path(key)
        if not image.is_file():
            raise TaskcamError(f"--labels: image {key} not found (its labels are {label})")
        kept = image.suffix.lower() if image.suffix.lower() in IMAGE_SUFFIXES else ".png"
        linked_image, linked_label = images / f"{i:06d}{kept}", labels / f"{i:06d}{suffix}"
        _link(image.resolve(), linked_image)
        _link(label.resolve(), linked_label)
        renames[str(linked_image)] = key
        renames[str(linked_label)] = str(label)
    return images, labels, order, renames


@contextmanager
def _read_errors(source: Path, renames: dict[str, str]) -> Iterator[None]:
    """supervision's errors as a TaskcamError naming ``source`` and the real files."""
    import yaml

    try:
        yield
    except (ValueError, KeyError, TypeError, IndexError, OSError, SyntaxError, yaml.YAMLError) as e:
        message = f"{type(e).__name__}: {e}"
        for linked, real in renames.items():
            message = message.replace(linked, real)
        raise TaskcamError(f"--labels {source}: could not read the labels ({message})") from e


def _class_map(
    label_names: Sequence[str],
    used: set[int],
    class_names: Optional[list[str]],
    source: Path,
    *,
    by_id: bool,
) -> dict[int, int]:
    """``{label class id: model class id}`` for the ids ``used``: by id where ``by_id`` and
    the two lists agree at each of the labels' ids, else by name."""
    if class_names is None:
        if by_id:
            return {i: i for i in used}
        raise TaskcamError(
            f"--labels {source}: the labels name their classes ({show_names(label_names)}), but "
            "the model has no class names to match them to; give the model its class names, or "
            "give YOLO labels (class ids)"
        )
    agree = all(_same(a, b) for a, b in zip(label_names, class_names))
    if by_id and len(label_names) <= len(class_names) and agree:
        return {i: i for i in used}
    mapping = {i: find_class(label_names[i], class_names) for i in sorted(used)}
    missing = [label_names[i] for i, j in mapping.items() if j is None]
    if missing:
        raise TaskcamError(
            f"--labels {source}: class{'es' if len(missing) > 1 else ''} {show_names(missing)} not "
            f"among the model's classes; the labels' classes: {show_names(label_names)}; the "
            f"model's classes: {show_names(class_names)}"
        )
    return {i: j for i, j in mapping.items() if j is not None}


def _to_labels(
    found: dict[str, Any],
    mapping: dict[int, int],
    class_names: Optional[list[str]],
    label_names: Optional[Sequence[str]],
) -> dict[str, Labels]:
    """supervision's ``Detections`` per image as :class:`Labels` in the model's numbering."""
    out = {}
    for key, dets in found.items():
        ids = [int(c) for c in np.asarray(dets.class_id, dtype=np.int64).reshape(-1)]
        classes = [mapping[c] for c in ids]  # without class_names: the same ids
        table = class_names if class_names is not None else label_names
        names = [table[c] for c in classes] if table else []  # [] names them by id
        boxes = torch.from_numpy(np.asarray(dets.xyxy, dtype=np.float32).reshape(-1, 4).copy())
        out[key] = Labels(boxes, torch.tensor(classes, dtype=torch.long), names)
    return out


def _find_yaml(folder: Path) -> Optional[Path]:
    """A YOLO dataset's ``data.yaml`` in ``folder`` or up to two folders above it
    (``dataset/labels/val`` -> ``dataset/data.yaml``)."""
    found = [p / n for p in [folder, *folder.resolve().parents][:3] for n in DATA_YAMLS]
    return next((p for p in found if p.is_file()), None)


def _read_yolo_folder(
    folder: Path, keys: Sequence[str], names: Optional[list[str]], tmp: Path
) -> dict[str, Labels]:
    files = _files(folder, ".txt")
    label_for = {k: files[Path(k).stem] for k in keys if Path(k).stem in files}
    names_from = _find_yaml(folder)
    if names_from is None and (folder / "classes.txt").is_file():
        names_from = folder / "classes.txt"
    return _read_yolo(folder, label_for, names, tmp, names_from)


def _labels_beside(images: Path) -> Path:
    """Where ultralytics looks for the labels of ``images`` (a file or a folder): the last
    ``images`` folder on the path becomes ``labels``, else the same folder."""
    parts = list(images.absolute().parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            return Path(*parts[:i], "labels", *parts[i + 1 :])
    return images.absolute()


def _read_yolo_yaml(
    data_yaml: Path, keys: Sequence[str], names: Optional[list[str]], tmp: Path
) -> dict[str, Labels]:
    import yaml

    try:
        data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise TaskcamError(f"--labels {data_yaml}: not a readable YAML file ({e})") from e
    if not isinstance(data, dict):
        raise TaskcamError(
            f"--labels {data_yaml}: expected a YOLO data.yaml (a mapping with 'names'), got "
            f"{type(data).__name__}"
        )
    root = Path(str(data.get("path") or data_yaml.parent))  # as ultralytics: cwd, else beside
    root = root if root.is_absolute() or root.is_dir() else data_yaml.parent / root
    by_stem: dict[str, Path] = {}  # the labels folders of its train/val/test image folders
    for split in ("train", "val", "test"):
        value = data.get(split)
        for entry in value if isinstance(value, list) else [value]:
            folder = _labels_beside(root / str(entry) / "_").parent  # root / absolute: absolute
            for stem, file in (_files(folder, ".txt") if folder.is_dir() else {}).items():
                by_stem.setdefault(stem, file)
    label_for = {}
    for key in keys:
        own = _labels_beside(Path(key)).with_suffix(".txt")
        if own.is_file():
            label_for[key] = own
        elif Path(key).stem in by_stem:
            label_for[key] = by_stem[Path(key).stem]
    if not by_stem and not label_for:
        raise TaskcamError(
            f"--labels {data_yaml}: found no YOLO labels: no labels folder beside its "
            "train/val/test image folders, and no image of the run has a .txt in a labels "
            "folder beside its images folder"
        )
    return _read_yolo(data_yaml, label_for, names, tmp, data_yaml)


def _read_yolo(
    source: Path,
    label_for: dict[str, Path],
    names: Optional[list[str]],
    tmp: Path,
    names_from: Optional[Path],
) -> dict[str, Labels]:
    """YOLO labels through supervision's loader (``DetectionDataset.from_yolo`` less its
    class-range check, which would refuse labels without names); their class names from
    ``names_from``, a data.yaml or a classes.txt, if any."""
    import yaml
    from supervision.dataset.formats.yolo import load_yolo_annotations

    images, labels, order, renames = _place(label_for, tmp, ".txt")
    yaml_path, label_names = names_from, None
    if names_from is not None and names_from.suffix.lower() == ".txt":
        lines = names_from.read_text(encoding="utf-8").splitlines()
        label_names = [line.strip() for line in lines if line.strip()]
    if yaml_path is None or label_names is not None:  # supervision needs one; names stay ours
        yaml_path = tmp / "data.yaml"
        yaml_path.write_text(yaml.safe_dump({"names": label_names or ["0"]}), encoding="utf-8")
    with _read_errors(source, renames):
        classes, _, annotations = load_yolo_annotations(
            images_directory_path=str(images),
            annotations_directory_path=str(labels),
            data_yaml_path=str(yaml_path),
        )
    if yaml_path != tmp / "data.yaml":
        label_names = [str(c) for c in classes]
    found = {order[int(Path(p).stem)]: dets for p, dets in annotations.items()}
    known = label_names if label_names is not None else names
    used: set[int] = set()
    for key, dets in found.items():
        ids = {int(c) for c in dets.class_id}
        if known is not None and ids and max(ids) >= len(known):
            whose = f"the labels' ({names_from})" if label_names is not None else "the model's"
            raise TaskcamError(
                f"--labels {label_for[key]}: class {max(ids)} does not exist; {whose} "
                f"{len(known)} classes are {show_names(known)}"
            )
        used |= ids
    mapping = _class_map(
        label_names or [], used, names if label_names else None, source, by_id=True
    )
    return _to_labels(found, mapping, names, label_names)


def _read_coco(
    source: Path, keys: Sequence[str], names: Optional[list[str]], tmp: Path
) -> dict[str, Labels]:
    """COCO through ``DetectionDataset.from_coco``, given a copy of the file that holds only
    the run's images, box annotations without crowds or segmentations (supervision would
    rasterise every mask of the whole file)."""
    import supervision as sv

    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskcamError(f"--labels {source}: not a readable JSON file ({e})") from e
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise TaskcamError(
            f"--labels {source}: not a COCO file: expected a JSON object with 'images', "
            "'annotations' and 'categories' lists"
        )
    wanted: dict[str, list[str]] = {}
    for key in keys:
        wanted.setdefault(Path(key).name, []).append(key)
    entries: dict[str, dict[str, Any]] = {}
    for image in data["images"]:
        name = str(image.get("file_name", "")).replace("\\", "/").rsplit("/", 1)[-1]
        if name in entries:
            raise TaskcamError(
                f"--labels {source}: two images named {name!r} ({entries[name]['file_name']!r}, "
                f"{image['file_name']!r}), and the run's {wanted[name][0]} matches both"
            )
        if name in wanted:
            entries[name] = dict(image, file_name=name)
    if not entries:
        listed = [str(image.get("file_name")) for image in data["images"]]
        raise TaskcamError(
            f"--labels {source}: none of the run's images is in it (matched by file name: "
            f"{show_names(sorted(wanted))}; it lists {show_names(listed)})"
        )
    ids = {image.get("id") for image in entries.values()}
    kept = [
        {k: v for k, v in a.items() if k != "segmentation"}
        for a in data["annotations"]
        if a.get("image_id") in ids and not a.get("iscrowd")
    ]
    unknown = {a.get("category_id") for a in kept} - {c.get("id") for c in data["categories"]}
    if unknown:
        raise TaskcamError(
            f"--labels {source}: category ids {sorted(unknown, key=str)} not in its categories"
        )
    subset = {"images": list(entries.values()), "annotations": kept}
    (tmp / "coco.json").write_text(json.dumps({**subset, "categories": data["categories"]}))
    (tmp / "images").mkdir()
    with _read_errors(source, {}):
        ds = sv.DetectionDataset.from_coco(str(tmp / "images"), str(tmp / "coco.json"))
    found = {}
    for path, dets in ds.annotations.items():
        for key in wanted[Path(path).name]:
            found[key] = dets
    used = {int(c) for dets in found.values() for c in dets.class_id}
    mapping = _class_map(ds.classes, used, names, source, by_id=False)
    return _to_labels(found, mapping, names, ds.classes)


def _read_voc(
    source: Path, keys: Sequence[str], names: Optional[list[str]], tmp: Path
) -> dict[str, Labels]:
    """Pascal VOC through ``DetectionDataset.from_pascal_voc`` (its boxes: VOC's 1-based
    ``xmin``/``ymin`` moved to 0-based pixel edges, ``xmax``/``ymax`` as written)."""
    import supervision as sv

    files = _files(source, ".xml") if source.is_dir() else {source.stem: source}
    label_for = {k: files[Path(k).stem] for k in keys if Path(k).stem in files}
    if source.is_file() and not label_for:
        raise TaskcamError(
            f"--labels {source}: a Pascal VOC file labels the image of the same name, and no "
            f"image of the run is named {source.stem!r}: {show_names(keys)}"
        )
    images, labels, order, renames = _place(label_for, tmp, ".xml")
    with _read_errors(source, renames):
        ds = sv.DetectionDataset.from_pascal_voc(str(images), str(labels))
    found = {order[int(Path(p).stem)]: dets for p, dets in ds.annotations.items()}
    used = {int(c) for dets in found.values() for c in dets.class_id}
    mapping = _class_map(ds.classes, used, names, source, by_id=False)
    return _to_labels(found, mapping, names, ds.classes)
