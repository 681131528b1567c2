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
# Numeric fields sorted after the metrics in the sort menu (identifiers rather than measures).
_ID_FIELDS = ("index", "class_id")
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
    page = (
        _TEMPLATE.replace("%TITLE%", html.escape(page_title))
        .replace("%STYLE%", _STYLE)
        .replace("%SCRIPT%", _SCRIPT)
        .replace("%DATA%", _script_json(data))
    )
    path = out / REPORT_NAME
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _page_data(results: dict[str, Any], out: Path, *, embed: bool, box_energy: bool) -> dict:
    """The JSON the page renders: the run's header, its items with each target's image
    source resolved (None where the file is missing) and the sortable fields."""
    items = []
    numeric: dict[str, None] = {}
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
            targets.append(record)
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
    }


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


_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>%TITLE%</title>
<style>%STYLE%</style>
</head>
<body>
<header>
  <h1>%TITLE%</h1>
  <p id="summary"></p>
  <p id="incomplete" class="warn" hidden>This run did not finish: the report shows the images
    it completed.</p>
</header>
<form id="controls" onsubmit="return false">
  <label>class <select id="f-class"><option value="">all</option></select></label>
  <label>kind <select id="f-kind"><option value="">all</option></select></label>
  <label>method <select id="f-method"><option value="">all</option></select></label>
  <label>min score <input id="f-score" type="number" step="any" placeholder="none"></label>
  <label>sort by <select id="sort-field"><option value="">results order</option></select></label>
  <select id="sort-dir" aria-label="sort direction">
    <option value="asc">ascending</option><option value="desc">descending</option>
  </select>
  <label><input id="group" type="checkbox" checked> group by image</label>
  <button id="reset" type="button">reset</button>
  <span id="count"></span>
</form>
<section id="compare" hidden>
  <div class="compare-head"><h2 id="compare-title"></h2>
    <button id="compare-close" type="button">close</button></div>
  <div id="compare-grid"></div>
</section>
<p id="empty" class="note" hidden></p>
<main id="gallery"></main>
<section id="extra"></section>
<script type="application/json" id="taskcam-data">%DATA%</script>
<script>%SCRIPT%</script>
</body>
</html>
"""

_STYLE = """
:root { --bg: #f6f6f4; --card: #fff; --line: #d9d9d4; --ink: #1d1d1b; --dim: #6b6b66;
  --accent: #1f5fbf; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  background: var(--bg); color: var(--ink); }
header { padding: 12px 20px 4px; }
h1 { font-size: 20px; margin: 0 0 4px; word-break: break-all; }
h2 { font-size: 16px; margin: 0; word-break: break-all; }
.warn { color: #a33; font-weight: 600; }
.note { padding: 0 20px; color: var(--dim); font-size: 16px; }
#controls { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 8px 14px;
  align-items: center; padding: 8px 20px; background: #ecece8;
  border-bottom: 1px solid var(--line); }
#controls input[type=number] { width: 7em; }
#count { margin-left: auto; color: var(--dim); }
#gallery { padding: 8px 20px 20px; }
.image-group { margin: 14px 0 20px; }
.image-group > header { padding: 0; display: flex; gap: 12px; align-items: baseline; }
.image-group .dims, .image-group a { color: var(--dim); font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr));
  gap: 12px; margin-top: 8px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 8px; display: flex; flex-direction: column; gap: 6px; }
.card img, .cell img { width: 100%; height: auto; image-rendering: auto; border-radius: 3px;
  background: #ddd; }
.card .missing, .cell .missing { padding: 30px 0; text-align: center; color: var(--dim);
  background: #eee; border-radius: 3px; }
.card .title { font-weight: 600; }
.card .where { color: var(--dim); font-size: 12px; word-break: break-all; }
.badge { display: inline-block; padding: 0 6px; margin-right: 4px; border-radius: 9px;
  font-size: 12px; background: #e4ebf7; color: var(--accent); }
.badge.empty { background: #f7e4e4; color: #a33; }
dl { display: grid; grid-template-columns: auto 1fr; gap: 1px 10px; margin: 0; font-size: 12px; }
dt { color: var(--dim); }
dd { margin: 0; font-variant-numeric: tabular-nums; word-break: break-all; }
button { font: inherit; cursor: pointer; }
#compare { margin: 10px 20px; padding: 12px; background: var(--card); scroll-margin-top: 80px;
  border: 2px solid var(--accent); border-radius: 8px; }
.compare-head { display: flex; justify-content: space-between; align-items: center; gap: 12px; }
#compare-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 420px));
  gap: 12px; margin-top: 10px; }
.cell { display: flex; flex-direction: column; gap: 6px; }
.cell h3 { margin: 0; font-size: 15px; }
#extra { padding: 0 20px 20px; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("taskcam-data").textContent);
  var $ = function (id) { return document.getElementById(id); };
  var CARD_FIELDS = {};
  DATA.card_fields.forEach(function (k) { CARD_FIELDS[k] = true; });

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "className") node.className = attrs[k];
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }
  function fmt(v) {
    if (v === null || v === undefined) return "\u2014";
    if (typeof v === "boolean") return v ? "yes" : "no";
    if (typeof v === "number") {
      if (Number.isInteger(v)) return String(v);
      return Math.abs(v) >= 1000 ? v.toFixed(1) : String(Number(v.toPrecision(4)));
    }
    if (Array.isArray(v)) return "[" + v.map(fmt).join(", ") + "]";
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }
  function num(v) {
    if (typeof v === "boolean") return v ? 1 : 0;
    return typeof v === "number" && isFinite(v) ? v : null;
  }
  function picture(src, alt) {
    if (!src) return el("div", { className: "missing", text: "overlay file missing" });
    return el("img", { src: src, alt: alt, loading: "lazy", decoding: "async" });
  }
  function details(t) {
    var rows = [["score", t.score]];
    if (Array.isArray(t.box)) rows.push(["box", t.box.map(function (v) {
      return typeof v === "number" ? Math.round(v * 10) / 10 : v; })]);
    Object.keys(t).forEach(function (k) { if (!CARD_FIELDS[k]) rows.push([k, t[k]]); });
    var dl = el("dl");
    rows.forEach(function (r) {
      dl.appendChild(el("dt", { text: r[0] }));
      dl.appendChild(el("dd", { text: fmt(r[1]), "data-field": r[0] }));
    });
    if (t.heatmap) {
      dl.appendChild(el("dt", { text: "map" }));
      dl.appendChild(el("dd", {}, [el("a", { href: t.heatmap, text: t.heatmap })]));
    }
    return dl;
  }
  function label(t) { return "#" + t.index + " " + t.class_name + " (" + t.class_id + ")"; }

  // one entry per target: its card, its filter and sort values, and its compare group
  var cards = [];
  var groups = {};
  var total = 0;
  DATA.items.forEach(function (item, ii) {
    item.targets.forEach(function (t, ti) {
      var key = [ii, t.kind, t.index, t.class_id].join("|");
      var compare = el("button", { type: "button", className: "compare-btn",
                                   text: "compare methods" });
      var badges = el("div", {}, [
        el("span", { className: "badge kind", text: t.kind || "?" }),
        el("span", { className: "badge method", text: t.method || "?" }),
        t.empty ? el("span", { className: "badge empty", text: "empty map" }) : null]);
      var node = el("article", {
        className: "card", "data-image": String(ii), "data-target": String(ti),
        "data-class": String(t.class_name), "data-kind": String(t.kind),
        "data-method": String(t.method), "data-score": String(t.score)
      }, [picture(t.src, label(t) + " " + t.method),
          el("div", { className: "title", text: label(t) }),
          el("div", { className: "where", text: item.label }),
          badges, details(t), compare]);
      var card = { node: node, item: ii, target: t, key: key, order: total++ };
      compare.addEventListener("click", function () { showCompare(key); });
      (groups[key] = groups[key] || []).push(card);
      cards.push(card);
    });
  });
  cards.forEach(function (c) {
    var btn = c.node.querySelector(".compare-btn");
    if (groups[c.key].length < 2) { btn.disabled = true; btn.title = "only one method"; }
  });

  function fill(select, values) {
    values.forEach(function (v) {
      select.appendChild(el("option", { value: v[0], text: v[1] }));
    });
  }
  function counted(field) {
    var n = {};
    cards.forEach(function (c) { var v = String(c.target[field]); n[v] = (n[v] || 0) + 1; });
    return Object.keys(n).sort().map(function (v) { return [v, v + " (" + n[v] + ")"]; });
  }
  fill($("f-class"), counted("class_name"));
  fill($("f-kind"), counted("kind"));
  fill($("f-method"), counted("method"));
  fill($("sort-field"), DATA.sortable.map(function (f) { return [f, f]; }));

  var nImages = DATA.items.length;
  $("summary").textContent = [
    "model " + fmt(DATA.model), "task " + fmt(DATA.task),
    "methods " + (DATA.methods.join(", ") || "\u2014"),
    "layers " + (DATA.layers.join(", ") || "\u2014"),
    nImages + " image(s)", cards.length + " target(s)",
    DATA.failures.length + " failure(s)"].join(" \u00b7 ");
  $("incomplete").hidden = DATA.complete !== false;

  function extras() {
    var box = $("extra");
    var none = DATA.items.filter(function (it) { return !it.targets.length; });
    if (none.length) {
      var ul = el("ul");
      none.forEach(function (it) {
        ul.appendChild(el("li", { text: it.image + (it.message ? ": " + it.message : "") }));
      });
      box.appendChild(el("h2", { text: "Images with no targets (" + none.length + ")" }));
      box.appendChild(ul);
    }
    var videos = DATA.videos.filter(function (v) { return v.path; });
    if (videos.length) {
      var vl = el("ul");
      videos.forEach(function (v) {
        vl.appendChild(el("li", {}, [el("a", { href: v.path, text: v.path }),
          document.createTextNode(" \u00b7 " + fmt(v.method) + " \u00b7 " + fmt(v.frames) +
                                  " frame(s)")]));
      });
      box.appendChild(el("h2", { text: "Annotated videos (" + videos.length + ")" }));
      box.appendChild(vl);
    }
    if (DATA.failures.length) {
      var fl = el("ul");
      DATA.failures.forEach(function (f) {
        fl.appendChild(el("li", { text: fmt(f.image) + ": " + fmt(f.error) }));
      });
      box.appendChild(el("h2", { text: "Failures (" + DATA.failures.length + ")" }));
      box.appendChild(fl);
    }
  }

  function visible() {
    var cls = $("f-class").value, kind = $("f-kind").value, method = $("f-method").value;
    var raw = $("f-score").value.trim();
    var min = raw === "" ? null : Number(raw);
    return cards.filter(function (c) {
      var t = c.target;
      if (cls && String(t.class_name) !== cls) return false;
      if (kind && String(t.kind) !== kind) return false;
      if (method && String(t.method) !== method) return false;
      if (min !== null && isFinite(min) && !(num(t.score) !== null && t.score >= min)) return false;
      return true;
    });
  }
  function sorted(list) {
    var field = $("sort-field").value;
    if (!field) return list.slice().sort(function (a, b) { return a.order - b.order; });
    var dir = $("sort-dir").value === "desc" ? -1 : 1;
    return list.slice().sort(function (a, b) {
      var x = num(a.target[field]), y = num(b.target[field]);
      if (x === null || y === null) {  // missing values last, whatever the direction
        if (x === null && y === null) return a.order - b.order;
        return x === null ? 1 : -1;
      }
      return x !== y ? dir * (x - y) : a.order - b.order;
    });
  }

  function render() {
    var shown = sorted(visible());
    var gallery = $("gallery");
    var frag = document.createDocumentFragment();
    if ($("group").checked) {
      var byItem = {};
      var order = [];
      shown.forEach(function (c) {
        if (!byItem[c.item]) { byItem[c.item] = []; order.push(c.item); }
        byItem[c.item].push(c);
      });
      order.sort(function (a, b) { return a - b; });
      order.forEach(function (ii) {
        var item = DATA.items[ii];
        var head = el("header", {}, [
          el("h2", { text: item.label }),
          el("span", { className: "dims", text: fmt(item.width) + "\u00d7" + fmt(item.height) +
                                               " \u00b7 " + item.image }),
          item.grid ? el("a", { href: item.grid, text: "methods \u00d7 targets grid" }) : null]
          .concat(Object.keys(item.all || {}).filter(function (m) { return item.all[m]; })
            .map(function (m) {
              return el("a", { className: "all", href: item.all[m], text: "all detections: " + m });
            })));
        var list = el("div", { className: "cards" });
        byItem[ii].forEach(function (c) { list.appendChild(c.node); });
        frag.appendChild(el("section", { className: "image-group", "data-image": String(ii) },
                            [head, list]));
      });
    } else {
      var flat = el("div", { className: "cards" });
      shown.forEach(function (c) { flat.appendChild(c.node); });
      frag.appendChild(flat);
    }
    gallery.replaceChildren(frag);
    $("count").textContent = shown.length + " of " + cards.length + " targets shown";
    var empty = $("empty");
    if (!nImages) { empty.textContent = "This run has no images: results.json holds no items."; }
    else if (!cards.length) { empty.textContent = "This run has no targets to show."; }
    else if (!shown.length) { empty.textContent = "No target matches the filters."; }
    empty.hidden = shown.length > 0;
  }

  function showCompare(key) {
    var members = groups[key];
    var first = members[0].target;
    $("compare-title").textContent = "Methods side by side: " + label(first) + " \u00b7 " +
      DATA.items[members[0].item].label;
    var grid = $("compare-grid");
    grid.replaceChildren();
    members.forEach(function (c) {
      grid.appendChild(el("div", { className: "cell", "data-method": String(c.target.method) }, [
        el("h3", { text: c.target.method }),
        picture(c.target.src, label(c.target) + " " + c.target.method),
        details(c.target)]));
    });
    $("compare").hidden = false;
    $("compare").scrollIntoView({ block: "start" });
  }
  $("compare-close").addEventListener("click", function () { $("compare").hidden = true; });
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") $("compare").hidden = true;
  });

  ["f-class", "f-kind", "f-method", "sort-field", "sort-dir", "group"].forEach(function (id) {
    $(id).addEventListener("change", render);
  });
  $("f-score").addEventListener("input", render);
  $("reset").addEventListener("click", function () {
    ["f-class", "f-kind", "f-method", "sort-field"].forEach(function (id) { $(id).value = ""; });
    $("f-score").value = "";
    $("sort-dir").value = "asc";
    $("group").checked = true;
    render();
  });
  extras();
  render();
  document.body.setAttribute("data-ready", "1");
})();
"""
