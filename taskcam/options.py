"""The options of an explain run, as one value checked once.

Every run path (image folders, videos, a Ray pipeline) takes a :class:`RunOptions`; the CLI
builds one from its flags and the Python API from keyword arguments. Values are checked when
the object is made (types, ranges, method names, colormap), and against the model once, by
:meth:`RunOptions.settings`, before anything is written: options that have no meaning for a
detector are refused, never silently dropped.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from taskcam.adapters.detection import check_what, keypoint_what
from taskcam.adapters.detection.matching import check_iou
from taskcam.errors import TaskcamError, check_choice
from taskcam.loaded import LoadedModel
from taskcam.results import RESULTS_VERSION
from taskcam.runtime import PRECISIONS, RUNTIMES, check_run_settings

__all__ = ["RunOptions", "check_keypoints", "check_masks", "check_stride", "run_options"]


def _names(value: Any, flag: str) -> Optional[tuple[str, ...]]:
    """``None``, a comma-separated string or a sequence of names -> a tuple, or None if empty."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise TaskcamError(f"{flag}: expected names (a list of strings), got {value!r}")
    names = tuple(v.strip() for v in value if v.strip())
    return names or None


@dataclass(frozen=True)
class RunOptions:
    """What an explain run does to each image, checked when made.

    Args:
        methods: registered method names; default ``odam`` for detectors (Grad-CAM's
            channel averaging spreads a detection's map over every object of its class;
            ODAM keeps it on the instance), ``gradcam`` for the rest.
        layers: target layer names; default the model's preferred layers, or its last
            feature map.
        targets: classification ``top1`` (default), ``top3``, ``285,281`` or class names;
            detection ``all`` (default), ``0,2`` (the model's ranking) or ``class=NAME``;
            segmentation ``all`` (default: every predicted class) or class ids.
        what: detectors: what each detection's map explains: ``score``, a box side
            ``x1``/``y1``/``x2``/``y2``, ``objectness``, ``mask`` (instance segmenters:
            the mask's logits summed over its pixels) or ``kptK.x|y|v`` (pose models: one
            keypoint's coordinate or visibility).
        conf: detectors: the score threshold (default: the model's own), in [0, 1].
        colormap: OpenCV colormap of the overlays (:data:`taskcam.render.COLORMAPS`).
        alpha: weight of the heatmap colour in the overlays, in [0, 1].
        labels: draw detections' labels (class, score) on the pictures.
        box_norm: for display only, rescale each detection's map inside its box before it
            is drawn, so a faint map still shows its shape (the ``.npy`` stays as computed).
        batch_size: perturbed inputs per forward for perturbation methods.
        aug_smooth: test-time augmentation smoothing (not for detectors).
        eigen_smooth: eigen smoothing.
        make_grid: also draw each image's summary pictures: the methods × targets grid and,
            for detectors, every detection's map in its box (``all.png``).
        progress: progress bars.
        overwrite: start afresh in an output folder holding another run's results.
        stride: videos: explain every ``stride``-th frame.
        faithfulness: score each target's map by deletion and insertion of the target's own
            score (:mod:`taskcam.faithfulness`): records gain ``deletion``, ``insertion`` and
            ``faithfulness``. Costs ``2 faithfulness_steps`` forwards per target and
            method.
        faithfulness_steps: steps of those curves.
        labels_from: detectors: the user's labels (``--labels``: a YOLO label folder or its
            ``data.yaml``, a COCO JSON file, Pascal VOC XML), matched to images by file name:
            every label and detection gets an outcome (hit, missed, false positive) and each
            missed label a map of what was there (:mod:`taskcam.adapters.detection.outcomes`).
        boxes: detectors: labels by hand for a run of one image (``--box
            X1,Y1,X2,Y2[:CLASS]``, image pixels; without a class, the class of the detection
            that overlaps the box most).
        match_iou: the IoU a detection needs to hit a label of its class (``--iou``).
        runtime: where rise, drise and fast-drise run their masked forwards on a CPU
            (``--runtime``): ``torch``, ``openvino`` or ``onnxruntime``
            (:mod:`taskcam.runtime`).
        precision: the perturbation methods' forwards (``--precision``): ``auto`` (fp16 on
            a GPU, fp32 on a CPU), ``fp32``, ``fp16`` or ``bf16``.

    Raises:
        TaskcamError: a value of the wrong type or range, an unknown method or colormap (each
            message names the option and the value).

    Example:
        >>> RunOptions(methods="gradcam,layercam", targets="top3").methods
        ('gradcam', 'layercam')
        >>> RunOptions(stride=0)
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: --stride: expected a whole number >= 1, got 0
    """

    methods: Optional[tuple[str, ...]] = None
    layers: Optional[tuple[str, ...]] = None
    targets: Optional[str] = None
    what: str = "score"
    conf: Optional[float] = None
    colormap: str = "jet"
    alpha: float = 0.5
    labels: bool = True
    box_norm: bool = False
    batch_size: Optional[int] = None
    aug_smooth: bool = False
    eigen_smooth: bool = False
    make_grid: bool = True
    progress: bool = True
    overwrite: bool = False
    stride: int = 1
    faithfulness: bool = False
    faithfulness_steps: int = 8
    labels_from: Optional[str] = None
    boxes: Optional[tuple[str, ...]] = None
    match_iou: float = 0.5
    runtime: str = "torch"
    precision: str = "auto"

    def __post_init__(self) -> None:
        from taskcam.masking import check_batch_size
        from taskcam.methods import get_method
        from taskcam.render import colorize

        object.__setattr__(self, "methods", _names(self.methods, "--method"))
        object.__setattr__(self, "layers", _names(self.layers, "--layer"))
        for name in self.methods or ():
            get_method(name)  # an unknown name: the error lists the registered ones
        if self.targets is not None and not isinstance(self.targets, str):
            raise TaskcamError(f"--targets: expected a string such as top3, got {self.targets!r}")
        check_what(self.what)
        if self.conf is not None and (
            isinstance(self.conf, bool)
            or not isinstance(self.conf, (int, float))
            or not 0.0 <= self.conf <= 1.0
        ):
            raise TaskcamError(f"--conf: expected a score in [0, 1], got {self.conf}")
        check_stride(self.stride)
        steps = self.faithfulness_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise TaskcamError(f"--faithfulness-steps: expected a whole number >= 1, got {steps!r}")
        check_batch_size(self.batch_size)
        check_iou(self.match_iou)
        check_choice("--runtime", self.runtime, RUNTIMES)
        check_choice("--precision", self.precision, PRECISIONS)
        if self.boxes is not None:
            if isinstance(self.boxes, str) or not all(isinstance(b, str) for b in self.boxes):
                raise TaskcamError(
                    f"--box: expected X1,Y1,X2,Y2[:CLASS] strings, got {self.boxes!r}"
                )
            object.__setattr__(self, "boxes", tuple(self.boxes) or None)
        if self.labels_from is not None and self.boxes:
            raise TaskcamError("--labels and --box: give the labels one way (a file, or boxes)")
        colorize([[0.0]], self.colormap)  # an unknown colormap: the error lists the names
        if isinstance(self.alpha, bool) or not (
            isinstance(self.alpha, (int, float)) and 0.0 <= self.alpha <= 1.0
        ):
            raise TaskcamError(f"--alpha: expected a number in [0, 1], got {self.alpha!r}")

    def method_names(self, loaded: LoadedModel) -> tuple[str, ...]:
        """The methods run on ``loaded``: as given, else its kind's default (``fast-drise``
        for a black box, which has no layers)."""
        if self.methods:
            return self.methods
        if getattr(loaded.adapter, "black_box", False):
            return ("fast-drise",)
        return ("odam",) if loaded.is_detector else ("gradcam",)

    def check(self, loaded: LoadedModel) -> None:
        """Refuse options that have no meaning for ``loaded``.

        Raises:
            TaskcamError: attention methods (rollout, ...) on a model that is not a ViT-style
                classifier; ``eigen_smooth`` with a method that reads no layer (rise, drise,
                the attention methods); ``aug_smooth`` on a detector, or a box side / objectness
                / mask (``what``) with perturbation methods, which explain the score only;
                ``what="mask"`` on a model whose detections have no masks (see
                :func:`check_masks`).
        """
        from taskcam.methods import get_method

        methods = [get_method(m) for m in self.method_names(loaded)]
        if getattr(loaded.adapter, "black_box", False):
            check_black_box(loaded, methods, self.layers)
            if self.runtime != "torch":
                raise TaskcamError(
                    f"--runtime {self.runtime}: {loaded.spec} is not a PyTorch model to export "
                    "(an ONNX file already runs in ONNX Runtime); leave --runtime out"
                )
        for method in methods:  # a layer or gradient method in OpenVINO, fp16 gradients
            check_run_settings(self.precision, self.runtime, method, bound=False)
        attention = [m.name for m in methods if m.attention and not m.needs_detections]
        if attention and loaded.is_detector:
            raise TaskcamError(
                f"--method {', '.join(attention)}: explains a ViT classifier's attention; "
                f"{loaded.spec} is a detector"
            )
        layerless = [m.name for m in methods if not m.uses_layers]
        if self.eigen_smooth and layerless:
            raise TaskcamError(
                f"--eigen-smooth: {', '.join(layerless)} read no layer activations, so there "
                "is nothing to smooth; run them without --eigen-smooth"
            )
        if attention:
            from taskcam.attention import vit_layout

            vit_layout(loaded.model)  # not a ViT-style model: the error says what was searched
        if self.what == "mask":
            check_masks(loaded)
        if keypoint_what(self.what) is not None:
            check_keypoints(loaded, self.what)
        if not loaded.is_detector:
            if self.labels_from is not None or self.boxes:
                flag = "--labels" if self.labels_from is not None else "--box"
                raise TaskcamError(
                    f"{flag}: labels are matched to a detector's detections; {loaded.spec} is "
                    f"a {loaded.task} model"
                )
            return
        if self.aug_smooth:
            raise TaskcamError(
                "--aug-smooth: not for detectors: a flipped or rescaled copy of the image has "
                "detections of its own, so one detection's map cannot be averaged over them"
            )
        perturbing = [m.name for m in methods if m.perturbation]
        if self.what != "score" and perturbing:
            raise TaskcamError(
                f"--what {self.what}: {', '.join(perturbing)} explain a detection's score "
                "(matched in each perturbed output by D-RISE similarity); explain a box side, "
                "objectness or a mask with a gradient method (odam, gradcam, layercam, ...)"
            )

    def settings(self, loaded: LoadedModel, *, video: bool = False) -> dict[str, Any]:
        """What shapes a run's results (written to ``run.json``): an output folder is resumed
        only under the same settings. Checks the options against the model first
        (:meth:`check`).

        Args:
            loaded: the model.
            video: the settings of a video run (``stride`` counts; no grids are drawn).
        """
        self.check(loaded)
        if loaded.task not in ("classify", "detect", "segment"):
            raise TaskcamError(f"task {loaded.task!r}: expected classify, detect or segment")
        pre = loaded.preprocess
        settings: dict[str, Any] = {
            "version": RESULTS_VERSION,
            "model": loaded.spec,
            "task": loaded.task,
            "size": list(pre.size),
            "mean": list(pre.mean),
            "std": list(pre.std),
            "methods": list(self.methods) if self.methods else None,
            "layers": list(self.layers) if self.layers else None,
            "targets": self.targets,
            "colormap": self.colormap,
            "aug_smooth": self.aug_smooth,
            "eigen_smooth": self.eigen_smooth,
        }
        if not video:
            settings["make_grid"] = self.make_grid
        settings["what"], settings["conf"] = self.what, self.conf
        if video:
            settings["stride"] = self.stride
        # how pictures are drawn, recorded when not the default (so that folders written
        # before these options existed still resume)
        if self.faithfulness:
            settings["faithfulness_steps"] = self.faithfulness_steps
        if self.runtime != "torch":
            settings["runtime"] = self.runtime
        if self.precision != "auto":
            settings["precision"] = self.precision
        if self.labels_from is not None or self.boxes:
            settings["labels_from"] = self.labels_from
            settings["boxes"] = list(self.boxes or ())
            settings["match_iou"] = self.match_iou
        for name, default in (("alpha", 0.5), ("labels", True), ("box_norm", False)):
            if getattr(self, name) != default:
                settings[name] = getattr(self, name)
        return settings

    def replace(self, **changes: Any) -> RunOptions:
        """A copy with ``changes`` applied (and checked).

        Example:
            >>> RunOptions(progress=True).replace(progress=False).progress
            False
        """
        return dataclasses.replace(self, **changes)


def check_stride(stride: Any) -> int:
    """``stride`` when it is a whole number >= 1 (explain every stride-th video frame).

    Raises:
        TaskcamError: anything else, naming the value.
    """
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise TaskcamError(f"--stride: expected a whole number >= 1, got {stride!r}")
    return stride


def check_black_box(loaded: LoadedModel, methods: Sequence[Any], layers: Any) -> None:
    """Refuse what a black box (``onnx:PATH``, :class:`taskcam.adapters.blackbox.BlackBox`)
    cannot give: methods that read a layer or take gradients, and ``--layer``.

    Raises:
        TaskcamError: naming the methods refused, why, and the methods that explain it.
    """
    refused = [m.name for m in methods if m.uses_layers or m.needs_grad or m.attention]
    if refused:
        raise TaskcamError(
            f"--method {', '.join(refused)}: {loaded.spec} is a black box (run by ONNX Runtime "
            "or a callable, no PyTorch graph): it has no layer activations to hook and no "
            "gradients to take; explain it with fast-drise, drise or rise, which only run it "
            "on perturbed images"
        )
    if layers:
        raise TaskcamError(
            f"--layer {','.join(layers)}: {loaded.spec} is a black box without layers; its "
            "methods (fast-drise, drise, rise) perturb the image"
        )


def check_masks(loaded: LoadedModel) -> None:
    """Refuse ``--what mask`` for ``loaded`` unless its detections have masks.

    Instance segmenters (Mask R-CNN, YOLO ``-seg`` models) explain an instance's mask; a
    box-only detector has none, and a classifier or semantic segmenter has no instances.
    Checked with the other options (:meth:`RunOptions.check`), so a run is refused before it
    writes anything, on the driver of a Ray run too.

    Raises:
        TaskcamError: naming the model and why it has no instance masks.

    Example:
        >>> from torch import nn
        >>> check_masks(LoadedModel(nn.Linear(2, 2), "pkg.mod:net"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: --what mask: pkg.mod:net is a classify model without ...
    """
    if loaded.is_detector:
        from taskcam.adapters import adapter_for

        if adapter_for(loaded).has_masks:
            return
        why = "detects boxes without masks"
    else:
        why = f"is a {loaded.task} model without instances"
    raise TaskcamError(
        f"--what mask: {loaded.spec} {why}; instance segmenters (Mask R-CNN, YOLO -seg models) "
        "have masks"
    )


def check_keypoints(loaded: LoadedModel, what: str) -> None:
    """Refuse ``--what kptK.x|y|v`` unless ``loaded`` is a pose model with keypoint ``K``.

    Checked with the other options (:meth:`RunOptions.check`), before a run writes anything.

    Raises:
        TaskcamError: naming the model and how many keypoints it has (none for a model
            without a pose head).
    """
    kpt = keypoint_what(what)
    if kpt is None:
        return
    shape = None
    if loaded.is_detector:
        from taskcam.adapters import adapter_for

        shape = adapter_for(loaded).kpt_shape
    if shape is None or kpt[0] >= shape[0]:
        has = "no" if shape is None else f"{shape[0]} (kpt0..kpt{shape[0] - 1})"
        raise TaskcamError(
            f"--what {what}: keypoint {kpt[0]} does not exist: {loaded.spec} has {has} "
            "keypoints" + ("; YOLO -pose models have them" if shape is None else "")
        )


def run_options(options: Optional[RunOptions] = None, **overrides: Any) -> RunOptions:
    """``options`` with ``overrides`` applied, or a :class:`RunOptions` of ``overrides``: how
    the run functions accept either one value or keyword arguments.

    Raises:
        TaskcamError: an option that does not exist (naming it and the ones that do).

    Example:
        >>> run_options(None, methods=["layercam"], progress=False).methods
        ('layercam',)
    """
    known = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TaskcamError(f"unknown run option(s) {unknown}; the options are {sorted(known)}")
    if options is None:
        return RunOptions(**overrides)
    if not isinstance(options, RunOptions):
        raise TaskcamError(f"options: expected a RunOptions, got {type(options).__name__}")
    return options.replace(**overrides) if overrides else options
