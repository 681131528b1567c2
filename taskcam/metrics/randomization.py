"""The model randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): maps of a model whose weights are randomised layer by layer should change."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import nn
from tqdm.auto import tqdm

from taskcam.errors import TaskcamError
from taskcam.metrics.curves import positive_int, shape_of

__all__ = ["ExplainFn", "RandomizationStep", "randomization_check", "spearman"]

ExplainFn = Callable[[nn.Module, torch.Tensor], torch.Tensor]
"""``explain_fn(model, images) -> Tensor[B, H, W]``: one saliency map per image."""


_RANDOMIZATION_ORDERS = ("cascade", "independent")


@dataclass(frozen=True, eq=False)
class RandomizationStep:
    """One measurement of :func:`randomization_check`.

    Attributes:
        layer: the module randomised last before this measurement (in ``"cascade"`` order it
            and every module before it in the list are random; in ``"independent"`` order
            only it).
        correlation: ``Tensor[B]`` Spearman correlation of each image's map to its map from the
            unchanged model.
    """

    layer: str
    correlation: torch.Tensor


# -- randomisation sanity check ---------------------------------------------------------------
def _average_ranks(x: torch.Tensor) -> torch.Tensor:
    """``Tensor[B, N]`` float64 ranks of each row, tied values sharing their mean rank."""
    batch, n = x.shape
    values, order = torch.sort(x, dim=1, stable=True)
    starts = torch.ones_like(values, dtype=torch.bool)
    starts[:, 1:] = values[:, 1:] != values[:, :-1]
    group = starts.long().cumsum(dim=1) - 1 + n * torch.arange(batch, device=x.device)[:, None]
    position = torch.arange(n, dtype=torch.float64, device=x.device).expand(batch, n)
    mean_position = torch.zeros(batch * n, dtype=torch.float64, device=x.device).scatter_reduce(
        0, group.flatten(), position.flatten(), reduce="mean", include_self=False
    )
    ranks = torch.empty(batch, n, dtype=torch.float64, device=x.device)
    return ranks.scatter_(1, order, mean_position[group])


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman rank correlation between pairs of maps, computed in torch.

    The Pearson correlation of the two maps' ranks, tied values sharing the mean of their
    ranks (as in Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, who compare
    maps this way). A constant map has no ranking: its correlation is 0, never NaN.

    Args:
        a: ``Tensor[B, H, W]``, ``Tensor[B, N]`` (flattened maps) or ``Tensor[N]``.
        b: the same shape as ``a``.

    Returns:
        ``Tensor[B]`` in [-1, 1] (float32; ``B = 1`` for ``Tensor[N]`` inputs).

    Example:
        >>> spearman(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[10.0, 30.0, 20.0]]))
        tensor([0.5000])
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape:
        raise TaskcamError(
            "spearman: a and b must be tensors of the same shape, got "
            f"{shape_of(a)} and {shape_of(b)}"
        )
    if a.ndim == 0 or a.numel() == 0:
        raise TaskcamError(f"spearman: expected Tensor[B, H, W] or Tensor[B, N], got {shape_of(a)}")
    if a.ndim == 1:
        a, b = a[None], b[None]
    b = b.to(a.device)
    ra = _average_ranks(torch.nan_to_num(a.detach().flatten(1).double(), nan=0.0))
    rb = _average_ranks(torch.nan_to_num(b.detach().flatten(1).double(), nan=0.0))
    ra = ra - ra.mean(dim=1, keepdim=True)
    rb = rb - rb.mean(dim=1, keepdim=True)
    cov = (ra * rb).sum(dim=1)
    var = (ra * ra).sum(dim=1) * (rb * rb).sum(dim=1)
    rho = torch.where(var > 0, cov / torch.where(var > 0, var, 1.0).sqrt(), 0.0)
    return rho.clamp(-1.0, 1.0).float()


def _rng_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (1 << 63)


def _randomize(module: nn.Module, seed: int, recurse: bool) -> None:
    """Re-initialise the parameters ``module`` owns (and, with ``recurse``, those of every
    submodule) in place; buffers such as BatchNorm's running statistics are kept."""
    owners = [m for m in (module.modules() if recurse else [module]) if _owns_parameters(m)]
    cuda = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.default_generator.manual_seed(seed)
        for i in cuda:
            with torch.cuda.device(i):
                torch.cuda.manual_seed(seed)
        for owner in owners:
            own = {name for name, p in owner._parameters.items() if p is not None}
            reset = getattr(owner, "reset_parameters", None)
            if callable(reset):
                kept = {k: v.clone() for k, v in owner.state_dict().items() if k not in own}
                reset()
                current = owner.state_dict()
                for key, value in kept.items():  # undo what reset did beyond own parameters
                    current[key].copy_(value)
                continue
            for name in sorted(own):
                p = owner._parameters[name]
                assert p is not None
                std = float(p.detach().double().std()) if p.numel() > 1 else 0.0
                if not math.isfinite(std) or std <= 0:
                    std = 1.0
                draw = torch.randn(p.shape, generator=generator, dtype=torch.float64) * std
                p.copy_(draw.to(device=p.device, dtype=p.dtype))


def _owns_parameters(module: nn.Module) -> bool:
    return any(p is not None for p in module._parameters.values())


def _as_maps(maps: object, expected: Optional[torch.Size]) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim < 2:
        raise TaskcamError(
            f"explain_fn must return saliency maps Tensor[B, H, W], got {shape_of(maps)}"
        )
    if expected is not None and maps.shape != expected:
        raise TaskcamError(
            f"explain_fn returned {tuple(maps.shape)} on a randomised model but "
            f"{tuple(expected)} on the original one"
        )
    return maps.detach().clone()  # a view of a parameter would change with it


def _measured(n: int, max_steps: Optional[int], cascade: bool) -> list[int]:
    """Indices of the modules after which maps are compared."""
    if max_steps is None or max_steps >= n:
        return list(range(n))
    if max_steps == 1:
        return [n - 1] if cascade else [0]
    return sorted({round(i * (n - 1) / (max_steps - 1)) for i in range(max_steps)})


def randomization_check(
    model: nn.Module,
    explain_fn: ExplainFn,
    images: torch.Tensor,
    *,
    order: str = "cascade",
    seed: int = 0,
    layers: Optional[Sequence[str]] = None,
    max_steps: Optional[int] = None,
    progress: bool = False,
) -> list[RandomizationStep]:
    """The model parameter randomisation test (Adebayo et al., "Sanity Checks for Saliency
    Maps", NeurIPS 2018).

    A method whose maps barely change when the model's weights are replaced by random ones
    does not explain the model. This works on deep copies: the user's ``model`` keeps its
    parameters, buffers and train/eval mode (the copies start in the same mode).

    The modules randomised are, by default, every module that owns parameters itself
    (``module._parameters`` non-empty), in reverse registration order, head first; or the
    modules named in ``layers``, in that order, each with all of its submodules. A module is
    re-initialised with its own ``reset_parameters()`` when it has one, else each parameter
    it owns is drawn from a normal distribution with mean 0 and that parameter's own std.
    Buffers, BatchNorm running statistics included, are kept as they are. Each module's
    randomness comes from ``seed`` and its place in the list (the global RNG is left as it
    was), so a module gets the same values in either order.

    ``order="cascade"`` randomises the modules cumulatively, head to input, and compares the
    maps after each step; ``"independent"`` randomises each module alone on the otherwise
    intact copy. ``explain_fn(model_copy, images)`` must return the maps for the same
    targets every time; it may need gradients (it runs outside ``torch.no_grad()``).

    Args:
        model: the model; never modified.
        explain_fn: ``(model, images) -> Tensor[B, H, W]``, e.g. a wrapper around
            :func:`taskcam.explain`.
        images: passed to ``explain_fn`` unchanged.
        order: ``"cascade"`` or ``"independent"``.
        seed: seeds the re-initialisation.
        layers: dotted module names to randomise instead of the default list.
        max_steps: compare maps at most this many times, at modules spread evenly over the
            list, the first and last included (only the last for ``max_steps=1`` in cascade
            order); in cascade order every module up to a measured one is still randomised.
        progress: show a progress bar.

    Returns:
        One :class:`RandomizationStep` per measurement, head first.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 1, 1))
        >>> steps = randomization_check(net, lambda m, x: m(x)[:, 0], torch.rand(2, 3, 8, 8))
        >>> [s.layer for s in steps], steps[0].correlation.shape
        (['1', '0'], torch.Size([2]))
    """
    if not isinstance(model, nn.Module):
        raise TaskcamError(f"model: expected an nn.Module, got {type(model).__name__}")
    if order not in _RANDOMIZATION_ORDERS:
        raise TaskcamError(f"order: expected one of {_RANDOMIZATION_ORDERS}, got {order!r}")
    if max_steps is not None:
        positive_int(max_steps, "max_steps")
    try:
        work = copy.deepcopy(model)
    except Exception as e:  # a model holding something deepcopy cannot copy
        raise TaskcamError(f"model: cannot be deep-copied ({type(e).__name__}: {e})") from e
    named = dict(work.named_modules())
    if layers is None:
        chosen = [(name, m) for name, m in named.items() if _owns_parameters(m)][::-1]
        recurse = False
    else:
        if isinstance(layers, str):
            layers = [layers]
        missing = [name for name in layers if name not in named]
        if missing:
            raise TaskcamError(f"layers: no module named {missing}; some names: {list(named)[1:8]}")
        chosen = [(name, named[name]) for name in layers]
        recurse = True
    if not chosen:
        raise TaskcamError("model: no module owns parameters, nothing to randomise")
    cascade = order == "cascade"
    measured = set(_measured(len(chosen), max_steps, cascade))
    original = _as_maps(explain_fn(work, images), None)
    steps: list[RandomizationStep] = []
    todo = range(len(chosen)) if cascade else sorted(measured)
    for i in tqdm(todo, desc="randomization", unit="layer", disable=not progress, leave=False):
        name, module = chosen[i]
        saved = None
        if not cascade:
            saved = {k: v.clone() for k, v in module.state_dict().items()}
        _randomize(module, _rng_seed(seed, i), recurse)
        if i in measured:
            maps = _as_maps(explain_fn(work, images), original.shape)
            steps.append(RandomizationStep(layer=name, correlation=spearman(original, maps)))
        if saved is not None:
            current = module.state_dict()
            with torch.no_grad():
                for key, value in saved.items():
                    current[key].copy_(value)
    return steps
