"""Target layers: resolve dotted names or modules, and find a sensible default layer."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Union

import torch
from torch import nn

from taskcam.errors import TaskcamError

__all__ = ["LayerSpec", "default_layer", "has_transformer_blocks", "resolve_layers"]

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


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.LayerNorm, nn.GroupNorm)) or "Norm" in type(module).__name__


def _transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module, list[str], list[str]]]:
    """``(name, block, attention children, norm children)`` of every transformer block.

    A block is a module with an attention module and a normalisation among its direct
    children: timm ``Block`` / ``SwinTransformerBlock``, torchvision ``EncoderBlock`` /
    ``SwinTransformerBlock``, Hugging Face ``ViTLayer`` / ``SwinLayer``...
    """
    out = []
    for name, module in model.named_modules():
        children = list(module.named_children())
        attn = [f"{name}.{c}" if name else c for c, m in children if _is_attention(m)]
        norms = [f"{name}.{c}" if name else c for c, m in children if _is_norm(m)]
        if attn and norms:
            out.append((name, module, attn, norms))
    return out


def has_transformer_blocks(model: nn.Module) -> bool:
    """Whether ``model`` holds transformer blocks (an attention and a norm as children).

    Example:
        >>> import torchvision
        >>> has_transformer_blocks(torchvision.models.resnet18(weights=None))
        False
        >>> has_transformer_blocks(torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64))
        True
    """
    return bool(_transformer_blocks(model))


def default_layer(model: nn.Module, example: torch.Tensor, *, from_example: bool = False) -> str:
    """Name a sensible target layer: the last feature map of a CNN, the last attention's
    input for a transformer.

    Runs ``model`` once on ``example`` without gradients (the train/eval mode is left as it
    was) and looks at what each module output, in call order:

    - **Transformers** (a block with an attention and a normalisation among its children,
      and no convolution after the last such block): the normalisation the last block applies
      before its attention, ``blocks.11.norm1`` for a timm ViT, ``encoder.layers.
      encoder_layer_11.ln_1`` for torchvision's, ``layers.3.blocks.1.norm1`` for Swin. Its
      output is the tokens the last attention mixes, so the class token's gradient reaches
      every patch token there (after the last attention it reaches the class token alone and
      vanishes for the patches). Post-norm blocks (SwinV2) have no normalisation before their
      attention; the block's own output is taken. See Chefer et al., "Transformer
      Interpretability Beyond Attention Visualization", CVPR 2021, and pytorch-grad-cam's
      ViT and Swin guidance for the choice.
    - **CNNs**: the last 4-D output with more than one pixel; of the modules that produced
      that very tensor (a block, its last activation, an in-place ReLU after a convolution)
      the outermost one, so a ResNet gives ``"layer4"``.

    Token and channels-last outputs need a reshape, which :class:`taskcam.Explainer` infers
    (:func:`taskcam.reshape.infer_reshape`).

    Args:
        model: the network.
        example: an input batch ``Tensor[B, 3, H, W]`` of the size the model will see.
        from_example: consider only outputs computed from ``example`` (a model with other
            inputs too, :mod:`taskcam.inputs`: a depth stream's feature map does not explain
            the image); found by running the forward with gradients to ``example`` alone.

    Returns:
        A dotted module name.

    Raises:
        TaskcamError: no transformer block and no module with a spatial 4-D output.

    Example:
        >>> import torch, torchvision
        >>> m = torchvision.models.resnet18(weights=None)
        >>> default_layer(m, torch.zeros(1, 3, 64, 64))
        'layer4'
        >>> vit = torchvision.models.VisionTransformer(32, 16, 2, 2, 32, 64)
        >>> default_layer(vit, torch.zeros(1, 3, 32, 32))
        'encoder.layers.encoder_layer_1.ln_1'
    """
    seen: list[tuple[int, str, torch.Tensor]] = []
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}
    convs: list[int] = []  # start order of every convolution call
    clock = [0]
    handles = []

    def tick() -> int:
        clock[0] += 1
        return clock[0]

    def make_pre_hook(name: str, module: nn.Module):
        def pre_hook(_module, _inputs):
            starts[name] = tick()
            if isinstance(module, nn.Conv2d):
                convs.append(starts[name])

        return pre_hook

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            ends[name] = tick()
            if (
                isinstance(output, torch.Tensor)
                and output.ndim == 4
                and output.shape[-2:].numel() > 1
                and (output.requires_grad or not from_example)
            ):
                # keeping the tensor alive stops its storage being reused by a later tensor
                seen.append((len(seen), name, output))

        return hook

    training = {m: m.training for m in model.modules()}
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_pre_hook(make_pre_hook(name, module)))
                handles.append(module.register_forward_hook(make_hook(name)))
        model.eval()
        if from_example:  # only what is computed from the example will require a gradient
            for p, _ in flags:
                p.requires_grad_(False)
            with torch.enable_grad():
                model(example.detach().requires_grad_(True) * 1)
        else:
            with torch.no_grad():
                model(example)
    finally:
        for h in handles:
            h.remove()
        for m, flag in training.items():
            m.train(flag)
        for p, flag in flags:
            p.requires_grad_(flag)

    blocks = [b for b in _transformer_blocks(model) if b[0] in ends]
    if blocks:
        name, _, attn, norms = max(blocks, key=lambda b: ends[b[0]])
        if not any(start > ends[name] for start in convs):
            attn_start = min((starts[a] for a in attn if a in starts), default=0)
            # the normalisation(s) the block ran before its attention: pre-norm blocks
            before = [n for n in norms if n in starts and starts[n] < attn_start]
            if before:
                return max(before, key=lambda n: starts[n])
            return name
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
