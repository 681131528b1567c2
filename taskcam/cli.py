"""The ``taskcam`` command: ``explain``, ``methods``, ``zoo`` and ``demo``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from typing import Optional

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
    ex.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    ex.add_argument(
        "--model",
        required=True,
        help="timm:NAME, torchvision:NAME, zoo:NAME or package.module:factory",
    )
    ex.add_argument("--weights", help="state dict / checkpoint path, or 'none' for random weights")
    ex.add_argument("--task", choices=("classify", "detect", "segment"))
    ex.add_argument("--method", default="gradcam", help="method name(s), comma-separated")
    ex.add_argument("--layer", help="target layer name(s), comma-separated")
    ex.add_argument("--targets", default="top1", help="top1 (default), top3, 285,281, names")
    ex.add_argument("--out", default="taskcam-out", help="output folder (default taskcam-out)")
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--size", type=_ints, help="input size: S or H,W")
    ex.add_argument("--mean", type=_floats, help="normalisation mean: three values")
    ex.add_argument("--std", type=_floats, help="normalisation std: three values")
    ex.add_argument("--colormap", default="jet")
    ex.add_argument("--batch-size", type=int, help="inputs per forward for perturbation methods")
    ex.add_argument("--aug-smooth", action="store_true", help="test-time augmentation smoothing")
    ex.add_argument("--eigen-smooth", action="store_true", help="eigen smoothing")
    ex.add_argument("--no-progress", action="store_true")

    sub.add_parser("methods", help="list the registered methods")
    sub.add_parser("zoo", help="list the zoo models")

    demo = sub.add_parser("demo", help="EfficientNet-Lite0 on scikit-image photos, every method")
    demo.add_argument("--out", default="taskcam-demo")
    demo.add_argument("--no-progress", action="store_true")
    return parser


def _cmd_methods() -> int:
    from taskcam.methods import available_methods, get_method

    for name in available_methods():
        doc = (type(get_method(name)).__doc__ or "").strip().splitlines()[0]
        print(f"{name:22s} {doc}")
    return 0


def _cmd_zoo() -> int:
    from taskcam.zoo import available_zoo

    for entry in available_zoo():
        print(f"zoo:{entry.name:24s} {entry.task:9s} {entry.description}")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from taskcam.models import load_model
    from taskcam.pipeline import explain_files

    start = time.perf_counter()
    loaded = load_model(
        args.model,
        args.weights,
        device=args.device,
        size=args.size,
        mean=args.mean,
        std=args.std,
    )
    if args.task and args.task != loaded.task:
        raise TaskcamError(f"--task {args.task}: {args.model} is a {loaded.task} model")
    summary = explain_files(
        loaded,
        args.inputs,
        args.out,
        methods=_split(args.method),
        layers=_split(args.layer) or None,
        targets=args.targets,
        colormap=args.colormap,
        batch_size=args.batch_size,
        aug_smooth=args.aug_smooth,
        eigen_smooth=args.eigen_smooth,
        progress=not args.no_progress,
    )
    n_images = len(summary.results["items"])
    print(
        f"{n_images} image(s), {summary.n_targets} map(s), {len(summary.failures)} failure(s) "
        f"in {time.perf_counter() - start:.1f} s -> {summary.out_dir / 'results.json'}"
    )
    for path, error in summary.failures:
        print(f"  failed: {path}: {error}", file=sys.stderr)
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
            return _cmd_zoo()
        if args.command == "demo":
            from taskcam.demo import run_demo

            run_demo(args.out, progress=not args.no_progress)
            return 0
        return _cmd_explain(args)
    except TaskcamError as e:
        print(f"taskcam: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
