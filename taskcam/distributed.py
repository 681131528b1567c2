"""The explain run as a Ray Data pipeline, for datasets that outgrow one process or machine.

The driver lists the images and names each one's output folder exactly as the single-process
run does (:func:`taskcam.explainers.output_stems` over all paths); the paths become a Ray
dataset; an actor pool of model replicas (one per GPU where the cluster has GPUs, CPU actors
otherwise) reads and decodes its images in parallel and explains each one with the same
per-image explainer as :func:`taskcam.pipeline.explain_files`
(:func:`taskcam.explainers.image_explainer`), writing the per-image files into the shared
output folder. Each actor builds its own model from the spec (:func:`taskcam.models.load_model`), so
nothing big is pickled. The driver logs every finished image in the run log
(:mod:`taskcam.runlog`, so an interrupted run resumes) and writes one ``results.json`` in input
order, equal in content to the single-process run's.

The output folder must be reachable by every worker under the same path (one machine, or a
shared file system on a cluster).

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from taskcam.data import make_sample
    >>> from taskcam.render import save_image
    >>> folder = Path(tempfile.mkdtemp())
    >>> for i in range(4):
    ...     _ = save_image(folder / "images" / f"{i}.png", make_sample(i, size=64).image)
    >>> s = explain_files_ray("zoo:shapes-cnn", [folder / "images"], folder / "out",
    ...                       progress=False)  # doctest: +SLOW
    >>> [t["method"] for t in s.results["items"][0]["targets"]]  # doctest: +SLOW
    ['gradcam']
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
from taskcam.explainers import output_stems
from taskcam.options import RunOptions, run_options
from taskcam.results import RunSummary, results_document, write_results
from taskcam.runlog import RunLog

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
    images into the shared output folder with the run's per-image explainer and returns each
    image's item (or error) as JSON."""

    def __init__(
        self,
        model_args: dict[str, Any],
        out: str,
        options: RunOptions,
        found_layers: Optional[list[str]],
    ) -> None:
        import torch

        from taskcam.explainers import image_explainer
        from taskcam.models import load_model

        model_args = dict(model_args)
        device = model_args.pop("device", None)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = load_model(**model_args, device=device)
        self.explainer = image_explainer(loaded, options, out)
        self.explainer.adopt_layers(found_layers)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        from taskcam.io import read_image

        items, errors, layers = [], [], []
        for path, stem in zip(batch["path"], batch["stem"]):
            path = Path(str(path))
            try:
                item = self.explainer.item(path, read_image(path), str(stem))
            except ImageError as e:  # an unreadable file, a detection it does not have
                items.append("")
                errors.append(str(e))
            else:
                items.append(json.dumps(item))
                errors.append("")
            layers.append(json.dumps(self.explainer.layer_names))
        return {"index": list(batch["index"]), "item": items, "error": errors, "layers": layers}


class _Driver:
    """The driver's side of a Ray run: sends the images the run log lacks to the actor pool,
    logs each result as it arrives and writes ``results.json`` in input order."""

    def __init__(self, loaded: Any, methods: list[str], paths: list[Path], run: RunLog) -> None:
        self.loaded, self.methods, self.paths, self.run = loaded, methods, paths, run
        self.failures: dict[int, tuple[str, str]] = {}
        self.layer_names: list[str] = list(run.layers or [])

    def todo(self) -> list[dict[str, Any]]:
        """One row per image not done yet: its index, path and output folder name."""
        stems = output_stems(self.paths)
        return [
            {"index": i, "path": str(p), "stem": stems[str(p)]}
            for i, p in enumerate(self.paths)
            if str(p) not in self.run.items
        ]

    def collect(self, rows: Any) -> None:
        """Log every result row of the pool as it arrives."""
        for row in rows:
            index = int(row["index"])
            path = str(self.paths[index])
            self.layer_names = json.loads(row["layers"]) or self.layer_names
            if row["error"]:
                log.warning("skipping %s: %s", path, row["error"])
                self.failures[index] = (path, str(row["error"]))
                self.run.failed(path, str(row["error"]))
            else:
                self.run.done(path, json.loads(row["item"]), self.layer_names)

    def finish(self, complete: bool = True) -> RunSummary:
        failures = [self.failures[i] for i in sorted(self.failures)]
        document = results_document(
            model=self.loaded.spec,
            task=self.loaded.task,
            methods=self.methods,
            layers=self.layer_names,
            items=[self.run.items[str(p)] for p in self.paths if str(p) in self.run.items],
            failures=failures,
            complete=complete,
        )
        return write_results(self.run.out, document, failures=failures, resumed=self.run.resumed)


def explain_files_ray(
    spec: str,
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    *,
    address: Optional[str] = None,
    weights: Optional[str] = None,
    device: Optional[str] = None,
    size: Optional[Sequence[int]] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    task: Optional[str] = None,
    options: Optional[RunOptions] = None,
    num_actors: Optional[int] = None,
    images_per_batch: int = 4,
    **overrides: Any,
) -> RunSummary:
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
        options: the run's :class:`~taskcam.options.RunOptions` (``progress``: Ray Data's
            progress bars).
        num_actors: model replicas; default one per GPU, or one per CPU without GPUs.
        images_per_batch: images an actor receives at a time.
        **overrides: options as keyword arguments, applied over ``options``.

    Returns:
        A :class:`taskcam.results.RunSummary`.

    Raises:
        TaskcamError: Ray missing, ``address`` unreachable (nothing is written), no images,
            an output folder of another run, video inputs, bad options.

    Example:
        >>> explain_files_ray(  # doctest: +SKIP
        ...     "zoo:shapes-cnn", ["imgs"], "out", address="ray://head:10001"
        ... ).results["items"][0]["targets"][0]["method"]
        'gradcam'
    """
    from taskcam.io import list_images
    from taskcam.methods import get_method
    from taskcam.models import load_model
    from taskcam.video import is_video

    options = run_options(options, **overrides)
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    if any(is_video(p) and not Path(p).is_dir() for p in inputs):
        raise TaskcamError("--ray: explain videos without --ray")
    model_args = {"spec": spec, "weights": weights, "size": size, "mean": mean, "std": std}
    loaded = load_model(**model_args)  # on the driver: settings, task and names, no explaining
    if task and task != loaded.task:
        raise TaskcamError(f"--task {task}: {spec} is a {loaded.task} model")
    settings = options.settings(loaded)
    paths = list_images(inputs)
    if not paths:
        raise TaskcamError(f"no images found in {[str(p) for p in inputs]}")
    methods = [get_method(m).name for m in options.method_names(loaded)]
    ray = _connect(address)  # before the output folder exists: an unreachable Ray writes nothing
    driver = _Driver(loaded, methods, paths, RunLog(Path(out_dir), settings, options.overwrite))
    worker_args = {
        "model_args": {**model_args, "device": device},
        "out": str(driver.run.out),
        "options": options.replace(progress=False),
        "found_layers": driver.run.layers,
    }
    start = time.perf_counter()
    with driver.run:
        try:
            rows = driver.todo()
            if rows:
                pool = _pool(ray, rows, worker_args, options.progress, num_actors, images_per_batch)
                driver.collect(pool.iter_rows())
        except KeyboardInterrupt:
            driver.finish(complete=False)
            raise
    log.info("ray: %d image(s) in %.1f s", len(rows), time.perf_counter() - start)
    return driver.finish()


def _pool(
    ray: Any,
    rows: list[dict[str, Any]],
    worker_args: dict[str, Any],
    progress: bool,
    num_actors: Optional[int],
    images_per_batch: int,
) -> Any:
    """The dataset of ``rows`` mapped by an actor pool of :class:`_Worker` replicas: one per
    GPU where the cluster has GPUs, else one per CPU (or ``num_actors``), with or without Ray
    Data's progress bars."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = progress
    gpus = int(ray.cluster_resources().get("GPU", 0))
    size = num_actors or gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 64))
    return ds.map_batches(
        _Worker,
        fn_constructor_kwargs=worker_args,
        batch_size=images_per_batch,
        compute=ray.data.ActorPoolStrategy(size=min(size, len(rows))),
        **({"num_gpus": 1} if gpus else {"num_cpus": 1}),
    )
