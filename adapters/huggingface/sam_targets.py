"""What SAM's forward returns to taskcam (:class:`SamPrediction`), the wrapper that binds the
prompts to the user's ``SamModel`` or ``Sam2Model`` (:class:`PromptedSam`), and the targets a
predicted mask makes: its logits over its own pixels (:class:`SamMaskTarget`) and, on
perturbed inputs, its soft IoU with the clean mask (:class:`SamMaskMatch`).
See :mod:`taskcam.adapters.huggingface.sam`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates
from taskcam.adapters.detection.scoring import DetectionTarget
from taskcam.errors import TaskcamError
from taskcam.loaded import SharedModules

__all__ = ["PromptedSam", "SamMaskMatch", "SamMaskTarget", "SamPrediction"]


@dataclass
class SamPrediction:
    """What :class:`PromptedSam` returns for a batch: every prompt's masks, flattened.

    Attributes:
        masks: ``Tensor[B, N, h, w]`` the decoder's low-resolution mask logits
            (``pred_masks``), ``N = P × M`` (prompt ``p``'s mask ``m`` at ``p × M + m``).
        scores: ``Tensor[B, N]`` the predicted IoU of each mask (``iou_scores``).
    """

    masks: torch.Tensor
    scores: torch.Tensor


class PromptedSam(SharedModules):
    """The user's ``SamModel`` with its prompts bound: ``forward(pixel_values) ->``
    :class:`SamPrediction`, so the engine runs it as any model of one input.

    It holds the model's own submodules under their own names (layers are named as in the
    library: ``vision_encoder.neck``, ``vision_encoder.layers.3``; a ``SamModel`` state dict
    loads into it) and recomputes the image embeddings at each forward (gradients flow to the
    image encoder; perturbed copies get their own). The model's forward then runs on them once
    per prompt, as the library runs one prompt: SAM reads the points and box of one call as
    one prompt, and a prompt's masks do not depend on the others given beside it.

    Args:
        model: a ``transformers`` ``SamModel`` or ``Sam2Model``.
        multimask: ``multimask_output`` (True, the library's default: 3 masks per prompt).

    Attributes:
        prompts: per prompt, the forward's keyword and its coordinates in input pixels:
            ``("input_points", Tensor[1, 1, 1, 2])`` or ``("input_boxes", Tensor[1, 1, 4])``,
            as the processor gives them (:meth:`SamAdapter.prepare` binds them).
    """

    def __init__(self, model: nn.Module, multimask: bool = True) -> None:
        super().__init__(model)
        self.multimask = bool(multimask)
        self.prompts: list[tuple[str, torch.Tensor]] = []

    def embeddings(self, pixel_values: torch.Tensor) -> Any:
        """The image embeddings the model's forward takes, with gradients (the library's
        ``get_image_embeddings`` runs without): SAM's ``Tensor[B, C, h, w]``, SAM 2's list of
        its FPN levels, finest first, as ``Sam2Model.forward`` makes them from pixels."""
        sam = self.wrapped
        if sam.config.model_type != "sam2":
            return sam.vision_encoder(pixel_values).last_hidden_state  # [B, C, h, w]
        levels = sam.get_image_features(pixel_values, return_dict=True).fpn_hidden_states
        levels[-1] = levels[-1] + sam.no_memory_embedding  # [h*w, B, C] each
        return [
            level.permute(1, 2, 0).view(pixel_values.shape[0], -1, *size)
            for level, size in zip(levels, sam.backbone_feature_sizes)
        ]

    def forward(self, pixel_values: torch.Tensor) -> SamPrediction:
        if not self.prompts:
            raise TaskcamError(
                "PromptedSam has no prompts bound: prepare the image with SamAdapter.prepare"
            )
        b = pixel_values.shape[0]
        sam = self.wrapped
        embeddings = self.embeddings(pixel_values)
        masks, scores = [], []
        for key, coords in self.prompts:
            coords = coords.to(pixel_values.device)
            out = sam(
                image_embeddings=embeddings,
                multimask_output=self.multimask,
                **{key: coords.expand(b, *coords.shape[1:])},
            )
            masks.append(out.pred_masks[:, 0])  # [B, M, h, w]
            scores.append(out.iou_scores[:, 0])  # [B, M]
        return SamPrediction(torch.cat(masks, dim=1), torch.cat(scores, dim=1))


def _prediction(output: Any) -> SamPrediction:
    if not isinstance(output, SamPrediction):
        raise TaskcamError(
            f"a SAM target reads PromptedSam's SamPrediction, got a {type(output).__name__}"
        )
    return output


class SamMaskMatch:
    """A mask scored on a perturbed image: the soft IoU of its probabilities with its clean
    mask, in [0, 1].

    ``Σ a·p·m / Σ a·max(p, m)`` over the decoder's low-resolution grid, with ``p`` the
    perturbed mask's probabilities (sigmoid of its logits), ``m`` the clean mask there (logit
    > 0) and ``a`` the share of the photo each cell covers once post-processed (0 on the
    padding). It falls when the mask shrinks, spills or fades, and is 1 only for a mask
    certain of exactly its clean pixels; a mask whose candidate is missing scores 0.

    Args:
        candidate: the mask's index in :attr:`SamPrediction.masks`.
        clean: ``BoolTensor[h, w]`` the clean mask on the decoder's grid.
        area: ``Tensor[h, w]`` each cell's weight.

    Example:
        >>> clean = torch.tensor([[True, False]]); area = torch.ones(1, 2)
        >>> out = SamPrediction(torch.tensor([[[[9.0, -9.0]]]]), torch.ones(1, 1))
        >>> SamMaskMatch(0, clean, area)(out).round(decimals=3)
        tensor([1.])
    """

    def __init__(self, candidate: int, clean: torch.Tensor, area: torch.Tensor) -> None:
        self.candidate, self.clean, self.area = int(candidate), clean.bool(), area.float()

    def __call__(self, output: Any) -> torch.Tensor:
        masks = _prediction(output).masks  # [B, N, h, w]
        if self.candidate >= masks.shape[1]:
            return masks.new_zeros(masks.shape[0])
        p = masks[:, self.candidate].float().sigmoid()  # [B, h, w]
        m, a = self.clean.to(p), self.area.to(p)
        inter = (a * p * m).sum(dim=(1, 2))
        union = (a * torch.maximum(p, m)).sum(dim=(1, 2))
        return inter / union.clamp(min=1e-12)

    def __repr__(self) -> str:
        return f"SamMaskMatch({self.candidate})"


class SamMaskTarget(DetectionTarget):
    """One of SAM's predicted masks: its logits summed over its own pixels, differentiably.

    The sum is the one ``post_process_masks`` draws: the mask's low-resolution logits
    upscaled to the padded input, cropped, resized to the photo, summed over the pixels the
    clean mask covers there (as ``--what mask`` sums a Mask R-CNN or YOLO -seg instance's
    logits over its own mask). Post-processing is linear in the logits, so the sum is read as
    ``Σ weights · logits`` on the decoder's grid, ``weights`` being its adjoint applied to the
    clean mask: exact, without upscaling each perturbed copy. On perturbed inputs the mask is
    scored by :class:`SamMaskMatch` (:meth:`perturbed`).

    Args:
        candidate: the mask's index ``p × M + m`` in :attr:`SamPrediction.masks`.
        class_id: its prompt's index.
        what: ``"mask"`` or ``"score"`` (both explain the mask).
        box: ``Tensor[4]`` the mask's box in input pixels.
        weights: ``Tensor[h, w]`` the adjoint weights.
        clean: ``BoolTensor[h, w]`` the clean mask on the decoder's grid.
        area: ``Tensor[h, w]`` each cell's share of the photo.
    """

    supports = ("score", "mask")

    def __init__(
        self,
        candidate: int,
        class_id: int,
        what: str = "mask",
        *,
        box: Optional[torch.Tensor] = None,
        weights: torch.Tensor,
        clean: torch.Tensor,
        area: torch.Tensor,
    ) -> None:
        super().__init__(candidate, class_id, what, box=box)
        self.weights, self.clean, self.area = weights.detach(), clean.detach(), area.detach()

    def __call__(self, output: Any) -> torch.Tensor:
        masks = _prediction(output).masks  # [B, N, h, w]
        missing = self.absent(masks.shape[1], masks)
        if missing is not None:
            return missing
        return (masks[:, self.candidate] * self.weights.to(masks)).sum(dim=(1, 2))

    def candidates(self, output: Any) -> Candidates:
        raise TaskcamError("SAM's masks have no candidates to match by box: see SamMaskMatch")

    def perturbed(self) -> SamMaskMatch:
        """The target on perturbed inputs: the soft IoU with the clean mask."""
        return SamMaskMatch(self.candidate, self.clean, self.area)
