"""The ``results.json`` document of an explain run, and what a run returns.

The format is written down in ``docs/results.md`` (with a JSON Schema,
``docs/results.schema.json``); every run path (images, videos, Ray) builds the document here,
and every per-target record comes from :mod:`taskcam.explainers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from taskcam.runlog import write_json_atomic

__all__ = ["RESULTS_VERSION", "RunSummary", "results_document", "write_results"]

RESULTS_VERSION = 1
"""The ``version`` field of ``results.json`` and ``run.json``; fields are only ever added."""


@dataclass
class RunSummary:
    """What a run did: the results document, where it went, and the images that failed."""

    results: dict[str, Any]
    out_dir: Path
    failures: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0  # images an earlier, interrupted run of the same settings had done

    @property
    def n_targets(self) -> int:
        """Maps written: targets × methods over every item."""
        return sum(len(item["targets"]) for item in self.results["items"])


def results_document(
    *,
    model: str,
    task: str,
    methods: Sequence[str],
    layers: Sequence[str],
    items: Sequence[dict[str, Any]],
    failures: Sequence[tuple[str, str]] = (),
    complete: bool = True,
    videos: Optional[Sequence[dict[str, Any]]] = None,
) -> dict[str, Any]:
    """The ``results.json`` document (docs/results.md), fields in their written order.

    Args:
        model: the ``--model`` spec.
        task: ``classify``, ``detect`` or ``segment``.
        methods: the methods run.
        layers: the layers they read.
        items: one item per image (or explained video frame), in input order.
        failures: ``(image, error)`` of the inputs that could not be explained.
        complete: False when the run was interrupted.
        videos: video runs: one entry per written annotated video.

    Example:
        >>> doc = results_document(model="zoo:shapes-cnn", task="classify",
        ...                        methods=["gradcam"], layers=["layer3"], items=[])
        >>> list(doc)
        ['version', 'model', 'task', 'methods', 'layers', 'items', 'failures', 'complete']
    """
    document: dict[str, Any] = {
        "version": RESULTS_VERSION,
        "model": model,
        "task": task,
        "methods": list(methods),
        "layers": list(layers),
        "items": list(items),
    }
    if videos is not None:
        document["videos"] = list(videos)
    document["failures"] = [{"image": p, "error": e} for p, e in failures]
    document["complete"] = complete
    return document


def write_results(out: Path, document: dict[str, Any], **summary: Any) -> RunSummary:
    """Write ``document`` to ``out/results.json`` atomically and sum the run up.

    Args:
        out: the output folder.
        document: from :func:`results_document`.
        **summary: ``failures`` and ``resumed`` for the :class:`RunSummary`.
    """
    write_json_atomic(Path(out) / "results.json", document)
    return RunSummary(document, Path(out), **summary)
