"""The names a user needs without digging are at ``taskcam``'s top level, and ``import taskcam``
stays light: the run path (images, pictures) and the model libraries load when used."""

from __future__ import annotations

import subprocess
import sys

import taskcam
from taskcam.adapters.detection import Candidates, Detections, Detector
from taskcam.models import load_model
from taskcam.options import RunOptions
from taskcam.pipeline import explain_files
from taskcam.targets import ClassTarget


def test_the_public_names_are_the_modules_own():
    assert taskcam.ClassTarget is ClassTarget and taskcam.load_model is load_model
    assert taskcam.RunOptions is RunOptions and taskcam.explain_files is explain_files
    assert (taskcam.Detector, taskcam.Candidates, taskcam.Detections) == (
        Detector,
        Candidates,
        Detections,
    )
    assert set(taskcam.__all__) >= {"ClassTarget", "load_model", "RunOptions", "explain_files"}
    assert all(hasattr(taskcam, name) for name in taskcam.__all__)


def test_import_taskcam_loads_no_picture_or_model_library():
    code = (
        "import sys, taskcam; heavy = ['cv2', 'taskcam.pipeline', 'ultralytics', "
        "'transformers', 'timm', 'segmentation_models_pytorch']; "
        "print([m for m in heavy if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_detectors_errors_against_labels_are_public():
    from taskcam.adapters.detection.labels import Labels, read_labels
    from taskcam.adapters.detection.outcomes import label_outcomes

    assert taskcam.Labels is Labels and taskcam.read_labels is read_labels
    assert taskcam.label_outcomes is label_outcomes
