"""The text side of open-vocabulary detectors: the phrases of ``--text``, their tokens as the
model's own processor makes them, and which words of the prompt carried a detection's score.

A detection's words are gradient × input over the prompt's token embeddings (the output of
the text encoder's token-embedding table, before position embeddings): the gradient of the
detection's score with respect to each token's embedding, times that embedding, summed over
the embedding dimension, then summed over the tokens of each word of the prompt. Start, end,
separator and padding tokens belong to no word and are left out, so a detection's word weights
need not add up to its score. Gradient × input is the first-order attribution of Shrikumar et
al. ("Not Just a Black Box", 2016; Ancona et al., ICLR 2018).

Example:
    >>> split_phrases("a cat. a remote control.")
    ['a cat', 'a remote control']
    >>> prompt_words("a cat. a remote-control")
    [(0, 1), (2, 5), (7, 8), (9, 23)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union, overload

import torch
from torch import nn

from taskcam.capture import Capture
from taskcam.errors import TaskcamError

__all__ = [
    "DetectionFields",
    "Prompt",
    "WordAttribution",
    "encode_prompt",
    "prompt_words",
    "split_phrases",
]

_WORD = re.compile(r"[^\s.,;:!?]+")  # a word: a run of characters other than spaces and stops
_HINT = "pass --text 'a cat. a remote.' (phrases ending with full stops), or text= in Python"


def split_phrases(text: Optional[Union[str, Sequence[str]]]) -> list[str]:
    """The phrases of a prompt: a string cut at its full stops, or a list's items, stripped,
    empty ones left out.

    Raises:
        TaskcamError: no text, or no phrase in it (the message says to pass ``--text``).

    Example:
        >>> split_phrases(["a cat ", "a dog"]), split_phrases("a cat.")
        (['a cat', 'a dog'], ['a cat'])
    """
    if text is None:
        raise TaskcamError(f"--text: an open-vocabulary detector needs phrases to find; {_HINT}")
    parts = text.split(".") if isinstance(text, str) else [str(t) for t in text]
    phrases = [p.strip() for p in parts if p.strip()]
    if not phrases:
        raise TaskcamError(f"--text: no phrase in {text!r}; {_HINT}")
    return phrases


def prompt_words(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the words of ``text``: runs of characters other
    than spaces and ``.,;:!?`` (so ``remote-control`` and ``don't`` are one word each).

    Example:
        >>> text = "don't stop. a remote-control"
        >>> [text[s:e] for s, e in prompt_words(text)]
        ["don't", 'stop', 'a', 'remote-control']
    """
    return [m.span() for m in _WORD.finditer(text)]


@dataclass
class Prompt:
    """A prompt as the model reads it.

    Attributes:
        phrases: the phrases, the detector's class names.
        words: the prompt's words, in order (each phrase's, phrase after phrase).
        inputs: the processor's text inputs, ``Tensor[R, T]`` each (``input_ids``,
            ``attention_mask``, Grounding DINO's ``token_type_ids``): one row per phrase
            (OWL-ViT, OWLv2) or one row for the whole prompt (Grounding DINO).
        token_words: ``LongTensor[R, T]``: the word each token belongs to, -1 for none.
        token_phrases: ``LongTensor[R, T]``: the phrase each token belongs to, -1 for none.
    """

    phrases: list[str]
    words: list[str]
    inputs: dict[str, torch.Tensor]
    token_words: torch.Tensor
    token_phrases: torch.Tensor

    def phrase_mask(self) -> torch.Tensor:
        """``BoolTensor[P, T]``: which tokens of the (one-row) prompt belong to each phrase."""
        tokens = self.token_phrases[0]
        return tokens[None, :] == torch.arange(len(self.phrases))[:, None]

    def word_weights(self, weights: torch.Tensor) -> list[list[Any]]:
        """``[[word, weight], ...]`` for every word of the prompt: ``weights: Tensor[R, T]``
        per token, summed over each word's tokens (6 significant digits).

        Example:
            >>> prompt = Prompt(["a remote"], ["a", "remote"], {}, torch.tensor([[-1, 0, 1, 1]]),
            ...                 torch.tensor([[-1, 0, 0, 0]]))
            >>> prompt.word_weights(torch.tensor([[5.0, 0.5, 0.25, 0.125]]))
            [['a', 0.5], ['remote', 0.375]]
        """
        index = self.token_words.flatten().to(weights.device)
        found = index >= 0
        sums = weights.new_zeros(len(self.words), dtype=torch.float64)
        sums.index_add_(0, index[found], weights.flatten()[found].double())
        return [[w, float(f"{v:.6g}")] for w, v in zip(self.words, sums.tolist())]


def _token_words(
    offsets: torch.Tensor, spans: list[list[tuple[int, int, int]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(token_words, token_rows)`` ``LongTensor[R, T]``: per token of each row, the index
    of the word span it overlaps (``spans[r]``: ``(start, end, word)`` in that row's
    characters), and whether it covers any text (its row, else -1)."""
    rows, length = offsets.shape[:2]
    words = torch.full((rows, length), -1, dtype=torch.long)
    texts = torch.full((rows, length), -1, dtype=torch.long)
    for r in range(rows):
        for t, (start, end) in enumerate(offsets[r].tolist()):
            if end <= start:  # a special or padding token
                continue
            texts[r, t] = r
            for s, e, w in spans[r]:
                if start < e and s < end:
                    words[r, t] = w
                    break
    return words, texts


def _check_offsets(processor: Any, given: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """Token offsets ``[R, T, 2]`` from the processor's tokenizer for the same text, whose
    ids must equal ``given``."""
    enc = processor.tokenizer(*args, return_offsets_mapping=True, return_tensors="pt", **kwargs)
    if not torch.equal(enc["input_ids"], given):
        raise TaskcamError(
            "--text: the tokenizer's offsets do not match the processor's tokens; save the "
            "model's own processor (processor.save_pretrained) beside it"
        )
    return enc["offset_mapping"]


def _encode_phrases(processor: Any, phrases: list[str], limit: int) -> Prompt:
    """OWL-ViT and OWLv2: one padded row per phrase, as their processor tokenizes them."""
    enc = processor(text=[phrases], return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask")}
    if inputs["input_ids"].shape[-1] > limit:
        raise TaskcamError(
            f"--text: a phrase of {phrases} is longer than the {limit} tokens the text encoder "
            "takes; shorten it"
        )
    offsets = _check_offsets(processor, inputs["input_ids"], phrases, padding="max_length")
    words, spans = [], []
    for phrase in phrases:
        row = []
        for s, e in prompt_words(phrase):
            row.append((s, e, len(words)))
            words.append(phrase[s:e])
        spans.append(row)
    token_words, token_rows = _token_words(offsets, spans)
    return Prompt(phrases, words, inputs, token_words, token_rows)


def _encode_sentence(processor: Any, text: str, separators: Sequence[int], limit: int) -> Prompt:
    """Grounding DINO: the prompt as one row; its phrases are the tokens between the model's
    separator tokens (``[CLS]``, ``[SEP]``, ``.``, ``?``), as its text attention masks them."""
    enc = processor(text=text, return_tensors="pt")
    inputs = {k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    ids = inputs["input_ids"]
    if ids.shape[-1] > limit:
        raise TaskcamError(
            f"--text: {ids.shape[-1]} tokens, more than the {limit} the model reads "
            "(max_text_len); shorten the prompt"
        )
    offsets = _check_offsets(processor, ids, text)
    spans = [(s, e, i) for i, (s, e) in enumerate(prompt_words(text))]
    token_words, covered = _token_words(offsets, [spans])
    phrase_of = torch.full_like(ids, -1)
    phrases: list[str] = []
    start: Optional[int] = None
    tokens = ids[0].tolist()
    for t in range(len(tokens) + 1):  # the end closes the last phrase
        if t == len(tokens) or tokens[t] in separators:
            if start is not None:
                first, last = int(offsets[0, start, 0]), int(offsets[0, t - 1, 1])
                phrases.append(text[first:last].strip())
                start = None
        elif covered[0, t] >= 0:
            start = t if start is None else start
            phrase_of[0, t] = len(phrases)
    if not phrases:
        raise TaskcamError(f"--text: no phrase in {text!r}; {_HINT}")
    words = [text[s:e] for s, e, _ in spans]
    return Prompt(phrases, words, inputs, token_words, phrase_of)


def encode_prompt(
    processor: Any,
    text: Optional[Union[str, Sequence[str]]],
    *,
    per_phrase: bool,
    separators: Sequence[int] = (),
    limit: int = 256,
) -> Prompt:
    """The prompt as the model's processor tokenizes it.

    Args:
        processor: the model's processor (tokenizer and image processor).
        text: ``"a cat. a remote."`` or a list of phrases.
        per_phrase: one row per phrase (OWL-ViT, OWLv2), else the whole prompt in one row,
            a list joined as Grounding DINO's processor joins it (``"a cat. a dog."``).
        separators: the token ids that end a phrase (Grounding DINO's special tokens).
        limit: the most tokens a row may have.

    Raises:
        TaskcamError: no phrase, or a prompt longer than the model reads.

    Example:
        >>> import string, transformers
        >>> vocab = {"!": 0, **{c: 1 + i for i, c in enumerate(string.ascii_lowercase)}}
        >>> vocab.update({c + "</w>": 27 + i for i, c in enumerate(string.ascii_lowercase)})
        >>> vocab.update({"<|startoftext|>": 53, "<|endoftext|>": 54})
        >>> tokenizer = transformers.CLIPTokenizer(vocab=vocab, merges=[], model_max_length=8)
        >>> processor = transformers.OwlViTProcessor(transformers.OwlViTImageProcessor(), tokenizer)
        >>> prompt = encode_prompt(processor, "a cat. a dog.", per_phrase=True, limit=16)
        >>> prompt.words, prompt.inputs["input_ids"].shape
        (['a', 'cat', 'a', 'dog'], torch.Size([2, 8]))
        >>> prompt.token_words.tolist()[0]  # <start> a c a t</w> <end> <end> <end>
        [-1, 0, 1, 1, 1, -1, -1, -1]
    """
    phrases = split_phrases(text)
    if per_phrase:
        return _encode_phrases(processor, phrases, limit)
    if not isinstance(text, str):  # GroundingDinoProcessor's own merge of a list of labels
        text = ". ".join(p.lower() for p in phrases) + "."
    return _encode_sentence(processor, text, list(separators), limit)


class WordAttribution:
    """Which words of the prompt carried each detection's score, on one image: one forward
    with gradients on the text token embeddings (the model's parameters frozen meanwhile, its
    state put back), then one backward per detection, on demand; the graph is dropped once
    every detection has its words.

    Args:
        model: the text-conditioned detector (``forward(x) -> output``).
        layer: the name of its text token-embedding table in ``model``.
        x: ``Tensor[1, 3, h, w]`` the image's input.
        score: ``score(output, i) -> Tensor[]``: detection ``i``'s score in an output.
        prompt: the prompt, to map tokens to words.
        count: how many detections there are.
    """

    def __init__(
        self,
        model: nn.Module,
        layer: str,
        x: torch.Tensor,
        score: Callable[[Any, int], torch.Tensor],
        prompt: Prompt,
        count: int,
    ) -> None:
        self.model, self.layer, self.x = model, layer, x
        self.score, self.prompt, self.count = score, prompt, count
        self._done: dict[int, list[list[Any]]] = {}
        self._graph: Optional[tuple[Any, torch.Tensor]] = None

    def __call__(self, i: int) -> list[list[Any]]:
        if i not in self._done:
            if self._graph is None:
                module = self.model.get_submodule(self.layer)
                capture = Capture(self.model, [(self.layer, module)], need_grad=True)
                with capture as cap, torch.enable_grad():
                    output = self.model(self.x)
                self._graph = (output, cap.activations[self.layer])
            output, embeddings = self._graph  # [R, T, D]
            last = len(self._done) == self.count - 1
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(
                    self.score(output, i), embeddings, retain_graph=not last, allow_unused=True
                )
            weights = torch.zeros_like(embeddings) if grad is None else grad * embeddings
            self._done[i] = self.prompt.word_weights(weights.sum(-1).detach())
            if last:
                self._graph = None
        return self._done[i]


class DetectionFields(Sequence):
    """The record fields of one image's detections (``Detections.fields``): each one's
    ``phrase`` and the ``words`` that carried its score, the words computed when a record
    asks for them (:class:`WordAttribution`), so detections no record shows cost nothing.

    Example:
        >>> fields = DetectionFields(["a cat"], lambda i: [["cat", 0.5]])
        >>> fields[0]
        {'phrase': 'a cat', 'words': [['cat', 0.5]]}
    """

    def __init__(self, phrases: list[str], words: Callable[[int], list[list[Any]]]) -> None:
        self.phrases, self.words = list(phrases), words

    def __len__(self) -> int:
        return len(self.phrases)

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: Union[int, slice]) -> Union[dict[str, Any], list[dict[str, Any]]]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        i = range(len(self))[int(i)]  # an IndexError past the end, as a list
        return {"phrase": self.phrases[i], "words": self.words(i)}
