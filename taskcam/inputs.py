"""Models whose forward takes more than the image: extra keyword arguments, several tensors.

The engine explains an image ``Tensor[B, 3, H, W]``; every forward it makes (the hooked one,
perturbed copies, flips) passes through :func:`bind_inputs`' wrapper, which turns that image
into the model's own arguments:

- ``forward_kwargs``: constant keyword arguments added to every call (a text embedding, a
  conditioning vector, ``return_dict=False``). A tensor whose first dimension is 1 is expanded
  to each call's batch (perturbation methods forward many copies of one image at once); other
  values are passed as they are.
- ``input_builder``: ``input_builder(x) -> args`` for models whose inputs the image is only one
  of: a tuple or list is passed positionally (``model(*args)``), a dict by name
  (``model(**args)``), a tensor alone (``model(args)``). It is called with every batch the
  engine forwards, so it builds the other inputs for ``x.shape[0]`` rows.

Example:
    >>> class TwoInputs(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.rgb, self.depth = nn.Conv2d(3, 4, 3), nn.Conv2d(1, 4, 3)
    ...     def forward(self, rgb, depth, scale=1.0):
    ...         return ((self.rgb(rgb) + self.depth(depth)).mean((2, 3))) * scale
    >>> depth = torch.rand(1, 1, 16, 16)
    >>> def inputs(x):  # the image and its depth map, for every row of the batch
    ...     return x, depth.expand(len(x), -1, -1, -1)
    >>> bound = bind_inputs(TwoInputs(), {"scale": 2.0}, inputs)
    >>> bound(torch.rand(5, 3, 16, 16)).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["BoundInputs", "InputBuilder", "bind_inputs"]

# x: Tensor[B, 3, H, W] -> a tuple/list (positional), a dict (by name) or one tensor
InputBuilder = Callable[[torch.Tensor], Any]


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


class BoundInputs(nn.Module):
    """``model`` called with the arguments built from the image (see the module docstring).

    The model is this module's child ``model``; its layers are therefore named ``model.<name>``
    here, and :class:`taskcam.Explainer` resolves layer names on the model itself.

    Args:
        model: the user's model.
        forward_kwargs: constant keyword arguments of every call.
        input_builder: turns the image batch into the model's arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        forward_kwargs: Optional[Mapping[str, Any]] = None,
        input_builder: Optional[InputBuilder] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.forward_kwargs = dict(forward_kwargs or {})
        self.input_builder = input_builder
        self._checked = False

    def arguments(self, x: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments the model gets for the image batch ``x``."""
        args: tuple[Any, ...] = (x,)
        kwargs: dict[str, Any] = {}
        if self.input_builder is not None:
            try:
                built = self.input_builder(x)
            except TaskcamError:
                raise
            except Exception as e:  # noqa: BLE001 - the user's builder may raise anything
                raise TaskcamError(
                    f"input_builder {_describe(self.input_builder)} failed on an image batch "
                    f"{tuple(x.shape)}: {type(e).__name__}: {e}"
                ) from e
            if isinstance(built, Mapping):
                args, kwargs = (), dict(built)
            elif isinstance(built, (tuple, list)):
                args = tuple(built)
            elif isinstance(built, torch.Tensor):
                args = (built,)
            else:
                raise TaskcamError(
                    f"input_builder {_describe(self.input_builder)} returned a "
                    f"{type(built).__name__}; expected a tuple or list (positional arguments), "
                    "a dict (keyword arguments) or a tensor"
                )
            _check_rows(self.input_builder, x, [*args, *kwargs.values()])
        for name, value in self.forward_kwargs.items():
            if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == 1:
                value = value.expand(x.shape[0], *value.shape[1:])
            kwargs[name] = value
        return args, kwargs

    def forward(self, x: torch.Tensor) -> Any:  # x: [B, 3, H, W]
        args, kwargs = self.arguments(x)
        if not self._checked:
            self._check_signature(args, kwargs)
            self._checked = True
        return self.model(*args, **kwargs)

    def _check_signature(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            signature = inspect.signature(self.model.forward)
        except (TypeError, ValueError):  # a forward without a readable signature
            return
        try:
            signature.bind(*args, **kwargs)
        except TypeError as e:
            given = [f"input_builder {_describe(self.input_builder)}"] if self.input_builder else []
            given += ["forward_kwargs"] if self.forward_kwargs else []
            source = " and ".join(given)
            raise TaskcamError(
                f"{type(self.model).__name__}.forward{signature} does not take the "
                f"{len(args)} positional and {sorted(kwargs)} keyword arguments "
                f"{source} gave: {e}"
            ) from e


def _check_rows(builder: InputBuilder, x: torch.Tensor, values: list[Any]) -> None:
    """The built arguments keep the batch: some tensor among them has ``x``'s rows."""
    rows = [v.shape[0] for v in values if isinstance(v, torch.Tensor) and v.ndim]
    if x.shape[0] > 1 and x.shape[0] not in rows:
        raise TaskcamError(
            f"input_builder {_describe(builder)} was given {x.shape[0]} images but returned no "
            f"tensor with {x.shape[0]} rows (first dimensions {rows}); build every input for "
            "the whole batch"
        )


def bind_inputs(
    model: nn.Module,
    forward_kwargs: Optional[Mapping[str, Any]] = None,
    input_builder: Optional[InputBuilder] = None,
) -> nn.Module:
    """``model`` as a module taking the image alone: itself when there is nothing to bind,
    else a :class:`BoundInputs`. Use it where taskcam wants the model
    (:func:`taskcam.faithfulness.target_faithfulness`, the metrics) with the same extras.

    Raises:
        TaskcamError: ``forward_kwargs`` that is not a dict with string keys, an
            ``input_builder`` that is not callable.

    Example:
        >>> net = nn.Linear(3, 2)
        >>> bind_inputs(net) is net, type(bind_inputs(net, {"input": None})).__name__
        (True, 'BoundInputs')
    """
    if forward_kwargs is not None and (
        not isinstance(forward_kwargs, Mapping)
        or not all(isinstance(k, str) for k in forward_kwargs)
    ):
        raise TaskcamError(
            "forward_kwargs: expected a dict of keyword arguments (str keys), got "
            f"{type(forward_kwargs).__name__}"
            + (f" with keys {list(forward_kwargs)}" if isinstance(forward_kwargs, Mapping) else "")
        )
    if input_builder is not None and not callable(input_builder):
        raise TaskcamError(
            f"input_builder: expected a callable x -> arguments, got {type(input_builder).__name__}"
        )
    if not forward_kwargs and input_builder is None:
        return model
    return BoundInputs(model, forward_kwargs, input_builder)
