"""The one error type taskcam raises for bad input."""

from __future__ import annotations

__all__ = ["ImageError", "TaskcamError", "check_choice", "inference_tensor_error"]


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


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Refuse ``value`` unless it is one of ``choices``, naming the setting and the choices.

    Example:
        >>> check_choice("--runtime", "tensorrt", ("torch", "openvino"))
        Traceback (most recent call last):
        taskcam.errors.TaskcamError: --runtime: expected one of torch, openvino, got 'tensorrt'
    """
    if value not in choices:
        raise TaskcamError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")


def inference_tensor_error(error: RuntimeError) -> TaskcamError | None:
    """The clear error for torch's refusal to differentiate through tensors made under
    ``torch.inference_mode()``, or ``None`` for any other error."""
    if "nference tensor" in str(error):
        return TaskcamError(
            "the model's parameters or buffers were created under torch.inference_mode(), and "
            "torch does not allow gradients through them; build or load the model outside "
            "inference mode, or use a gradient-free method (eigencam, scorecam, ablationcam)"
        )
    return None
