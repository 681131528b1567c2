"""Transformers: what a transformer classifier needs before the CAM engine can explain it.

A transformer's blocks output tokens, not a feature map, so its default target layer and the
reshape from tokens to a grid are read from the model once, when it is loaded:
:func:`transformer_defaults` fills them in a :class:`taskcam.loaded.LoadedModel`. Attention
itself (capture, rollout, grad-rollout, LeGrad, the attention report) is in
:mod:`taskcam.attention`.
"""

from __future__ import annotations

import torch

from taskcam.errors import TaskcamError
from taskcam.layers import default_layer, has_transformer_blocks
from taskcam.loaded import LoadedModel
from taskcam.reshape import infer_reshape

__all__ = ["transformer_defaults"]


def transformer_defaults(loaded: LoadedModel, device: str | torch.device) -> None:
    """Fill a loaded transformer classifier's default layer and the reshape its token output
    needs (``loaded.layers``, ``loaded.reshape``), read from one forward at the model's input
    size. A model that already has either, or has no transformer blocks, is left as it is.

    Args:
        loaded: the loaded model; its ``preprocess.size`` is the input size tried.
        device: where the model is.

    Raises:
        TaskcamError: the model does not take an input of that size (a grid fixed when the
            model was built); the message names the size and the model's spec.

    Example:
        >>> import timm
        >>> from taskcam.loaded import Preprocess
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64)
        >>> loaded = LoadedModel(vit.eval(), "timm:vit_tiny", preprocess=Preprocess((64, 64)))
        >>> transformer_defaults(loaded, "cpu")
        >>> loaded.layers, loaded.reshape
        (['blocks.1.norm1'], TokensToGrid(grid=(4, 4), prefix=1))
    """
    if loaded.layers is not None or loaded.reshape is not None:
        return
    if not has_transformer_blocks(loaded.model):
        return
    example = torch.zeros(1, 3, *loaded.preprocess.size, device=device)
    try:
        layer = default_layer(loaded.model, example)  # one forward, which checks the size
    except TaskcamError:
        raise
    except (AssertionError, RuntimeError, ValueError) as e:  # a grid fixed at build time
        h, w = loaded.preprocess.size
        raise TaskcamError(
            f"--size {h},{w}: {loaded.spec} does not take a {h}x{w} input "
            f"({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})"
        ) from e
    loaded.layers = [layer]
    loaded.reshape = infer_reshape(loaded.model, layer, example)
