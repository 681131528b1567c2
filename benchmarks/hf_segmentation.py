"""Do maps of a Hugging Face segmenter loaded with ``hf:DIR`` explain its regions?

A SegFormer (Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation
with Transformers", NeurIPS 2021) built from a small ``transformers`` config is trained here on
the shapes images (``--steps`` AdamW steps on 128-px images), saved with ``save_pretrained``
beside a ``preprocessor_config.json``, and loaded back as a user loads one:
``load_model("hf:DIR")`` (its default layer, ``decode_head.activation``, needs no name).

On ``--images`` held-out images, every object class present is a region target (the pixels
the model paints with it), all classes of an image explained in one call. Each map is judged by
what it is for (:mod:`taskcam.faithfulness`): the class's mean probability over its clean region
as the map's most salient pixels take the image's mean colour (deletion) or are put back into a
mean-coloured image (insertion), 8 steps, both ÷ the clean score; ``faith`` = insertion −
deletion. Beside every method, on the same regions, three maps drawn without the model: a
uniform ``random`` map, the filled predicted ``region`` itself and a Gaussian at its centroid
(``centre``, σ = 10 % of the side). ``beats_centre``: the share of regions whose map's faith
beats the centre blob's. The last line is a JSON object with it all.

    python benchmarks/hf_segmentation.py --steps 600 --images 40
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import taskcam
from taskcam.adapters.segmentation import RegionTarget
from taskcam.data.shapes import CLASSES, HELDOUT_SEED, make_sample
from taskcam.faithfulness import baseline_maps, target_faithfulness
from taskcam.io import to_tensor
from taskcam.models import load_model
from taskcam.zoo.shapes_models import SHAPES_MEAN, SHAPES_STD

SIZE = 128
METHODS = ("gradcam", "gradcam++", "layercam", "hirescam", "eigencam", "scorecam")


def _batch(seed: int, start: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` shapes images ``Tensor[n, 3, S, S]`` (normalised) and masks ``[n, S, S]``."""
    samples = [make_sample(start + i, seed=seed, size=SIZE) for i in range(n)]
    x = to_tensor([s.image for s in samples], SIZE, SHAPES_MEAN, SHAPES_STD)
    return x, torch.stack([torch.from_numpy(s.semantic) for s in samples]).long()


def train(folder: Path, steps: int, batch: int = 16) -> float:
    """Train a small SegFormer on shapes images, save it to ``folder``; its val mIoU."""
    import transformers

    config = transformers.SegformerConfig(
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 2, 4],
        decoder_hidden_size=64,
        num_labels=len(CLASSES) + 1,
        id2label=dict(enumerate(("background", *CLASSES))),
        label2id={n: i for i, n in enumerate(("background", *CLASSES))},
    )
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 2e-3, total_steps=steps)
    model.train()
    for step in range(steps):
        x, m = _batch(0, step * batch, batch)
        logits = F.interpolate(model(pixel_values=x).logits, size=(SIZE, SIZE), mode="bilinear")
        loss = F.cross_entropy(logits, m)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}", flush=True)
    model.eval().save_pretrained(folder)
    processor = {"size": {"height": SIZE, "width": SIZE}, "image_mean": list(SHAPES_MEAN)}
    processor["image_std"] = list(SHAPES_STD)
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    x, m = _batch(1, 0, 64)
    with torch.no_grad():
        pred = F.interpolate(model(pixel_values=x).logits, size=(SIZE, SIZE)).argmax(1)
    ious = [
        ((pred == c) & (m == c)).sum() / ((pred == c) | (m == c)).sum().clamp(min=1)
        for c in range(len(CLASSES) + 1)
    ]
    return float(torch.stack(ious).mean())


def judge(
    loaded, images: int, methods: tuple[str, ...], layers: list[str]
) -> dict[str, dict[str, float]]:
    """Per method (and baseline): mean deletion, insertion, faith, beats_centre, seconds."""
    rows: dict[str, list[tuple[float, float, float, float]]] = {}
    seconds: dict[str, float] = {m: 0.0 for m in methods}
    model = loaded.model
    for i in range(images):
        x, _ = _batch(HELDOUT_SEED, i, 1)
        with torch.no_grad():
            pred = model(x).argmax(1)[0]  # [S, S]
        classes = [int(c) for c in pred.unique() if int(c) > 0]
        if not classes:
            continue
        targets = [RegionTarget(c) for c in classes]
        regions = [pred == c for c in classes]
        base = [baseline_maps(r, SIZE, SIZE, seed=i) for r in regions]
        names = ["random", "region", "centre"]
        for method in methods:
            start = time.perf_counter()
            exp = taskcam.explain(model, x, [targets], layers=layers, method=method)
            seconds[method] += time.perf_counter() - start
            scored = target_faithfulness(
                model,
                x,
                targets,
                exp.maps[0],
                baseline="mean",
                extra_maps=lambda t, base=base: torch.stack(
                    [base[t]["random"], base[t]["box"], base[t]["centre"]]
                ),
            )
            for own, *drawn in scored:
                centre = drawn[2].faithfulness
                rows.setdefault(method, []).append(
                    (
                        own.deletion,
                        own.insertion,
                        own.faithfulness,
                        float(own.faithfulness > centre),
                    )
                )
                if method == methods[0]:  # the baselines once per region
                    for name, f in zip(names, drawn):
                        key = f"baseline:{name}"
                        rows.setdefault(key, []).append(
                            (
                                f.deletion,
                                f.insertion,
                                f.faithfulness,
                                float(f.faithfulness > centre),
                            )
                        )
    out = {}
    for key, vals in rows.items():
        cols = list(zip(*vals))
        out[key] = {
            name: round(statistics.mean(col), 3)
            for name, col in zip(("deletion", "insertion", "faith", "beats_centre"), cols)
        }
        out[key]["regions"] = len(vals)
        if key in seconds:
            out[key]["seconds_per_image"] = round(seconds[key] / images, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="training steps")
    parser.add_argument("--images", type=int, default=40, help="held-out images")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layers", help="layers to explain, fused (default: hf:'s default)")
    parser.add_argument("--folder", help="a folder this benchmark trained before: no training")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.folder:
        folder, miou = Path(args.folder), float("nan")
    else:
        folder = Path(tempfile.mkdtemp()) / "segformer-shapes"
        start = time.perf_counter()
        miou = train(folder, args.steps)
        print(f"trained in {time.perf_counter() - start:.0f} s: val mIoU {miou:.3f} -> {folder}")
    loaded = load_model(f"hf:{folder}")
    layers = args.layers.split(",") if args.layers else loaded.layers
    print(f"hf:{folder}: layers {layers}, input {loaded.preprocess.size}")
    result = judge(loaded, args.images, tuple(args.methods.split(",")), layers)
    print(f"{'map':18s} {'deletion':>8s} {'insertion':>9s} {'faith':>6s} {'beats_centre':>12s}")
    for key, row in result.items():
        print(
            f"{key:18s} {row['deletion']:8.3f} {row['insertion']:9.3f} {row['faith']:6.3f} "
            f"{row['beats_centre']:12.2f}"
        )
    print(json.dumps({"val_miou": round(miou, 3), "layers": layers, "maps": result}))


if __name__ == "__main__":
    main()
