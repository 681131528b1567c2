"""Folder runs that survive interruption: a per-image JSON-lines log next to ``results.json``.

An explain run writes, for each image, its maps and overlays first and then one line to
``results.jsonl`` (flushed and synced), so a line means the image is complete; a run killed
mid-image leaves at most a partial last line, which is ignored. ``run.json`` holds the
settings that shape the results (model, task, methods, layers, targets, ...). Re-running with
the same settings into the same folder skips the images the log holds and writes a
``results.json`` equal to that of one uninterrupted run; other settings are refused unless
``overwrite`` is given. Images that failed (unreadable files) are tried again.

Example:
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with RunLog(out, {"model": "zoo:shapes-cnn"}) as log:
    ...     log.done("a.png", {"image": "a.png", "targets": []}, ["layer3"])
    >>> RunLog(out, {"model": "zoo:shapes-cnn"}).items["a.png"]["targets"]
    []
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

from taskcam.errors import TaskcamError

__all__ = ["RunLog", "write_json_atomic"]

LOG_NAME = "results.jsonl"
SETTINGS_NAME = "run.json"


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as JSON to ``path`` through a temporary file and a rename, so a
    reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.replace(tmp, path)


class RunLog:
    """The log of one explain run in ``out``.

    Args:
        out: the output folder (created).
        settings: what shapes the results; a folder holding another run's log is refused.
        overwrite: start afresh in a folder that holds another run (its log is cleared; its
            files are overwritten as images are redone).

    Attributes:
        items: image path -> its ``results.json`` item, for every image already done.
        layers: the layers the earlier part of the run resolved (or None).
        resumed: how many images the log held when the run started.

    Raises:
        TaskcamError: ``out`` holds results of a run with other settings (naming the settings
            that differ), or results without a run log.
    """

    def __init__(self, out: Path, settings: dict[str, Any], overwrite: bool = False) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.settings = json.loads(json.dumps(settings))  # as it reads back from disk
        self.items: dict[str, dict[str, Any]] = {}
        self.layers: Optional[list[str]] = None
        self._fh: Any = None
        settings_path = self.out / SETTINGS_NAME
        log_path = self.out / LOG_NAME
        if overwrite:
            log_path.unlink(missing_ok=True)
        elif settings_path.is_file():
            before = json.loads(settings_path.read_text())
            if before != self.settings:
                keys = sorted(
                    k
                    for k in set(before) | set(self.settings)
                    if before.get(k) != self.settings.get(k)
                )
                raise TaskcamError(
                    f"{self.out} holds results of another run (different {', '.join(keys)}); "
                    "choose another --out or pass --overwrite"
                )
            self._read(log_path)
        elif (self.out / "results.json").is_file():
            raise TaskcamError(
                f"{self.out} holds a results.json without a run log ({LOG_NAME}); choose "
                "another --out or pass --overwrite"
            )
        self.resumed = len(self.items)
        write_json_atomic(settings_path, self.settings)

    def _read(self, path: Path) -> None:
        if not path.is_file():
            return
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # the partial last line of a run that was killed while writing
            if "item" in entry:
                self.items[entry["image"]] = entry["item"]
                self.layers = entry.get("layers", self.layers)

    def __enter__(self) -> RunLog:
        self._fh = open(self.out / LOG_NAME, "a")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def done(self, image: str, item: dict[str, Any], layers: list[str]) -> None:
        """Record that ``image`` is complete (its files are written): one synced line."""
        self.items[image] = item
        self.layers = list(layers)
        self._append({"image": image, "item": item, "layers": self.layers})

    def failed(self, image: str, error: str) -> None:
        """Record a failure (it is tried again by the next run)."""
        self._append({"image": image, "error": error})

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fh is None:
            raise TaskcamError("RunLog: record inside `with RunLog(...)`")
        self._fh.write(json.dumps(entry) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())
