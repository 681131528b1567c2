"""Reading a model's output: class scores of a classifier, per-pixel class scores of a
segmenter, in whatever form the model's library returns them.

Core code (faithfulness, attention, the engine's callers) and the adapters read outputs through
these functions, so no core module needs an adapter to understand an output.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
import torch.nn.functional as F

from taskcam.errors import TaskcamError

__all__ = ["detach_output", "logits_of", "seg_logits", "universal_class_logits"]


def logits_of(output: Any) -> torch.Tensor:
    """``Tensor[B, K]``: the class scores in a classifier's output.

    Accepts a tensor, an object with ``.logits`` (Hugging Face), a dict with ``"logits"`` or
    ``"out"``, or a tuple whose first element is the logits.

    Example:
        >>> logits_of({"logits": torch.zeros(2, 3)}).shape
        torch.Size([2, 3])
    """
    if isinstance(output, torch.Tensor):
        logits = output
    elif hasattr(output, "logits"):
        logits = output.logits
    elif isinstance(output, dict) and ("logits" in output or "out" in output):
        logits = output.get("logits", output.get("out"))
    elif isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        logits = output[0]
    else:
        raise TaskcamError(f"cannot find class scores in a {type(output).__name__} output")
    if logits.ndim != 2:
        raise TaskcamError(f"class scores must be Tensor[B, K], got {tuple(logits.shape)}")
    return logits


def universal_class_logits(
    class_logits: torch.Tensor,
    mask_logits: torch.Tensor,
    size: tuple[int, int],
    mask_size: Optional[tuple[int, int]] = None,
) -> torch.Tensor:
    """Per-class logits of a universal segmenter, as its semantic post-processing makes them.

    MaskFormer (Cheng et al., "Per-Pixel Classification is Not All You Need for Semantic
    Segmentation", NeurIPS 2021) and Mask2Former (Cheng et al., "Masked-attention Mask
    Transformer for Universal Image Segmentation", CVPR 2022) predict ``Q`` queries, each a
    class distribution (``K`` classes and "no object") and a mask; a pixel's score for class
    ``c`` is ``sum_q softmax(class_q)[c] * sigmoid(mask_q)``.

    Args:
        class_logits: ``Tensor[B, Q, K + 1]``, the last column "no object".
        mask_logits: ``Tensor[B, Q, h, w]``.
        size: ``(H, W)`` of the result (bilinear, ``align_corners=False``).
        mask_size: where the mask logits are resized before the sigmoid (Mask2Former's
            post-processing resizes them to 384×384); ``None`` keeps them.

    Returns:
        ``Tensor[B, K, H, W]``.

    Example:
        >>> cls = torch.tensor([[[20.0, -20.0, -20.0]]])  # one query, sure of class 0
        >>> mask = torch.zeros(1, 1, 2, 2)  # its mask undecided: sigmoid 0.5 everywhere
        >>> scores = universal_class_logits(cls, mask, (4, 4))
        >>> scores.shape, scores[0, :, 0, 0].round(decimals=3)
        (torch.Size([1, 2, 4, 4]), tensor([0.5000, 0.0000]))
    """
    if class_logits.ndim != 3 or mask_logits.ndim != 4:
        raise TaskcamError(
            f"universal segmenter outputs: expected class logits [B, Q, K+1] and mask logits "
            f"[B, Q, h, w], got {tuple(class_logits.shape)} and {tuple(mask_logits.shape)}"
        )
    if mask_size is not None:
        mask_logits = F.interpolate(
            mask_logits, size=mask_size, mode="bilinear", align_corners=False
        )
    classes = class_logits.softmax(dim=-1)[..., :-1]  # [B, Q, K]
    scores = torch.einsum("bqc,bqhw->bchw", classes, mask_logits.sigmoid())
    return F.interpolate(scores, size=size, mode="bilinear", align_corners=False)


def seg_logits(output: Any) -> torch.Tensor:
    """``Tensor[B, K, H, W]``: the per-pixel class scores in a segmentation model's output.

    Accepts a tensor (smp), a dict with ``"out"`` (torchvision; the ``"aux"`` head is ignored),
    a Hugging Face output (``logits`` of a semantic segmenter, at the model's own resolution;
    a universal segmenter's class and mask queries combined at the masks' resolution by
    :func:`universal_class_logits`) or a list/tuple whose first item is one of those.

    Example:
        >>> seg_logits({"out": torch.zeros(1, 3, 4, 4), "aux": torch.ones(1, 3, 4, 4)}).sum()
        tensor(0.)
    """
    queries = (
        getattr(output, "class_queries_logits", None),
        getattr(output, "masks_queries_logits", None),
    )
    if all(isinstance(q, torch.Tensor) for q in queries):
        return universal_class_logits(*queries, tuple(queries[1].shape[-2:]))
    if isinstance(getattr(output, "logits", None), torch.Tensor):
        output = output.logits
    elif isinstance(output, dict):
        if "out" not in output:
            raise TaskcamError(
                f"segmentation output is a dict without 'out' (keys: {sorted(output)})"
            )
        output = output["out"]
    elif isinstance(output, (list, tuple)) and output:
        return seg_logits(output[0])
    if not isinstance(output, torch.Tensor) or output.ndim != 4:
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise TaskcamError(f"segmentation scores must be Tensor[B, K, H, W], got {shape}")
    return output


def detach_output(output: Any) -> Any:
    """A model's output with every tensor detached, through tensors, dataclasses (detector
    outputs), dicts, lists and tuples; anything else as it is.

    Example:
        >>> out = {"logits": torch.ones(2, requires_grad=True) * 2, "name": "x"}
        >>> detach_output(out)["logits"].requires_grad, detach_output(out)["name"]
        (False, 'x')
    """
    if isinstance(output, torch.Tensor):
        return output.detach()
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        fields = dataclasses.fields(output)
        return dataclasses.replace(
            output, **{f.name: detach_output(getattr(output, f.name)) for f in fields if f.init}
        )
    if isinstance(output, dict):
        return {k: detach_output(v) for k, v in output.items()}
    if isinstance(output, (list, tuple)) and not hasattr(output, "_fields"):
        return type(output)(detach_output(v) for v in output)
    return output
