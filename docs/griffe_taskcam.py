"""A griffe extension for the API reference (``mkdocs.yml``; no part of the package).

- ``taskcam.adapters`` lives in the top-level ``adapters/`` folder (setuptools ``package-dir``),
  where griffe, which reads the source, does not look: once ``taskcam`` is loaded, ``adapters/``
  is loaded and grafted in as ``taskcam.adapters``, so its pages and the aliases of ``taskcam``'s
  own names (``taskcam.Detector``, ...) resolve.
- The docstrings are Google style with ``Example:`` sections of doctests and Sphinx roles
  (``:func:`name```): ``Example:`` is read as ``Examples:`` (its ``>>>`` lines become code, not
  text) and a role becomes inline code, the way the source reads.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.M)
_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|exc|obj|const):`(~?)([^`]+)`")


def _role(match: re.Match) -> str:
    short, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if short else name}`"


def _rewrite(obj: griffe.Object) -> None:
    if obj.docstring is not None:
        text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
        obj.docstring.value = _ROLE.sub(_role, text)
    for member in obj.members.values():
        if not member.is_alias:
            _rewrite(member)


class TaskcamDocs(griffe.Extension):
    """Graft ``adapters/`` in as ``taskcam.adapters`` and read the docstrings as written."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        if pkg.name == "taskcam" and "adapters" not in pkg.members:
            pkg.set_member("adapters", loader.load("adapters", try_relative_path=False))
        _rewrite(pkg)

    def on_package_loaded(
        self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any
    ) -> None:
        """The same, under the event's name before griffe 2."""
        self.on_package(pkg=pkg, loader=loader)
