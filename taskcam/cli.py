"""The ``taskcam`` command: ``explain``, ``attention``, ``report``, ``methods``, ``zoo``,
``eval`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

from taskcam.errors import TaskcamError

__all__ = ["main"]


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.replace(",", " ").split()]


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _split(text: Optional[str]) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="taskcam", description="Class activation maps for vision models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    ex = sub.add_parser("explain", help="explain images with one or more CAM methods")
    ex.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image files or folders, or video files (.mp4, .avi, .mov, .mkv, .webm)",
    )
    ex.add_argument(
        "--model",
        required=True,
        help="timm:NAME, torchvision:NAME, zoo:NAME, smp:ARCH:ENCODER, yolo:PATH.pt, hf:DIR, "
        "yolo:PATH.onnx (an ultralytics export), effdet:NAME, yolox:NAME, rfdetr:NAME, "
        "onnx:PATH (a black box through ONNX Runtime) or package.module:factory",
    )
    ex.add_argument("--weights", help="state dict / checkpoint path, or 'none' for random weights")
    ex.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="a promptable segmenter's prompt (hf: SAM), image pixels: point=X,Y or "
        "box=X1,Y1,X2,Y2 (repeatable: one mask each)",
    )
    ex.add_argument(
        "--text",
        help="an open-vocabulary detector's phrases (hf: OWL-ViT, OWLv2, Grounding DINO), "
        "e.g. 'a person. a bus.'",
    )
    ex.add_argument("--task", choices=("classify", "detect", "segment"))
    ex.add_argument(
        "--method",
        help="method name(s), comma-separated (default: gradcam; odam for detections)",
    )
    ex.add_argument("--layer", help="target layer name(s), comma-separated")
    ex.add_argument(
        "--targets",
        help="classify: top1 (default), top3, 285,281, names; detect: all (default), 0,2, "
        "class=NAME; segment: all (default) or 1,3",
    )
    ex.add_argument(
        "--what",
        default="score",
        help="detect: explain each detection's class score (default), a box side x1|y1|x2|y2, "
        "objectness, (Mask R-CNN, YOLO -seg) mask: its mask's logits over its pixels, or "
        "(YOLO pose) kptK.x|y|v: keypoint K's coordinate or visibility",
    )
    ex.add_argument("--conf", type=float, help="detect: score threshold (default: the model's)")
    ex.add_argument(
        "--labels",
        metavar="PATH",
        help="detect: your labels (a YOLO label folder or data.yaml, a COCO JSON file, Pascal "
        "VOC XML), matched to images by file name: each label is hit or missed, each detection "
        "without a label a false positive, and each missed label gets a map of what was there "
        "and why it was dropped",
    )
    ex.add_argument(
        "--box",
        action="append",
        metavar="X1,Y1,X2,Y2[:CLASS]",
        help="detect: a label by hand on a one-image run (image pixels; repeatable)",
    )
    ex.add_argument(
        "--iou",
        type=float,
        default=0.5,
        help="detect: the IoU a detection needs to hit a label of its class (default 0.5)",
    )
    ex.add_argument("--out", default="taskcam-out", help="output folder (default taskcam-out)")
    ex.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in an --out that holds results of a run with other settings "
        "(a run with the same settings is resumed: finished images are skipped)",
    )
    ex.add_argument(
        "--report",
        action="store_true",
        help="also write OUT/report.html, a browsable offline page of the results",
    )
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--size", type=_ints, help="input size: S or H,W")
    ex.add_argument("--mean", type=_floats, help="normalisation mean: three values")
    ex.add_argument("--std", type=_floats, help="normalisation std: three values")
    ex.add_argument("--colormap", default="jet")
    ex.add_argument(
        "--alpha", type=float, default=0.5, help="weight of the heatmap over the image (0.5)"
    )
    ex.add_argument(
        "--no-labels", action="store_true", help="draw boxes without class and score labels"
    )
    ex.add_argument(
        "--box-norm",
        action="store_true",
        help="detect: draw each map rescaled inside its box, so faint maps show their shape "
        "(display only: the .npy maps are not changed)",
    )
    ex.add_argument("--batch-size", type=int, help="inputs per forward for perturbation methods")
    ex.add_argument(
        "--runtime",
        choices=("torch", "openvino", "onnxruntime"),
        default="torch",
        help="rise, drise, fast-drise: run the masked forwards in OpenVINO or ONNX Runtime "
        "(the model exported once per input size, checked against PyTorch; CPU only)",
    )
    ex.add_argument(
        "--precision",
        choices=("auto", "fp32", "fp16", "bf16"),
        default="auto",
        help="perturbation methods' forwards: auto (default) is fp16 on a GPU, fp32 on a CPU",
    )
    ex.add_argument("--aug-smooth", action="store_true", help="test-time augmentation smoothing")
    ex.add_argument("--eigen-smooth", action="store_true", help="eigen smoothing")
    ex.add_argument(
        "--stride",
        type=int,
        default=1,
        help="videos: explain every N-th frame (default 1); the annotated video runs at fps / N",
    )
    ex.add_argument(
        "--faithfulness",
        action="store_true",
        help="score each map by deletion and insertion of its target's own score (results "
        "gain deletion, insertion, faithfulness; the report sorts by it)",
    )
    ex.add_argument(
        "--faithfulness-steps",
        type=int,
        default=8,
        help="steps of the --faithfulness curves (default 8; 2 N forwards per map)",
    )
    ex.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run as a Ray Data pipeline (extra 'distributed'): model replicas as an actor pool, "
        "one per GPU or CPU; ADDRESS: a cluster (HOST:PORT, ray://HOST:PORT, auto), none: local",
    )
    ex.add_argument("--no-progress", action="store_true")

    att = sub.add_parser(
        "attention",
        help="attention debugging report of a ViT: layers x heads grid, head statistics, "
        "rollout next to Grad-CAM",
    )
    att.add_argument("image", metavar="IMAGE", help="an image file")
    att.add_argument("--model", required=True, help="timm:NAME, torchvision:NAME, zoo:NAME, ...")
    att.add_argument("--weights", help="state dict / checkpoint path, or 'none' for random weights")
    att.add_argument(
        "--query", default="cls", help="the query token: cls (default) or a patch ROW,COL"
    )
    att.add_argument("--target", type=int, help="class explained (default: the top-1)")
    att.add_argument("--out", default="taskcam-attention", help="output folder")
    att.add_argument("--device", default="cpu")
    att.add_argument("--size", type=_ints, help="input size: S or H,W")
    att.add_argument("--mean", type=_floats, help="normalisation mean: three values")
    att.add_argument("--std", type=_floats, help="normalisation std: three values")
    att.add_argument("--colormap", default="jet")
    att.add_argument(
        "--uniform-threshold",
        type=float,
        default=0.95,
        help="flag a head 'uniform' when its entropy is at least this fraction of log N",
    )
    att.add_argument(
        "--prefix-threshold",
        type=float,
        default=0.9,
        help="flag a head 'prefix-only' when this share of its attention is on prefix tokens",
    )

    sub.add_parser("methods", help="list the registered methods")
    zoo = sub.add_parser("zoo", help="list, train or check the zoo models")
    zoo_sub = zoo.add_subparsers(dest="zoo_command")
    train = zoo_sub.add_parser("train", help="train a shapes zoo model from scratch (seeded)")
    train.add_argument("name", help="zoo name, e.g. shapes-cnn")
    train.add_argument("--out", help="weights file (default: the shipped location)")
    train.add_argument("--no-progress", action="store_true")
    check = zoo_sub.add_parser("check", help="measure a shapes zoo model on held-out images")
    check.add_argument("names", nargs="*", help="zoo names (default: every shapes model)")
    check.add_argument("-n", "--images", type=int, default=200, help="held-out images")

    ev = sub.add_parser("eval", help="score methods on shapes zoo models against ground truth")
    ev.add_argument("--models", default="shapes-cnn", help="zoo names, comma-separated")
    ev.add_argument("--method", default=None, help="method name(s), comma-separated")
    ev.add_argument("-n", "--images", type=int, default=100, help="held-out images per model")
    ev.add_argument("--tolerance", type=int, help="pointing-game tolerance in pixels")
    ev.add_argument("--sanity-images", type=int, default=8)
    ev.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (16)")
    ev.add_argument(
        "--baseline",
        choices=("mean", "blur", "zero"),
        help="what deleted pixels become (default: the mean colour on the shapes, where a "
        "blurred shape is still recognised; a blur on your photos with --labels)",
    )
    ev.add_argument("--out", default="taskcam-eval", help="folder for eval.csv and eval.json")
    ev.add_argument("--no-progress", action="store_true")
    _label_eval_flags(ev)

    demo = sub.add_parser(
        "demo",
        help="explained detections (NudeNet's YOLOv8n on photos, against labels too), "
        "segmentation classes, a ViT's attention report and a classifier, linked from "
        "OUT/index.html",
    )
    demo.add_argument("--out", default="taskcam-demo", help="output folder (taskcam-demo)")
    demo.add_argument(
        "--every-method",
        action="store_true",
        help="instead: every classifier method on EfficientNet-Lite0 over scikit-image's "
        "photos (grid per photo, filters.png, features.png; minutes, not seconds)",
    )
    demo.add_argument("--no-progress", action="store_true")

    rep = sub.add_parser("report", help="write OUT_DIR/report.html from an explain run's results")
    rep.add_argument("out_dir", metavar="OUT_DIR", help="the folder an explain run wrote")
    rep.add_argument("--embed", action="store_true", help="embed the pictures (one portable file)")
    rep.add_argument("--title", help="page title (default: taskcam report: MODEL)")
    return parser


def _cmd_methods() -> int:
    from taskcam.methods import available_methods, get_method

    for name in available_methods():
        method = type(get_method(name))
        doc = (method.__doc__ or "").strip().splitlines()[0]
        also = f" (also: {', '.join(method.aliases)})" if method.aliases else ""
        print(f"{name:22s} {doc}{also}")
    return 0


def _cmd_zoo(args: argparse.Namespace) -> int:
    if args.zoo_command == "train":
        from taskcam.zoo.train import train_zoo_model

        result = train_zoo_model(args.name, args.out, progress=not args.no_progress)
        print(json.dumps(result))
        return 0
    if args.zoo_command == "check":
        from taskcam.zoo.shapes_models import NAMES
        from taskcam.zoo.train import heldout_score

        for name in args.names or NAMES:
            metric, value = heldout_score(name.removeprefix("zoo:"), args.images)
            print(
                f"zoo:{name.removeprefix('zoo:'):20s} {metric} {value:.4f} ({args.images} images)"
            )
        return 0
    from taskcam.zoo import available_zoo

    for entry in available_zoo():
        print(f"zoo:{entry.name:24s} {entry.task:9s} {entry.description}")
    return 0


def _label_eval_flags(ev: argparse.ArgumentParser) -> None:
    """``taskcam eval IMAGES --model SPEC --labels PATH``: methods scored on your detector and
    your labelled images instead of the zoo's shapes."""
    ev.add_argument("inputs", nargs="*", metavar="IMAGE", help="with --labels: images, folders")
    ev.add_argument("--model", help="with --labels: the detector (any explain --model SPEC)")
    ev.add_argument("--weights", help="with --labels: state dict / checkpoint, or 'none'")
    ev.add_argument(
        "--labels",
        metavar="PATH",
        help="score methods on your images and labels (YOLO folder or data.yaml, COCO JSON, "
        "VOC XML), split by outcome (hit, missed, false positive), beside maps drawn without "
        "the model, with the detector's own precision and recall",
    )
    ev.add_argument("--conf", type=float, help="with --labels: the detector's score threshold")
    ev.add_argument("--iou", type=float, default=0.5, help="with --labels: the hit IoU (0.5)")


def _cmd_label_eval(args: argparse.Namespace) -> int:
    from taskcam.evaluate.labels import evaluate_labels
    from taskcam.models import load_model

    if not args.model or not args.inputs:
        raise TaskcamError("eval --labels: name the detector (--model SPEC) and the images")
    result = evaluate_labels(
        load_model(args.model, weights=args.weights),
        args.inputs,
        args.labels,
        _split(args.method) or None,
        iou=args.iou,
        conf=args.conf,
        steps=args.steps,
        tolerance=15 if args.tolerance is None else args.tolerance,
        baseline=args.baseline or "blur",
        progress=not args.no_progress,
    )
    print(result.format())
    csv_path, json_path = result.write(args.out)
    print(f"-> {csv_path}, {json_path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from taskcam.evaluate import DEFAULT_METHODS, evaluate, format_table, write_table

    if args.labels is not None:
        return _cmd_label_eval(args)
    if args.inputs or args.model:
        raise TaskcamError("eval IMAGES --model SPEC: give their --labels too")

    rows = evaluate(
        _split(args.models),
        _split(args.method) or DEFAULT_METHODS,
        n=args.images,
        tolerance=args.tolerance,
        sanity_images=args.sanity_images,
        steps=args.steps,
        baseline=args.baseline or "mean",
        progress=not args.no_progress,
    )
    print(format_table(rows))
    csv_path, json_path = write_table(rows, args.out)
    print(f"-> {csv_path}, {json_path}")
    return 0


def _query(text: str) -> object:
    if text.strip().lower() == "cls":
        return "cls"
    try:
        row, col = _ints(text)
    except ValueError as e:
        raise TaskcamError(f"--query: expected cls or ROW,COL, got {text!r}") from e
    return (row, col)


def _load(args: argparse.Namespace) -> Any:
    """The model of ``--model``/``--weights`` with the preprocessing options applied."""
    from taskcam.models import load_model

    return load_model(
        args.model,
        args.weights,
        device=args.device,
        size=args.size,
        mean=args.mean,
        std=args.std,
        prompts=getattr(args, "prompt", None),
        text=getattr(args, "text", None),
    )


def _cmd_attention(args: argparse.Namespace) -> int:
    from taskcam.attention import attention_report

    query = _query(args.query)
    loaded = _load(args)
    pre = loaded.preprocess
    summary = attention_report(
        loaded.model,
        args.image,
        args.out,
        size=pre.size,
        mean=pre.mean,
        std=pre.std,
        query=query,
        target=args.target,
        class_names=loaded.class_names,
        model_name=args.model,
        colormap=args.colormap,
        uniform_threshold=args.uniform_threshold,
        prefix_threshold=args.prefix_threshold,
    )
    flagged = summary["flagged"]
    print(
        f"{len(summary['layers'])} layer(s); uniform heads {flagged['uniform']}, prefix-only "
        f"heads {flagged['prefix_only']} -> {args.out}/attention.json"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from taskcam.report import write_report

    print(f"-> {write_report(args.out_dir, embed=args.embed, title=args.title)}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    options = _run_options(args)  # checked once, before a model is loaded
    if args.ray is not None:
        return _cmd_explain_ray(args, options, start)
    from taskcam.pipeline import explain_files

    loaded = _load(args)
    if args.task and args.task != loaded.task:
        raise TaskcamError(f"--task {args.task}: {args.model} is a {loaded.task} model")
    summary = explain_files(loaded, args.inputs, args.out, options)
    return _summarise(args, summary, start)


def _cmd_explain_ray(args: argparse.Namespace, options: Any, start: float) -> int:
    from taskcam.distributed import explain_files_ray

    if args.stride != 1:
        raise TaskcamError("--stride: videos are explained without --ray")
    if args.prompt or args.text:
        raise TaskcamError("--prompt/--text: promptable models are explained without --ray")
    summary = explain_files_ray(
        args.model,
        args.inputs,
        args.out,
        address=args.ray or None,
        weights=args.weights,
        device=None if args.device == "cpu" else args.device,  # default: GPU actors where any
        size=args.size,
        mean=args.mean,
        std=args.std,
        task=args.task,
        options=options,
    )
    return _summarise(args, summary, start)


def _run_options(args: argparse.Namespace) -> Any:
    """The ``explain`` flags as one :class:`taskcam.options.RunOptions` (checked here)."""
    from taskcam.options import RunOptions

    return RunOptions(
        methods=_split(args.method) or None,
        layers=_split(args.layer) or None,
        targets=args.targets,
        what=args.what,
        conf=args.conf,
        colormap=args.colormap,
        alpha=args.alpha,
        labels=not args.no_labels,
        box_norm=args.box_norm,
        batch_size=args.batch_size,
        aug_smooth=args.aug_smooth,
        eigen_smooth=args.eigen_smooth,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        stride=args.stride,
        faithfulness=args.faithfulness,
        faithfulness_steps=args.faithfulness_steps,
        labels_from=args.labels,
        boxes=tuple(args.box) if args.box else None,
        match_iou=args.iou,
        runtime=args.runtime,
        precision=args.precision,
    )


def _summarise(args: argparse.Namespace, summary: Any, start: float) -> int:
    n_images = len(summary.results["items"])
    unit = "image"
    resumed = f" ({summary.resumed} done by an earlier run)" if summary.resumed else ""
    if "videos" in summary.results:
        written = sorted({v["path"] for v in summary.results["videos"]})
        unit, resumed = "frame", f" -> {', '.join(written)}"
    print(
        f"{n_images} {unit}(s){resumed}, {summary.n_targets} map(s), "
        f"{len(summary.failures)} failure(s) in {time.perf_counter() - start:.1f} s -> "
        f"{summary.out_dir / 'results.json'}"
    )
    for path, error in summary.failures:
        print(f"  failed: {path}: {error}", file=sys.stderr)
    if args.report:
        from taskcam.report import write_report

        print(f"report -> {write_report(summary.out_dir)}")
    return 0 if n_images else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``taskcam`` console script.

    Example:
        >>> main(["methods"])  # doctest: +ELLIPSIS
        gradcam ...
        0
    """
    logging.basicConfig(level=logging.WARNING, format="taskcam: %(message)s")
    args = _parser().parse_args(argv)
    try:
        if args.command == "methods":
            return _cmd_methods()
        if args.command == "zoo":
            return _cmd_zoo(args)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command == "attention":
            return _cmd_attention(args)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "demo":
            from taskcam.demo import run_demo

            run_demo(args.out, every_method=args.every_method, progress=not args.no_progress)
            return 0
        return _cmd_explain(args)
    except TaskcamError as e:
        print(f"taskcam: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command != "explain":
            raise
        print(
            f"taskcam: interrupted; {args.out}/results.json holds the finished images, and "
            "the same command resumes the run",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
