"""What every CAM method shares: the per-layer context it reads and the registry it lives in."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import torch
from torch import nn

from taskcam.capture import Capture
from taskcam.errors import TaskcamError
from taskcam.explanation import Explanation
from taskcam.targets import ClassIndexTarget, Target

__all__ = [
    "CamTerms",
    "LayerContext",
    "Method",
    "available_methods",
    "get_method",
    "register",
    "require_grads",
    "unregister",
]


@dataclass
class CamTerms:
    """What a method gives for one layer; exactly one field is set.

    Attributes:
        weights: ``Tensor[B, T, C]`` channel weights; the map is ``sum_c w_c * A_c``.
        elementwise: ``Tensor[B, T, C, h, w]`` weighted activations; the map is their channel sum.
        cam: ``Tensor[B, T, h, w]`` the map itself (eigen methods).
    """

    weights: Optional[torch.Tensor] = None
    elementwise: Optional[torch.Tensor] = None
    cam: Optional[torch.Tensor] = None


@dataclass
class LayerContext:
    """Everything a method may read about one target layer after the model's forward pass.

    Attributes:
        name: the layer's dotted name.
        module: the layer.
        activations: ``Tensor[B, C, h, w]`` the layer's output (detached).
        gradients: ``Tensor[B, T, C, h, w]`` d(score)/d(activation) per target, or ``None`` for
            methods that need none.
        targets: per image, its ``T`` targets.
        scores: ``Tensor[B, T]`` the targets' scores on the unperturbed input.
        inputs: ``Tensor[B, 3, H, W]`` the model input.
        model: the network (in eval mode, hooks in place).
        capture: the active capture, through which perturbation methods edit the layer.
        batch_size: perturbed inputs per forward, or ``None`` to let the method choose.
        progress: show a progress bar over perturbation batches.
    """

    name: str
    module: nn.Module
    activations: torch.Tensor
    gradients: Optional[torch.Tensor]
    targets: list[list[Target]]
    scores: torch.Tensor
    inputs: torch.Tensor
    model: nn.Module
    capture: Capture
    batch_size: Optional[int] = None
    progress: bool = False

    def run(
        self, x: torch.Tensor, edit: Optional[Callable[[torch.Tensor], torch.Tensor]] = None
    ) -> Any:
        """Forward ``x`` without gradients, optionally replacing this layer's output.

        Args:
            x: ``Tensor[N, 3, H, W]`` inputs.
            edit: maps this layer's output ``Tensor[N, C, h, w]`` to its replacement.
        """
        cap = self.capture
        cap.record = False
        cap.edit = None if edit is None else (lambda name, a: edit(a) if name == self.name else a)
        try:
            with torch.no_grad():
                return self.model(x)
        finally:
            cap.record = True
            cap.edit = None

    def score(self, output: Any, image: int) -> torch.Tensor:
        """``Tensor[N, T]``: image ``image``'s targets evaluated on a batch of ``N`` outputs."""
        return torch.stack([t(output) for t in self.targets[image]], dim=1).float()


class Method:
    """Base of all CAM methods: one class per method, settings in ``__init__``.

    Subclasses set ``name`` and implement :meth:`terms`. ``needs_grad`` says whether the
    engine must take gradients of the targets with respect to the layer's activations.
    """

    name: ClassVar[str] = ""
    #: earlier names that still select the method (``drise-fast`` for ``fast-drise``)
    aliases: ClassVar[tuple[str, ...]] = ()
    needs_grad: ClassVar[bool] = True
    #: pixel-space methods (Guided Backprop) need the gradient of the input instead
    pixel_space: ClassVar[bool] = False
    #: ``True`` when the maps come from perturbed forwards (reported as slow by the CLI)
    perturbation: ClassVar[bool] = False
    #: black-box methods (RISE) need no target layer: they implement :meth:`saliency`
    uses_layers: ClassVar[bool] = True
    #: methods defined for detections only (D-RISE): every target must have ``perturbed()``
    needs_detections: ClassVar[bool] = False
    #: attention methods (rollout, LeGrad) read the model's attention, not a target layer:
    #: they implement :meth:`explain_model`
    attention: ClassVar[bool] = False

    def saliency(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        score: Callable[[Any, int], torch.Tensor],
        *,
        progress: bool = False,
        batch_size: Optional[int] = None,
    ) -> torch.Tensor:  # pragma: no cover - only black-box methods implement it
        """``Tensor[B, T, H, W]`` for methods with ``uses_layers = False``.

        ``score(output, b)`` gives image ``b``'s ``T`` target scores, ``Tensor[N, T]``, on
        the output of ``N`` perturbed copies of it. ``batch_size`` is the explainer's
        (perturbed inputs per forward), used when the method has none of its own.
        """
        raise NotImplementedError

    def explain_model(
        self, model: nn.Module, inputs: torch.Tensor, targets: list[list[Target]]
    ) -> Explanation:  # pragma: no cover - only attention methods implement it
        """The whole explanation, for methods with ``attention = True``.

        Args:
            model: the network.
            inputs: ``Tensor[B, 3, H, W]`` on the model's device.
            targets: one list of ``T`` targets per image.
        """
        raise NotImplementedError

    def __init__(self, **options: Any) -> None:
        if options:
            raise TaskcamError(f"method {self.name!r} takes no option {sorted(options)}")

    def terms(self, ctx: LayerContext) -> CamTerms:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def require_grads(ctx: LayerContext) -> torch.Tensor:
    """``ctx.gradients``, which gradient methods cannot do without.

    Raises:
        TaskcamError: no gradients were captured for the layer (a method bug: the engine
            takes them for every method with ``needs_grad``).
    """
    if ctx.gradients is None:  # pragma: no cover - the engine always provides them
        raise TaskcamError(f"no gradients were captured for layer {ctx.name!r}")
    return ctx.gradients


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Add a :class:`Method` to the registry under ``cls.name`` (usable as a class decorator).

    taskcam's own methods are registered in one list, :data:`taskcam.methods.BUILTIN`; this
    adds a method of yours, which ``--method`` then accepts like the built-in ones.

    Example:
        >>> class Ones(Method):
        ...     name = "ones-example"
        ...     needs_grad = False
        ...     def terms(self, ctx):
        ...         return CamTerms(cam=torch.ones_like(ctx.activations[:, :1]).expand(
        ...             -1, ctx.scores.shape[1], -1, -1))
        >>> register(Ones) is Ones, "ones-example" in available_methods()
        (True, True)
        >>> unregister("ones-example")
    """
    taken = {_key(n) for known in _REGISTRY.values() for n in (known.name, *known.aliases)}
    if not cls.name or any(_key(n) in taken for n in (cls.name, *cls.aliases)):
        raise TaskcamError(f"method name {cls.name!r} is empty or already registered")
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method added with :func:`register` (tests, plugins that reload).

    Raises:
        TaskcamError: no method of that name is registered.
    """
    if name not in _REGISTRY:
        raise TaskcamError(f"no method named {name!r} is registered")
    del _REGISTRY[name]


def available_methods() -> list[str]:
    """Names of all registered methods, in registration order.

    Example:
        >>> "gradcam" in available_methods()
        True
    """
    return list(_REGISTRY)


def _key(name: str) -> str:
    """A method name as looked up: lower case, ``-`` and ``_`` ignored."""
    return str(name).lower().replace("-", "").replace("_", "")


def get_method(method: str | Method, **options: Any) -> Method:
    """Look a method up by name or alias (case-insensitive, ``-`` and ``_`` ignored) and
    build it.

    Args:
        method: a registered name such as ``"gradcam++"`` (or one of a method's
            ``aliases``), or an already built :class:`Method`.
        **options: the method's settings.

    Raises:
        TaskcamError: an unknown name; the message lists the registered ones.

    Example:
        >>> get_method("GradCAM"), get_method("drise-fast").name
        (GradCAM(), 'fast-drise')
    """
    if isinstance(method, Method):
        return method
    key = _key(method)
    for cls in _REGISTRY.values():
        if any(_key(name) == key for name in (cls.name, *cls.aliases)):
            return cls(**options)
    raise TaskcamError(f"unknown method {method!r}; available: {', '.join(_REGISTRY)}")


def per_image_class_index(targets: Sequence[Sequence[Target]], method: str) -> torch.Tensor:
    """``LongTensor[B, T]`` of the targets' ``class_index`` attributes (for the original CAM)."""
    rows = []
    for b, row in enumerate(targets):
        idx = []
        for t in row:
            index = t.class_index if isinstance(t, ClassIndexTarget) else None
            if index is None:
                raise TaskcamError(
                    f"{method} needs class targets with a class_index; image {b} has "
                    f"{type(t).__name__}"
                )
            idx.append(int(index))
        rows.append(idx)
    return torch.tensor(rows, dtype=torch.long)
