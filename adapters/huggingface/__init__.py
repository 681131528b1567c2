"""Hugging Face ``transformers`` vision models from a ``save_pretrained`` folder (``hf:DIR``).

:func:`load_hf` (:mod:`~taskcam.adapters.huggingface.folders`) reads the folder's
``config.json`` (nothing is downloaded: ``local_files_only``), builds the architecture it names
and says what taskcam explains of it:

- image classifiers (``*ForImageClassification``: ViT, DeiT, Swin, ConvNeXt, ...) as they are
  (:mod:`~taskcam.adapters.huggingface.classifiers`): their ``ModelOutput.logits`` are the
  class scores, their ``id2label`` the class names;
- semantic segmenters (``*ForSemanticSegmentation``: SegFormer, UperNet, DPT, BEiT, ...) and
  universal segmenters (Mask2Former, MaskFormer), wrapped in
  :mod:`~taskcam.adapters.huggingface.segmenters` so that their output is per-class logits at
  the input's size, as the library's semantic post-processing makes them;
- DETR, Conditional DETR and Deformable DETR detectors (``*ForObjectDetection``) as they are,
  with a :class:`~taskcam.adapters.huggingface.detr.DetrAdapter` (one target per kept query);
- Segment Anything (``SamModel``, with ``--prompt``) through a
  :class:`~taskcam.adapters.huggingface.sam.SamAdapter`: one target per predicted mask
  (:mod:`~taskcam.adapters.huggingface.sam`);
- OWL-ViT, OWLv2 and Grounding DINO (with ``--text``) through an
  :class:`~taskcam.adapters.huggingface.open_vocabulary.OpenVocabularyAdapter`: one target per
  detection, with the words of the prompt that carried its score
  (:mod:`~taskcam.adapters.huggingface.open_vocabulary`).

The wrappers share the model's own submodules under the model's own names, so a layer is
named as in the library (``decode_head.activation``, ``model.pixel_level_module.decoder.
mask_projection``) and a state dict of the library's model loads into them. Preprocessing comes
from the folder's ``preprocessor_config.json`` when there is one.

Example:
    >>> import tempfile, torch, transformers
    >>> config = transformers.SegformerConfig(hidden_sizes=[8, 16, 24, 32],
    ...     depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=16,
    ...     num_labels=3)
    >>> folder = tempfile.mkdtemp()
    >>> transformers.SegformerForSemanticSegmentation(config).save_pretrained(folder)
    >>> loaded = load_hf(folder, "none")
    >>> loaded.task, loaded.layers, loaded.model(torch.rand(1, 3, 64, 48)).shape
    ('segment', ['decode_head.activation'], torch.Size([1, 3, 64, 48]))
"""

from taskcam.adapters.huggingface.classifiers import hf_class_names, is_classifier
from taskcam.adapters.huggingface.detr import DETR_TYPES, DetrAdapter, DetrTarget
from taskcam.adapters.huggingface.folders import hf_preprocess, load_hf
from taskcam.adapters.huggingface.open_vocabulary import OpenVocabularyAdapter
from taskcam.adapters.huggingface.sam import SamAdapter, parse_prompt
from taskcam.adapters.huggingface.segmenters import SemanticSegmenter, UniversalSegmenter
from taskcam.outputs import universal_class_logits

__all__ = [
    "DETR_TYPES",
    "DetrAdapter",
    "DetrTarget",
    "OpenVocabularyAdapter",
    "SamAdapter",
    "SemanticSegmenter",
    "UniversalSegmenter",
    "hf_class_names",
    "hf_preprocess",
    "is_classifier",
    "load_hf",
    "parse_prompt",
    "universal_class_logits",
]
