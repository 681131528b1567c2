"""Capture of layer activations with forward hooks, and restoration of the model afterwards."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["Capture", "ModelState", "model_device", "predict"]

# edit(name, activation) -> replacement activation, used by perturbation methods
Edit = Callable[[str, torch.Tensor], torch.Tensor]


class ModelState:
    """A snapshot of what taskcam may touch on a model: train/eval flags and ``requires_grad``.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> state = ModelState(m)
        >>> m.eval(); m.weight.requires_grad_(False)  # doctest: +ELLIPSIS
        Linear(...)
        Parameter...
        >>> state.restore(); m.training, m.weight.requires_grad
        (True, True)
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.training = [(m, m.training) for m in model.modules()]
        self.flags = [(p, p.requires_grad) for p in model.parameters()]

    def eval_and_freeze(self, freeze: bool) -> None:
        """Put every module in eval mode and, with ``freeze``, stop parameters requiring grad.

        Only what is not already so is touched (``nn.Module.train`` on a large model costs
        more than the explanation's own arithmetic).
        """
        if any(flag for _, flag in self.training):
            if any(type(m).train is not nn.Module.train for m, _ in self.training):
                self.model.eval()  # a module with its own train() gets to run it
            else:
                for module, flag in self.training:
                    if flag:
                        module.training = False
        if freeze:
            for param, flag in self.flags:
                if flag:
                    param.requires_grad_(False)

    def restore(self) -> None:
        for module, flag in self.training:
            if module.training != flag:
                module.training = flag
        for param, flag in self.flags:
            if param.requires_grad != flag:
                param.requires_grad_(flag)


def _first_tensor(name: str, output: Any) -> tuple[torch.Tensor, Optional[int]]:
    """The tensor a layer outputs and, for a tuple output (Hugging Face), its index there."""
    if isinstance(output, torch.Tensor):
        return output, None
    if isinstance(output, (tuple, list)):
        for i, item in enumerate(output):
            if isinstance(item, torch.Tensor):
                return item, i
    raise TaskcamError(
        f"layer {name!r} returns {type(output).__name__}, not a tensor; choose a layer whose "
        "output is a tensor"
    )


def _replace(output: Any, index: Optional[int], tensor: torch.Tensor) -> Any:
    """``output`` with its tensor at ``index`` (``None``: the output itself) replaced."""
    if index is None:
        return tensor
    items = list(output)
    items[index] = tensor
    if isinstance(output, tuple) and hasattr(output, "_fields"):  # a namedtuple
        return type(output)(*items)
    return type(output)(items)


class HookSession:
    """Hooks owned by a context manager, and the model state to put back when it ends.

    Subclasses register hooks into ``_handles`` and set ``_state`` (a :class:`ModelState`)
    in ``__enter__``, calling :meth:`_release` if that fails half-way; ``__exit__`` removes
    every hook and restores the model, even after an exception.
    """

    def __init__(self) -> None:
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._state: Optional[ModelState] = None

    def _release(self) -> None:
        try:
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
        finally:
            if self._state is not None:
                self._state.restore()
                self._state = None

    def __exit__(self, *exc: object) -> None:
        self._release()


class Capture(HookSession):
    """Forward hooks on target layers that record their outputs, owned and always released.

    On entry the model is put in eval mode and, when gradients are wanted, its parameters stop
    requiring gradients for the duration (no parameter gradient is ever needed: the earliest
    hooked activation becomes the leaf of the graph, so autograd records only what lies after
    it). On exit, even after an exception, the hooks are removed and every module's mode and
    every parameter's ``requires_grad`` flag are put back exactly.

    A layer that returns a tuple (Hugging Face blocks) is captured through its first tensor,
    the hidden states; the rest of the tuple passes through untouched.

    Args:
        model: the network.
        layers: ``(name, module)`` pairs, as from :func:`taskcam.layers.resolve_layers`.
        need_grad: record activations inside the autograd graph.

    Example:
        >>> import torch, torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> with Capture(m, [("layer4", m.layer4)], need_grad=False) as cap:
        ...     _ = cap.model(torch.zeros(1, 3, 64, 64))
        >>> cap.activations["layer4"].shape
        torch.Size([1, 512, 2, 2])
    """

    def __init__(
        self, model: nn.Module, layers: list[tuple[str, nn.Module]], *, need_grad: bool
    ) -> None:
        super().__init__()
        self.model = model
        self.layers = layers
        self.need_grad = need_grad
        self.activations: dict[str, torch.Tensor] = {}
        self.edit: Optional[Edit] = None
        # name -> reshape with an ``inverse``: edits then see (and return) Tensor[B, C, h, w]
        self.views: dict[str, Any] = {}
        self.record = True

    def _hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any):
            act, index = _first_tensor(name, output)
            if self.edit is not None:
                act = self._edited(name, act)
            if not self.record:
                return _replace(output, index, act) if self.edit is not None else None
            if self.need_grad and torch.is_grad_enabled():
                if not act.requires_grad:
                    act = act.detach().requires_grad_(True)
                self.activations[name] = act
                # downstream in-place ops (ReLU(inplace=True), +=) must not alter the capture
                return _replace(output, index, act.clone())
            self.activations[name] = act.detach()
            return _replace(output, index, act.clone())

        return hook

    def _edited(self, name: str, act: torch.Tensor) -> torch.Tensor:
        """Apply :attr:`edit`, through the layer's grid view when it has one."""
        assert self.edit is not None
        view = self.views.get(name)
        if view is None:
            return self.edit(name, act)
        grid = view(act)
        edited = self.edit(name, grid)
        if edited is grid:
            return act
        inverse = getattr(view, "inverse", None)
        if inverse is None:
            raise TaskcamError(
                f"layer {name!r} is edited through its reshape {view!r}, which has no "
                "inverse(grid, like); give it one to use methods that edit the layer "
                "(ablationcam)"
            )
        return inverse(edited, act)

    def __enter__(self) -> Capture:
        self._state = ModelState(self.model)
        try:
            self._state.eval_and_freeze(self.need_grad)
            for name, module in self.layers:
                self._handles.append(module.register_forward_hook(self._hook(name)))
        except BaseException:
            self._release()
            raise
        return self


def predict(model: nn.Module, x: torch.Tensor) -> Any:
    """The model's output on ``x`` without gradients, in eval mode, the model's state (mode,
    ``requires_grad`` flags) put back afterwards.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout()).train()
        >>> predict(m, torch.ones(1, 2)).requires_grad, m.training
        (False, True)
    """
    with Capture(model, [], need_grad=False), torch.no_grad():
        return model(x)


def model_device(model: nn.Module) -> torch.device:
    """Where ``model`` runs: its first parameter's device (the CPU for a model without any).

    Example:
        >>> model_device(torch.nn.Linear(2, 2)), model_device(torch.nn.ReLU())
        (device(type='cpu'), device(type='cpu'))
    """
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")
