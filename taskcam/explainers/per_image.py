"""What every per-image explainer shares: running a run's methods on one image's targets and
writing each target's map, overlay and record (:class:`ImageExplainer`), and the map and mask
resizing, file naming and result value the kinds use."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import numpy as np
import torch
import torch.nn.functional as F

from taskcam.engine import Explainer, Explanation
from taskcam.faithfulness import target_faithfulness
from taskcam.loaded import LoadedModel
from taskcam.methods import Method, get_method
from taskcam.options import RunOptions
from taskcam.render import box_normalized, grid, overlay, save_image
from taskcam.targets import Target, explained_layer

__all__ = [
    "Decorate",
    "Fields",
    "ImageExplainer",
    "ImageResult",
    "gradient_pictures",
    "maps_to_image",
    "output_stems",
    "to_image_mask",
]


def maps_to_image(maps: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize maps ``Tensor[..., h, w]`` in [0, 1] to the original image grid ``[..., H, W]``.

    Classification inputs are the whole image resized (no crop), so undoing the resize is a
    plain bilinear resize back.

    Example:
        >>> maps_to_image(torch.rand(1, 2, 8, 8), 20, 30).shape
        torch.Size([1, 2, 20, 30])
    """
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:]).float()
    out = F.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return out.clamp(0, 1).reshape(*lead, height, width)


def to_image_mask(region: torch.Tensor, height: int, width: int) -> np.ndarray:
    """A model-grid mask ``BoolTensor[h, w]`` resized (nearest) to the original image.

    Example:
        >>> to_image_mask(torch.eye(2, dtype=torch.bool), 4, 4).astype(int).tolist()[0]
        [1, 1, 0, 0]
    """
    up = F.interpolate(region[None, None].float(), size=(height, width), mode="nearest")
    return up[0, 0].bool().cpu().numpy()


def output_stems(paths: Sequence[Path]) -> dict[str, str]:
    """Each image's output folder name, unique, from the whole list (so a resumed or
    distributed run names them as one uninterrupted run does).

    Example:
        >>> output_stems([Path("a/cat.png"), Path("b/cat.png"), Path("x y.jpg")])
        {'a/cat.png': 'cat', 'b/cat.png': 'cat_2', 'x y.jpg': 'x_y'}
    """
    used: set[str] = set()
    stems = {}
    for path in paths:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem) or "image"
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name)
        stems[str(path)] = name
    return stems


def gradient_pictures(
    exp: Explanation,
    method: Method,
    to_image: Callable[[torch.Tensor], np.ndarray],
    maps: np.ndarray,
    *,
    smoothed: bool = False,
) -> Optional[list[np.ndarray]]:
    """A pixel-space method's pictures as the papers show them (Springenberg et al. 2015,
    Selvaraju et al. 2017, fig. 1): each target's input gradient as an RGB image, its mean
    on gray and one standard deviation a tenth of the brightness range, as Keras' and
    pytorch-grad-cam's ``deprocess_image`` show it; where the
    maps were averaged over augmentations (``aug_smooth``: the gradient image the engine
    keeps is the plain pass's) or no gradient image was kept, the map, which is the
    gradient's magnitude, in gray. ``None`` for the other methods (drawn as heatmaps).

    Args:
        exp: the method's explanation of one image (``pixel_grads``:
            ``Tensor[1, T, 3, h, w]`` in input pixels, or ``None``).
        method: the method.
        to_image: one image's maps ``Tensor[N, h, w]`` in [0, 1] -> ``float32[N, H, W]``.
        maps: the maps on the image's grid, ``float32[T, H, W]`` in [0, 1].
        smoothed: the maps were averaged over augmentations (``aug_smooth``).

    Returns:
        ``T`` pictures ``uint8[H, W, 3]``, or ``None``.

    Example:
        >>> from taskcam.methods import get_method
        >>> grads = torch.zeros(1, 1, 3, 4, 4); grads[0, 0, 0, 1, 1] = 1.0  # red at (1, 1)
        >>> exp = Explanation(torch.zeros(1, 1, 4, 4), {}, torch.zeros(1, 1),
        ...                   torch.zeros(1, 1, dtype=torch.bool), "guided-backprop", [],
        ...                   pixel_grads=grads)
        >>> pics = gradient_pictures(exp, get_method("guided-backprop"),
        ...                          lambda m: m.numpy(), np.zeros((1, 4, 4), np.float32))
        >>> pics[0][0, 0].tolist(), pics[0][1, 1].tolist()  # gray, and red above gray
        ([124, 124, 124], [255, 124, 124])
    """
    if not method.pixel_space:
        return None
    if exp.pixel_grads is None or smoothed:
        gray = np.rint(np.clip(maps, 0.0, 1.0) * 255.0).astype(np.uint8)
        return [np.repeat(g[..., None], 3, axis=-1) for g in gray]
    grads = exp.pixel_grads[0].detach().float()  # [T, 3, h, w]
    flat = grads.flatten(1)
    centred = flat - flat.mean(1, keepdim=True)
    shown = (centred / (centred.std(1, keepdim=True) + 1e-5) * 0.1 + 0.5).clamp(0, 1)
    t, c, h, w = grads.shape
    on_image = to_image(shown.reshape(t * c, h, w))  # [T * 3, H, W]
    rgb = np.rint(on_image.reshape(t, c, *on_image.shape[-2:]) * 255.0).astype(np.uint8)
    return list(np.ascontiguousarray(rgb.transpose(0, 2, 3, 1)))


@dataclass
class ImageResult:
    """One explained image.

    Attributes:
        item: its ``results.json`` item: ``image``, ``width``, ``height``, ``targets`` (one
            record per target and method, methods in order), and ``grid`` or ``message``.
        maps: method name -> ``float32[T, H, W]`` the maps written, on the image's grid.
    """

    item: dict[str, Any]
    maps: dict[str, np.ndarray]


# per target: the record's fields before the method's ("kind" ... "box"), given the method's
# explanation, and the overlay drawn for it
Fields = Callable[[int, Explanation], dict[str, Any]]
Decorate = Callable[[int, dict[str, Any], np.ndarray], np.ndarray]


class ImageExplainer:
    """Explains one image at a time with every method of a run, into ``out``.

    Subclasses prepare the input and targets of their kind and say what a record holds;
    :meth:`_explain_methods` runs the methods and writes every file and record.

    Args:
        loaded: the model.
        options: the run's options.
        out: the output folder.
    """

    kind: ClassVar[str] = ""

    def __init__(self, loaded: LoadedModel, options: RunOptions, out: str | Path) -> None:
        self.loaded, self.options, self.out = loaded, options, Path(out)
        self.method_objs: list[Method] = [get_method(m) for m in options.method_names(loaded)]
        self.layer_names: list[str] = []
        self._explainers: dict[str, Explainer] = {}

    def adopt_layers(self, layers: Optional[Sequence[str]]) -> None:
        """Use the layers an interrupted run of the same settings found, when none are set."""
        if not self.layer_names and layers:
            self.layer_names = list(layers)

    def start(self, paths: Sequence[Path]) -> None:
        """Prepare for a run over ``paths`` (detectors read their ``--labels``); nothing by
        default."""

    def item(self, path: Path, image: np.ndarray, stem: str) -> dict[str, Any]:
        """Explain one decoded image file into ``out/stem`` and return its item."""
        return self.explain(image, stem, source=str(path)).item

    def explain(self, image: np.ndarray, folder: str, *, source: str) -> ImageResult:
        """Explain ``image`` (``uint8[H, W, 3]`` RGB), writing its files under ``out/folder``.

        Args:
            image: the decoded image.
            folder: where its files go, relative to ``out``.
            source: what the item's ``image`` field names (the file, or the video).
        """
        raise NotImplementedError  # pragma: no cover - each kind implements it

    def _explainer(self, method: Method, model: torch.nn.Module, reshape: Any) -> Explainer:
        if method.name not in self._explainers:
            self._explainers[method.name] = Explainer(
                model,
                self.layer_names or None,
                method,
                batch_size=self.options.batch_size,
                aug_smooth=self.options.aug_smooth,
                eigen_smooth=self.options.eigen_smooth,
                reshape=reshape,
                progress=self.options.progress,
                precision=self.options.precision,
                runtime=self.options.runtime,
            )
        return self._explainers[method.name]

    def _explain_methods(
        self,
        image: np.ndarray,
        folder: str,
        run: Callable[[Method], Explanation],
        to_image: Callable[[torch.Tensor], np.ndarray],
        targets: list[Target],
        files: Sequence[str],
        fields: Fields,
        decorate: Decorate,
        scored: tuple[torch.nn.Module, torch.Tensor],
    ) -> tuple[list[dict[str, Any]], list[list[np.ndarray]], dict[str, np.ndarray]]:
        """Every method on one image: its maps, overlays and records.

        Args:
            image: the decoded image.
            folder: the files' folder, relative to ``out``.
            run: method -> its explanation of the image's targets.
            to_image: one image's maps ``Tensor[T, h, w]`` -> ``float32[T, H, W]``.
            targets: the image's targets.
            files: per target, its file name before ``_<method>`` (``class285``, ``det0``).
            fields: per target, the record's fields before the method's.
            decorate: per target, what is drawn on its overlay.
            scored: the model and the input ``Tensor[1, C, h, w]`` the maps explain; with
                ``faithfulness`` each record gets its map's deletion and insertion there.

        Returns:
            ``(records, tiles, maps)``: records of every method in order, overlays by
            method (rows of the grid) and the maps by method.
        """
        out = self.out
        (out / folder).mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        tiles: list[list[np.ndarray]] = []
        maps: dict[str, np.ndarray] = {}
        for method in self.method_objs:
            exp = run(method)
            method_maps = to_image(exp.maps[0])
            maps[method.name] = method_maps
            faith = self._faithfulness(scored, targets, exp)
            gradients = gradient_pictures(
                exp, method, to_image, method_maps, smoothed=self.options.aug_smooth
            )
            row = []
            for t, target in enumerate(targets):
                base = f"{folder}/{files[t]}_{method.name}"
                np.save(out / f"{base}.npy", method_maps[t])
                record = {**fields(t, exp), **faith[t]}
                if gradients is not None:  # Guided Backprop: the gradient image itself
                    picture = gradients[t]
                else:
                    picture = overlay(image, self._shown(method_maps[t], record), **self._style)
                picture = decorate(t, record, picture)
                save_image(out / f"{base}.png", picture)
                row.append(picture)
                record.update(
                    {
                        "method": method.name,
                        "heatmap": f"{base}.npy",
                        "overlay": f"{base}.png",
                        "empty": bool(exp.empty[0, t]),
                    }
                )
                if exp.forwards is not None:  # rise, drise: the masked copies scored
                    record["masks"] = exp.forwards[0]
                layer = explained_layer(target, exp.layers) if len(exp.layers) > 1 else None
                if layer is not None:
                    record["layer"] = layer
                records.append(record)
            tiles.append(row)
        return records, tiles, maps

    def _faithfulness(
        self,
        scored: tuple[torch.nn.Module, torch.Tensor],
        targets: list[Target],
        exp: Explanation,
    ) -> list[dict[str, float]]:
        """Per target, its map's ``deletion``, ``insertion`` and ``faithfulness`` (nothing
        unless the run asks for them, and nothing for a map flagged empty: an all-zero map
        ranks no pixel above another)."""
        scoring = [self.options.faithfulness and not bool(e) for e in exp.empty[0]]
        if not any(scoring):
            return [{} for _ in targets]
        model, x = scored
        picked = [k for k, on in enumerate(scoring) if on]
        rows = target_faithfulness(
            model,
            x,
            [targets[k] for k in picked],
            exp.maps[0, picked],
            steps=self.options.faithfulness_steps,
            batch_size=self.options.batch_size or 32,
            progress=self.options.progress,
        )
        out: list[dict[str, float]] = [{} for _ in targets]
        for k, row in zip(picked, rows):
            out[k] = {name: round(v, 4) for name, v in row[0].as_dict().items()}
        return out

    @property
    def _style(self) -> dict[str, Any]:
        return {"colormap": self.options.colormap, "alpha": self.options.alpha}

    def _shown(self, heat: np.ndarray, record: dict[str, Any]) -> np.ndarray:
        """The map as drawn: rescaled inside the target's box with ``box_norm``."""
        if self.options.box_norm and "box" in record:
            return box_normalized(heat, record["box"])
        return heat

    def _item(
        self,
        source: str,
        image: np.ndarray,
        folder: str,
        records: list[dict[str, Any]],
        tiles: list[list[np.ndarray]],
        col_labels: list[str],
    ) -> dict[str, Any]:
        """The image's item; with ``make_grid``, its methods × targets grid is drawn too."""
        height, width = image.shape[:2]
        item: dict[str, Any] = {
            "image": source,
            "width": width,
            "height": height,
            "targets": records,
        }
        if self.options.make_grid and tiles:
            picture = grid(
                tiles, row_labels=[m.name for m in self.method_objs], col_labels=col_labels
            )
            save_image(self.out / folder / "grid.png", picture)
            item["grid"] = f"{folder}/grid.png"
        return item

    def _name(self, k: int, names: Optional[Sequence[str]]) -> str:
        return names[k] if names and k < len(names) else str(k)
