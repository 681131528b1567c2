"""pytest set-up shared by the test suite and the docstring examples it runs
(``--doctest-modules`` over ``taskcam/`` and ``adapters/``).

A docstring example that takes long (a Ray start, the whole demo) carries ``# doctest: +SLOW``:
``make test`` skips its docstring, ``pytest --run-slow`` runs it too.
"""

from __future__ import annotations

import doctest
import os

import pytest

os.environ.setdefault("YOLO_OFFLINE", "1")  # ultralytics never reaches for the network

SLOW = doctest.register_optionflag("SLOW")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        help="also run the docstring examples marked # doctest: +SLOW",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="a slow docstring example (# doctest: +SLOW): --run-slow")
    for item in items:
        test = getattr(item, "dtest", None)  # a DoctestItem's docstring
        if test is not None and any(ex.options.get(SLOW) for ex in test.examples):
            item.add_marker(skip)
