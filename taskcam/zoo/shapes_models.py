"""The shapes zoo: small models of real families trained on :mod:`taskcam.data.shapes`.

Each entry is a real architecture (a torchvision-block ResNet, timm ViT and Swin, a torchvision
Faster R-CNN with an FPN, an ultralytics YOLOv8n, a segmentation-models-pytorch Unet) at a size
that trains on a CPU; the weights ship in ``taskcam/weights`` and come from
``taskcam zoo train NAME`` (see :mod:`taskcam.zoo.train`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from taskcam.data.shapes import CLASSES
from taskcam.errors import TaskcamError
from taskcam.loaded import LoadedModel, Preprocess
from taskcam.reshape import infer_reshape

__all__ = [
    "CLASSIFY_SIZE",
    "DETECT_SIZE",
    "SHAPES_MEAN",
    "SHAPES_STD",
    "ShapesResNet",
    "build_architecture",
    "shapes_loaded_model",
    "weights_path",
    "yolo_yaml",
]

CLASSIFY_SIZE = 64
"""Input side of the shapes classifiers (CNN, ViT, Swin)."""
DETECT_SIZE = 256
"""Input side of the shapes detectors and segmenter."""
SHAPES_MEAN = (0.5, 0.5, 0.5)
SHAPES_STD = (0.25, 0.25, 0.25)
WEIGHTS_DIR = Path(__file__).parent.parent / "weights"

NAMES = (
    "shapes-cnn",
    "shapes-vit",
    "shapes-swin",
    "shapes-fasterrcnn",
    "shapes-yolo",
    "shapes-unet",
)


class ShapesResNet(nn.Module):
    """A small ResNet (torchvision ``BasicBlock`` stages) with global average pooling + linear.

    The pooled-then-linear head is what the original CAM (Zhou et al., CVPR 2016) needs: the
    class map is the head's weights applied to ``layer3``'s channels. As in that paper, which
    cut VGG back to a 14×14 map for 224-px inputs, the last stage keeps a fine grid: stride 4,
    so 16×16 for the 64-px shapes.

    Example:
        >>> ShapesResNet()(torch.rand(2, 3, 64, 64)).shape
        torch.Size([2, 4])
    """

    def __init__(self, num_classes: int = len(CLASSES), widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages = []
        prev = widths[0]
        for i, w in enumerate(widths):
            stride = 2 if i == 1 else 1
            down = None
            if stride != 1 or prev != w:
                down = nn.Sequential(
                    nn.Conv2d(prev, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w)
                )
            stages.append(nn.Sequential(BasicBlock(prev, w, stride, down), BasicBlock(w, w)))
            prev = w
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # [B, 32, H/2, W/2]
        x = self.layer3(self.layer2(self.layer1(x)))  # [B, 128, H/4, W/4]
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _Trunk(nn.Module):
    """The Faster R-CNN backbone's trunk: a ResNet stem and four BasicBlock stages."""

    def __init__(self, widths: tuple[int, ...] = (32, 48, 96, 128)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        prev = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or prev != w:
                down = nn.Sequential(
                    nn.Conv2d(prev, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w)
                )
            self.add_module(f"layer{i + 1}", BasicBlock(prev, w, stride, down))
            prev = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _fasterrcnn() -> nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    trunk = _Trunk()
    # Feature maps named p3..p5 on purpose: detectors in the wild do not use torchvision's
    # "0", "1", "2" names, and explanations must not depend on them.
    backbone = BackboneWithFPN(
        trunk,
        return_layers={"layer2": "p3", "layer3": "p4", "layer4": "p5"},
        in_channels_list=[48, 96, 128],
        out_channels=64,
        extra_blocks=LastLevelMaxPool(),
    )
    anchors = AnchorGenerator(
        sizes=((24,), (48,), (96,), (160,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4
    )
    return FasterRCNN(
        backbone,
        num_classes=None,
        min_size=DETECT_SIZE,
        max_size=DETECT_SIZE,
        image_mean=list(SHAPES_MEAN),
        image_std=list(SHAPES_STD),
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_train=600,
        rpn_post_nms_top_n_train=300,
        rpn_pre_nms_top_n_test=300,
        rpn_post_nms_top_n_test=100,
        box_roi_pool=MultiScaleRoIAlign(["p3", "p4", "p5"], 7, 2),
        box_head=TwoMLPHead(64 * 7 * 7, 256),
        box_predictor=FastRCNNPredictor(256, len(CLASSES) + 1),
        box_batch_size_per_image=128,
        box_detections_per_img=20,
    )


def yolo_yaml() -> str:
    """The ultralytics model config the YOLO entry uses (YOLOv8n, built with four classes)."""
    return "yolov8n.yaml"


def build_architecture(name: str) -> nn.Module:
    """The untrained architecture of zoo model ``name`` (not ``shapes-yolo``: see the trainer).

    Example:
        >>> build_architecture("shapes-vit")(torch.rand(1, 3, 64, 64)).shape
        torch.Size([1, 4])
    """
    n = len(CLASSES)
    if name == "shapes-cnn":
        return ShapesResNet(n)
    if name == "shapes-vit":
        from timm.models.vision_transformer import VisionTransformer

        # Four register tokens after the class token (Darcet et al., "Vision Transformers Need
        # Registers", ICLR 2024): trained without them, attention rollout's peak fell on the
        # object in 78 of 100 held-out images; with them in 100 (98-100 over three variants).
        return VisionTransformer(
            img_size=CLASSIFY_SIZE,
            patch_size=8,
            num_classes=n,
            embed_dim=96,
            depth=4,
            num_heads=4,
            mlp_ratio=2.0,
            reg_tokens=4,
        )
    if name == "shapes-swin":
        from timm.models.swin_transformer import SwinTransformer

        return SwinTransformer(
            img_size=CLASSIFY_SIZE,
            patch_size=4,
            window_size=4,
            embed_dim=48,
            depths=(2, 2, 2),
            num_heads=(2, 4, 8),
            mlp_ratio=2.0,
            num_classes=n,
        )
    if name == "shapes-fasterrcnn":
        return _fasterrcnn()
    if name == "shapes-unet":
        import segmentation_models_pytorch as smp

        return smp.Unet(
            "tu-resnet18",
            encoder_weights=None,
            encoder_depth=3,
            decoder_channels=(64, 32, 16),
            classes=n + 1,
        )
    raise TaskcamError(f"no shapes architecture {name!r}; known: {', '.join(NAMES)}")


def weights_path(name: str) -> Path:
    """Where the shipped weights of ``name`` live."""
    suffix = ".pt" if name == "shapes-yolo" else ".safetensors"
    return WEIGHTS_DIR / f"{name}{suffix}"


_TASK = {
    "shapes-cnn": "classify",
    "shapes-vit": "classify",
    "shapes-swin": "classify",
    "shapes-fasterrcnn": "detect",
    "shapes-yolo": "detect",
    "shapes-unet": "segment",
}

_LAYERS = {
    "shapes-cnn": ["layer3"],
    "shapes-vit": ["blocks.3.norm1"],
    "shapes-swin": ["layers.2.blocks.1.norm1"],
    "shapes-fasterrcnn": [f"backbone.fpn.layer_blocks.{i}" for i in range(3)],  # p3-p5
    "shapes-unet": ["decoder"],
}


def shapes_loaded_model(name: str, pretrained: bool = True, path: Optional[Path] = None):
    """Build zoo model ``name``; with ``pretrained`` load its shipped (or ``path``) weights."""
    if name == "shapes-yolo":
        return _yolo(pretrained, path)
    model = build_architecture(name)
    if pretrained:
        from safetensors.torch import load_file

        file = path or weights_path(name)
        if not file.is_file():
            raise TaskcamError(
                f"zoo:{name}: weights {file} are missing; "
                f"train them with `taskcam zoo train {name}`"
            )
        model.load_state_dict(load_file(str(file)))
    task = _TASK[name]
    size = CLASSIFY_SIZE if task == "classify" else DETECT_SIZE
    names = list(CLASSES) if task != "segment" else ["background", *CLASSES]
    if name == "shapes-fasterrcnn":
        names = ["background", *CLASSES]
    reshape = None
    if name in ("shapes-vit", "shapes-swin"):
        # read from the model, as for any transformer: TokensToGrid((8, 8), 5), ChannelsLast()
        example = torch.zeros(1, 3, size, size)
        reshape = infer_reshape(model, _LAYERS[name][0], example)
    return LoadedModel(
        model=model.eval(),
        spec=f"zoo:{name}",
        task=task,
        preprocess=Preprocess((size, size), SHAPES_MEAN, SHAPES_STD),
        class_names=names,
        layers=_LAYERS.get(name),
        reshape=reshape,
    )


def _yolo(pretrained: bool, path: Optional[Path]) -> LoadedModel:
    import os

    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError as e:
        raise TaskcamError("zoo:shapes-yolo needs ultralytics (pip install 'taskcam[yolo]')") from e
    if pretrained:
        file = path or weights_path("shapes-yolo")
        if not file.is_file():
            raise TaskcamError(
                f"zoo:shapes-yolo: weights {file} are missing; train them with "
                "`taskcam zoo train shapes-yolo`"
            )
        model = YOLO(str(file)).model.float().eval()
    else:
        from ultralytics.nn.tasks import DetectionModel

        # The same YOLOv8n with four classes, random weights (not the yaml's 80 COCO classes).
        model = DetectionModel(yolo_yaml(), nc=len(CLASSES), verbose=False).eval()
        model.names = dict(enumerate(CLASSES))
    return LoadedModel(
        model=model,
        spec="zoo:shapes-yolo",
        task="detect",
        preprocess=Preprocess((DETECT_SIZE, DETECT_SIZE), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
        class_names=list(CLASSES),
        layers=None,
    )
