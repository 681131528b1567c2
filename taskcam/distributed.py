"""The explain run as a Ray Data pipeline, for datasets that outgrow one process or machine.

The driver lists the images and names each one's output folder exactly as the single-process
run does (:func:`taskcam.pipeline._stems` over all paths); the paths become a Ray dataset;
an actor pool of model replicas (one per GPU where the cluster has GPUs, CPU actors
otherwise) reads and decodes its images in parallel and explains each one with the same code
as :func:`taskcam.pipeline.explain_files`, writing the per-image files into the shared output
folder. Each actor builds its own model from the spec (:func:`taskcam.models.load_model`), so
nothing big is pickled. The driver logs every finished image in the run log
(:mod:`taskcam.runlog`, so an interrupted run resumes) and writes one ``results.json`` in input
order, equal in content to the single-process run's.

The output folder must be reachable by every worker under the same path (one machine, or a
shared file system on a cluster).

Example:
    >>> import ray  # doctest: +SKIP
    >>> ray.init(num_cpus=2)  # doctest: +SKIP
    >>> s = explain_files_ray("zoo:shapes-cnn", ["images/"], "out")  # doctest: +SKIP
    >>> s.results["items"][0]["targets"][0]["method"]  # doctest: +SKIP
    'gradcam'
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from taskcam.errors import ImageError, TaskcamError

__all__ = ["check_address", "explain_files_ray"]

log = logging.getLogger("taskcam")


def check_address(address: str, timeout: float = 3.0) -> None:
    """Fail early, with the address in the message, where a Ray cluster cannot be reached.

    ``auto``/``local`` are left to Ray; ``HOST:PORT`` and ``ray://HOST:PORT`` are checked with
    a TCP connection.

    Raises:
        TaskcamError: nothing answers at ``address``.

    Example:
        >>> check_address("127.0.0.1:1")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        taskcam.errors.TaskcamError: --ray 127.0.0.1:1: cannot reach a Ray cluster there (...)
    """
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise TaskcamError(f"--ray {address}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise TaskcamError(f"--ray {address}: cannot reach a Ray cluster there ({e})") from None


def _connect(address: Optional[str]) -> Any:
    """Import Ray and connect (a Ray already initialised in this process is used as is)."""
    if address is not None:
        check_address(address)
    try:
        import ray
    except ImportError as e:
        raise TaskcamError("--ray needs Ray Data: pip install 'taskcam[distributed]'") from e
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except Exception as e:  # ConnectionError, RuntimeError, grpc errors: name the address
            raise TaskcamError(f"--ray {address or 'local'}: cannot start or join Ray ({e})") from e
    return ray


class _Worker:
    """One model replica of the actor pool: loads the model itself, explains a batch of
    images into the shared output folder and returns each image's item (or error) as JSON."""

    def __init__(self, model_args: dict[str, Any], out: str, job_args: dict[str, Any]) -> None:
        import torch

        from taskcam.methods import get_method
        from taskcam.models import load_model
        from taskcam.pipeline import _ClassifyJob, _DetectJob, _is_detector, detector_adapter

        device = model_args.pop("device", None)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(**model_args, device=device)
        detect = loaded.task == "detect" or _is_detector(loaded)
        methods = job_args.pop("methods") or (("odam",) if detect else ("gradcam",))
        method_objs = [get_method(m) for m in methods]
        what, conf = job_args.pop("what"), job_args.pop("conf")
        if detect:
            job_args.pop("aug_smooth")
            job_args.pop("found_layers")
            adapter = detector_adapter(loaded, conf)
            self.job: Any = _DetectJob(
                loaded, Path(out), method_objs, adapter=adapter, what=what, **job_args
            )
        else:
            self.job = _ClassifyJob(loaded, Path(out), method_objs, **job_args)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from taskcam.pipeline import _read

        items, errors, layers = [], [], []
        for path, stem in zip(batch["path"], batch["stem"]):
            path = Path(str(path))
            try:
                item = self.job.item(path, _read(path), str(stem))
            except ImageError as e:  # an unreadable file, a detection it does not have
                items.append("")
                errors.append(str(e))
            else:
                items.append(json.dumps(item))
                errors.append("")
            layers.append(json.dumps(self.job.layer_names))
        return {"index": list(batch["index"]), "item": items, "error": errors, "layers": layers}


def explain_files_ray(
    spec: str,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    *,
    address: Optional[str] = None,
    weights: Optional[str] = None,
    device: Optional[str] = None,
    size: Optional[Sequence[int]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    task: Optional[str] = None,
    methods: Optional[Sequence[str]] = None,
    layers: Optional[Sequence[str]] = None,
    targets: Optional[str] = None,
    colormap: str = "jet",
    batch_size: Optional[int] = None,
    aug_smooth: bool = False,
    eigen_smooth: bool = False,
    make_grid: bool = True,
    progress: bool = True,
    what: str = "score",
    conf: Optional[float] = None,
    overwrite: bool = False,
    num_actors: Optional[int] = None,
    images_per_batch: int = 4,
) -> Any:
    """Explain image files as a Ray Data pipeline; the same run as
    :func:`taskcam.pipeline.explain_files`, with the same files and ``results.json``.

    Args:
        spec: the model spec (``zoo:NAME``, ``timm:NAME``, ...), loaded by each actor.
        inputs: image files or folders (videos are not supported here).
        out_dir: output folder, seen by every worker under the same path.
        address: a Ray cluster (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``); None: the Ray
            this process already runs, or a new local one.
        weights: as :func:`taskcam.models.load_model`.
        device: the actors' device; default ``cuda`` on GPU actors, else ``cpu``.
        size: preprocessing override, as :func:`taskcam.models.load_model`.
        mean: preprocessing override.
        std: preprocessing override.
        task: the task the model must have (``--task``), or None.
        methods: as :func:`taskcam.pipeline.explain_files`; so are ``layers``, ``targets``,
            ``colormap``, ``batch_size``, ``aug_smooth``, ``eigen_smooth``, ``make_grid``,
            ``what``, ``conf`` and ``overwrite``.
        layers: target layers.
        targets: which targets to explain.
        colormap: OpenCV colormap of the overlays.
        batch_size: perturbed inputs per forward for perturbation methods.
        aug_smooth: test-time augmentation smoothing.
        eigen_smooth: eigen smoothing.
        make_grid: also write the methods × targets grid per image.
        progress: Ray Data's progress bars.
        what: detection models: what each detection's map explains.
        conf: detection models: the score threshold.
        overwrite: start afresh in a folder holding results of another run.
        num_actors: model replicas; default one per GPU, or one per CPU without GPUs.
        images_per_batch: images an actor receives at a time.

    Returns:
        A :class:`taskcam.pipeline.RunSummary`.

    Raises:
        TaskcamError: Ray missing, ``address`` unreachable (nothing is written), no images,
            an output folder of another run, video inputs.

    Example:
        >>> explain_files_ray(  # doctest: +SKIP
        ...     "zoo:shapes-cnn", ["imgs"], "out", address="ray://head:10001"
        ... ).results["items"][0]["targets"][0]["method"]
        'gradcam'
    """
    from taskcam.io import list_images
    from taskcam.models import load_model
    from taskcam.pipeline import _finish, _is_detector, _settings, _stems, get_method
    from taskcam.runlog import RunLog
    from taskcam.video import is_video

    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if any(is_video(p) and not Path(p).is_dir() for p in inputs):
        raise TaskcamError("--ray: explain videos without --ray")
    model_args = {"spec": spec, "weights": weights, "size": size, "mean": mean, "std": std}
    loaded = load_model(**model_args)  # on the driver: settings, task and names, no explaining
    if task and task != loaded.task:
        raise TaskcamError(f"--task {task}: {spec} is a {loaded.task} model")
    if loaded.task not in ("classify", "detect", "segment"):
        raise TaskcamError(f"task {loaded.task!r}: expected classify, detect or segment")
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    settings = _settings(
        loaded,
        methods=methods,
        layers=layers,
        targets=targets,
        colormap=colormap,
        aug_smooth=aug_smooth,
        eigen_smooth=eigen_smooth,
        make_grid=make_grid,
        what=what,
        conf=conf,
    )
    detect = loaded.task == "detect" or _is_detector(loaded)
    method_objs = [get_method(m) for m in methods or (("odam",) if detect else ("gradcam",))]
    if not method_objs:
        raise TaskcamError("--method: no method given")
    ray = _connect(address)  # before the output folder exists: an unreachable Ray writes nothing

    run = RunLog(Path(out_dir), settings, overwrite)
    stems = _stems(paths)
    todo = [(i, p) for i, p in enumerate(paths) if str(p) not in run.items]
    failures: dict[int, tuple[str, str]] = {}
    layer_names: list[str] = list(run.layers or [])
    job_args = {
        "methods": list(methods) if methods else None,
        "layers": list(layers) if layers else None,
        "targets": targets,
        "colormap": colormap,
        "batch_size": batch_size,
        "aug_smooth": aug_smooth,
        "eigen_smooth": eigen_smooth,
        "make_grid": make_grid,
        "progress": False,
        "what": what,
        "conf": conf,
        "found_layers": run.layers,
    }
    gpus = int(ray.cluster_resources().get("GPU", 0))
    size_ = num_actors or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    start = time.perf_counter()
    with run:
        try:
            if todo:
                import ray.data

                ctx = ray.data.DataContext.get_current()
                ctx.enable_progress_bars = progress
                rows = [{"index": i, "path": str(p), "stem": stems[str(p)]} for i, p in todo]
                ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64))
                ds = ds.map_batches(
                    _Worker,
                    fn_constructor_kwargs={
                        "model_args": {**model_args, "device": device},
                        "out": str(run.out),
                        "job_args": job_args,
                    },
                    batch_size=images_per_batch,
                    compute=ray.data.ActorPoolStrategy(size=min(size_, len(rows))),
                    **({"num_gpus": 1} if gpus else {"num_cpus": 1}),
                )
                for row in ds.iter_rows():
                    path = str(paths[int(row["index"])])
                    layer_names = json.loads(row["layers"]) or layer_names
                    if row["error"]:
                        log.warning("skipping %s: %s", path, row["error"])
                        failures[int(row["index"])] = (path, str(row["error"]))
                        run.failed(path, str(row["error"]))
                    else:
                        run.done(path, json.loads(row["item"]), layer_names)
        except KeyboardInterrupt:
            ordered = [failures[i] for i in sorted(failures)]
            _finish(loaded, method_objs, layer_names, paths, run, ordered, complete=False)
            raise
    log.info("ray: %d image(s) in %.1f s", len(todo), time.perf_counter() - start)
    ordered = [failures[i] for i in sorted(failures)]
    return _finish(loaded, method_objs, layer_names, paths, run, ordered)
