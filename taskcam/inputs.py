"""Models whose forward takes more than the image: extra keyword arguments, several tensors.

The engine explains an image batch ``x: Tensor[B, 3, H, W]``; every forward it makes (the
hooked one, perturbed copies, flips) passes through :func:`bind_inputs`' wrapper, which turns
the ``N`` rows it forwards into the model's own arguments:

- ``forward_kwargs``: constant keyword arguments added to every call (a text embedding, a
  conditioning vector, a mask, ``return_dict=False``). Tensors are moved to the image's
  device and follow each forward's rows: one of two or more dimensions whose first is 1
  (``Tensor[1, D]``) is repeated to the ``N`` rows; one whose first dimension is ``B`` (``B >
  1``, one row per explained image) is taken as it is for the batch of ``B`` images and, for
  the ``N`` perturbed copies of image ``b`` (Score-CAM, Ablation-CAM, RISE, D-RISE), as its
  row ``b`` repeated ``N`` times. Other values (numbers, flags, a ``Tensor[1]`` that
  broadcasts, tensors of another first dimension) are passed as they are.
- ``input_builder``: ``input_builder(x) -> args`` for models whose inputs the image is only one
  of, called with every ``x: Tensor[N, 3, H, W]`` the engine forwards. It returns a tuple or
  list (``model(*args)``), a dict (``model(**args)``), a pair ``(tuple, dict)`` (``model(*args,
  **kwargs)``; return a list for a model that takes a tuple and a dict positionally) or one
  tensor (``model(args)``), with every per-row input built for the ``N`` rows. A builder with
  a parameter named ``rows`` also gets ``rows: LongTensor[N]``, the explained image each row
  of ``x`` is (a perturbed copy of): index per-image inputs with it (``meta[rows]``).

Example:
    >>> class TwoInputs(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.rgb, self.depth = nn.Conv2d(3, 4, 3), nn.Conv2d(1, 4, 3)
    ...     def forward(self, rgb, depth, scale=1.0):
    ...         return ((self.rgb(rgb) + self.depth(depth)).mean((2, 3))) * scale
    >>> depth = torch.rand(2, 1, 16, 16)  # one depth map per explained image
    >>> def inputs(x, rows):  # the images and their own depth maps, for every row of x
    ...     return x, depth[rows]
    >>> bound = bind_inputs(TwoInputs(), {"scale": 2.0}, inputs)
    >>> bound(torch.rand(2, 3, 16, 16)).shape
    torch.Size([2, 4])
    >>> bound.for_image(1, 2)(torch.rand(5, 3, 16, 16)).shape  # 5 copies of image 1
    torch.Size([5, 4])
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from typing import Any, Callable, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["BoundInputs", "InputBuilder", "bind_inputs"]

# x: Tensor[N, 3, H, W] (and rows: LongTensor[N]) -> a tuple/list (positional), a dict (by
# name), a pair (tuple, dict) or one tensor
InputBuilder = Callable[..., Any]


def _describe(fn: Callable[..., Any]) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _takes_rows(builder: Optional[InputBuilder]) -> bool:
    try:
        return builder is not None and "rows" in inspect.signature(builder).parameters
    except (TypeError, ValueError):  # a callable without a readable signature
        return False


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    """The tensors in ``value``, looking into tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v)


def _is_tensor_list(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(isinstance(v, torch.Tensor) for v in value)


class BoundInputs(nn.Module):
    """``model`` called with the arguments built from the image (see the module docstring).

    The model is this module's child ``model``; its layers are therefore named ``model.<name>``
    here, and :class:`taskcam.Explainer` resolves layer names (and hooks them) on the model
    itself. Nothing is attached to the model.

    Args:
        model: the user's model.
        forward_kwargs: constant keyword arguments of every call.
        input_builder: turns the image rows into the model's arguments.
        image: ``b`` when every call forwards copies of explained image ``b`` (see
            :meth:`for_image`); ``None`` when a call's rows are the explained images.
        batch: ``B``, the number of explained images, with ``image``.
    """

    def __init__(
        self,
        model: nn.Module,
        forward_kwargs: Optional[Mapping[str, Any]] = None,
        input_builder: Optional[InputBuilder] = None,
        *,
        image: Optional[int] = None,
        batch: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.forward_kwargs = dict(forward_kwargs or {})
        self.input_builder = input_builder
        self.image, self.batch = image, batch
        self._rows = _takes_rows(input_builder)
        self._checked = False
        self._views: dict[tuple[int, int], BoundInputs] = {}

    def for_image(self, image: int, batch: int) -> BoundInputs:
        """The same binding for calls that forward copies of explained image ``image`` of
        ``batch``: per-image tensors give that image's row, a builder's ``rows`` is ``image``.
        """
        key = (image, batch)
        if key not in self._views:
            self._views[key] = BoundInputs(
                self.model, self.forward_kwargs, self.input_builder, image=image, batch=batch
            )
        return self._views[key]

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """``LongTensor[N]``: the explained image each row of ``x: Tensor[N, ...]`` is."""
        if self.image is None:
            return torch.arange(x.shape[0], device=x.device)
        return torch.full((x.shape[0],), self.image, dtype=torch.long, device=x.device)

    def arguments(self, x: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments the model gets for the image rows ``x``."""
        args: tuple[Any, ...] = (x,)
        kwargs: dict[str, Any] = {}
        if self.input_builder is not None:
            args, kwargs = self._build(x)
        for name, value in self.forward_kwargs.items():
            if name in kwargs:
                raise TaskcamError(
                    f"forward_kwargs[{name!r}]: input_builder {_describe(self.input_builder)} "
                    "already gives this argument; pass it in one place"
                )
            kwargs[name] = self._follow_rows(value, x)
        return args, kwargs

    def _build(self, x: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        builder = self.input_builder
        assert builder is not None
        try:
            built = builder(x, rows=self.rows(x)) if self._rows else builder(x)
        except TaskcamError:
            raise
        except Exception as e:  # noqa: BLE001 - the user's builder may raise anything
            raise TaskcamError(
                f"input_builder {_describe(builder)} failed on an image batch "
                f"{tuple(x.shape)}: {type(e).__name__}: {e}"
            ) from e
        if (
            isinstance(built, tuple)
            and len(built) == 2
            and isinstance(built[0], (tuple, list))
            and isinstance(built[1], Mapping)
        ):
            args, kwargs = tuple(built[0]), dict(built[1])
        elif isinstance(built, Mapping):
            args, kwargs = (), dict(built)
        elif isinstance(built, (tuple, list)):
            args, kwargs = tuple(built), {}
        elif isinstance(built, torch.Tensor):
            args, kwargs = (built,), {}
        else:
            raise TaskcamError(
                f"input_builder {_describe(builder)} returned a {type(built).__name__}; "
                "expected a tuple or list (positional arguments), a dict (keyword arguments), "
                "a pair (tuple, dict) or a tensor"
            )
        self._check_rows(x, [*args, *kwargs.values()])
        return args, kwargs

    def _follow_rows(self, value: Any, x: torch.Tensor) -> Any:
        """A constant tensor for the rows of ``x``: its one row repeated, or image ``b``'s."""
        if not isinstance(value, torch.Tensor) or value.ndim == 0:
            return value
        value = value.to(x.device)
        n, first = x.shape[0], value.shape[0]
        per_image = self.image is not None and self.batch not in (None, 1)
        if per_image and first == self.batch:  # one row per explained image: this image's
            return value[self.image : self.image + 1].expand(n, *value.shape[1:])
        if first == 1 and n != 1 and value.ndim >= 2:  # a Tensor[1] broadcasts as it is
            return value.expand(n, *value.shape[1:])
        return value

    def _check_rows(self, x: torch.Tensor, values: list[Any]) -> None:
        """The built arguments keep the batch: some tensor among them has ``x``'s rows, and
        none has one row per explained image where ``x`` is copies of one of them."""
        builder = _describe(self.input_builder)
        rows = [v.shape[0] for v in _tensors(values) if v.ndim]
        rows += [len(v) for v in values if _is_tensor_list(v)]  # a list of images
        n = x.shape[0]
        if n > 1 and n not in rows:
            raise TaskcamError(
                f"input_builder {builder} was given {n} images but returned no tensor with "
                f"{n} rows (first dimensions {rows}); build every input for the whole batch"
            )
        copies = self.image is not None and self.batch not in (None, 1, n)
        if copies and not self._rows and self.batch in rows:
            raise TaskcamError(
                f"input_builder {builder} returned a tensor of {self.batch} rows (one per "
                f"explained image) for {n} perturbed copies of image {self.image}; give it "
                "a parameter named rows (LongTensor[N], the image each row of x is) and "
                "index per-image inputs with it, or pass them in forward_kwargs"
            )

    def forward(self, x: torch.Tensor) -> Any:  # x: [N, 3, H, W]
        args, kwargs = self.arguments(x)
        if self._checked:
            return self.model(*args, **kwargs)
        self._check_once(x, args, kwargs)
        try:
            out = self.model(*args, **kwargs)
        except TypeError as e:  # a forward(*args, **kwargs) that refuses them inside
            raise TaskcamError(
                f"{type(self.model).__name__} refused the {len(args)} positional and "
                f"{sorted(kwargs)} keyword arguments {self._source()} gave: {e}"
            ) from e
        self._checked = True
        return out

    def _source(self) -> str:
        given = [f"input_builder {_describe(self.input_builder)}"] if self.input_builder else []
        given += ["forward_kwargs"] if self.forward_kwargs else []
        return " and ".join(given)

    def _check_once(self, x: torch.Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]):
        """The model's signature takes the arguments; the builder passes the image on."""
        try:
            signature: Optional[inspect.Signature] = inspect.signature(self.model.forward)
        except (TypeError, ValueError):  # a forward without a readable signature
            signature = None
        if signature is not None:
            try:
                signature.bind(*args, **kwargs)
            except TypeError as e:
                raise TaskcamError(
                    f"{type(self.model).__name__}.forward{signature} does not take the "
                    f"{len(args)} positional and {sorted(kwargs)} keyword arguments "
                    f"{self._source()} gave: {e}"
                ) from e
        if self.input_builder is not None and not self._uses_image(x, [*args, *kwargs.values()]):
            raise TaskcamError(
                f"input_builder {_describe(self.input_builder)} returned no argument computed "
                "from the image it was given: the explained image must be one of the model's "
                "inputs (return it, or tensors built from it)"
            )

    def _uses_image(self, x: torch.Tensor, values: list[Any]) -> bool:
        """Whether the built arguments depend on ``x``: ``x`` itself, a view of it, or (with
        the builder run again on a copy that requires grad) a tensor computed from it."""
        if any(t is x or t.data_ptr() == x.data_ptr() for t in _tensors(values)):
            return True
        probe = x.detach().clone().requires_grad_(True)
        try:
            with torch.enable_grad():
                args, kwargs = self._build(probe)
        except Exception:  # noqa: BLE001 - a builder that cannot take it: cannot tell
            return True
        return any(t.requires_grad for t in _tensors([*args, *kwargs.values()]))


def bind_inputs(
    model: nn.Module,
    forward_kwargs: Optional[Mapping[str, Any]] = None,
    input_builder: Optional[InputBuilder] = None,
) -> nn.Module:
    """``model`` as a module taking the image alone: itself when there is nothing to bind,
    else a :class:`BoundInputs`. taskcam's :class:`~taskcam.Explainer` and
    :func:`~taskcam.faithfulness.target_faithfulness` take the same two arguments and bind
    them; use this where something else wants the model (the metrics).

    Args:
        model: the model, ``model(*args, **kwargs)``.
        forward_kwargs: constant keyword arguments of every forward (see the module
            docstring for how tensors follow the rows).
        input_builder: ``input_builder(x[, rows]) -> args``, the model's arguments for the
            image rows ``x: Tensor[N, 3, H, W]``.

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
            "input_builder: expected a callable x -> the model's arguments, got "
            f"{type(input_builder).__name__}"
        )
    if not forward_kwargs and input_builder is None:
        return model
    return BoundInputs(model, forward_kwargs, input_builder)
