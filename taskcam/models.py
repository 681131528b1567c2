"""Model specs: build a model and its preprocessing from ``timm:``, ``torchvision:``, ``zoo:``,
``smp:``, ``yolo:``, ``hf:`` (a Hugging Face ``save_pretrained`` folder), ``effdet:``,
``yolox:``, ``rfdetr:``, ``onnx:`` (a black box) or ``package.module:factory``, and load
``--weights``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from taskcam.errors import TaskcamError
from taskcam.loaded import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LoadedModel,
    Preprocess,
    imagenet_class_names,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LoadedModel",
    "Preprocess",
    "imagenet_class_names",
    "load_model",
    "load_weights",
    "loaded_detector",
]

_ZERO, _ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # pixels in [0, 1], as YOLO takes them


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model", "ema"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if isinstance(inner, dict) and inner:
                return _state_dict_of(inner, path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k).removeprefix("module."): v for k, v in obj.items()}
    raise TaskcamError(f"{path}: not a state dict or checkpoint (found {type(obj).__name__})")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state dict or checkpoint (``.pt``, ``.pth``, ``.safetensors``) into ``model``.

    Raises:
        TaskcamError: a missing file, or keys/shapes that do not match (the message names the
            path and the first mismatching keys).

    Example:
        >>> import tempfile, os
        >>> net = torch.nn.Linear(2, 2)
        >>> p = os.path.join(tempfile.mkdtemp(), "w.pt"); torch.save(net.state_dict(), p)
        >>> load_weights(torch.nn.Linear(2, 2), p)
        Linear(in_features=2, out_features=2, bias=True)
    """
    path = Path(path)
    if not path.is_file():
        raise TaskcamError(f"--weights: no such file {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means: not a checkpoint
            raise TaskcamError(f"--weights: cannot read {path}: {e}") from e
        state = _state_dict_of(obj, path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        raise TaskcamError(f"--weights {path} does not fit {type(model).__name__}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise TaskcamError(
            f"--weights {path} does not fit {type(model).__name__}: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model


def _timm(name: str, pretrained: bool, size: Optional[tuple[int, int]] = None) -> LoadedModel:
    """A timm model; with ``size``, transformers whose grid is fixed at build time (ViT,
    DeiT, Swin) are built for that input size (timm resamples pretrained position
    embeddings), others take any size as they are."""
    try:
        import timm
    except ImportError as e:
        raise TaskcamError("timm: models need timm (pip install 'taskcam[timm]')") from e
    if name not in timm.list_models(pretrained=False) and not timm.is_model(name):
        raise TaskcamError(f"timm: no model named {name!r}")
    try:
        try:
            model = timm.create_model(name, pretrained=pretrained, **_img_size(timm, name, size))
        except TypeError:  # an architecture without an img_size argument (a CNN)
            model = timm.create_model(name, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001 - hub and network errors come in many types
        raise TaskcamError(
            f"timm:{name}: could not fetch its pretrained weights ({type(e).__name__}: {e}); "
            "pass --weights PATH or --weights none"
        ) from e
    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    names = imagenet_class_names() if getattr(model, "num_classes", 0) == 1000 else None
    pre = Preprocess((h, w), tuple(cfg["mean"]), tuple(cfg["std"]))
    return LoadedModel(model, f"timm:{name}", preprocess=pre, class_names=names)


def _img_size(timm: Any, name: str, size: Optional[tuple[int, int]]) -> dict[str, Any]:
    """``{"img_size": size}`` when ``size`` differs from the model's default input size."""
    if size is None:
        return {}
    default = timm.models.get_pretrained_cfg_value(name, "input_size") or (3, None, None)
    return {} if tuple(default[1:]) == tuple(size) else {"img_size": tuple(size)}


def _torchvision(name: str, pretrained: bool) -> LoadedModel:
    from torchvision import models

    try:
        weights_enum = models.get_model_weights(name)
    except (ValueError, KeyError) as e:
        raise TaskcamError(f"torchvision: no model named {name!r}") from e
    default = weights_enum.DEFAULT
    kwargs: dict[str, object] = {"weights": default if pretrained else None}
    if (
        not pretrained
        and "weights_backbone" in inspect.signature(models.get_model_builder(name)).parameters
    ):
        kwargs["weights_backbone"] = None  # random weights means no pretrained backbone either
    try:
        model = models.get_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - download errors come in many types
        raise TaskcamError(
            f"torchvision:{name}: could not fetch its pretrained weights ({type(e).__name__}: "
            f"{e}); pass --weights PATH or --weights none"
        ) from e
    transform = default.transforms()
    task = "classify"
    module = type(model).__module__
    if ".detection." in module:
        task = "detect"
    elif ".segmentation." in module:
        task = "segment"
    pre = Preprocess()
    if task == "detect":
        pre = _detector_preprocess(model)
    elif hasattr(transform, "crop_size"):
        size = int(transform.crop_size[0])
        pre = Preprocess((size, size), tuple(transform.mean), tuple(transform.std))
    elif task == "segment" and getattr(transform, "resize_size", None):
        size = int(transform.resize_size[0])
        pre = Preprocess((size, size), tuple(transform.mean), tuple(transform.std))
    names = list(default.meta.get("categories") or []) or None
    return LoadedModel(model, f"torchvision:{name}", task=task, preprocess=pre, class_names=names)


def _smp(rest: str, pretrained: bool) -> LoadedModel:
    """``smp:ARCH:ENCODER[:CLASSES]``, e.g. ``smp:Unet:resnet34:21``."""
    parts = rest.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise TaskcamError(
            f"--model smp:{rest}: expected smp:ARCH:ENCODER or smp:ARCH:ENCODER:CLASSES"
        )
    try:
        import segmentation_models_pytorch as smp
    except ImportError as e:
        raise TaskcamError(
            "smp: models need segmentation-models-pytorch (pip install 'taskcam[seg]')"
        ) from e
    arch, encoder = parts[0], parts[1]
    try:
        classes = int(parts[2]) if len(parts) == 3 else 1
    except ValueError as e:
        raise TaskcamError(
            f"--model smp:{rest}: CLASSES must be an integer, got {parts[2]!r}"
        ) from e
    archs = {name.lower(): name for name in dir(smp) if isinstance(getattr(smp, name), type)}
    if arch.lower() not in archs or not issubclass(getattr(smp, archs[arch.lower()]), nn.Module):
        known = sorted(n for n in archs.values() if n[0].isupper() and "Encoder" not in n)
        raise TaskcamError(f"--model smp:{rest}: no architecture {arch!r}; smp has {known}")
    try:
        model = getattr(smp, archs[arch.lower()])(
            encoder, encoder_weights="imagenet" if pretrained else None, classes=classes
        )
    except Exception as e:  # noqa: BLE001 - unknown encoders and download errors vary
        hint = "; pass --weights PATH or --weights none" if pretrained else ""
        raise TaskcamError(f"smp:{rest}: cannot build it ({type(e).__name__}: {e}){hint}") from e
    return LoadedModel(model, f"smp:{rest}", task="segment", preprocess=Preprocess((512, 512)))


def _yolo(rest: str, weights: Optional[str]) -> LoadedModel:
    """``yolo:PATH.pt`` (a local ultralytics checkpoint, or one of the original anchor-based
    YOLOv5: :mod:`taskcam.adapters.yolov5`), ``yolo:PATH.onnx`` (an ultralytics ONNX export,
    rebuilt in PyTorch) or ``yolo:NAME.yaml`` (random weights).

    A ``.pt`` or ``.onnx`` holds its weights already, so ``--weights`` has no meaning for it;
    for a yaml, ``--weights PATH.pt`` loads an ultralytics checkpoint of that architecture.
    The input size is the one the checkpoint or export was made at (as ultralytics' own
    ``predict`` uses it), else 640.
    """
    from taskcam.adapters.ultralytics import load_yolo
    from taskcam.adapters.yolov5 import is_yolov5_checkpoint, load_yolov5

    if rest.lower().endswith(".pt") and is_yolov5_checkpoint(rest):  # the original YOLOv5
        if weights and weights.lower() != "none":
            raise TaskcamError(f"--model yolo:{rest} holds its weights already; drop --weights")
        model = load_yolov5(rest)
        return _detector_loaded(model, f"yolo:{rest}", Preprocess((640, 640), _ZERO, _ONE))
    path = rest
    if rest.lower().endswith((".yaml", ".yml")) and weights and weights.lower() != "none":
        path = weights
    elif rest.lower().endswith((".pt", ".onnx")) and weights and weights.lower() != "none":
        raise TaskcamError(
            f"--model yolo:{rest} holds its weights already; --weights {weights} is not used "
            f"with it (pass yolo:{weights} instead)"
        )
    return _yolo_loaded(load_yolo(path), f"yolo:{rest}")


def _yolo_loaded(model: nn.Module, spec: str) -> LoadedModel:
    """An ultralytics model at the size it was trained at: a detection, segmentation, pose or
    OBB model (or RT-DETR) with its adapter, or a classifier (``-cls``) giving its logits."""
    from taskcam.adapters.detection import model_class_names
    from taskcam.adapters.ultralytics import YoloClassifier, yolo_task

    task = yolo_task(model, ("detect", "segment", "pose", "obb", "classify"))
    args = getattr(model, "args", None)
    default = 224 if task == "classify" else 640  # ultralytics' own defaults
    imgsz = args.get("imgsz", default) if isinstance(args, dict) else default
    size = max(imgsz) if isinstance(imgsz, (list, tuple)) else int(imgsz)
    pre = Preprocess((size, size), _ZERO, _ONE)
    if task == "classify":
        return LoadedModel(
            YoloClassifier(model), spec, preprocess=pre, class_names=model_class_names(model)
        )
    # instances are regions; people and oriented boxes are detections
    return _detector_loaded(model, spec, pre, "segment" if task == "segment" else "detect")


def _detector_loaded(
    model: nn.Module, spec: str, preprocess: Preprocess, task: str = "detect"
) -> LoadedModel:
    """A detector with its adapter, chosen where every adapter is
    (:func:`taskcam.adapters.adapter_for`)."""
    from taskcam.adapters import adapter_for
    from taskcam.adapters.detection import model_class_names

    loaded = LoadedModel(
        model, spec, task=task, preprocess=preprocess, class_names=model_class_names(model)
    )
    adapter_for(loaded)
    return loaded


def _detector_preprocess(model: nn.Module) -> Preprocess:
    """A torchvision detector's own preprocessing, read from its transform: ``size`` is
    (short side, longest long side), as ``GeneralizedRCNNTransform`` resizes."""
    t = model.transform
    return Preprocess(
        (int(t.min_size[-1]), int(t.max_size)),
        tuple(float(v) for v in t.image_mean),
        tuple(float(v) for v in t.image_std),
    )


def _factory(spec: str) -> LoadedModel:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise TaskcamError(f"--model {spec}: cannot import {module_name!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TaskcamError(f"--model {spec}: {module_name} has no callable {attr!r}")
    model = factory()
    from taskcam.adapters.detection import Detector
    from taskcam.adapters.detection.families import detector_for, family_of

    if isinstance(model, Detector):  # a detector wrapped in the contract: explained as it says
        return loaded_detector(model, spec)
    if family_of(model) in ("effdet", "rfdetr", "yolox"):  # their wrappers are not Modules
        return loaded_detector(detector_for(model, name=spec), spec)
    if not isinstance(model, nn.Module):
        raise TaskcamError(
            f"--model {spec}: {attr}() returned {type(model).__name__}, not a Module or a "
            "taskcam.Detector"
        )
    # detectors are recognised by their library, as the yolo: and torchvision: specs are
    if type(model).__module__.startswith("ultralytics."):
        inner = getattr(model, "model", None)  # the YOLO wrapper holds the DetectionModel
        if isinstance(inner, nn.Module) and type(model).__name__ in ("YOLO", "Model"):
            model = inner
        if type(model).__name__ in (
            "DetectionModel",
            "RTDETRDetectionModel",
            "SegmentationModel",
            "PoseModel",
            "ClassificationModel",
        ):
            return _yolo_loaded(model, spec)
    if family_of(model) == "torchvision":
        return LoadedModel(model, spec, task="detect", preprocess=_detector_preprocess(model))
    return LoadedModel(model, spec)


def loaded_detector(detector: Any, spec: Optional[str] = None) -> LoadedModel:
    """A :class:`taskcam.Detector` of yours as a loaded model: its model, itself as the
    adapter, and the preprocessing it describes (recorded with a run's settings). What a
    ``--model package.module:factory`` returning a detector gives, and what
    :func:`taskcam.explain_files` makes of a detector passed to it.

    Args:
        detector: the detector.
        spec: how the run names the model (default: ``detector:<its model's class>``).

    Example:
        >>> import taskcam, torchvision
        >>> net = torchvision.models.resnet18(weights=None)
        >>> loaded = loaded_detector(taskcam.Detector(net, size=64))
        >>> loaded.spec, loaded.task, loaded.is_detector, loaded.preprocess.size
        ('detector:ResNet', 'detect', True, (64, 64))
    """
    pre = getattr(detector, "preprocess", None)  # a family's own (its processor's settings)
    if not isinstance(pre, Preprocess):
        size = detector.size if isinstance(detector.size, tuple) else (detector.size,) * 2
        mean, std = detector.mean or _ZERO, detector.std or _ONE
        pre = Preprocess((int(size[0]), int(size[-1])), mean, std)
    return LoadedModel(
        detector.model,
        spec or f"detector:{type(detector.detector).__name__}",
        task=detector.task,
        preprocess=pre,
        class_names=detector.class_names,
        adapter=detector,
    )


# prefix -> (module, loader): detector families whose loaders take ``(rest, weights)`` and load
# ``--weights`` themselves (a checkpoint of their library's own layout)
_THIRD_PARTY = {
    "effdet": ("taskcam.adapters.effdet", "load_effdet"),
    "rfdetr": ("taskcam.adapters.rfdetr", "load_rfdetr"),
    "yolox": ("taskcam.adapters.yolox", "load_yolox"),
    "onnx": ("taskcam.adapters.blackbox", "load_onnx"),
}


def load_model(
    spec: str,
    weights: Optional[str] = None,
    *,
    device: str | torch.device = "cpu",
    size: Optional[Sequence[int]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    prompts: Optional[Sequence[str]] = None,
    text: Optional[Union[str, Sequence[str]]] = None,
) -> LoadedModel:
    """Build the model a spec names, with its preprocessing and class names.

    Args:
        spec: ``timm:NAME``, ``torchvision:NAME``, ``zoo:NAME``, ``smp:ARCH:ENCODER``,
            ``yolo:PATH.pt`` / ``yolo:PATH.onnx`` / ``yolo:NAME.yaml``, ``hf:DIR`` (a Hugging
            Face ``save_pretrained`` folder: :func:`taskcam.adapters.huggingface.load_hf`),
            ``effdet:NAME``, ``yolox:NAME``, ``rfdetr:NAME``, ``onnx:PATH`` (an ONNX detector
            run by ONNX Runtime as a black box) or ``package.module:factory``.
        weights: ``None`` for the library's pretrained weights, ``"none"`` for random weights,
            or a path to a state dict / checkpoint.
        device: where the model goes.
        size: override the input size (one value for a square, or h, w).
        mean: override the normalisation mean (3 values).
        std: override the normalisation std (3 values).
        prompts: a promptable segmenter's prompts (``hf:`` SAM): ``"point=X,Y"`` or
            ``"box=X1,Y1,X2,Y2"`` in image pixels, one mask each.
        text: an open-vocabulary detector's phrases (``hf:`` OWL-ViT, OWLv2, Grounding
            DINO): ``"a cat. a remote."`` or a list of phrases.

    Raises:
        TaskcamError: an unknown prefix or name, a library that is not installed, weights that
            cannot be fetched or loaded.

    Example:
        >>> lm = load_model("torchvision:resnet18", weights="none")
        >>> lm.preprocess.size, lm.class_names[285]
        ((224, 224), 'Egyptian cat')
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise TaskcamError(
            f"--model {spec!r}: expected timm:NAME, torchvision:NAME, zoo:NAME, yolo:PATH.pt, "
            "smp:ARCH:ENCODER, hf:DIR, effdet:NAME, yolox:NAME, rfdetr:NAME, onnx:PATH or "
            "package.module:factory"
        )
    prefix, _, rest = spec.partition(":")
    if (prompts or text) and prefix != "hf":
        flag = "--prompt" if prompts else "--text"
        raise TaskcamError(
            f"{flag}: {spec} takes no prompt; promptable models come as hf:DIR folders (SAM "
            "takes --prompt, OWL-ViT, OWLv2 and Grounding DINO --text)"
        )
    random_init = weights is not None and str(weights).lower() == "none"
    pretrained = weights is None
    dims = None
    if size is not None:
        dims = [int(s) for s in size]
        if len(dims) not in (1, 2) or min(dims) < 8:
            raise TaskcamError(f"--size: expected one or two sizes >= 8, got {list(size)}")
    if prefix == "timm":
        loaded = _timm(rest, pretrained, None if dims is None else (dims[0], dims[-1]))
    elif prefix == "torchvision":
        loaded = _torchvision(rest, pretrained)
    elif prefix == "zoo":
        from taskcam.zoo.registry import build_zoo_model

        loaded = build_zoo_model(rest, pretrained=not random_init and weights is None)
    elif prefix == "smp":
        loaded = _smp(rest, pretrained)
    elif prefix == "yolo":
        loaded = _yolo(rest, weights)
    elif prefix == "hf":
        from taskcam.adapters.huggingface import load_hf

        loaded = load_hf(rest, weights, prompts=prompts, text=text)
    elif prefix in _THIRD_PARTY:
        module_name, loader = _THIRD_PARTY[prefix]
        loaded = getattr(importlib.import_module(module_name), loader)(rest, weights)
    else:
        loaded = _factory(spec)
    if weights is not None and not random_init and prefix not in ("yolo", *_THIRD_PARTY):
        load_weights(loaded.model, weights)
    if dims is not None:
        loaded.preprocess.size = (dims[0], dims[-1])
        if loaded.adapter is not None:
            loaded.adapter.set_size(dims)  # YOLO letterboxes to a square of the larger side
    raw_pixels = _takes_raw_pixels(loaded, prefix)
    if raw_pixels and (mean is not None or std is not None):
        raise TaskcamError(f"--mean/--std: {spec} is {raw_pixels}, without normalisation")
    for label, value in (("mean", mean), ("std", std)):
        if value is not None:
            vals = tuple(float(v) for v in value)
            if len(vals) != 3 or (label == "std" and min(vals) <= 0):
                raise TaskcamError(f"--{label}: expected 3 values (std > 0), got {list(value)}")
            setattr(loaded.preprocess, label, vals)
            adapter = loaded.adapter  # yours, or a family that normalises in prepare()
            if adapter is not None and (adapter.decode is not None or adapter.mean is not None):
                setattr(adapter, label, vals)
    if loaded.task == "detect" and loaded.adapter is None and hasattr(loaded.model, "transform"):
        _set_detector_transform(loaded, size)  # a torchvision detector: its own transform
    try:
        loaded.model.to(device)
    except (RuntimeError, AssertionError) as e:  # no driver, a device torch does not know
        raise TaskcamError(f"--device {device}: {e}") from e
    loaded.model.eval()
    if prefix not in ("yolo", "smp", "zoo") and loaded.task == "classify":
        from taskcam.adapters.transformers import transformer_defaults

        transformer_defaults(loaded, device)
    return loaded


def _takes_raw_pixels(loaded: LoadedModel, prefix: str) -> Optional[str]:
    """What a model that takes its pixels without normalisation is (ultralytics YOLO and its
    ONNX exports in [0, 1], YOLOX in [0, 255]), else None."""
    if type(loaded.model).__module__.startswith("ultralytics.") or prefix == "onnx":
        return "an ultralytics YOLO, which takes pixels in [0, 1]"
    if getattr(loaded.adapter, "family", None) == "yolox":
        return "a YOLOX, which takes BGR pixels in [0, 255]"
    return None


def _set_detector_transform(loaded: LoadedModel, size: Optional[Sequence[int]]) -> None:
    """Put ``--size/--mean/--std`` into a torchvision detector's transform, which resizes and
    normalises inside the model: ``--size S`` fits the image in S×S, ``--size H,W`` makes
    its short side min(H, W) at most and its long side max(H, W) at most."""
    t = loaded.model.transform
    pre = loaded.preprocess
    if size is not None:
        t.min_size, t.max_size = (min(pre.size),), max(pre.size)
    t.image_mean, t.image_std = list(pre.mean), list(pre.std)
    loaded.preprocess = _detector_preprocess(loaded.model)
