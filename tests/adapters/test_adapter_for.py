"""Adapter selection: taskcam.adapters.adapter_for picks a loaded detector's family once."""

from __future__ import annotations

import pytest
import torchvision

from taskcam.adapters import adapter_for
from taskcam.adapters.torchvision import TorchvisionDetectionAdapter
from taskcam.adapters.ultralytics import YoloAdapter
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel
from taskcam.models import load_model


def test_each_detector_family_gets_its_adapter_once_with_the_threshold():
    rcnn = load_model("zoo:shapes-fasterrcnn")
    assert rcnn.adapter is None and rcnn.is_detector
    adapter = adapter_for(rcnn, conf=0.4)
    assert isinstance(adapter, TorchvisionDetectionAdapter) and adapter.conf == 0.4
    assert adapter_for(rcnn) is adapter and rcnn.adapter is adapter and adapter.conf == 0.4
    assert adapter.class_names == rcnn.class_names
    yolo = load_model("zoo:shapes-yolo", weights="none")
    assert isinstance(adapter_for(yolo), YoloAdapter) and adapter_for(yolo) is yolo.adapter


def test_non_detectors_and_bad_thresholds_are_refused_naming_them():
    net = LoadedModel(torchvision.models.resnet18(weights=None), "my.nets:resnet", task="detect")
    with pytest.raises(
        TaskcamError, match="my.nets:resnet: a ResNet is not a detector taskcam knows"
    ):
        adapter_for(net)
    with pytest.raises(TaskcamError, match=r"--conf: expected a score in \[0, 1\], got 1.2"):
        adapter_for(load_model("zoo:shapes-fasterrcnn"), conf=1.2)


def test_is_detector_covers_detectors_and_instance_segmenters():
    assert not load_model("zoo:shapes-cnn").is_detector
    assert not load_model("zoo:shapes-unet").is_detector
    assert load_model("zoo:shapes-fasterrcnn").is_detector
    seg = load_model("yolo:yolov8n-seg.yaml")
    assert seg.task == "segment" and seg.is_detector  # instances are detections with masks
