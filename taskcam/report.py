"""A browsable HTML report of an explain run: one offline ``report.html`` from ``results.json``.

The page is self-contained: inline CSS and vanilla JavaScript, the run's data in a
``<script type="application/json">`` tag, and the overlays that already lie in the output
folder referenced by relative path (or embedded as data URIs with ``embed=True``). Nothing
is fetched from the network. It shows a gallery per image with every target's overlay, its
kind, class, score, box or pixels, method and the metrics ``results.json`` holds; filters by
class, kind, method and minimum score; sorting by any numeric field; and a side-by-side view
of every method for one target.

With ``--faithfulness`` the records' ``faithfulness`` (insertion − deletion of the target's own
score) is the first field to sort by: descending, the maps to trust come first.

For detections the report adds ``box_energy``: the share of the map's energy inside the
detection's own box (:func:`taskcam.metrics.energy_pointing_game`), so sorting it ascending
lists the detections whose map looks elsewhere first.

A detection run against the user's labels (``--labels``: records with an ``outcome``) adds an
outcome filter (hit, missed, false positive), each card's outcome as a coloured tag (and a
missed label's reason, candidate score and the detection that suppressed it), each image's
counts of hits, missed labels and false positives in its header, and lists missed labels
first. A run without labels looks as it did.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from taskcam.data import make_sample
    >>> from taskcam.models import load_model
    >>> from taskcam.pipeline import explain_files
    >>> from taskcam.render import save_image
    >>> out = Path(tempfile.mkdtemp())
    >>> _ = save_image(out / "images" / "shapes.png", make_sample(0, size=64).image)
    >>> _ = explain_files(load_model("zoo:shapes-cnn"), [out / "images"], out, progress=False)
    >>> write_report(out).name
    'report.html'

    The same from the command line: ``taskcam report out``, or ``taskcam explain images/
    --model zoo:shapes-cnn --out out --report``.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote

from taskcam.errors import TaskcamError

__all__ = ["REPORT_NAME", "write_report"]

#: The report's file name inside the output folder.
REPORT_NAME = "report.html"

# Fields every target card shows in its own place; the rest are listed as metrics.
_CARD_FIELDS = {"kind", "index", "class_id", "class_name", "score", "box", "method", "heatmap"}
_CARD_FIELDS |= {"overlay", "src"}
# ... and a labelled detection run's (--labels) outcome fields, in an order of their own
_CARD_FIELDS |= {"outcome", "label", "label_box", "label_class", "reason", "candidate_score"}
_CARD_FIELDS |= {"suppressed_by", "suppressed_iou", "versus_class", "versus_name", "versus_score"}
# Numeric fields sorted after the metrics in the sort menu (identifiers rather than measures).
_ID_FIELDS = ("index", "class_id", "label", "suppressed_by", "versus_class")
# A labelled run's outcomes, in the order the filter and the counts list them.
_OUTCOMES = ("hit", "missed", "false_positive")
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def write_report(
    out_dir: str | os.PathLike[str],
    *,
    embed: bool = False,
    title: Optional[str] = None,
    box_energy: bool = True,
) -> Path:
    """Write ``report.html`` into an explain run's output folder, from its ``results.json``.

    Args:
        out_dir: the folder an explain run wrote (``results.json`` and the overlays).
        embed: embed the overlays and grids as base64 data URIs (one portable file) instead
            of referencing them by relative path.
        title: the page title (default: ``taskcam report: <model>``).
        box_energy: add ``box_energy`` to targets with a box and a heatmap file: the share
            of the map's energy inside the box (reads every detection's ``.npy``).

    Returns:
        The path of the written ``report.html``.

    Raises:
        TaskcamError: ``out_dir`` has no ``results.json``, or it is not a results document
            (the message names the path).

    Example:
        >>> write_report("taskcam-out")  # doctest: +SKIP
        PosixPath('taskcam-out/report.html')
    """
    out = Path(out_dir)
    results_path = out / "results.json"
    if not results_path.is_file():
        raise TaskcamError(
            f"{results_path}: no results.json there; run `taskcam explain ... --out {out}` first"
        )
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TaskcamError(f"{results_path}: not readable as JSON ({e})") from e
    if not isinstance(results, dict) or not isinstance(results.get("items"), list):
        raise TaskcamError(f"{results_path}: expected a results document with an 'items' list")

    data = _page_data(results, out, embed=embed, box_energy=box_energy)
    page_title = title or f"taskcam report: {results.get('model', out.name)}"
    template, style, script = (_asset(f"report.{kind}") for kind in ("html", "css", "js"))
    page = (
        template.replace("%TITLE%", html.escape(page_title))
        .replace("%STYLE%", style)
        .replace("%SCRIPT%", script)
        .replace("%DATA%", _script_json(data))
    )
    path = out / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _asset(name: str) -> str:
    """The text of one of the page's files (``taskcam/assets``: its HTML, CSS and script)."""
    return (resources.files("taskcam") / "assets" / name).read_text(encoding="utf-8")


def _page_data(results: dict[str, Any], out: Path, *, embed: bool, box_energy: bool) -> dict:
    """The JSON the page renders: the run's header, its items with each target's image
    source resolved (None where the file is missing) and the sortable fields."""
    items = []
    numeric: dict[str, None] = {}
    outcomes = False  # any record judged against labels
    totals = dict.fromkeys(_OUTCOMES, 0)
    for item in results["items"]:
        if not isinstance(item, dict):
            continue
        image = str(item.get("image", ""))
        targets = []
        for target in item.get("targets") or []:
            if not isinstance(target, dict):
                continue
            record = _finite(dict(target))
            if box_energy and "box_energy" not in record:
                energy = _box_energy(out, record)
                if energy is not None:
                    record["box_energy"] = energy
            record["src"] = _source(out, record.get("overlay"), embed)
            for key, value in record.items():
                if key not in ("src",) and isinstance(value, (bool, int, float)):
                    numeric.setdefault(key, None)
            outcomes = outcomes or isinstance(record.get("outcome"), str)
            targets.append(record)
        counts = _outcome_counts(item)
        for k, v in (counts or {}).items():
            totals[k] += v
        label = Path(image).name or image
        if isinstance(item.get("frame"), int):  # a frame of a video (taskcam.video)
            label += f" · frame {item['frame']}"
            if isinstance(item.get("time"), (int, float)):
                label += f" ({item['time']:.2f} s)"
        items.append(
            {
                "image": image,
                "label": label,
                "width": item.get("width"),
                "height": item.get("height"),
                "grid": _source(out, item.get("grid"), embed),
                # detectors: every detection's map in its box, one picture per method
                "all": {
                    str(m): _source(out, path, embed)
                    for m, path in (item.get("all") or {}).items()
                    if isinstance(path, str)
                },
                "message": item.get("message"),
                # --labels: the image's labels hit and missed, its detections matching none
                "outcomes": counts,
                "targets": targets,
            }
        )
    # a --faithfulness run: which maps to trust comes first
    first = [k for k in ("faithfulness", "score") if k in numeric]
    last = [k for k in _ID_FIELDS if k in numeric]
    middle = [k for k in numeric if k not in first and k not in last]
    return {
        "model": results.get("model"),
        "task": results.get("task"),
        "methods": results.get("methods") or [],
        "layers": results.get("layers") or [],
        "complete": results.get("complete", True),
        "failures": _finite(results.get("failures") or []),
        "videos": [
            {
                "path": _link(out, v.get("path")),
                "method": v.get("method"),
                "frames": v.get("frames"),
            }
            for v in results.get("videos") or []
            if isinstance(v, dict)
        ],
        "items": items,
        "sortable": first + middle + last,
        "card_fields": sorted(_CARD_FIELDS),
        # --labels: the outcome filter, tags and counts are shown, missed labels first
        "outcomes": list(_OUTCOMES) if outcomes else [],
        "outcome_totals": totals if outcomes else None,
    }


def _outcome_counts(item: dict[str, Any]) -> Optional[dict[str, int]]:
    """An item's ``outcomes`` (labels hit and missed, detections matching none), or None."""
    counts = item.get("outcomes")
    if not isinstance(counts, dict):
        return None
    return {k: v for k, v in counts.items() if k in _OUTCOMES and isinstance(v, int)}


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by None (JSON.parse rejects them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _source(out: Path, rel: Any, embed: bool) -> Optional[str]:
    """The ``src`` of a file of the run: a relative URL, a data URI, or None when missing."""
    if not isinstance(rel, str) or not rel:
        return None
    path = Path(rel) if Path(rel).is_absolute() else out / rel
    if not path.is_file():
        return None
    if embed:
        mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    if Path(rel).is_absolute():
        return path.resolve().as_uri()
    return quote(Path(rel).as_posix(), safe="/")


def _link(out: Path, rel: Any) -> Optional[str]:
    """A relative URL to a file of the run (a link, never fetched by the page), or None."""
    if not isinstance(rel, str) or not rel or not (out / rel).is_file():
        return None
    return quote(Path(rel).as_posix(), safe="/")


def _box_energy(out: Path, record: dict[str, Any]) -> Optional[float]:
    """The share of the target's map energy inside its box, or None without box or map."""
    box, heatmap = record.get("box"), record.get("heatmap")
    if not (isinstance(box, list) and len(box) == 4 and isinstance(heatmap, str)):
        return None
    path = out / heatmap
    if not path.is_file():
        return None
    import numpy as np
    import torch

    from taskcam.metrics import energy_pointing_game

    try:
        saliency = torch.from_numpy(np.load(path).astype(np.float32))
        coords = torch.tensor([float(v) if v is not None else 0.0 for v in box])
        return round(float(energy_pointing_game(saliency, coords)[0]), 4)
    except (OSError, ValueError, TaskcamError):
        return None  # an unreadable or odd-shaped map: no metric rather than no report


def _script_json(data: Any) -> str:
    """JSON safe inside ``<script>``: ``<``, ``>`` and ``&`` escaped, so ``</script>`` in a
    class name cannot end the tag."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
