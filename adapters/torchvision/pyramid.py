"""Which module computed each of a torchvision detector's feature maps, found by following the
maps back through the autograd graph, so layers are named whatever the backbone's FPN calls
its levels."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Optional

import torch
from torch import nn

from taskcam.capture import ModelState

__all__ = ["probe_feature_layers"]

_PROBE_SIZE = 256  # input side for finding the layers of a backbone without a fixed size


def probe_feature_layers(traced: nn.Module) -> dict[str, Optional[str]]:
    """See :meth:`TracedDetector.feature_layers`."""
    backbone = traced.backbone
    outputs: dict[str, tuple[torch.Tensor, Any]] = {}
    calls: dict[str, int] = {}

    def hook_for(name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            calls[name] = calls.get(name, 0) + 1
            if isinstance(output, torch.Tensor):
                outputs[name] = (output, output.grad_fn)

        return hook

    param = next(iter(traced.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    fixed = getattr(traced.transform, "fixed_size", None)
    width, height = (int(fixed[0]), int(fixed[1])) if fixed else (_PROBE_SIZE, _PROBE_SIZE)
    handles = [
        module.register_forward_hook(hook_for(f"backbone.{name}" if name else "backbone"))
        for name, module in backbone.named_modules()
    ]
    state = ModelState(traced)
    try:
        state.eval_and_freeze(False)
        with torch.enable_grad():
            probe = torch.zeros(1, 3, height, width, device=device, dtype=dtype)
            features = backbone(probe.requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
        state.restore()
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    by_tensor: dict[int, str] = {}
    by_node: dict[Any, str] = {}
    # outermost first: a container returning its last child's output is named, not the child
    for name in sorted(outputs, key=lambda n: n.count(".")):
        if calls.get(name, 0) != 1:
            continue
        tensor, node = outputs[name]
        by_tensor.setdefault(id(tensor), name)
        if node is not None:
            by_node.setdefault(node, name)
    found: dict[str, Optional[str]] = {}
    for key, feature in features.items():
        name = by_tensor.get(id(feature))
        if name is None and isinstance(feature, torch.Tensor):
            name = _nearest_module(feature.grad_fn, by_node)
        found[key] = name
    return found


def _nearest_module(node: Any, by_node: dict[Any, str], limit: int = 256) -> Optional[str]:
    """Breadth-first walk back through the autograd graph to the nearest module output."""
    queue, seen = [node], set()
    while queue and len(seen) < limit:
        current = queue.pop(0)
        if current is None or current in seen:
            continue
        seen.add(current)
        if current in by_node:
            return by_node[current]
        queue.extend(nxt for nxt, _ in current.next_functions)
    return None
