"""The one error type taskcam raises for bad input."""

from __future__ import annotations

__all__ = ["TaskcamError"]


class TaskcamError(ValueError):
    """Bad input to taskcam: the message names what was wrong (path, layer, index, shape).

    Example:
        >>> try:
        ...     raise TaskcamError("no layer named 'layer5'")
        ... except ValueError as e:
        ...     print(e)
        no layer named 'layer5'
    """
