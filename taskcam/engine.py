"""The shared CAM engine: one forward with hooks, batched gradients, maps per (image, target)."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from taskcam.capture import Capture
from taskcam.errors import TaskcamError, inference_tensor_error
from taskcam.explanation import Explanation, normalize_maps, upsample_maps
from taskcam.inputs import BoundInputs, InputBuilder, bind_inputs
from taskcam.layers import LayerSpec, default_layer, resolve_layers
from taskcam.masking import check_batch_size
from taskcam.methods import CamTerms, LayerContext, Method, get_method
from taskcam.methods.eigen import principal_projection
from taskcam.methods.guided import GuidedReLU
from taskcam.outputs import detach_output
from taskcam.reshape import Reshape, reshape_for_output
from taskcam.runtime import check_run_settings, perturbed_forward, with_precision
from taskcam.targets import (
    PerturbableTarget,
    Target,
    Targets,
    explained_layer,
    per_image_targets,
    perturbation_targets,
    target_scores,
)

__all__ = ["Explainer", "Explanation", "explain", "normalize_maps"]

_FUSE = ("mean", "product")


def _layer_choice(names: list[str], targets: list[list[Target]]) -> torch.Tensor:
    """``BoolTensor[L, B, T]``: which hooked layers' maps explain each target.

    A :class:`taskcam.LayerTarget` naming one of the hooked layers (a detection's pyramid
    level) uses that layer alone; every other target uses all of them.
    """
    batch, n_targets = len(targets), len(targets[0])
    use = torch.ones(len(names), batch, n_targets, dtype=torch.bool)
    for b, row in enumerate(targets):
        for t, target in enumerate(row):
            layer = explained_layer(target, names)
            if layer is not None:
                use[:, b, t] = False
                use[names.index(layer), b, t] = True
    return use


def _gradients(scores: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """d scores[b, t] / d inputs[i][b] for all targets at once: ``Tensor[B, T, ...]`` each.

    Images are independent in eval mode, so summing a target's score over the batch gives
    every image its own gradient; the ``T`` targets go through one batched backward.
    """
    batch, n_targets = scores.shape
    if not scores.requires_grad:
        return [x.new_zeros(batch, n_targets, *x.shape[1:]) for x in inputs]
    if n_targets == 1:
        grads = torch.autograd.grad(scores[:, 0].sum(), inputs, allow_unused=True)
        grads = tuple(None if g is None else g[:, None] for g in grads)
    else:
        eye = torch.eye(n_targets, dtype=scores.dtype, device=scores.device)
        cotangents = eye[:, None, :].expand(n_targets, batch, n_targets)
        try:
            # the graph is kept so that the per-target fallback below can still use it
            grads = torch.autograd.grad(
                scores,
                inputs,
                cotangents,
                retain_graph=True,
                is_grads_batched=True,
                allow_unused=True,
            )
            grads = tuple(None if g is None else g.movedim(0, 1) for g in grads)
        except RuntimeError:
            # an op without a batching rule: one backward per target instead
            per_target = [
                torch.autograd.grad(
                    scores[:, t].sum(), inputs, retain_graph=True, allow_unused=True
                )
                for t in range(n_targets)
            ]
            grads = tuple(
                None if per_target[0][i] is None else torch.stack([g[i] for g in per_target], 1)
                for i in range(len(inputs))
            )
    return [
        x.new_zeros(batch, n_targets, *x.shape[1:]) if g is None else g
        for g, x in zip(grads, inputs)
    ]


def _cat_terms(parts: list[CamTerms]) -> CamTerms:
    """One image's :class:`CamTerms` each (``Tensor[1, ...]`` fields) as the batch's."""
    cat = {}
    for field in dataclasses.fields(CamTerms):
        values = [getattr(p, field.name) for p in parts]
        cat[field.name] = None if values[0] is None else torch.cat(values)
    return CamTerms(**cat)


def _combine(terms: CamTerms, acts: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """``Tensor[B, T, h, w]``: the rectified map from a method's terms."""
    if terms.cam is not None:
        cam = terms.cam
    elif eigen_smooth:
        weighted = terms.elementwise
        if weighted is None:
            weighted = terms.weights[..., None, None] * acts[:, None]  # [B, T, C, h, w]
        cam = principal_projection(weighted)
    elif terms.weights is not None:
        cam = torch.einsum("btc,bchw->bthw", terms.weights, acts)
    elif terms.elementwise is not None:
        cam = terms.elementwise.sum(dim=2)
    else:  # pragma: no cover - a method bug
        raise TaskcamError("method returned no terms")
    return cam.clamp(min=0)


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return fallback


class Explainer:
    """Settings for explaining a model: target layers, method and options.

    Args:
        model: any ``nn.Module`` taking ``Tensor[B, 3, H, W]``. It is left exactly as it was:
            train/eval mode, ``requires_grad`` flags and hooks are restored after each call.
        layers: target layer(s) as dotted names or modules; several are fused. ``None`` picks
            the last spatial feature map of a CNN, or the input of the last attention of a
            transformer (see :func:`taskcam.layers.default_layer`).
        method: a registered method name (``taskcam methods`` lists them) or a ``Method``.
        fuse: how several layers' normalised maps are combined: ``"mean"`` or ``"product"``.
        aug_smooth: average the maps over horizontal flips and a 1.1× rescale.
        eigen_smooth: replace each map by the first principal component of its weighted
            activations (removes noise; not for eigen methods, which are that already;
            refused for methods that read no layer: rise, drise, the attention methods).
        reshape: maps a layer's output to ``Tensor[B, C, h, w]``; it wins over the automatic
            one. ``None`` infers it per layer from the model and the input (ViT tokens
            ``Tensor[B, P + h*w, C]``, Swin's channels-last stages: see
            :func:`taskcam.reshape.reshape_for_output`). Methods that edit the layer
            (ablationcam) need a reshape with an ``inverse(grid, like)``, as taskcam's have.
        batch_size: perturbed inputs per forward for perturbation methods.
        progress: show progress bars for perturbation methods.
        forward_kwargs: constant keyword arguments of every forward (a text embedding,
            ``return_dict=False``, a mask). A ``Tensor[1, ...]`` (two or more dimensions) is
            repeated to each forward's rows; one with a first dimension of ``B`` (one row
            per explained image) gives the perturbed copies of image ``b`` its row ``b``.
            See :mod:`taskcam.inputs`.
        input_builder: ``input_builder(x) -> args`` for a model whose inputs the image is
            one of (``forward(rgb, depth)``, ``forward(image, metadata)``), called with every
            ``x: Tensor[N, 3, H, W]`` the engine forwards (the images, perturbed copies,
            ``aug_smooth``'s flips and 1.1x rescale, whose ``H, W`` differ: only the image is
            perturbed, so build inputs that must match its size from ``x``). It returns a
            tuple (positional), a dict (by name), a pair ``(tuple, dict)`` or a tensor, built
            for the ``N`` rows; with a parameter named ``rows`` it also gets
            ``LongTensor[N]``, the explained image each row is, to index per-image inputs
            (``meta[rows]``). Layer names stay the model's own; perturbation methods then
            forward one image's copies at a time.
        precision: the perturbation methods' masked forwards in ``"fp32"``, or mixed
            ``"fp16"``/``"bf16"`` (``torch.autocast``); ``"auto"``: fp16 on a CUDA device,
            fp32 on a CPU. Gradient methods keep fp32.
        runtime: where rise, drise and fast-drise run their masked forwards on a CPU:
            ``"torch"`` (the model itself), ``"openvino"`` or ``"onnxruntime"`` (the model
            exported to ONNX once per input size and checked against PyTorch's outputs on
            the image: :mod:`taskcam.runtime`).
        **method_options: settings passed to the method (``fc=`` for ``cam``).

    Example:
        >>> import torch, torchvision
        >>> from taskcam.targets import ClassTarget
        >>> net = torchvision.models.resnet18(weights=None)
        >>> cam = Explainer(net, "layer4", "gradcam")
        >>> cam(torch.rand(2, 3, 64, 64), [ClassTarget(3)]).maps.shape
        torch.Size([2, 1, 64, 64])

        A model with a second input, ``forward(image, meta)``, one ``meta`` row per image:

        >>> class WithMeta(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torchvision.models.resnet18(num_classes=4)
        ...         self.meta = nn.Linear(2, 4)
        ...     def forward(self, image, meta):
        ...         return self.net(image) + self.meta(meta)  # [B, 4]
        >>> meta = torch.rand(2, 2)  # [B, 2]
        >>> cam = Explainer(WithMeta(), "net.layer4", forward_kwargs={"meta": meta})
        >>> cam(torch.rand(2, 3, 64, 64), [ClassTarget(1)]).layers
        ['net.layer4']
        >>> built = Explainer(WithMeta(), method="fast-scorecam", batch_size=64,
        ...                   input_builder=lambda x, rows: (x, meta[rows]))
        >>> built(torch.rand(2, 3, 64, 64), [ClassTarget(1)]).maps.shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Optional[LayerSpec] = None,
        method: Union[str, Method] = "gradcam",
        *,
        fuse: str = "mean",
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        reshape: Optional[Reshape] = None,
        batch_size: Optional[int] = None,
        progress: bool = False,
        forward_kwargs: Optional[dict[str, Any]] = None,
        input_builder: Optional[InputBuilder] = None,
        precision: str = "auto",
        runtime: str = "torch",
        **method_options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
        if fuse not in _FUSE:
            raise TaskcamError(f"fuse: expected one of {_FUSE}, got {fuse!r}")
        check_batch_size(batch_size)
        self.model = model
        # what every forward calls: the model itself, or the model with its other inputs
        self.forward_model = bind_inputs(model, forward_kwargs, input_builder)
        self.method = get_method(method, **method_options)
        if self.method.attention and self.forward_model is not model:
            raise TaskcamError(
                f"{self.method.name} reads a vision transformer's attention in its own forward "
                "of the image alone; forward_kwargs and input_builder work with the CAM and "
                "perturbation methods"
            )
        if eigen_smooth and not self.method.uses_layers:
            raise TaskcamError(
                f"eigen_smooth: {self.method.name} reads no layer activations, so there is "
                "nothing to smooth; explain without eigen_smooth"
            )
        check_run_settings(precision, runtime, self.method, self.forward_model is not model)
        self.precision, self.runtime = precision, runtime
        self.layers = None if layers is None else resolve_layers(model, layers)
        self.fuse = fuse
        self.aug_smooth = aug_smooth
        self.eigen_smooth = eigen_smooth
        self.reshape = reshape
        self._inferred: dict[tuple, Optional[Reshape]] = {}
        self.batch_size = batch_size
        self.progress = progress

    # -- public -----------------------------------------------------------------------------
    def __call__(self, inputs: torch.Tensor, targets: Targets) -> Explanation:
        """Explain ``inputs`` for ``targets``.

        Args:
            inputs: ``Tensor[B, 3, H, W]`` (or ``[3, H, W]``) preprocessed as the model wants.
            targets: a target, a list of ``T`` targets for every image, or one list of ``T``
                targets per image (``B`` lists).

        Returns:
            An :class:`Explanation` with ``maps: Tensor[B, T, H, W]``.
        """
        if not isinstance(inputs, torch.Tensor):
            raise TaskcamError(f"inputs: expected a torch.Tensor, got {type(inputs).__name__}")
        if inputs.ndim == 3:
            inputs = inputs[None]
        if inputs.ndim != 4:
            raise TaskcamError(f"inputs: expected Tensor[B, C, H, W], got {tuple(inputs.shape)}")
        per_image = per_image_targets(targets, inputs.shape[0])
        with torch.inference_mode(False):
            x = inputs.to(_model_device(self.model, inputs.device)).clone()
            try:
                if not self.aug_smooth:
                    return self._explain(x, per_image)
                return self._explain_smoothed(x, per_image)
            except RuntimeError as e:
                err = inference_tensor_error(e)
                if err is not None:
                    raise err from e
                raise

    # -- internals --------------------------------------------------------------------------
    def _layers(self, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
        if self.layers is None:
            forward = self.forward_model
            bound = isinstance(forward, BoundInputs)
            if bound:  # the first image's extras, for its forward alone
                forward = forward.for_image(0, x.shape[0])
            name = default_layer(forward, x[:1], from_example=bound)
            if bound:  # BoundInputs holds the model as ``model``
                name = name.removeprefix("model.")
            self.layers = resolve_layers(self.model, name)
        return self.layers

    def _explain(self, x: torch.Tensor, targets: list[list[Target]]) -> Explanation:
        if self.method.needs_detections:
            plain = [t for row in targets for t in row if not isinstance(t, PerturbableTarget)]
            if plain:
                raise TaskcamError(
                    f"{self.method.name} explains detections: its targets must come from a "
                    f"detector adapter (with perturbed()), got {plain[0]!r}; use rise for "
                    "other targets"
                )
        if self.method.attention:
            return self.method.explain_model(self.model, x, targets)
        if self.method.perturbation:
            targets = perturbation_targets(targets)
        if self.method.pixel_space:
            return self._explain_pixels(x, targets)
        if not self.method.uses_layers:
            return self._explain_blackbox(x, targets)
        return self._explain_layers(x, targets, self.method)

    def _explain_blackbox(self, x: torch.Tensor, targets: list[list[Target]]) -> Explanation:
        """Layer-free perturbation methods (RISE): only the model's outputs are used."""

        def score(output: Any, b: int) -> torch.Tensor:
            return torch.stack([t(output) for t in targets[b]], dim=1).float()

        forwards = [0] * x.shape[0]  # masked copies scored, per image

        def counted(score_of: Callable, first: int) -> Callable:
            def run(out: Any, b: int) -> torch.Tensor:
                s = score_of(out, b)
                forwards[first + b] += s.shape[0]
                return s

            return run

        with Capture(self.model, [], need_grad=False), torch.no_grad():
            output = self.forward_model(x)
            scores = target_scores(output, targets)
            extra = {}
            accepts = inspect.signature(self.method.saliency).parameters
            if "batch_size" in accepts:
                extra["batch_size"] = self.batch_size  # methods written before it was passed
            boxes = [[getattr(t, "box", None) for t in row] for row in targets]
            parts = []
            for first, (model, xb, score_of) in enumerate(self._per_image(x, score)):
                if "boxes" in accepts:  # D-RISE's local fit: each detection's box
                    extra["boxes"] = boxes[first : first + xb.shape[0]]
                model = perturbed_forward(
                    model,
                    xb,
                    output,
                    runtime=self.runtime,
                    precision=self.precision,
                    method=self.method,
                )
                parts.append(
                    self.method.saliency(
                        model, xb, counted(score_of, first), progress=self.progress, **extra
                    )
                )
        maps, empty = normalize_maps(torch.cat(parts).float())
        return Explanation(
            forwards=forwards,
            maps=maps,
            raw={},
            scores=scores,
            empty=empty,
            method=self.method.name,
            layers=[],
            output=detach_output(output),
        )

    def _explain_layers(
        self, x: torch.Tensor, targets: list[list[Target]], method: Method
    ) -> Explanation:
        layers = self._layers(x)
        names = [name for name, _ in layers]
        grad_ctx = torch.enable_grad() if method.needs_grad else torch.no_grad()
        with Capture(self.model, layers, need_grad=method.needs_grad) as cap, grad_ctx:
            output = self.forward_model(x)
            missing = [n for n in names if n not in cap.activations]
            if missing:
                raise TaskcamError(f"layers {missing} were not called during the forward pass")
            scores = target_scores(output, targets)
            acts = [cap.activations[n] for n in names]
            grads = _gradients(scores, acts) if method.needs_grad else [None] * len(acts)
            scores = scores.detach()
            raw: dict[str, torch.Tensor] = {}
            covers: dict[str, tuple[int, int]] = {}  # input area a layer's grid covers
            for (name, module), act, grad in zip(layers, acts, grads):
                reshape = self._reshape_of(name, act.shape, x.shape)
                if getattr(reshape, "covers", None) is not None:
                    covers[name] = reshape.covers
                if reshape is not None:
                    cap.views[name] = reshape  # edits (ablation) see the grid too
                act, grad = self._as_grid(name, act.detach(), grad, reshape)
                ctx = LayerContext(
                    name=name,
                    module=module,
                    activations=act,
                    gradients=grad,
                    targets=targets,
                    scores=scores,
                    inputs=x.detach(),
                    model=with_precision(self.forward_model, self.precision, method, x.device),
                    capture=cap,
                    batch_size=self.batch_size,
                    progress=self.progress,
                )
                with torch.no_grad():
                    raw[name] = _combine(self._terms(method, ctx), act, self.eigen_smooth)
        maps, empty = self._fuse(raw, x.shape[-2:], targets, covers)
        return Explanation(
            maps=maps,
            raw=raw,
            scores=scores,
            empty=empty,
            method=method.name,
            layers=names,
            output=detach_output(output),
        )

    def _per_image(self, x: torch.Tensor, score: Callable[[Any, int], torch.Tensor]) -> list:
        """``(model, inputs, score)`` for a black-box method's perturbed forwards: the batch
        as it is, or with extras bound, one image at a time with that image's extras (its
        rows of per-image tensors, ``rows`` of the builder), ``Tensor[1, 3, H, W]`` each."""
        bound = self.forward_model
        if not isinstance(bound, BoundInputs) or x.shape[0] == 1:
            return [(bound, x, score)]
        return [
            (bound.for_image(b, x.shape[0]), x[b : b + 1], lambda out, _, b=b: score(out, b))
            for b in range(x.shape[0])
        ]

    def _terms(self, method: Method, ctx: LayerContext) -> CamTerms:
        """``method.terms(ctx)``; a perturbation method on a model with bound extras runs
        image by image, each with that image's extras (see :meth:`_per_image`)."""
        bound, batch = self.forward_model, ctx.inputs.shape[0]
        if not (method.perturbation and isinstance(bound, BoundInputs) and batch > 1):
            return method.terms(ctx)
        parts = []
        for b in range(batch):
            one = slice(b, b + 1)
            parts.append(
                method.terms(
                    dataclasses.replace(
                        ctx,
                        activations=ctx.activations[one],
                        gradients=None if ctx.gradients is None else ctx.gradients[one],
                        targets=ctx.targets[one],
                        scores=ctx.scores[one],
                        inputs=ctx.inputs[one],
                        model=with_precision(
                            bound.for_image(b, batch), self.precision, method, ctx.inputs.device
                        ),
                    )
                )
            )
        return _cat_terms(parts)

    def _reshape_of(self, name: str, shape: torch.Size, x_shape: torch.Size) -> Optional[Reshape]:
        """The explicit reshape, else the one inferred for this layer, output and input
        (``x_shape``: ``[B, 3, H, W]``; an output without one row per image is refused)."""
        if self.reshape is not None:
            return self.reshape
        key = (name, tuple(shape), tuple(x_shape))
        if key not in self._inferred:
            self._inferred[key] = reshape_for_output(
                self.model, name, shape, x_shape[-2:], batch=x_shape[0]
            )
        return self._inferred[key]

    def _as_grid(
        self,
        name: str,
        act: torch.Tensor,
        grad: Optional[torch.Tensor],
        reshape: Optional[Reshape],
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        shape = tuple(act.shape)
        if reshape is not None:
            act = reshape(act)
            if grad is not None:
                b, t = grad.shape[:2]
                grad = reshape(grad.flatten(0, 1))
                grad = grad.reshape(b, t, *grad.shape[1:])
        if act.ndim != 4:
            raise TaskcamError(
                f"layer {name!r} gives {shape}"
                + (f", {tuple(act.shape)} after {reshape!r}" if reshape is not None else "")
                + "; CAM methods need Tensor[B, C, h, w] (pass reshape= for token outputs)"
            )
        return act, grad

    def _fuse(
        self,
        raw: dict[str, torch.Tensor],
        size: torch.Size,
        targets: list[list[Target]],
        covers: Optional[dict[str, tuple[int, int]]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            ups = [upsample_maps(cam, size, (covers or {}).get(name)) for name, cam in raw.items()]
            if len(ups) == 1:
                return normalize_maps(ups[0])
            stack = torch.stack([normalize_maps(up)[0] for up in ups])  # [L, B, T, H, W]
            use = _layer_choice(list(raw), targets).to(stack.device)  # [L, B, T]
            sel = use[..., None, None]
            if self.fuse == "mean":
                fused = (stack * sel).sum(0) / use.sum(0)[..., None, None]
            else:
                fused = torch.where(sel, stack, torch.ones_like(stack)).prod(0)
            return normalize_maps(fused)

    def _explain_pixels(self, x: torch.Tensor, targets: list[list[Target]]) -> Explanation:
        """Guided Backprop (and Guided Grad-CAM on top of a Grad-CAM pass)."""
        with Capture(self.model, [], need_grad=True), torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            with GuidedReLU():
                output = self.forward_model(xg)
                scores = target_scores(output, targets)
            (pixels,) = _gradients(scores, [xg])  # [B, T, 3, H, W]
        pixels = pixels.detach()
        raw: dict[str, torch.Tensor] = {}
        names: list[str] = []
        if self.method.needs_grad:  # guided grad-cam
            cam = self._explain_layers(x, targets, get_method("gradcam"))
            pixels = pixels * cam.maps[:, :, None]
            raw, names = cam.raw, cam.layers
        maps, empty = normalize_maps(pixels.abs().amax(dim=2))
        return Explanation(
            maps=maps,
            raw=raw,
            scores=scores.detach(),
            empty=empty,
            method=self.method.name,
            layers=names,
            pixel_grads=pixels,
            output=detach_output(output),
        )

    def _explain_smoothed(self, x: torch.Tensor, targets: list[list[Target]]) -> Explanation:
        """Test-time augmentation: flips × scales, each map mapped back and averaged."""
        size = x.shape[-2:]
        base: Optional[Explanation] = None
        total = None
        count = 0
        for scale in (1.0, 1.1):
            xs = x
            if scale != 1.0:
                new = [round(s * scale) for s in size]
                xs = F.interpolate(x, size=new, mode="bilinear", align_corners=False)
            for flip in (False, True):
                xa = xs.flip(-1) if flip else xs
                try:
                    exp = self._explain(xa, targets)
                except (AssertionError, RuntimeError) as e:
                    if scale == 1.0:
                        raise
                    # a transformer whose token grid was fixed when it was built
                    raise TaskcamError(
                        f"aug_smooth: {type(self.model).__name__} does not take the 1.1x "
                        f"rescaled input ({xs.shape[-2]}x{xs.shape[-1]}: {type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0][:200]}); explain without aug_smooth"
                    ) from e
                if base is None:
                    base = exp
                maps = exp.maps.flip(-1) if flip else exp.maps
                if maps.shape[-2:] != size:
                    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
                total = maps if total is None else total + maps
                count += 1
        assert base is not None and total is not None
        base.maps, base.empty = normalize_maps(total / count)
        return base


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: Targets,
    layers: Optional[LayerSpec] = None,
    method: Union[str, Method] = "gradcam",
    **options: Any,
) -> Explanation:
    """Explain ``inputs`` for ``targets`` in one call; see :class:`Explainer` for the options.

    Example:
        >>> import torch, torchvision
        >>> from taskcam.targets import ClassTarget
        >>> net = torchvision.models.resnet18(weights=None)
        >>> exp = explain(net, torch.rand(1, 3, 64, 64), [ClassTarget(1), ClassTarget(2)])
        >>> exp.maps.shape, exp.layers
        (torch.Size([1, 2, 64, 64]), ['layer4'])
    """
    return Explainer(model, layers, method, **options)(inputs, targets)
