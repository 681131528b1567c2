"""The evaluation's tables: aligned text for the terminal, ``eval.csv`` and ``eval.json``."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["aligned_table", "write_rows"]


def aligned_table(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """A header and rows of text cells as an aligned table, a rule under the header.

    Example:
        >>> print(aligned_table(["method", "pg"], [["gradcam", "0.9"]]))
        method   pg
        -------  ---
        gradcam  0.9
    """
    table = [list(columns), *(list(row) for row in cells)]
    widths = [max(len(row[i]) for row in table) for i in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_rows(
    columns: Sequence[str], rows: Sequence[dict[str, Any]], out_dir: str | Path, summary: Any = None
) -> tuple[Path, Path]:
    """``eval.csv`` (one line per row, ``columns`` in order) and ``eval.json`` (``summary``,
    by default the rows) in ``out_dir``, created; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out / "eval.csv", out / "eval.json"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    json_path.write_text(json.dumps(list(rows) if summary is None else summary, indent=2))
    return csv_path, json_path
