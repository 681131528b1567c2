"""Segment Anything (``hf:DIR`` with ``--prompt``) explained mask by mask.

SAM (Kirillov et al., "Segment Anything", ICCV 2023) segments what a prompt points at: an
image encoder (a ViT and a small convolutional neck) turns the image into one embedding map,
a prompt encoder embeds points and boxes, and a light two-way transformer decodes, per prompt,
``M`` masks (three with ``multimask_output``, the library's default, for an ambiguous prompt:
a part, the object, a group) and a predicted IoU for each. :class:`SamAdapter` runs the user's
``transformers`` ``SamModel`` exactly as its ``SamProcessor`` and forward do, and makes every
predicted mask a target:

- its record (``region``, as YOLO -seg's instances) has the predicted IoU as ``score``, the
  mask's bounding box and pixel count from ``SamProcessor.post_process_masks`` (upscale to the
  photo, threshold at 0), and the prompt (``prompt``, ``prompt_box`` or ``prompt_points``) that
  the overlay draws beside the mask;
- gradient methods explain the mask's logits summed over its own pixels (``--what mask``, or
  ``score``: for SAM both name the mask), on the photo's grid as post-processing draws it;
- perturbation methods (D-RISE, RISE, Score-CAM, faithfulness) score a perturbed image by the
  soft IoU of its mask probabilities with the clean mask, in [0, 1] (:class:`SamMaskMatch`).

Prompts are ``point=X,Y`` or ``box=X1,Y1,X2,Y2`` in the photo's pixels (:func:`parse_prompt`),
each run through the processor's own coordinate transform. The image embeddings are recomputed
at every forward, so gradients reach every layer of the image encoder; by default the neck's
output (``vision_encoder.neck``, :data:`DEFAULT_LAYERS`).

SAM 2 (Ravi et al., "SAM 2: Segment Anything in Images and Videos", ICLR 2025; ``Sam2Model``)
is explained the same way on images: its ``Sam2Processor`` resizes to the square without
padding, its Hiera encoder's FPN gives the decoder three levels, and its
``post_process_masks`` resizes the masks straight to the photo.

Example:
    >>> adapter = SamAdapter(tiny_sam(), ["box=10,8,40,30", "point=20,20"])
    >>> x, placement = adapter.prepare(np.zeros((40, 60, 3), np.uint8))
    >>> dets = adapter.detect(x)[0]
    >>> x.shape, len(dets), dets.classes.tolist(), dets.fields[3]["prompt_points"]
    (torch.Size([1, 3, 64, 64]), 6, [0, 0, 0, 1, 1, 1], [[20.0, 20.0]])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector, check_batch
from taskcam.adapters.detection.placement import check_image
from taskcam.adapters.huggingface.sam_prompts import (
    Prompt,
    SamPlacement,
    mask_boxes,
    parse_prompt,
    read_prompts,
)
from taskcam.adapters.huggingface.sam_targets import (
    PromptedSam,
    SamMaskMatch,
    SamMaskTarget,
    SamPrediction,
)
from taskcam.capture import predict
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess

__all__ = [
    "DEFAULT_LAYERS",
    "Prompt",
    "PromptedSam",
    "SamAdapter",
    "SamMaskMatch",
    "SamMaskTarget",
    "SamPlacement",
    "SamPrediction",
    "default_processor",
    "encoder_side",
    "mask_boxes",
    "parse_prompt",
    "read_prompts",
    "sam_kind",
    "sam_loaded",
    "tiny_sam",
]

DEFAULT_LAYERS = {
    "sam": ["vision_encoder.neck"],
    "sam2": ["vision_encoder.neck.convs.0", "vision_encoder.neck.convs.1"],
}
"""The layers explained by default, by ``config.model_type``. SAM: the image encoder's neck,
whose output ``Tensor[B, C, h, w]`` (256 × 64 × 64 for the released SAMs) is the image
embedding, the only view of the image the prompt encoder and mask decoder ever get; it is a
channels-first map at the encoder's full resolution (1/16 of the input), so every CAM method
reads it as it is. The ViT blocks before it (``vision_encoder.layers.N``) are channels-last
``Tensor[B, h, w, C]``, which taskcam reshapes. SAM 2: the FPN's two lateral projections its
image embedding (the 1/16 level the decoder's transformer attends to) is summed from, those of
the Hiera encoder's last two stages, fused; ``vision_encoder.neck.convs.2`` and ``.3`` give the
finer levels the decoder adds while upscaling. The decoder's own layers mix image and prompt
tokens and are not a map of the image."""

_KEYWORDS = {"point": "input_points", "box": "input_boxes"}  # SamModel.forward's, by kind


@dataclass
class _Clean:
    """The clean image's masks as its targets need them: adjoint weights ``[N, h, w]``,
    masks on the decoder's grid ``[N, h, w]``, each cell's share of the photo ``[h, w]``."""

    weights: torch.Tensor
    low: torch.Tensor
    area: torch.Tensor


def sam_kind(model: Any) -> str:
    """``"sam"`` or ``"sam2"``: the ``config.model_type`` of a ``SamModel`` or ``Sam2Model``.

    Raises:
        TaskcamError: another model, named with its class and type.

    Example:
        >>> sam_kind(tiny_sam())
        'sam'
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULT_LAYERS:
        raise TaskcamError(
            f"SamAdapter: expected a transformers SamModel or Sam2Model, got "
            f"{type(model).__name__} ({model_type})"
        )
    return str(model_type)


def encoder_side(model: Any) -> int:
    """The input side ``S`` of a SAM's image encoder (1024 for the released models): SAM's
    ``vision_config.image_size``, SAM 2's ``prompt_encoder_config.image_size``."""
    config = model.config
    if sam_kind(model) == "sam2":
        return int(config.prompt_encoder_config.image_size)
    return int(config.vision_config.image_size)


def default_processor(model: nn.Module) -> Any:
    """The processor a folder without one implies: the library's defaults (ImageNet mean and
    std, bilinear resize) at the encoder's side: a ``SamProcessor`` resizing the longest side
    and padding, or a ``Sam2Processor`` resizing to the square.

    Example:
        >>> pad = default_processor(tiny_sam()).image_processor.pad_size
        >>> pad["height"], pad["width"]
        (64, 64)
    """
    import transformers

    side = encoder_side(model)
    if sam_kind(model) == "sam2":
        square = transformers.Sam2ImageProcessor(size={"height": side, "width": side})
        return transformers.Sam2Processor(square)
    images = transformers.SamImageProcessor(
        size={"longest_edge": side}, pad_size={"height": side, "width": side}
    )
    return transformers.SamProcessor(images)


def _check_processor(processor: Any, kind: str, side: int) -> None:
    """Refuse a processor whose inputs are not the encoder's ``side × side``."""
    images = processor.image_processor
    size = images.size if kind == "sam2" else images.pad_size if images.do_pad else None
    got = None if size is None else (size["height"], size["width"])
    if got != (side, side):
        raise TaskcamError(
            f"SamAdapter: the processor makes {got} inputs but the image encoder takes "
            f"{side}×{side}; use the model's own processor"
        )


class SamAdapter(Detector):
    """A ``transformers`` ``SamModel`` or ``Sam2Model`` and its prompts, as the pipeline
    drives a detector (the :class:`~taskcam.Detector` contract; see the module doc).

    Args:
        model: the user's ``SamModel`` or ``Sam2Model`` (wrapped, never changed:
            :class:`PromptedSam`).
        prompts: ``point=X,Y`` / ``box=X1,Y1,X2,Y2`` specs or :class:`Prompt` s, image pixels.
        processor: the model's ``SamProcessor`` or ``Sam2Processor`` (default:
            :func:`default_processor`).
        multimask: ``multimask_output``: 3 masks per prompt (True, the library's default)
            or SAM's single mask for an unambiguous prompt.
        conf: keep only masks whose predicted IoU passes it (None: all, as
            ``post_process_masks`` returns them).

    Raises:
        TaskcamError: a model that is neither, no prompt or a malformed one, a processor
            whose inputs are not the encoder's size.
    """

    task = "segment"

    def __init__(
        self,
        model: nn.Module,
        prompts: Sequence[str | Prompt],
        *,
        processor: Any = None,
        multimask: bool = True,
        conf: Optional[float] = None,
    ) -> None:
        self.kind = sam_kind(model)
        self.prompts = read_prompts(prompts, f"a {type(model).__name__}")
        self.processor = processor if processor is not None else default_processor(model)
        side = encoder_side(model)
        _check_processor(self.processor, self.kind, side)
        images = self.processor.image_processor
        super().__init__(
            PromptedSam(model, multimask),
            size=side,
            resize="none",
            mean=images.image_mean,
            std=images.image_std,
            conf=conf,
            class_names=[p.spec for p in self.prompts],
            layers=DEFAULT_LAYERS[self.kind],
        )
        self.sam = model
        self.placement: Optional[SamPlacement] = None  # the last prepared image's
        self._clean: Optional[_Clean] = None

    @property
    def family(self) -> str:
        return self.kind

    @property
    def detector(self) -> nn.Module:
        return self.sam

    @property
    def has_masks(self) -> bool:
        return True

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score", "mask")

    def set_size(self, dims: Sequence[int]) -> None:
        """Refuse a ``--size`` other than the encoder's: its position embeddings fix it."""
        if any(int(d) != self.size for d in dims):
            raise TaskcamError(
                f"--size {','.join(str(d) for d in dims)}: SAM's image encoder takes "
                f"{self.size}×{self.size} inputs (its position embeddings are that size); "
                "leave --size out"
            )

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, SamPlacement]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, S, S]``, placement), by the model's
        processor (SAM's: resize of the longest side to ``S``, rescale, normalise, pad right
        and below; SAM 2's: resize to ``S × S``, rescale, normalise), which also maps the
        prompts to input pixels; they are bound to :attr:`model` for the forwards that
        follow.

        Raises:
            TaskcamError: not an RGB ``uint8[H, W, 3]`` array; an :class:`ImageError` for a
                prompt outside the image.
        """
        check_image(image)
        height, width = image.shape[:2]
        for prompt in self.prompts:
            prompt.check_inside(height, width)
        points = [[list(p.coords)] for p in self.prompts if p.kind == "point"]
        boxes = [list(p.coords) for p in self.prompts if p.kind == "box"]
        normalise = {}  # --mean/--std reach the processor through these
        if self.mean is not None and self.std is not None:
            normalise = {"image_mean": list(self.mean), "image_std": list(self.std)}
        encoded = self.processor(
            images=image,
            input_points=[points] if points else None,
            input_boxes=[boxes] if boxes else None,
            return_tensors="pt",
            **normalise,
        )
        x = encoded["pixel_values"].to(self.device)  # [1, 3, S, S]
        resized = encoded.get("reshaped_input_sizes")  # SAM 2 stretches to the square
        new_h, new_w = (int(v) for v in resized[0]) if resized is not None else x.shape[2:]
        bound, seen = [], {"point": 0, "box": 0}
        for prompt in self.prompts:  # one prompt per forward: [1, 1, 1, 2] or [1, 1, 4]
            key, i = _KEYWORDS[prompt.kind], seen[prompt.kind]
            seen[prompt.kind] += 1
            bound.append((key, encoded[key][:, i : i + 1]))
        self.model.prompts = bound  # type: ignore[assignment]
        self.placement = SamPlacement(height, width, new_h, new_w, (x.shape[2], x.shape[3]))
        return x, self.placement

    def post_process(self, logits: torch.Tensor, binarize: bool = True) -> torch.Tensor:
        """``SamProcessor.post_process_masks`` of one image's mask logits ``Tensor[N, h, w]``
        (prompt by prompt, ``[P, M, h, w]`` as the model returns them) for the last prepared
        image: ``BoolTensor[N, H, W]`` on the photo's grid (``Tensor`` without
        ``binarize``)."""
        per_prompt = logits.reshape(len(self.prompts), -1, *logits.shape[-2:])  # [P, M, h, w]
        out = self._post(per_prompt, binarize)
        return out.reshape(logits.shape[0], *out.shape[-2:])

    def _post(self, logits: torch.Tensor, binarize: bool = False) -> torch.Tensor:
        """``post_process_masks`` of ``Tensor[A, C, h, w]`` -> ``[A, C, H, W]``."""
        place = self._placement()
        sizes: list[Any] = [[(place.height, place.width)]]
        if self.kind == "sam":  # SAM crops its padding: the resized image's size
            sizes.append([(place.new_height, place.new_width)])
        return self.processor.post_process_masks([logits], *sizes, binarize=binarize)[0]

    def _placement(self) -> SamPlacement:
        if self.placement is None:
            raise TaskcamError("SamAdapter: prepare an image first (prepare binds its prompts)")
        return self.placement

    def candidates(self, output: Any) -> Candidates:
        """Refused: SAM's masks answer prompts, so there are no class candidates to match
        labels (``--labels``, ``--box``) against."""
        raise TaskcamError(
            "--labels/--box: SAM's masks answer its prompts, not classes; labels are matched "
            "to a detector's detections"
        )

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """Every prompt's masks for each image of ``x`` (copies of the last prepared image),
        in the model's order (prompt by prompt, SAM's masks in its order), without
        gradients; masks and scores are ``post_process_masks``' and ``iou_scores``."""
        check_batch(x)
        out = predict(self.model, x)
        dets = [self._detections(out.masks[b], out.scores[b]) for b in range(x.shape[0])]
        self._clean = self._clean_state(out.masks[0])
        return dets

    def _clean_state(self, logits: torch.Tensor) -> _Clean:
        """What the targets of one image's masks ``Tensor[N, h, w]`` need (:class:`_Clean`)."""
        masks = self.post_process(logits).float()  # [N, H, W]
        photo = torch.ones_like(masks[:1])  # [1, H, W]
        weights = _adjoint(self._post, logits, masks)
        return _Clean(weights, logits > 0, _adjoint(self._post, logits[:1], photo)[0])

    def _detections(self, logits: torch.Tensor, scores: torch.Tensor) -> Detections:
        """One image's masks ``Tensor[N, h, w]`` and scores ``Tensor[N]`` -> its detections."""
        place = self._placement()
        n, per = logits.shape[0], logits.shape[0] // len(self.prompts)
        masks = self.post_process(logits)  # [N, H, W] bool
        keep = torch.arange(n, device=scores.device)
        if self.conf is not None:
            keep = keep[scores > float(self.conf)]
        on_input = F.interpolate(
            logits[None].float(), size=place.input_size, mode="bilinear", align_corners=False
        )[0]
        fields = []
        for i in keep.tolist():
            prompt = self.prompts[i // per]
            extra = {"mask_index": i % per, "pixels": int(masks[i].sum())}
            fields.append({**prompt.fields(), **extra})
        return Detections(
            boxes=place.boxes_to_input(mask_boxes(masks[keep]).to(scores.device)),
            scores=scores[keep],
            classes=keep // per,
            candidates=keep,
            masks=on_input[keep] > 0,
            fields=fields,
        )

    def target(self, dets: Detections, i: int, what: str) -> SamMaskTarget:
        """Mask ``i`` of the last detected image (:class:`SamMaskTarget`)."""
        if self._clean is None:
            raise TaskcamError("SamAdapter: detect the image before building its targets")
        n = int(dets.candidates[i])
        return SamMaskTarget(
            n,
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            weights=self._clean.weights[n],
            clean=self._clean.low[n],
            area=self._clean.area,
        )

    def loaded(self, spec: str) -> LoadedModel:
        """The model as a run loads it: the wrapper, task ``segment``, the processor's size,
        mean and std, the prompts as class names, this adapter."""
        side = int(self.size)  # type: ignore[arg-type]
        pre = Preprocess((side, side))  # ImageNet's mean and std, the processors' default
        if self.mean is not None and self.std is not None:
            pre.mean, pre.std = self.mean, self.std  # type: ignore[assignment]
        return LoadedModel(
            self.model,
            spec,
            task="segment",
            preprocess=pre,
            class_names=list(self.class_names or []),
            layers=self.default_layers(),
            adapter=self,
        )


def _adjoint(post: Any, logits: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
    """``Tensor[N, h, w]`` weights ``w`` with ``Σ w · L = Σ post(L) · region`` for all logits
    ``L``, channel by channel: the adjoint of the (linear) post-processing applied to the
    regions ``Tensor[N, H, W]``."""
    probe = torch.zeros_like(logits[None], dtype=torch.float32, requires_grad=True)
    with torch.enable_grad():
        drawn = post(probe)  # [1, N, H, W]
        (weights,) = torch.autograd.grad((drawn * regions.to(drawn)).sum(), probe)
    return weights[0]


def _folder_processor(folder: Path, kind: str) -> Any:
    """The folder's own ``SamProcessor`` or ``Sam2Processor`` (``processor_config.json`` or
    ``preprocessor_config.json``), else None."""
    names = ("processor_config.json", "preprocessor_config.json")
    if not any((folder / name).is_file() for name in names):
        return None
    import transformers

    cls = transformers.Sam2Processor if kind == "sam2" else transformers.SamProcessor
    try:
        return cls.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TaskcamError(f"--model hf:{folder}: cannot read its {cls.__name__}: {e}") from e


def sam_loaded(folder: Path, model: nn.Module, prompts: Sequence[str]) -> LoadedModel:
    """A Segment Anything ``save_pretrained`` folder loaded for a run (``hf:DIR --prompt``):
    the model wrapped with its prompts (:class:`SamAdapter`), preprocessed by the folder's
    ``SamProcessor`` or ``Sam2Processor`` (the library's defaults at the encoder's size if it
    has none).

    Args:
        folder: the folder (:func:`taskcam.adapters.huggingface.load_hf` built ``model``).
        model: its ``SamModel`` or ``Sam2Model``, with the folder's weights or random ones.
        prompts: the ``--prompt`` specs, one set of masks each.

    Raises:
        TaskcamError: no prompt (the message says to pass ``--prompt``), a malformed one
            (naming it and the accepted forms), an unreadable processor.

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> tiny_sam().save_pretrained(folder)
        >>> loaded = sam_loaded(folder, tiny_sam(), ["point=10,12"])
        >>> loaded.task, loaded.layers, loaded.class_names, loaded.preprocess.size
        ('segment', ['vision_encoder.neck'], ['point=10,12'], (64, 64))
        >>> sam_loaded(folder, tiny_sam(), [])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: hf:... is a Segment Anything model, ...: pass --prompt ...
    """
    folder = Path(folder)
    parsed = read_prompts(prompts, f"hf:{folder}")
    processor = _folder_processor(folder, sam_kind(model))
    adapter = SamAdapter(model, parsed, processor=processor)
    return adapter.loaded(f"hf:{folder}")


def tiny_sam(seed: int = 0, image_size: int = 64) -> nn.Module:
    """A tiny ``SamModel`` with seeded random weights (2 ViT blocks of 16 channels, 8-pixel
    patches, one decoder block), built offline in milliseconds: for trying the pipeline and
    for tests, not a model of anything.

    Example:
        >>> tiny_sam().config.vision_config.image_size
        64
    """
    import transformers

    torch.manual_seed(seed)
    vision = transformers.SamVisionConfig(
        hidden_size=16,
        output_channels=16,
        num_hidden_layers=2,
        num_attention_heads=1,
        image_size=image_size,
        patch_size=8,
        window_size=4,
        global_attn_indexes=[1],
        mlp_dim=32,
        num_pos_feats=8,
        initializer_range=0.02,  # the library's 1e-10 leaves the encoder blind to the image
    )
    prompt = transformers.SamPromptEncoderConfig(
        hidden_size=16, image_size=image_size, patch_size=8, mask_input_channels=4
    )
    decoder = transformers.SamMaskDecoderConfig(
        hidden_size=16,
        mlp_dim=32,
        num_hidden_layers=1,
        num_attention_heads=1,
        iou_head_hidden_dim=16,
    )
    config = transformers.SamConfig(
        vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder
    )
    return transformers.SamModel(config).eval()
