"""The one error type taskcam raises for bad input."""

from __future__ import annotations

__all__ = ["ImageError", "TaskcamError"]


class TaskcamError(ValueError):
    """Bad input to taskcam: the message names what was wrong (path, layer, index, shape).

    Example:
        >>> try:
        ...     raise TaskcamError("no layer named 'layer5'")
        ... except ValueError as e:
        ...     print(e)
        no layer named 'layer5'
    """


class ImageError(TaskcamError):
    """Bad input that concerns one image of a run (a detection index it does not have): a
    folder run records it against that image, as it does an unreadable file, and goes on.

    Example:
        >>> issubclass(ImageError, TaskcamError)
        True
    """
