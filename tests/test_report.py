"""The HTML report (:mod:`taskcam.report`) in real headless Chromium.

The browser is Debian's ``chromium`` (``make test`` installs it where missing), driven by
Playwright's Python API with ``executable_path``: Playwright never downloads a browser here.
The runs are real: the shapes zoo classifier and Faster R-CNN on generated shapes images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from taskcam.cli import main
from taskcam.data import make_sample
from taskcam.errors import TaskcamError
from taskcam.models import load_model
from taskcam.pipeline import explain_files
from taskcam.render import save_image
from taskcam.report import write_report

os.environ.setdefault("YOLO_OFFLINE", "1")


# -- fixtures ------------------------------------------------------------------------------------
def _chromium() -> str:
    """Debian's chromium: found, or installed with apt-get where that is usable (root)."""
    found = shutil.which("chromium")
    if found:
        return found
    if not (shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0):
        pytest.skip(
            "chromium is not installed and apt-get is not usable (not root): install Debian's "
            "chromium (`apt-get install chromium`) or run `make test` as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ):
        subprocess.run(cmd, check=True, env=env, timeout=900)
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium but it is not on PATH"
    return found


@pytest.fixture(scope="module")
def browser():
    executable = _chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def _images(folder: Path, n: int, size: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"shapes{size}_{i}.png"
        save_image(path, make_sample(i, seed=9999, size=size).image)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory) -> Path:
    """The shapes classifier, top-2 classes of 3 images, Grad-CAM and LayerCAM: 12 targets."""
    root = tmp_path_factory.mktemp("cls")
    out = root / "out"
    explain_files(
        load_model("zoo:shapes-cnn"),
        _images(root / "images", 3, 64),
        out,
        methods=["gradcam", "layercam"],
        targets="top2",
        progress=False,
    )
    write_report(out)
    return out


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> Path:
    """The shapes Faster R-CNN on 2 images of 256 px, every detection, Grad-CAM and ODAM."""
    root = tmp_path_factory.mktemp("det")
    out = root / "out"
    explain_files(
        load_model("zoo:shapes-fasterrcnn"),
        _images(root / "images", 2, 256),
        out,
        methods=["gradcam", "odam"],
        progress=False,
    )
    write_report(out)
    return out


def _targets(out: Path) -> list[dict]:
    results = json.loads((out / "results.json").read_text())
    return [t for item in results["items"] for t in item["targets"]]


class Opened:
    """A page loaded from a file, with every console error, page error and request seen."""

    def __init__(self, browser: Browser, path: Path) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.failed: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.errors.append(f"dialog: {d.message}"), d.dismiss()))
        self.page.on("requestfailed", lambda r: self.failed.append(f"{r.url} {r.failure}"))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector("body[data-ready='1']", state="attached", timeout=10_000)

    def cards(self) -> list[dict]:
        """The gallery's cards in display order: image, target, class, method, score."""
        return self.page.eval_on_selector_all(
            "#gallery .card",
            """cards => cards.map(c => ({image: +c.dataset.image, target: +c.dataset.target,
                 cls: c.dataset.class, method: c.dataset.method, score: +c.dataset.score,
                 box_energy: (c.querySelector('dd[data-field=box_energy]') || {}).textContent}))""",
        )

    def load_all_images(self) -> list[str]:
        """Load every lazy image now; the sources of those that did not decode."""
        return self.page.evaluate(
            """async () => {
                const imgs = [...document.querySelectorAll('img')];
                imgs.forEach(i => { i.loading = 'eager'; });
                await Promise.all(imgs.map(i => i.decode().catch(() => null)));
                return imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
            }"""
        )

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def opened(browser):
    pages: list[Opened] = []

    def open_(path: Path) -> Opened:
        pages.append(Opened(browser, path))
        return pages[-1]

    yield open_
    for page in pages:
        page.close()


# -- the page ------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["cls_run", "det_run"])
def test_page_loads_clean_and_shows_every_target(run, request, opened):
    out = request.getfixturevalue(run)
    targets = _targets(out)
    assert len(targets) >= 4
    page = opened(out / "report.html")
    assert page.load_all_images() == []
    cards = page.cards()
    assert len(cards) == len(targets)
    assert page.page.inner_text("#count") == f"{len(targets)} of {len(targets)} targets shown"
    # the cards are results.json's targets, in its order
    shown = [(c["cls"], c["method"], round(c["score"], 5)) for c in cards]
    expected = [(t["class_name"], t["method"], round(t["score"], 5)) for t in targets]
    assert shown == expected
    assert page.errors == [] and page.failed == []
    assert page.requests and all(u.startswith(("file:", "data:")) for u in page.requests)
    overlays = {u.rsplit("/", 2)[-2] + "/" + u.rsplit("/", 1)[-1] for u in page.requests}
    assert {t["overlay"] for t in targets} <= overlays


def test_detection_cards_show_boxes_and_box_energy(det_run, opened):
    targets = _targets(det_run)
    page = opened(det_run / "report.html")
    first = page.page.locator("#gallery .card").first
    box = first.locator("dd[data-field=box]").inner_text()
    assert (
        box == "[" + ", ".join(str(round(v, 1)).removesuffix(".0") for v in targets[0]["box"]) + "]"
    )
    energies = [float(c["box_energy"]) for c in page.cards()]
    assert len(energies) == len(targets) and all(0.0 <= e <= 1.0 for e in energies)
    # each image links its picture of every detection in its box, one per method
    links = page.page.eval_on_selector_all(
        "#gallery header a.all", "as => as.map(a => [a.textContent, a.getAttribute('href')])"
    )
    items = json.loads((det_run / "results.json").read_text())["items"]
    expected = [
        [f"all detections: {m}", path] for item in items for m, path in item.get("all", {}).items()
    ]
    assert links == expected and expected
    assert page.errors == []


def test_class_filter_shows_only_that_class(cls_run, opened):
    targets = _targets(cls_run)
    by_class = Counter(t["class_name"] for t in targets)
    assert len(by_class) >= 2, "the run should hold several classes for the filter to matter"
    page = opened(cls_run / "report.html")
    assert len(page.cards()) == len(targets)
    name, n = by_class.most_common()[-1]
    page.page.select_option("#f-class", name)
    cards = page.cards()
    assert len(cards) == n < len(targets)
    assert {c["cls"] for c in cards} == {name}
    page.page.select_option("#f-class", "")
    assert len(page.cards()) == len(targets)
    assert page.errors == []


def test_method_kind_and_score_filters(cls_run, det_run, opened):
    targets = _targets(cls_run)
    page = opened(cls_run / "report.html")
    page.page.select_option("#f-method", "layercam")
    cards = page.cards()
    assert len(cards) == sum(t["method"] == "layercam" for t in targets) < len(targets)
    assert {c["method"] for c in cards} == {"layercam"}
    page.page.select_option("#f-method", "")
    threshold = float(np.median([t["score"] for t in targets]))
    page.page.fill("#f-score", repr(threshold))
    cards = page.cards()
    assert len(cards) == sum(t["score"] >= threshold for t in targets) < len(targets)
    assert all(c["score"] >= threshold for c in cards)
    page.page.select_option("#f-kind", "class")
    assert len(page.cards()) == len(cards)
    page.page.fill("#f-score", "1e9")
    assert page.cards() == [] and page.page.is_visible("#empty")
    assert "No target matches" in page.page.inner_text("#empty")
    page.page.click("#reset")
    assert len(page.cards()) == len(targets)
    # a detection run offers its own kind only
    det = opened(det_run / "report.html")
    kinds = det.page.eval_on_selector_all("#f-kind option", "os => os.map(o => o.value)")
    assert kinds == ["", "detection"]
    assert page.errors == [] and det.errors == []


def test_sort_by_score_puts_lowest_first(cls_run, opened):
    targets = _targets(cls_run)
    scores = sorted(t["score"] for t in targets)
    page = opened(cls_run / "report.html")
    page.page.uncheck("#group")
    page.page.select_option("#sort-field", "score")
    page.page.select_option("#sort-dir", "asc")
    shown = [c["score"] for c in page.cards()]
    assert shown == pytest.approx(scores, rel=1e-6)
    assert shown[0] == pytest.approx(min(scores)) and shown[0] < shown[-1]
    page.page.select_option("#sort-dir", "desc")
    assert [c["score"] for c in page.cards()] == pytest.approx(scores[::-1], rel=1e-6)
    # grouped by image: ascending inside each image, images in results order
    page.page.check("#group")
    page.page.select_option("#sort-dir", "asc")
    cards = page.cards()
    images = [c["image"] for c in cards]
    assert images == sorted(images) and len(set(images)) == 3
    for i in set(images):
        mine = [c["score"] for c in cards if c["image"] == i]
        assert mine == sorted(mine)
    sortable = page.page.eval_on_selector_all("#sort-field option", "os => os.map(o => o.value)")
    assert sortable[:3] == ["", "score", "probability"] and "empty" in sortable
    assert page.errors == []


def test_sort_detections_by_box_energy(det_run, opened):
    page = opened(det_run / "report.html")
    page.page.uncheck("#group")
    page.page.select_option("#sort-field", "box_energy")
    energies = [float(c["box_energy"]) for c in page.cards()]
    assert energies == sorted(energies) and energies[0] < energies[-1]
    assert page.errors == []


def test_side_by_side_shows_every_method_for_one_target(det_run, opened):
    results = json.loads((det_run / "results.json").read_text())
    item = results["items"][-1]
    rank = item["targets"][-1]["index"]
    same = [t for t in item["targets"] if t["index"] == rank]
    assert [t["method"] for t in same] == ["gradcam", "odam"]
    page = opened(det_run / "report.html")
    assert page.page.is_hidden("#compare")
    page.page.locator("#gallery .card").last.locator(".compare-btn").click()
    assert page.page.is_visible("#compare")
    cells = page.page.locator("#compare-grid .cell")
    assert cells.count() == 2
    methods = page.page.eval_on_selector_all(
        "#compare-grid .cell", "cs => cs.map(c => c.dataset.method)"
    )
    assert methods == ["gradcam", "odam"]
    scores = [float(cells.nth(i).locator("dd[data-field=score]").inner_text()) for i in range(2)]
    assert scores == pytest.approx([t["score"] for t in same], rel=1e-3)
    srcs = page.page.eval_on_selector_all(
        "#compare-grid img", "is => is.map(i => decodeURIComponent(i.src))"
    )
    assert [s.endswith(t["overlay"]) for s, t in zip(srcs, same)] == [True, True]
    assert page.load_all_images() == []
    page.page.click("#compare-close")
    assert page.page.is_hidden("#compare")
    assert page.errors == [] and page.failed == []


def test_screenshot(det_run, opened, tmp_path):
    page = opened(det_run / "report.html")
    assert page.load_all_images() == []
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000
    picture = cv2.imread(str(shot))
    assert picture.shape[0] >= 900 and picture.shape[1] == 1280
    assert picture.std() > 20  # overlays and text, not a blank page


def test_thumbnails_show_in_a_screenshot_taken_at_once(det_run, opened, tmp_path):
    """A headless screenshot taken as soon as the page has loaded (no scrolling, no forced
    loading) shows every card's thumbnail: none left blank by lazy loading or by decoding
    after the capture (the overlays are drawn, not the gray placeholder)."""
    out = tmp_path / "many"  # the run's images over and over: pages of cards
    shutil.copytree(det_run, out)
    results = json.loads((out / "results.json").read_text())
    results["items"] = results["items"] * 8
    (out / "results.json").write_text(json.dumps(results))
    page = opened(write_report(out))
    shot = tmp_path / "report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    thumbs = page.page.eval_on_selector_all(
        "#gallery .card img",
        """is => is.map(i => { const r = i.getBoundingClientRect();
             return [i.complete && i.naturalWidth > 0, r.left, r.top + window.scrollY,
                     r.width, r.height]; })""",
    )
    assert len(thumbs) == 8 * len(_targets(det_run)) >= 32
    assert all(loaded for loaded, *_ in thumbs)
    picture = cv2.imread(str(shot))
    assert picture.shape[0] > 3 * 900  # well below the first screen
    for _, left, top, width, height in thumbs:
        x, y = round(left), round(top)
        assert width > 100 and height > 100 and y + height <= picture.shape[0]
        crop = picture[y + 4 : y + round(height) - 4, x + 4 : x + round(width) - 4]
        assert crop.std() > 10, f"blank thumbnail at {(x, y)}"  # an overlay, not #ddd


# -- odd and bad input -----------------------------------------------------------------------
def _write_results(out: Path, items: list) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    doc = {"version": 1, "model": "zoo:x", "task": "classify", "methods": ["gradcam"]}
    (out / "results.json").write_text(json.dumps({**doc, "layers": ["l"], "items": items}))
    return out


def test_zero_items_says_so(tmp_path, opened):
    out = _write_results(tmp_path / "empty", [])
    page = opened(write_report(out))
    assert page.cards() == []
    assert page.page.is_visible("#empty")
    assert "no images" in page.page.inner_text("#empty")
    assert page.errors == [] and page.failed == []


def test_markup_in_names_is_text_and_missing_files_are_not_fetched(tmp_path, opened):
    evil = "</script><img src=x onerror=alert(1)>&amp;"
    target = {
        "kind": "class",
        "index": 0,
        "class_id": 7,
        "class_name": evil,
        "score": float("nan"),
        "method": "gradcam",
        "heatmap": "a/missing.npy",
        "overlay": "a/missing.png",
        "empty": True,
    }
    item = {"image": "in/a.png", "width": 8, "height": 8, "targets": [target]}
    nothing = {"image": "in/b.png", "width": 8, "height": 8, "targets": [], "message": "none"}
    out = _write_results(tmp_path / "odd", [item, nothing])
    page = opened(write_report(out))
    cards = page.cards()
    assert [c["cls"] for c in cards] == [evil]
    assert page.page.locator("#gallery .card .title").inner_text() == f"#0 {evil} (7)"
    assert page.page.locator("#gallery .card img").count() == 0
    assert "overlay file missing" in page.page.inner_text("#gallery")
    assert "in/b.png: none" in page.page.inner_text("#extra")
    assert page.errors == [] and page.failed == []


def test_video_frames_are_labelled_and_videos_linked(tmp_path, opened):
    """Items of a video run (taskcam.video) carry ``frame`` and ``time``; ``videos`` lists
    the annotated clips, linked (not fetched) from the page."""
    target = {"kind": "detection", "index": 0, "class_id": 1, "class_name": "square"}
    target.update({"score": 0.9, "box": [1, 1, 4, 4], "method": "odam"})
    items = [
        {"image": "in/clip.mp4", "frame": f, "time": f / 10, "width": 8, "height": 8}
        | {"targets": [target]}
        for f in (0, 5)
    ]
    out = _write_results(tmp_path / "video", items)
    (out / "clip_explained.mp4").write_bytes(b"not played by the page")
    doc = json.loads((out / "results.json").read_text())
    doc["videos"] = [{"image": "in/clip.mp4", "method": "odam", "path": "clip_explained.mp4"}]
    doc["videos"][0]["frames"] = 2
    (out / "results.json").write_text(json.dumps(doc))
    page = opened(write_report(out))
    heads = page.page.eval_on_selector_all(".image-group h2", "hs => hs.map(h => h.textContent)")
    assert heads == ["clip.mp4 · frame 0 (0.00 s)", "clip.mp4 · frame 5 (0.50 s)"]
    link = page.page.locator("#extra a")
    assert link.get_attribute("href") == "clip_explained.mp4"
    assert "odam · 2 frame(s)" in page.page.inner_text("#extra")
    assert not any(u.endswith(".mp4") for u in page.requests)
    assert page.errors == [] and page.failed == []


def test_embed_makes_one_portable_file(cls_run, tmp_path, opened):
    path = write_report(cls_run, embed=True, title="embedded")
    alone = tmp_path / "alone.html"
    shutil.copy(path, alone)  # away from the overlays
    page = opened(alone)
    assert page.load_all_images() == []
    assert len(page.cards()) == len(_targets(cls_run))
    assert page.page.title() == "embedded"
    assert page.errors == [] and page.failed == []
    write_report(cls_run)  # back to the default page for the other tests


def test_missing_results_is_an_error_naming_the_path(tmp_path, capsys):
    with pytest.raises(TaskcamError, match=str(tmp_path / "results.json")):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(TaskcamError, match="not readable as JSON"):
        write_report(tmp_path)
    missing = tmp_path / "nowhere"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("taskcam: error: ") and str(missing / "results.json") in err
    assert not (missing / "report.html").exists()


def test_cli_report_and_explain_report(tmp_path, capsys):
    images = _images(tmp_path / "images", 1, 64)
    out = tmp_path / "out"
    args = ["explain", str(images[0]), "--model", "zoo:shapes-cnn", "--out", str(out)]
    assert main([*args, "--no-progress", "--report"]) == 0
    assert f"report -> {out / 'report.html'}" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    assert '<script type="application/json" id="taskcam-data">' in page
    assert "http://" not in page and "https://" not in page
    (out / "report.html").unlink()
    assert main(["report", str(out), "--title", "mine"]) == 0
    assert str(out / "report.html") in capsys.readouterr().out
    assert "<title>mine</title>" in (out / "report.html").read_text()


# -- a detector against labels (--labels) --------------------------------------------------------
def _labelled_items(out: Path) -> list[dict]:
    """Two images' records as a labelled detection run writes them (docs/results.md, "Against
    labels"), each with a real overlay: image 0 has 2 hits, 2 missed labels (one suppressed,
    one of the wrong class: 3 records) and a false positive; image 1 a false positive and a
    label with no candidate."""

    def record(stem: str, n: int, index, class_id: int, name: str, score: float, **extra):
        overlay = f"{stem}/r{n}_gradcam.png"
        save_image(out / overlay, np.full((24, 32, 3), 40 * n % 255, np.uint8))
        fields = {"kind": "detection", "index": index, "class_id": class_id, "class_name": name}
        fields |= {"score": score, "box": [2.0, 3.0, 20.0, 18.0], "method": "gradcam"}
        fields |= {"heatmap": f"{stem}/r{n}_gradcam.npy", "overlay": overlay, "empty": False}
        return fields | extra

    hit = {"outcome": "hit", "label_box": [2.0, 3.0, 21.0, 18.0]}
    missed = {"outcome": "missed", "label_box": [4.0, 4.0, 22.0, 20.0]}
    suppressed = missed | {"label": 1, "label_class": "dog", "reason": "suppressed"}
    suppressed |= {"candidate_score": 0.44, "suppressed_by": 2, "suppressed_iou": 0.72}
    wrong = missed | {"label": 2, "label_class": "cat", "reason": "wrong_class"}
    wrong |= {"candidate_score": 0.08, "versus_score": 0.61}
    contrast = wrong | {"explains": "contrast", "versus_class": 0, "versus_name": "cat"}
    nothing = missed | {"label": 0, "label_class": "person", "reason": "no_candidate"}
    nothing |= {"candidate_score": 0.02}
    a = [
        record("a", 0, 0, 0, "cat", 0.93, **hit, label=0, label_class="cat"),
        record("a", 1, 1, 0, "cat", 0.55, outcome="false_positive"),
        record("a", 2, 2, 1, "dog", 0.71, **hit, label=3, label_class="dog"),
        record("a", 3, None, 1, "dog", 0.44, **suppressed),
        record("a", 4, None, 0, "cat", 0.08, **wrong),  # the label class's score,
        record("a", 5, None, 1, "dog", 0.61, **wrong),  # the class that won,
        record("a", 6, None, 1, "dog", 0.53, **contrast),  # and the difference
    ]
    b = [
        record("b", 7, 0, 2, "person", 0.81, outcome="false_positive"),
        record("b", 8, None, 2, "person", 0.02, **nothing),
    ]
    size = {"width": 32, "height": 24}
    return [
        {"image": "in/a.png", **size, "targets": a, "outcomes": _counts(2, 2, 1)},
        {"image": "in/b.png", **size, "targets": b, "outcomes": _counts(0, 1, 1)},
    ]


def _counts(hit: int, missed: int, false_positive: int) -> dict[str, int]:
    return {"hit": hit, "missed": missed, "false_positive": false_positive}


def _labelled_document(items: list[dict]) -> dict:
    from taskcam.results import results_document

    return results_document(
        model="zoo:shapes-yolo", task="detect", methods=["gradcam"], layers=["l"], items=items
    )


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("labelled")
    document = _labelled_document(_labelled_items(out))
    (out / "results.json").write_text(json.dumps(document))
    write_report(out)
    return out


def _outcomes(page) -> list[tuple[int, str]]:
    """The shown cards' (image, outcome), in display order."""
    return [
        (c["image"], c["outcome"])
        for c in page.page.eval_on_selector_all(
            "#gallery .card",
            "cs => cs.map(c => ({image: +c.dataset.image, outcome: c.dataset.outcome}))",
        )
    ]


def test_labelled_results_follow_the_schema(labelled_run):
    """The records this page is tested with are what docs/results.schema.json describes."""
    import copy

    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs" / "results.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    document = json.loads((labelled_run / "results.json").read_text())
    validator.validate(document)
    for edit in (
        lambda t: t[3].update(index=0),  # a missed label is no detection
        lambda t: t[3].pop("reason"),  # a missed label says why
        lambda t: t[0].update(reason="below_conf"),  # a hit has no reason
        lambda t: t[6].pop("versus_name"),  # a contrast names both classes
        lambda t: t[1].update(outcome="maybe"),
        lambda t: t[0].update(index=None),  # only missed labels have no index
    ):
        broken = copy.deepcopy(document)
        edit(broken["items"][0]["targets"])
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_outcome_filter_shows_only_missed_labels(labelled_run, opened):
    targets = _targets(labelled_run)
    page = opened(labelled_run / "report.html")
    assert page.page.is_visible("#f-outcome")
    options = page.page.eval_on_selector_all(
        "#f-outcome option", "os => os.map(o => [o.value, o.textContent])"
    )
    assert options == [
        ["", "all"],
        ["hit", "hit (2)"],
        ["missed", "missed (5)"],
        ["false_positive", "false positive (2)"],
    ]
    assert len(page.cards()) == len(targets) == 9
    page.page.select_option("#f-outcome", "missed")
    assert [o for _, o in _outcomes(page)] == ["missed"] * 5
    assert page.page.inner_text("#count") == "5 of 9 targets shown"
    page.page.select_option("#f-outcome", "false_positive")
    assert [c["cls"] for c in page.cards()] == ["cat", "person"]
    page.page.click("#reset")
    assert len(page.cards()) == 9
    assert page.errors == [] and page.failed == []


def test_each_image_shows_its_counts_and_missed_labels_come_first(labelled_run, opened):
    page = opened(labelled_run / "report.html")
    counts = page.page.eval_on_selector_all(
        ".image-group",
        """gs => gs.map(g => [...g.querySelectorAll('header .outcomes span')].map(
                s => [s.dataset.outcome, +s.dataset.count, s.textContent]))""",
    )
    assert counts == [
        [
            ["hit", 2, "2 hits"],
            ["missed", 2, "2 missed"],
            ["false_positive", 1, "1 false positive"],
        ],
        [
            ["hit", 0, "0 hits"],
            ["missed", 1, "1 missed"],
            ["false_positive", 1, "1 false positive"],
        ],
    ]
    summary = page.page.inner_text("#summary")
    assert summary.endswith("against labels: 2 hits, 3 missed, 2 false positives")
    # by default each image lists its missed labels first, then results order
    assert page.page.inner_text("#sort-field option:first-child") == "missed first"
    missed, rest = ["missed"] * 4, ["hit", "false_positive", "hit"]
    assert _outcomes(page) == [(0, o) for o in missed + rest] + [
        (1, "missed"),
        (1, "false_positive"),
    ]
    order = page.page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => +c.dataset.target)")
    assert order == [3, 4, 5, 6, 0, 1, 2, 1, 0]
    page.page.uncheck("#group")  # not grouped: every missed label first
    assert [o for _, o in _outcomes(page)][:5] == ["missed"] * 5
    page.page.select_option("#sort-field", "score")  # a sort of one's own: that order only
    scores = [c["score"] for c in page.cards()]
    assert scores == sorted(scores)
    assert page.errors == []


def test_cards_show_their_outcome_and_why_a_label_was_missed(labelled_run, opened):
    page = opened(labelled_run / "report.html")
    page.page.uncheck("#group")
    cards = page.page.locator("#gallery .card")

    def card(target: int):
        return page.page.locator(f"#gallery .card[data-image='0'][data-target='{target}']")

    assert cards.count() == 9
    hit, suppressed, contrast = card(0), card(3), card(6)
    assert hit.locator(".badge.outcome").inner_text() == "hit"
    assert hit.locator(".badge.reason").count() == 0
    assert hit.locator(".title").inner_text() == "#0 cat (0)"
    assert hit.locator("dd[data-field=label_class]").inner_text() == "cat #0"
    assert suppressed.locator(".title").inner_text() == "label 1 dog (1)"
    assert suppressed.locator(".badge.outcome").inner_text() == "missed"
    assert suppressed.locator(".badge.reason").inner_text() == "suppressed"
    fields = {
        f: suppressed.locator(f"dd[data-field={f}]").inner_text()
        for f in ("candidate_score", "suppressed_by", "label_box", "box")
    }
    assert fields == {
        "candidate_score": "0.44",
        "suppressed_by": "#2 (IoU 0.72)",
        "label_box": "[4, 4, 22, 20]",
        "box": "[2, 3, 20, 18]",
    }
    assert "candidate box" in suppressed.locator("dl").inner_text()
    assert contrast.locator(".title").inner_text() == "label 2 dog (1) \u2212 cat (0)"
    assert contrast.locator(".badge.reason").inner_text() == "wrong class"
    colours = {
        o: page.page.eval_on_selector(
            f".card[data-outcome={o}] .badge.outcome", "b => getComputedStyle(b).backgroundColor"
        )
        for o in ("hit", "missed", "false_positive")
    }
    assert len(set(colours.values())) == 3 and "rgba(0, 0, 0, 0)" not in colours.values()
    # one method: no card has another to compare with, though several missed records share
    # their index (null) and class
    disabled = page.page.eval_on_selector_all(".compare-btn", "bs => bs.map(b => b.disabled)")
    assert disabled == [True] * 9
    assert page.errors == [] and page.failed == []


def test_a_run_without_labels_shows_no_outcomes(labelled_run, tmp_path, opened):
    document = json.loads((labelled_run / "results.json").read_text())
    fields = {"outcome", "label", "label_box", "label_class", "reason", "candidate_score"}
    fields |= {"suppressed_by", "suppressed_iou", "versus_class", "versus_name", "versus_score"}
    for item in document["items"]:
        item.pop("outcomes")
        item["targets"] = [
            {k: v for k, v in t.items() if k not in fields}
            for t in item["targets"]
            if t["index"] is not None
        ]
    out = tmp_path / "unlabelled"
    shutil.copytree(labelled_run, out)
    (out / "results.json").write_text(json.dumps(document))
    page = opened(write_report(out))
    assert len(page.cards()) == 4
    assert page.page.is_hidden("#outcome-filter")
    assert page.page.locator(".badge.outcome, .badge.reason, .image-group .outcomes").count() == 0
    assert page.page.inner_text("#sort-field option:first-child") == "results order"
    assert "against labels" not in page.page.inner_text("#summary")
    assert [c["target"] for c in page.cards()] == [0, 1, 2, 0]
    assert page.errors == [] and page.failed == []


def test_images_with_the_most_missed_labels_come_first(tmp_path, opened):
    out = tmp_path / "reordered"
    items = list(reversed(_labelled_items(out)))  # b (1 missed) before a (2 missed)
    (out / "results.json").write_text(json.dumps(_labelled_document(items)))
    page = opened(write_report(out))
    shown = page.page.eval_on_selector_all(".image-group", "gs => gs.map(g => +g.dataset.image)")
    assert shown == [1, 0]  # a's two missed labels first, although it comes second
    page.page.select_option("#sort-field", "score")  # a sort of one's own: the run's order
    shown = page.page.eval_on_selector_all(".image-group", "gs => gs.map(g => +g.dataset.image)")
    assert shown == [0, 1]
    assert page.errors == []
