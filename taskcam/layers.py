"""Target layers: resolve dotted names or modules, and find a sensible default layer."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["LayerSpec", "resolve_layers", "default_layer"]

LayerSpec = Union[str, nn.Module, Sequence[Union[str, nn.Module]]]


def _all_names(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules(remove_duplicate=False))


def resolve_layers(model: nn.Module, layers: LayerSpec) -> list[tuple[str, nn.Module]]:
    """Turn layer names or modules into ``(name, module)`` pairs of ``model``.

    Args:
        model: the network.
        layers: a dotted name (``"layer4"``, ``"blocks.11.norm1"``), a module of ``model``,
            or a sequence of them. A string may hold several names separated by commas.

    Returns:
        One ``(name, module)`` pair per layer, in the order given, duplicates removed.

    Raises:
        TaskcamError: an unknown name (the message lists the closest existing names), a module
            that is not part of ``model``, or no layer at all.

    Example:
        >>> import torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> [name for name, _ in resolve_layers(m, "layer4")]
        ['layer4']
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    items: list[str | nn.Module] = []
    for layer in layers:
        if isinstance(layer, str):
            items.extend(part.strip() for part in layer.split(",") if part.strip())
        else:
            items.append(layer)
    if not items:
        raise TaskcamError("layers: expected at least one layer name or module, got none")
    names = _all_names(model)
    by_id = {}
    for name, module in names.items():
        by_id.setdefault(id(module), name)
    out: list[tuple[str, nn.Module]] = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                close = difflib.get_close_matches(item, [n for n in names if n], n=5, cutoff=0.4)
                hint = f"; closest: {', '.join(close)}" if close else ""
                raise TaskcamError(f"no layer named {item!r} in {type(model).__name__}{hint}")
            pair = (item, names[item])
        elif isinstance(item, nn.Module):
            if id(item) not in by_id:
                raise TaskcamError(
                    f"layer {type(item).__name__} is not a submodule of {type(model).__name__}"
                )
            pair = (by_id[id(item)] or type(model).__name__, item)
        else:
            raise TaskcamError(
                f"layers: expected a name or an nn.Module, got {type(item).__name__}"
            )
        if all(pair[1] is not m for _, m in out):
            out.append(pair)
    return out


def default_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name the layer whose output is the network's last spatial feature map.

    Runs ``model`` once on ``example`` without gradients and finds the last 4-D output with
    more than one pixel; of the modules that produced that very tensor (a block, its last
    activation, an in-place ReLU after a convolution) it returns the outermost one, so a
    ResNet gives ``"layer4"``. The model's train/eval mode is left as it was.

    Args:
        model: the network.
        example: an input batch ``Tensor[B, 3, H, W]`` of the size the model will see.

    Returns:
        A dotted module name.

    Raises:
        TaskcamError: no module produced a spatial 4-D output.

    Example:
        >>> import torch, torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> default_layer(m, torch.zeros(1, 3, 64, 64))
        'layer4'
    """
    seen: list[tuple[int, str, torch.Tensor]] = []
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            if (
                isinstance(output, torch.Tensor)
                and output.ndim == 4
                and output.shape[-2:].numel() > 1
            ):
                # keeping the tensor alive stops its storage being reused by a later tensor
                seen.append((len(seen), name, output))

        return hook

    training = {m: m.training for m in model.modules()}
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.train(flag)
    if not seen:
        raise TaskcamError(
            f"{type(model).__name__} has no module with a spatial 4-D output; name a layer"
        )
    last = seen[-1][2]
    same = [
        (order, name)
        for order, name, t in seen
        if t.data_ptr() == last.data_ptr() and t.shape == last.shape
    ]
    same.sort(key=lambda item: (item[1].count("."), -item[0]))
    return same[0][1]
