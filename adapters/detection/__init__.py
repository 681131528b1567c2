"""The detector contract and what every detector family shares.

- :mod:`~taskcam.adapters.detection.detector`: :class:`Detector`, the contract every detector
  adapter meets and the base that holds what they share; used as it is, it wraps any PyTorch
  detector with a decode function;
- :mod:`~taskcam.adapters.detection.candidates`: :class:`Candidates` (a raw output's
  candidates, before NMS) and :class:`Detections` (what post-processing keeps, each traced to
  its candidate);
- :mod:`~taskcam.adapters.detection.scoring`: detection targets, and D-RISE matching on
  perturbed inputs;
- :mod:`~taskcam.adapters.detection.placement`: an image on the model input and back
  (ultralytics' letterbox, a whole-image resize);
- :mod:`~taskcam.adapters.detection.nms`: post-processing that keeps each detection's
  candidate (single-label NMS, the best pairs of an end-to-end head);
- :mod:`~taskcam.adapters.detection.specs`: the ``--targets`` spec of detectors;
- :mod:`~taskcam.adapters.detection.matching` and :mod:`~taskcam.adapters.detection.outcomes`:
  detections matched to labels, and each label's or detection's outcome (hit, missed and why,
  false positive) with the targets that explain it (:func:`label_outcomes`);
- :mod:`~taskcam.adapters.detection.labels`: ground-truth labels (YOLO, COCO, Pascal VOC,
  ``--box``) in the model's class numbering;
- :mod:`~taskcam.adapters.detection.families`: the one place a model's family, and so its
  adapter, is chosen (:func:`~taskcam.adapters.detection.families.adapter_for`).
"""

from taskcam.adapters.detection.box_specs import box_labels, hand_labels, parse_box
from taskcam.adapters.detection.candidates import Candidates, Detections
from taskcam.adapters.detection.detector import RESIZES, Detector, model_class_names
from taskcam.adapters.detection.labels import Labels, read_labels
from taskcam.adapters.detection.matching import MATCH_IOU, match_labels
from taskcam.adapters.detection.nms import nms_keep, top_pairs
from taskcam.adapters.detection.outcomes import ErrorAnalysis, Outcome, label_outcomes
from taskcam.adapters.detection.placement import (
    LetterboxInfo,
    Placement,
    StretchPlacement,
    letterbox,
    stretched_input,
)
from taskcam.adapters.detection.scoring import (
    SIDES,
    WHAT,
    CandidateTarget,
    DetectionTarget,
    MatchTarget,
    check_what,
    drise_similarity,
    keypoint_what,
)
from taskcam.adapters.detection.specs import parse_detection_targets

__all__ = [
    "RESIZES",
    "SIDES",
    "WHAT",
    "CandidateTarget",
    "Candidates",
    "DetectionTarget",
    "Detections",
    "Detector",
    "ErrorAnalysis",
    "Labels",
    "MATCH_IOU",
    "Outcome",
    "LetterboxInfo",
    "MatchTarget",
    "Placement",
    "StretchPlacement",
    "box_labels",
    "hand_labels",
    "check_what",
    "drise_similarity",
    "keypoint_what",
    "letterbox",
    "model_class_names",
    "nms_keep",
    "parse_box",
    "parse_detection_targets",
    "read_labels",
    "label_outcomes",
    "match_labels",
    "stretched_input",
    "top_pairs",
]
