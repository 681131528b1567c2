"""torchvision detectors (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS, SSD) explained
detection by detection; see :mod:`taskcam.adapters.torchvision.detectors`."""

from taskcam.adapters.torchvision.detectors import (
    TorchvisionDetectionAdapter,
    TorchvisionDetectionTarget,
    default_layers,
    detect,
    detection_targets,
    traced_candidates,
)
from taskcam.adapters.torchvision.traced import (
    FAMILIES,
    ResizePlacement,
    TracedDetector,
    detector_family,
    is_torchvision_detector,
)
from taskcam.adapters.torchvision.traced_output import MaskLogits, TracedOutput

__all__ = [
    "FAMILIES",
    "MaskLogits",
    "ResizePlacement",
    "TorchvisionDetectionAdapter",
    "TorchvisionDetectionTarget",
    "TracedDetector",
    "TracedOutput",
    "default_layers",
    "detect",
    "detection_targets",
    "detector_family",
    "is_torchvision_detector",
    "traced_candidates",
]
