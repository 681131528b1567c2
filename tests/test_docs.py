"""The documentation under ``docs/``: its Python blocks run as the README's do (each in a fresh
namespace, in an empty folder, offline), its links and the README's lead to files and headings
that exist, and the site with its API reference builds with ``mkdocs build --strict``."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
README = ROOT / "README.md"
FENCE = re.compile(r"```python\n(.*?)```", re.S)
README_BLOCKS = {m.group(1) for m in FENCE.finditer(README.read_text())}


def _blocks():
    """Every Python block of the pages, but those the README holds too: test_readme runs them."""
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) not in README_BLOCKS:
                yield page.name, text[: m.start()].count("\n") + 1, m.group(1)


BLOCKS = list(_blocks())


def test_the_pages_have_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize(
    "page, line, code", BLOCKS, ids=[f"{page}:{line}" for page, line, _ in BLOCKS]
)
def test_docs_block_runs(page, line, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page[:-3]}_line{line}"}
    exec(compile(code, f"docs/{page}:{line}", "exec"), namespace)


def _slugs(text: str) -> set[str]:
    """The anchors of a page's headings that both GitHub and MkDocs give them: a link to one
    works on either."""
    github, mkdocs = set(), set()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    for title in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M):
        plain = re.sub(r"[`*]", "", title).lower()
        github.add(re.sub(r"[^\w\- ]", "", plain).replace(" ", "-"))
        plain = unicodedata.normalize("NFKD", plain).encode("ascii", "ignore").decode()
        mkdocs.add(re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", plain).strip()))
    return github & mkdocs


LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.name)
def test_relative_links_lead_somewhere(page):
    text = page.read_text()
    broken = []
    for target in LINK.findall(re.sub(r"```.*?```", "", text, flags=re.S)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or (
            anchor and file.suffix == ".md" and anchor not in _slugs(file.read_text())
        ):
            broken.append(target)
    assert not broken, f"{page.name}: links to nothing: {broken}"


def test_every_page_is_in_the_site():
    nav = (ROOT / "mkdocs.yml").read_text()
    assert [p.name for p in PAGES if f": {p.name}" not in nav] == []


@pytest.mark.skipif(
    importlib.util.find_spec("mkdocstrings_handlers") is None,
    reason="mkdocs and mkdocstrings are not installed (pip install 'taskcam[docs]')",
)
def test_the_site_and_api_reference_build_strict(tmp_path):
    """``make docs``: every warning (a docstring griffe cannot read, a broken reference) fails."""
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(site)]
    start = time.perf_counter()
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert time.perf_counter() - start < 60
    reference = (site / "api-adapters" / "index.html").read_text()
    assert 'id="taskcam.adapters.detection.Detector"' in reference  # adapters/ is found
    assert (site / "detections_bus.jpg").exists()
