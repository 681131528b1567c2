"""taskcam's perturbation methods (Score-CAM, Ablation-CAM) against grad-cam 1.5.7 and torchcam.

Models, layers and inputs are those of ``benchmarks/classic.py`` (whose helpers this script
imports): EfficientNet-Lite0 with its real ImageNet weights at ``conv_head`` (224x224 chelsea,
target the top-1 class) and ResNet-50 with random weights (``torch.manual_seed(0)``) at
``layer4``.

What is measured, one fresh process per (model, variant):

* taskcam, through ``taskcam.explain(model, x, [ClassTarget(k)], layer, get_method(...))``:
  exact ``scorecam`` and ``ablationcam`` (default options: the batch size comes from the memory
  budget), ``ablationcam`` with ``tail_only=False`` (full forwards of the ablated copies: the
  reference the tail-only version must reproduce), and the approximate ``fast-scorecam`` /
  ``fast-ablationcam`` with their default ``top_k`` (1/16 of the channels) and ``top_k=1/8``.
* grad-cam's ``ScoreCAM`` and ``AblationCAM`` (``batch_size = 32``, as usual) and torchcam's
  ``ScoreCAM`` (``batch_size=32``), called as a user would (see ``classic.py``).
* Time: the median of ``--rounds`` calls (default 1: these calls run thousands of forwards;
  the model has already done one plain forward in the process).
* Memory: peak RSS above the level before the first call (``classic.PeakRSS``: ``VmHWM`` after
  ``clear_refs``); ``mem_mb`` leaves out shared-library pages faulted in, ``mem_rss_mb`` not.
* Agreement: Pearson correlation of the map (224x224) with taskcam's exact map of the same
  method (for fast modes and peers), and of tail-only Ablation-CAM with the full-forward one.

Run from the repository root::

    .venv/bin/python benchmarks/perturbation.py            # everything (about half an hour)
    .venv/bin/python benchmarks/perturbation.py --quick    # Lite0 only, no slow peers
    .venv/bin/python benchmarks/perturbation.py --models resnet50 --methods scorecam

A table is printed as results arrive; the last line is one JSON object, with ``"bars"``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import classic  # noqa: E402  (sets TQDM_DISABLE before grad-cam is imported)
import torch  # noqa: E402

import taskcam  # noqa: E402
from taskcam.adapters.classification import ClassTarget  # noqa: E402

METHODS = ("scorecam", "ablationcam", "fast-scorecam", "fast-ablationcam")
MODEL_NAMES = ("efficientnet_lite0", "resnet50")

# variant -> (library, taskcam method it belongs to, options, reference variant for corr)
VARIANTS: dict[str, tuple[str, str, dict[str, Any], Optional[str]]] = {
    "scorecam": ("taskcam", "scorecam", {}, None),
    "fast-scorecam": ("taskcam", "fast-scorecam", {}, "scorecam"),
    "fast-scorecam@1/8": ("taskcam", "fast-scorecam", {"top_k": 1 / 8}, "scorecam"),
    "ablationcam": ("taskcam", "ablationcam", {}, "ablationcam-full"),
    "fast-ablationcam": ("taskcam", "fast-ablationcam", {}, "ablationcam"),
    "fast-ablationcam@1/8": ("taskcam", "fast-ablationcam", {"top_k": 1 / 8}, "ablationcam"),
    "gradcam:scorecam": ("gradcam", "scorecam", {}, "scorecam"),
    "torchcam:scorecam": ("torchcam", "scorecam", {}, "scorecam"),
    "ablationcam-full": ("taskcam", "ablationcam", {"tail_only": False}, None),
    "gradcam:ablationcam": ("gradcam", "ablationcam", {}, "ablationcam"),
}
# slow on every model: thousands of full forwards at batch 32 (--quick leaves them out)
SLOW_PEERS = ("gradcam:scorecam", "torchcam:scorecam")


def _measure(model_name: str, variant: str, rounds: int = 1) -> dict:
    """Fresh process: median time of ``rounds`` calls of one variant, the first call's peak
    memory and map."""
    lib, method, opts, _ = VARIANTS[variant]
    model, x, k = classic._setup(model_name)
    layer = classic.MODELS[model_name][1]
    close: Callable[[], None] = classic._no_close
    if lib == "taskcam":
        spec = taskcam.get_method(method, **opts)
        targets = [ClassTarget(k)]

        def call(x: torch.Tensor) -> Any:
            return taskcam.explain(model, x, targets, layer, spec).maps[0, 0]

    elif lib == "gradcam":
        call, close = classic.gradcam_call(
            classic.GRADCAM_CLASSES[method], model, model_name, method, k
        )
    else:
        call, close = classic.torchcam_call(classic.TORCHCAM_CLASSES[method], model, model_name, k)
    with classic.PeakRSS() as mem:
        t0 = time.perf_counter()
        out = call(x)
        times = [time.perf_counter() - t0]
    for _ in range(rounds - 1):
        t0 = time.perf_counter()
        call(x)
        times.append(time.perf_counter() - t0)
    close()
    result = {
        "k": k,
        "seconds": statistics.median(times),
        "rounds": rounds,
        "mem_mb": mem.peak / classic.MIB,
        "mem_rss_mb": mem.peak_rss / classic.MIB,
        "mem_how": mem.how,
        "map": classic._as_numpy(out),
        "hooks_left": classic._hooks_on(model),
    }
    return result


def _ratio(a: Optional[float], b: Optional[float]) -> Optional[float]:
    return a / b if a is not None and b else None


def _bars(js: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The acceptance bars, each ``{"ok": bool | None, ...details}`` (None: not measured)."""

    def get(model: str, variant: str, field: str) -> Optional[float]:
        return js.get(model, {}).get(variant, {}).get(field)

    bars: dict[str, Any] = {}
    lite = "efficientnet_lite0"
    speed = _ratio(get(lite, "gradcam:ablationcam", "seconds"), get(lite, "ablationcam", "seconds"))
    corr = get(lite, "ablationcam", "corr")
    bars["lite0_ablationcam_30x_gradcam_corr_full_0.999"] = {
        "ok": None if speed is None or corr is None else speed >= 30 and corr >= 0.999,
        "speedup_vs_gradcam": speed,
        "corr_to_full_forward": corr,
    }
    r50 = "resnet50"
    tc = get(r50, "scorecam", "seconds")
    sp_gc = _ratio(get(r50, "gradcam:scorecam", "seconds"), tc)
    sp_tcm = _ratio(get(r50, "torchcam:scorecam", "seconds"), tc)
    mem = _ratio(get(r50, "scorecam", "mem_mb"), get(r50, "gradcam:scorecam", "mem_mb"))
    mem_rss = _ratio(get(r50, "scorecam", "mem_rss_mb"), get(r50, "gradcam:scorecam", "mem_rss_mb"))
    parts = (sp_gc, sp_tcm, mem)
    bars["resnet50_scorecam_2x_peers_mem_quarter_gradcam"] = {
        "ok": None if None in parts else sp_gc >= 2 and sp_tcm >= 2 and mem <= 0.25,
        "speedup_vs_gradcam": sp_gc,
        "speedup_vs_torchcam": sp_tcm,
        "mem_over_gradcam": mem,
        "mem_rss_over_gradcam": mem_rss,
    }
    for model in js:
        sp = _ratio(get(model, "scorecam", "seconds"), get(model, "fast-scorecam", "seconds"))
        corr = get(model, "fast-scorecam", "corr")
        bars[f"{model}_fast_scorecam_10x_corr_0.95"] = {
            "ok": None if sp is None or corr is None else sp >= 10 and corr >= 0.95,
            "speedup_vs_exact": sp,
            "corr_to_exact": corr,
        }
    return bars


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    parser.add_argument("--quick", action="store_true", help="Lite0 only, no slow peers")
    parser.add_argument("--skip-peers", action="store_true", help="taskcam only")
    parser.add_argument(
        "--rounds", type=int, default=1, help="calls per variant, median reported (default 1)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in models:
        if m not in MODEL_NAMES:
            parser.error(f"--models: unknown {m!r}; choose from {', '.join(MODEL_NAMES)}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"--methods: unknown {m!r}; choose from {', '.join(METHODS)}")
    if args.quick:
        models = [m for m in models if m != "resnet50"]
    variants = [
        v
        for v, (lib, method, _, _) in VARIANTS.items()
        if method in methods
        and not (args.skip_peers and lib != "taskcam")
        and not (args.quick and v in SLOW_PEERS)
    ]

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__"])
    print(
        f"taskcam {taskcam.__version__}, grad-cam 1.5.7, torchcam "
        f"{getattr(sys.modules.get('torchcam'), '__version__', '?')}, torch {torch.__version__}; "
        f"{classic._cores()} CPU threads; loadavg at start {os.getloadavg()}",
        flush=True,
    )
    print(
        "one call per row, each in a fresh process; corr = Pearson to the reference "
        "(taskcam's exact map; for ablationcam the full-forward version)\n"
    )
    cols = (
        f"{'model/variant':42} {'seconds':>9} {'speedup':>9} {'mem MB':>8} {'rss MB':>8} "
        f"{'corr':>8}  reference"
    )
    print(cols)
    print("-" * len(cols), flush=True)

    js: dict[str, dict[str, dict]] = {}
    maps: dict[tuple[str, str], Any] = {}
    errors: list[str] = []
    hooks_left = 0

    def corr(model: str, v: str) -> Optional[float]:
        ref = VARIANTS[v][3]
        if ref is None or (model, v) not in maps or (model, ref) not in maps:
            return None
        return classic.pearson(maps[(model, v)], maps[(model, ref)])

    for model in models:
        rows = js.setdefault(model, {})
        for v in variants:
            r = classic._in_child(ctx, _measure, model, v, args.rounds)
            key = f"{model}/{v}"
            if "error" in r:
                errors.append(key)
                print(f"  ! {key}: {r['error'].strip().splitlines()[-1]}", flush=True)
                print(r["error"], file=sys.stderr, flush=True)
                continue
            maps[(model, v)] = r.pop("map")
            hooks_left += r.pop("hooks_left")
            lib, method, opts, ref = VARIANTS[v]
            exact = rows.get(method.replace("fast-", ""), {}).get("seconds")
            fast = method.startswith("fast-")
            r["reference"] = ref
            r["corr"] = corr(model, v)
            # fast modes: exact seconds / theirs; peers and the full-forward version: their
            # seconds / taskcam's exact (how many times faster taskcam's exact method is)
            r["speedup"] = _ratio(exact, r["seconds"]) if fast else _ratio(r["seconds"], exact)
            if lib == "taskcam" and not fast and v != "ablationcam-full":
                r["speedup"] = None
            rows[v] = r
            pending = "(later)" if ref is not None and r["corr"] is None else "-"
            print(
                f"{key:42} {r['seconds']:>9.3f} {classic._fmt(r['speedup'], '.2f'):>9} "
                f"{r['mem_mb']:>8.0f} {r['mem_rss_mb']:>8.0f} "
                f"{classic._fmt(r['corr'], '.5f') if r['corr'] is not None else pending:>8}"
                f"  {ref or '-'}",
                flush=True,
            )
            # variants whose reference has only now run (tail-only Ablation-CAM)
            for w, rw in rows.items():
                if VARIANTS[w][3] == v and rw["corr"] is None:
                    rw["corr"] = corr(model, w)
                    print(
                        f"  {model}/{w} corr to {v}: {classic._fmt(rw['corr'], '.5f')}",
                        flush=True,
                    )
        ks = {r["k"] for r in rows.values()}
        if len(ks) > 1:
            print(f"  ! {model}: the processes saw different top-1 classes {sorted(ks)}")
            errors.append(f"{model}: top-1 classes differ {sorted(ks)}")

    bars = _bars(js)
    out: dict[str, Any] = {
        **js,
        "hooks_left": hooks_left,
        "bars": bars,
        "loadavg_end": list(os.getloadavg()),
    }
    if errors:
        out["errors"] = errors
    print(
        "\nspeedup: fast modes, exact seconds / theirs; peers and the full-forward version, "
        "their seconds / taskcam's exact"
    )
    print("bars:")
    for name, bar in bars.items():
        verdict = {True: "PASS", False: "FAIL", None: "n/a "}[bar["ok"]]
        print(f"  {verdict}  {name}  {json.dumps(classic._round(bar))}")
    print(json.dumps(classic._round(out)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
