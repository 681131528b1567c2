"""Open-vocabulary detectors from Hugging Face folders (``hf:DIR --text "a cat. a remote."``),
explained detection by detection: OWL-ViT (Minderer et al., "Simple Open-Vocabulary Object
Detection with Vision Transformers", ECCV 2022), OWLv2 (Minderer et al., "Scaling
Open-Vocabulary Object Detection", NeurIPS 2023) and Grounding DINO (Liu et al., "Grounding
DINO: Marrying DINO with Grounded Pre-Training for Open-Set Object Detection", ECCV 2024).

The prompt's phrases are the classes. Each model is query-based, and its own post-processing
keeps queries without NMS, which :meth:`OpenVocabularyAdapter.select` repeats while keeping
each detection's query:

* OWL-ViT and OWLv2 (``post_process_object_detection``): one query per image patch, scored
  against each phrase; a query is kept for its best phrase when ``sigmoid(max logit)`` passes
  the threshold (0.1 by default). OWLv2's processor pads the image to a square (bottom and
  right) before resizing, so its boxes are fractions of that square (:class:`SquarePlacement`).
* Grounding DINO (``post_process_grounded_object_detection``): a query is kept when its best
  token probability passes the box threshold (0.25); its label is the prompt's tokens whose
  probability passes ``text_threshold`` (0.25), decoded: the record's ``phrase``. Its class
  is the prompt phrase whose tokens score it best, and the target is that phrase's score (the
  best probability over the phrase's tokens), equal to the detection's score whenever its best
  token lies in a phrase rather than on a separator.

Images are prepared by the model's own image processor (so exactly as the library does), the
prompt tokenized by its own tokenizer; each record also carries ``phrase`` and ``words``
(:mod:`~taskcam.adapters.huggingface.open_vocabulary_text`).

Example:
    >>> import string, transformers
    >>> vocab = {"!": 0, **{c: 1 + i for i, c in enumerate(string.ascii_lowercase)}}
    >>> vocab.update({c + "</w>": 27 + i for i, c in enumerate(string.ascii_lowercase)})
    >>> vocab.update({"<|startoftext|>": 53, "<|endoftext|>": 54})
    >>> tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    >>> config = transformers.OwlViTConfig(
    ...     text_config=dict(vocab_size=55, hidden_size=32, intermediate_size=32,
    ...         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=16),
    ...     vision_config=dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1,
    ...         num_attention_heads=2, image_size=32, patch_size=16), projection_dim=32)
    >>> model = transformers.OwlViTForObjectDetection(config).eval()
    >>> images = transformers.OwlViTImageProcessor(size={"height": 32, "width": 32})
    >>> processor = transformers.OwlViTProcessor(images, tokenizer)
    >>> adapter = OpenVocabularyAdapter(model, processor, "a cat. a dog.", conf=0.0)
    >>> x, placement = adapter.prepare(np.zeros((40, 60, 3), np.uint8))
    >>> dets = adapter.detect(x)[0]  # every patch query of the 2 x 2 grid, for its best phrase
    >>> len(dets), adapter.class_names, adapter.default_layers()
    (4, ['a cat', 'a dog'], ['owlvit.vision_model.encoder.layers.0.layer_norm1'])
    >>> [word for word, _ in dets.fields[0]["words"]]
    ['a', 'cat', 'a', 'dog']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import Detector
from taskcam.adapters.detection.placement import StretchPlacement, check_image, resize_maps
from taskcam.adapters.detection.scoring import CandidateTarget
from taskcam.adapters.huggingface.open_vocabulary_text import (
    DetectionFields,
    Prompt,
    WordAttribution,
    encode_prompt,
    split_phrases,
)
from taskcam.boxes import cxcywh_to_xyxy
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess, SharedModules

__all__ = [
    "FAMILIES",
    "OpenVocabularyAdapter",
    "OutputReader",
    "SquarePlacement",
    "TextConditioned",
    "open_vocabulary_loaded",
    "split_phrases",
]

FAMILIES = {"owlvit": "OWL-ViT", "owlv2": "OWLv2", "grounding-dino": "Grounding DINO"}
"""The open-vocabulary families, by config ``model_type``."""

_OWL = ("owlvit", "owlv2")
# each family's post-processing defaults: the box (score) threshold
_CONF = {"owlvit": 0.1, "owlv2": 0.1, "grounding-dino": 0.25}


def _model_type(model: Any) -> str:
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    if model_type not in FAMILIES:
        raise TaskcamError(
            f"OpenVocabularyAdapter: {type(model).__name__} ({model_type or 'no model_type'}) is "
            f"not an open-vocabulary detector taskcam knows ({', '.join(FAMILIES.values())})"
        )
    return model_type


class TextConditioned(SharedModules):
    """The detector with its prompt fixed, as the engine runs it: ``forward(pixel_values:
    Tensor[B, 3, h, w]) -> the model's output``, the prompt's tokens repeated for each image.
    It shares the model's modules under their own names (``owlvit.vision_model...``,
    ``model.backbone...``), so layers and state dicts are the model's.

    Args:
        model: ``OwlViTForObjectDetection``, ``Owlv2ForObjectDetection`` or
            ``GroundingDinoForObjectDetection``.
        text_inputs: the processor's text inputs (:attr:`Prompt.inputs`), ``Tensor[R, T]``.
    """

    def __init__(self, model: nn.Module, text_inputs: dict[str, torch.Tensor]) -> None:
        super().__init__(model)
        self.family = _model_type(model)
        self.text_inputs = dict(text_inputs)

    def forward(self, pixel_values: torch.Tensor) -> Any:
        b, _, h, w = pixel_values.shape
        device = pixel_values.device
        text = {k: v.to(device) for k, v in self.text_inputs.items()}
        if self.family in _OWL:  # rows: every phrase of image 0, then of image 1, ...
            side = int(self.config.vision_config.image_size)
            return self.wrapped(
                pixel_values=pixel_values,
                input_ids=text["input_ids"].repeat(b, 1),
                attention_mask=text["attention_mask"].repeat(b, 1),
                interpolate_pos_encoding=(h, w) != (side, side),
            )
        text = {k: v.expand(b, -1) for k, v in text.items()}
        mask = torch.ones(b, h, w, dtype=torch.long, device=device)
        return self.wrapped(pixel_values=pixel_values, pixel_mask=mask, **text)


@dataclass(frozen=True)
class SquarePlacement:
    """OWLv2's placement: the image padded at the bottom and right to a square of side
    ``max(H, W)``, that square resized to the input ``size`` (h, w).

    Example:
        >>> p = SquarePlacement(50, 100, (64, 64))
        >>> p.boxes_to_image(torch.tensor([[32.0, 16.0, 64.0, 64.0]])).tolist()
        [[50.0, 25.0, 100.0, 50.0]]
        >>> p.map_to_image(torch.rand(2, 64, 64)).shape
        torch.Size([2, 50, 100])
    """

    height: int
    width: int
    size: tuple[int, int]

    def boxes_to_image(self, boxes: torch.Tensor) -> torch.Tensor:
        """``Tensor[N, 4]`` xyxy in input pixels -> image pixels, clipped to the image."""
        h, w = self.size
        side = max(self.height, self.width)
        scale = boxes.new_tensor([side / w, side / h] * 2)
        limit = boxes.new_tensor([self.width, self.height] * 2)
        return torch.minimum((boxes * scale).clamp(min=0), limit)

    def map_to_image(self, maps: torch.Tensor) -> torch.Tensor:
        """``Tensor[..., h, w]`` -> ``Tensor[..., H, W]``: back to the square, padding cut."""
        side = max(self.height, self.width)
        return resize_maps(maps.float(), (side, side))[..., : self.height, : self.width]


@dataclass
class OutputReader:
    """An output read as candidates (one per query): boxes in the pixels of a ``size`` (h, w)
    input, and per phrase the probability the family's post-processing ranks by: OWL-ViT's and
    OWLv2's sigmoid of each (query, phrase) logit, Grounding DINO's best token probability
    over the phrase's tokens (``phrase_mask: BoolTensor[P, T]``). ``objectness`` is each
    query's detection score, which D-RISE weighs its matches by; ``extras`` keep the logits
    (OWL) or the token probabilities (Grounding DINO) that :meth:`OpenVocabularyAdapter.
    select` reads. No NMS."""

    family: str
    size: tuple[int, int]
    phrase_mask: Optional[torch.Tensor] = None

    def __call__(self, output: Any) -> Candidates:
        logits, boxes = getattr(output, "logits", None), getattr(output, "pred_boxes", None)
        if not isinstance(logits, torch.Tensor) or not isinstance(boxes, torch.Tensor):
            raise TaskcamError(
                f"an open-vocabulary output has logits and pred_boxes, got {type(output).__name__}"
            )
        xyxy = cxcywh_to_xyxy(boxes, self.size)  # [B, Q, 4]
        if self.family in _OWL:
            scores = logits.sigmoid()  # [B, Q, P]
            extras = {"logits": logits}
            return Candidates(xyxy, scores, scores.amax(-1), extras=extras, nms=False)
        assert self.phrase_mask is not None
        probs = logits.sigmoid()  # [B, Q, L]: L = max_text_len, -inf logits past the text
        mask = self.phrase_mask.to(probs.device)  # [P, T]
        tokens = probs[..., None, : mask.shape[-1]]  # [B, Q, 1, T]
        scores = torch.where(mask, tokens, torch.zeros_like(tokens)).amax(-1)  # [B, Q, P]
        return Candidates(xyxy, scores, probs.amax(-1), extras={"tokens": probs}, nms=False)


@dataclass
class _DetectionScore:
    """``score(output, i)``: detection ``i``'s query's probability for its phrase."""

    read: OutputReader
    queries: list[int]
    phrases: list[int]

    def __call__(self, output: Any, i: int) -> torch.Tensor:
        return self.read(output).scores[0, self.queries[i], self.phrases[i]]


def _get(size: Any, key: str) -> Optional[int]:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return None if value is None else int(value)


class OpenVocabularyAdapter(Detector):
    """An open-vocabulary detector and its prompt as the pipeline drives them (the
    :class:`~taskcam.Detector` contract); see the module doc.

    Default layers: a spatial feature map of the image backbone, where every detection's
    evidence passes. OWL-ViT and OWLv2 are ViTs whose every patch token is a query: the
    tokens entering the last vision block's attention (its ``layer_norm1``,
    ``Tensor[B, 1 + h*w, C]``, read as a ``h × w`` grid by taskcam's token-to-grid reshape),
    as for transformer classifiers (``blocks.N.norm1``). After that attention each token
    reaches the heads alone, so a later layer's gradient is zero but at the detection's own
    patch, and the encoder's output feeds a LayerNorm, to which gradient × activation sums
    to zero. Grounding DINO's backbone (Swin or ResNet) levels as
    projected for its encoder (``model.input_proj_vision.*``, ``Tensor[B, C, h, w]`` each,
    whatever the backbone), fused, as Deformable DETR's are.

    Args:
        model: ``OwlViTForObjectDetection``, ``Owlv2ForObjectDetection`` or
            ``GroundingDinoForObjectDetection``, left as it is (run through
            :class:`TextConditioned`).
        processor: its processor (``AutoProcessor.from_pretrained(folder)``): tokenizer and
            image processor.
        text: ``"a cat. a remote."`` or a list of phrases.
        conf: the box threshold (default: the post-processing's, 0.1 for OWL-ViT and OWLv2,
            0.25 for Grounding DINO).
        text_threshold: Grounding DINO's threshold for the tokens of a box's ``phrase``.
        preprocess: the input size and normalisation given to the image processor (default:
            the processor's own): ``(h, w)`` for OWL-ViT and OWLv2, ``(shortest edge, longest
            edge)`` for Grounding DINO.

    Raises:
        TaskcamError: a model of another family, no phrase in ``text``, a prompt longer than
            the model reads.
    """

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        text: Optional[Union[str, Sequence[str]]],
        *,
        conf: Optional[float] = None,
        text_threshold: float = 0.25,
        preprocess: Optional[Preprocess] = None,
    ) -> None:
        family = _model_type(model)
        self.processor, self.text_threshold = processor, float(text_threshold)
        self.prompt = _encode(model, processor, family, text)
        self.preprocess = preprocess or processor_preprocess(processor, family)
        super().__init__(
            TextConditioned(model, self.prompt.inputs),
            size=self.preprocess.size,
            resize="none",
            conf=_CONF[family] if conf is None else float(conf),
            class_names=self.prompt.phrases,
        )
        self.model_type = family
        self._user_model = model
        self.input_size = self.preprocess.size  # (h, w) of the last prepared input

    @property
    def family(self) -> str:
        return self.model_type

    @property
    def detector(self) -> nn.Module:
        return self._user_model

    @property
    def explains(self) -> tuple[str, ...]:
        return ("score", "x1", "y1", "x2", "y2")

    @property
    def text_layer(self) -> str:
        """The text encoder's token-embedding table, whose outputs ``words`` are read at."""
        if self.model_type in _OWL:
            return f"{self.model_type}.text_model.embeddings.token_embedding"
        return "model.text_backbone.embeddings.word_embeddings"

    def set_size(self, dims: Sequence[int]) -> None:
        """``--size`` reaches :attr:`preprocess` (read at each image) instead."""

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, Any]:
        """``uint8[H, W, 3]`` RGB -> (``Tensor[1, 3, h, w]``, placement), by the model's own
        image processor at :attr:`preprocess`'s size, mean and std."""
        check_image(image)
        height, width = image.shape[:2]
        a, b = (int(v) for v in self.preprocess.size)
        size = {"height": a, "width": b}
        if self.model_type == "grounding-dino":
            size = {"shortest_edge": a, "longest_edge": b}
        x = self.processor.image_processor(
            images=image,
            size=size,
            image_mean=list(self.preprocess.mean),
            image_std=list(self.preprocess.std),
            return_tensors="pt",
        )["pixel_values"]
        self.input_size = (int(x.shape[-2]), int(x.shape[-1]))
        if self.model_type == "owlv2":
            return x.to(self.device), SquarePlacement(height, width, self.input_size)
        return x.to(self.device), StretchPlacement(height, width, self.input_size)

    def reader(self) -> OutputReader:
        """How outputs of an input of the last prepared size are read."""
        mask = None if self.model_type in _OWL else self.prompt.phrase_mask()
        return OutputReader(self.model_type, self.input_size, mask)

    def candidates(self, output: Any) -> Candidates:
        return self.reader()(output)

    def select(self, candidates: Candidates) -> list[Detections]:
        """The library's post-processing, keeping each detection's query (see the module
        doc), best first; each detection's ``phrase`` in ``fields``."""
        out = []
        for b in range(candidates.scores.shape[0]):
            if self.model_type in _OWL:  # sigmoid(max logit), the best phrase's index
                best, classes = candidates.extras["logits"][b].max(-1)
                scores = best.sigmoid()
            else:
                scores = candidates.objectness[b]  # type: ignore[index]
                classes = candidates.scores[b].argmax(-1)
            queries = torch.nonzero(scores > self.score_threshold).flatten()
            queries = queries[scores[queries].argsort(descending=True, stable=True)]
            det = Detections(
                candidates.boxes[b, queries], scores[queries], classes[queries], queries
            )
            if self.model_type in _OWL:
                phrases = [self.prompt.phrases[k] for k in det.classes.tolist()]
            else:
                phrases = self._labels(candidates.extras["tokens"][b, queries])
            det.fields = [{"phrase": p} for p in phrases]
            out.append(det)
        return out

    def _labels(self, probs: torch.Tensor) -> list[str]:
        """Grounding DINO's label of each box (``probs: Tensor[N, L]`` token probabilities):
        its tokens above :attr:`text_threshold`, the first and last of the ``L`` positions
        left out, decoded by the processor, as ``post_process_grounded_object_detection``."""
        posmap = probs > self.text_threshold
        posmap[:, 0] = False
        posmap[:, probs.shape[-1] - 1 :] = False
        ids = self.prompt.inputs["input_ids"][0].tolist()
        rows = [row.nonzero().flatten().tolist() for row in posmap.cpu()]
        label_ids = [[ids[i] for i in row if i < len(ids)] for row in rows]
        return list(self.processor.batch_decode(label_ids))

    def detect(self, x: torch.Tensor) -> list[Detections]:
        """The detections of each image of ``x`` (:meth:`select`), each with its record
        fields: ``phrase``, and ``words``, computed when a record reads them
        (:class:`~taskcam.adapters.huggingface.open_vocabulary_text.WordAttribution`)."""
        detections = super().detect(x)
        for b, det in enumerate(detections):
            score = _DetectionScore(self.reader(), det.candidates.tolist(), det.classes.tolist())
            words = WordAttribution(
                self.model, self.text_layer, x[b : b + 1], score, self.prompt, len(det)
            )
            phrases = [f["phrase"] for f in det.fields or []]
            det.fields = DetectionFields(phrases, words)  # type: ignore[assignment]
        return detections

    def target(self, dets: Detections, i: int, what: str) -> CandidateTarget:
        """Detection ``i``'s query's probability for its phrase (or a side of its box)."""
        return CandidateTarget(
            int(dets.candidates[i]),
            int(dets.classes[i]),
            what,
            box=dets.boxes[i],
            read=self.reader(),
        )

    def default_layers(self) -> list[str]:
        """See the class doc: the last vision encoder layer (OWL-ViT, OWLv2), the projected
        backbone levels (Grounding DINO)."""
        if self.model_type in _OWL:
            vision = self.model.get_submodule(f"{self.model_type}.vision_model.encoder.layers")
            return [f"{self.model_type}.vision_model.encoder.layers.{len(vision) - 1}.layer_norm1"]
        levels = len(self.model.get_submodule("model.input_proj_vision"))
        return [f"model.input_proj_vision.{i}" for i in range(levels)]


def _encode(model: nn.Module, processor: Any, family: str, text: Any) -> Prompt:
    """The prompt as the model's processor tokenizes it, within what the model reads."""
    config = model.config  # type: ignore[union-attr]
    if family in _OWL:
        limit = int(config.text_config.max_position_embeddings)
        return encode_prompt(processor, text, per_phrase=True, limit=limit)
    separators = model.get_submodule("model").special_tokens.tolist()
    return encode_prompt(
        processor, text, per_phrase=False, separators=separators, limit=int(config.max_text_len)
    )


def processor_preprocess(processor: Any, family: str) -> Preprocess:
    """The input size, mean and std of a processor's image processor: ``(h, w)`` for OWL-ViT
    and OWLv2, ``(shortest edge, longest edge)`` for Grounding DINO.

    Example:
        >>> import transformers
        >>> processor = type("P", (), {"image_processor": transformers.OwlViTImageProcessor()})
        >>> processor_preprocess(processor, "owlvit").size
        (768, 768)
    """
    images = processor.image_processor
    size = images.size
    if family in _OWL:
        sides = (_get(size, "height") or 768, _get(size, "width") or 768)
    else:
        sides = (_get(size, "shortest_edge") or 800, _get(size, "longest_edge") or 1333)
    mean = tuple(float(v) for v in images.image_mean)
    std = tuple(float(v) for v in images.image_std)
    return Preprocess(sides, mean, std)  # type: ignore[arg-type]


def open_vocabulary_loaded(folder: Path, model: nn.Module, text: Any) -> LoadedModel:
    """A ``save_pretrained`` folder of OWL-ViT, OWLv2 or Grounding DINO and its prompt, ready to
    explain (``hf:DIR --text``): the model (:class:`TextConditioned`) and its adapter.

    Args:
        folder: the folder, with the model's processor saved beside it
            (``processor.save_pretrained``): its tokenizer and image processor.
        model: the model built from the folder, in eval mode.
        text: ``--text``: ``"a cat. a remote."`` or a list of phrases.

    Raises:
        TaskcamError: no ``--text``, no processor in the folder, a prompt the model cannot
            read.

    Example:
        >>> open_vocabulary_loaded(Path("."), nn.Linear(1, 1), None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: --text: an open-vocabulary detector needs phrases to find; ...
    """
    split_phrases(text)  # no text: refused before anything is read
    family = _model_type(model)
    try:
        import transformers

        processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise TaskcamError(
            f"--model hf:{folder}: cannot read the {FAMILIES[family]} processor there ({e}); "
            "save it beside the model (processor.save_pretrained), as its tokenizer and image "
            "processor prepare the prompt and the image"
        ) from e
    if getattr(processor, "tokenizer", None) is None or not hasattr(processor, "image_processor"):
        raise TaskcamError(
            f"--model hf:{folder}: its processor has no tokenizer and image processor; save "
            f"the {FAMILIES[family]} processor (processor.save_pretrained) beside the model"
        )
    adapter = OpenVocabularyAdapter(model, processor, text)
    return LoadedModel(
        adapter.model,
        f"hf:{folder}",
        task="detect",
        preprocess=adapter.preprocess,
        class_names=adapter.class_names,
        adapter=adapter,
    )
