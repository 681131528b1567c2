"""The batched masking engine shared by every perturbation method (Score-CAM, Ablation-CAM,
RISE, D-RISE): perturbed inputs built lazily per batch, batch size from a memory budget, a
progress bar, a seed, a stop rule and cancellation between batches, and the covariance of RISE
masks (:func:`mask_covariance`). Mixed precision and other runtimes are the explainer's
(:mod:`taskcam.runtime`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from taskcam.errors import TaskcamError

__all__ = [
    "Cancelled",
    "SAMPLINGS",
    "auto_batch_size",
    "available_memory",
    "check_batch_size",
    "chunks",
    "mask_covariance",
    "mask_patterns",
    "patterns_to_masks",
    "rise_masks",
    "run_batches",
    "sample_bytes",
    "split_half_reliability",
]

_MAX_AUTO_BATCH = 256
# On a CPU, full forwards are fastest per image when a batch's working set stays about the size
# of the caches: on this project's 2-core machine ResNet-50 (224 px) took 24 ms per image at
# batch 4 (39 MiB by sample_bytes) and 38 ms at batch 32 (312 MiB); EfficientNet-Lite0 7.3 ms
# at batch 4 and 12.7 ms at 32; the 64-px shapes CNN was flat from 16 to 64.
_CPU_BUDGET = 48 << 20


class Cancelled(RuntimeError):
    """A perturbation run was cancelled through its ``cancel`` event; nothing was returned."""


def check_batch_size(batch_size: Optional[int]) -> Optional[int]:
    """``batch_size`` unchanged when it is ``None`` or a positive int, else a clear error."""
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise TaskcamError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` items.

    Example:
        >>> [(s.start, s.stop) for s in chunks(5, 2)]
        [(0, 2), (2, 4), (4, 5)]
    """
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def available_memory(device: torch.device) -> int:
    """Bytes free for perturbation batches: free GPU memory, or the OS's MemAvailable."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30  # not Linux: assume 4 GiB


def sample_bytes(model: torch.nn.Module, one: torch.Tensor) -> int:
    """Estimate the memory one input needs in a gradient-free forward pass.

    Runs ``model`` once on ``one`` (``Tensor[1, ...]``) with hooks on every module and takes
    three times the largest module output plus the input: under ``no_grad`` only a few
    tensors are alive at once (the current op's input and output and a residual branch).
    """
    largest = 0
    handles = []

    def hook(_m, _i, out):
        nonlocal largest
        if isinstance(out, torch.Tensor):
            largest = max(largest, out.numel() * out.element_size())

    try:
        for m in model.modules():
            handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            model(one)
    finally:
        for h in handles:
            h.remove()
    return 3 * largest + one.numel() * one.element_size()


def auto_batch_size(
    per_sample: int,
    device: torch.device,
    budget: Optional[int] = None,
    cap: int = _MAX_AUTO_BATCH,
    cpu_budget: int = _CPU_BUDGET,
) -> int:
    """How many perturbed inputs fit a memory budget at once.

    Args:
        per_sample: bytes one input needs (:func:`sample_bytes`).
        device: where the model runs.
        budget: bytes to use; default half the free GPU memory, or on a CPU a quarter of
            the free memory up to ``cpu_budget``.
        cap: the largest batch returned.
        cpu_budget: the CPU default's ceiling: 48 MiB suits full forwards, whose speed per
            image falls once a batch outgrows the caches (ResNet-50: 24 ms per image at
            batch 4, 38 ms at batch 32 on a 2-core CPU); cheap tails (Ablation-CAM) take more.

    Example:
        >>> auto_batch_size(1 << 20, torch.device("cpu"), budget=64 << 20)
        64
    """
    if budget is None:
        if device.type == "cuda":
            budget = available_memory(device) // 2
        else:
            budget = min(available_memory(device) // 4, cpu_budget)
    return int(max(1, min(cap, budget // max(1, per_sample))))


def run_batches(
    n: int,
    evaluate: Callable[[slice], torch.Tensor],
    *,
    batch_size: int,
    desc: str = "perturb",
    progress: bool = False,
    cancel: Optional[threading.Event] = None,
    unit: str = "mask",
    until: Optional[Callable[[int], bool]] = None,
) -> torch.Tensor:
    """Evaluate ``n`` perturbations in batches and concatenate the results.

    ``evaluate(sl)`` builds the perturbed inputs of items ``sl`` (lazily: only one batch
    exists at a time) and returns their scores ``Tensor[len(sl), ...]``.

    Args:
        n: number of perturbations.
        evaluate: builds and scores one batch.
        batch_size: items per batch.
        desc: progress bar label.
        progress: show a progress bar.
        cancel: when set (from another thread, a UI), the run stops before the next batch and
            raises :class:`Cancelled`; nothing partial is returned.
        unit: progress bar unit.
        until: ``until(done)``, asked after each batch with the number of items evaluated so
            far; when it returns ``True`` the rest are not evaluated (a stop rule).

    Example:
        >>> run_batches(5, lambda sl: torch.arange(sl.start, sl.stop), batch_size=2).tolist()
        [0, 1, 2, 3, 4]
        >>> run_batches(9, lambda sl: torch.arange(sl.start, sl.stop), batch_size=2,
        ...             until=lambda done: done >= 3).tolist()
        [0, 1, 2, 3]
    """
    if batch_size is None:
        raise TaskcamError("batch_size must be a positive integer, got None")
    check_batch_size(batch_size)
    out = []
    with tqdm(total=n, desc=desc, unit=unit, disable=not progress, leave=False) as bar:
        for sl in chunks(n, batch_size):
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{desc}: cancelled after {sl.start} of {n}")
            out.append(evaluate(sl))
            bar.update(sl.stop - sl.start)
            if until is not None and sl.stop < n and until(sl.stop):
                break
    return torch.cat(out)


def rise_masks(
    n: int,
    size: tuple[int, int],
    *,
    grid: int = 16,
    p: float = 0.5,
    generator: Optional[torch.Generator] = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """RISE random masks (Petsiuk et al., BMVC 2018): a ``grid × grid`` binary pattern kept
    with probability ``p``, bilinearly up-sampled to one cell larger than the image and
    cropped at a random shift, so the masks are smooth and not aligned to a grid.

    Args:
        n: number of masks.
        size: ``(H, W)`` of the image.
        grid: cells per side of the binary pattern.
        p: probability that a cell is kept.
        generator: seeded ``torch.Generator`` for reproducible masks.
        device: where the masks are made.

    Returns:
        ``Tensor[n, 1, H, W]`` in [0, 1].

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> rise_masks(2, (32, 48), grid=4, generator=g).shape
        torch.Size([2, 1, 32, 48])
    """
    if not 0 < p <= 1 or grid < 1:
        raise TaskcamError(f"rise masks: need 0 < p <= 1 and grid >= 1, got p={p}, grid={grid}")
    h, w = size
    cell_h, cell_w = -(-h // grid), -(-w // grid)
    cells = (torch.rand(n, 1, grid, grid, generator=generator) < p).float()
    dy = torch.randint(0, cell_h, (n,), generator=generator)
    dx = torch.randint(0, cell_w, (n,), generator=generator)
    return _smooth(cells, size, dy, dx).to(device)


def _smooth(cells: torch.Tensor, size: tuple[int, int], dy: torch.Tensor, dx: torch.Tensor):
    """``Tensor[n, 1, H, W]``: ``cells`` up-sampled to one cell more than ``size``, each
    cropped at its own shift ``(dy, dx)`` in pixels (RISE's smoothing and shift)."""
    return _upsample_crop(cells, size, dy, dx).clamp(0, 1)


def _upsample_crop(cells: torch.Tensor, size: tuple[int, int], dy: torch.Tensor, dx: torch.Tensor):
    """:func:`_smooth` without the clamp: the linear map from cell values to pixels."""
    grid = cells.shape[-1]
    h, w = size
    cell_h, cell_w = -(-h // grid), -(-w // grid)
    up = F.interpolate(
        cells, size=((grid + 1) * cell_h, (grid + 1) * cell_w), mode="bilinear", align_corners=False
    )
    # one slice per mask: a quarter of the time of one gather over all of them
    crops = [
        up[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy.tolist(), dx.tolist()))
    ]
    return torch.stack(crops)  # [n, 1, H, W]


def split_half_reliability(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``Tensor[T]``: how reproducible each of ``T`` maps is, from two independent halves of
    its masks (``a``, ``b``: ``Tensor[T, ...]``): ``2 r / (1 + r)`` with ``r`` their Pearson
    correlation (Spearman 1910; Brown 1910), the expected correlation of the whole map with
    another drawn from as many new masks. 1 for a map flat in both halves (its score never
    moved: there is nothing more to learn).

    Example:
        >>> a = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
        >>> split_half_reliability(a, a + 0.1 * torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
        tensor([0.9983], dtype=torch.float64)
    """
    a, b = a.flatten(1).double(), b.flatten(1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / norm.clamp(min=1e-300)
    r = torch.where(norm > 0, r.clamp(-1.0, 1.0), torch.ones_like(r))
    return torch.where(r > -1, 2 * r / (1 + r), torch.full_like(r, -1.0))


def mask_covariance(
    images: torch.Tensor, *, grid: int, p: float = 0.5, shifts: int = 4
) -> torch.Tensor:
    """``Cov(<v, M>, M(x))`` for each image ``v`` and pixel ``x``, ``M`` a RISE mask.

    RISE masks are ``M = U_s b``: independent cells ``b`` kept with probability ``p``,
    up-sampled and cropped at a random shift ``s`` by the linear map ``U_s``. Because the
    bilinear weights sum to one, ``E[M | s] = p`` everywhere, so
    ``Cov(<v, M>, M) = p (1 - p) E_s[U_s U_s^T v]``: the image spread by the masks' own
    correlation. The shift average is taken over ``shifts × shifts`` shifts spread evenly
    over a cell (RISE draws them uniformly).

    Args:
        images: ``Tensor[T, H, W]``.
        grid: cells per side of the masks' pattern.
        p: probability that a cell is kept.
        shifts: shifts per side averaged.

    Returns:
        ``Tensor[T, H, W]``.

    Example:
        >>> v = torch.zeros(1, 32, 32); v[0, 10:14, 10:14] = 1 / 16  # the mean over a patch
        >>> k = mask_covariance(v, grid=4)
        >>> bool(k[0, 12, 12] > k[0, 12, 30] >= 0), round(float(k[0, 12, 12]), 2)  # <= 0.25
        (True, 0.12)
    """
    t, h, w = images.shape
    cell_h, cell_w = -(-h // grid), -(-w // grid)
    canvas_size = ((grid + 1) * cell_h, (grid + 1) * cell_w)
    total = torch.zeros_like(images, dtype=torch.float32)
    for fy in range(shifts):
        for fx in range(shifts):
            dy, dx = (2 * fy + 1) * cell_h // (2 * shifts), (2 * fx + 1) * cell_w // (2 * shifts)
            canvas = images.new_zeros(t, 1, *canvas_size, dtype=torch.float32)
            canvas[:, 0, dy : dy + h, dx : dx + w] = images
            cells = images.new_zeros(t, 1, grid, grid, dtype=torch.float32, requires_grad=True)
            with torch.enable_grad():  # U_s^T v: the adjoint of the bilinear up-sampling
                up = F.interpolate(cells, size=canvas_size, mode="bilinear", align_corners=False)
                (adjoint,) = torch.autograd.grad(up, cells, canvas)
            shift_y = torch.full((t,), dy, device=images.device)
            shift_x = torch.full((t,), dx, device=images.device)
            total += _upsample_crop(adjoint, (h, w), shift_y, shift_x)[:, 0]
    return p * (1 - p) * total / shifts**2


#: how :func:`mask_patterns` draws cell patterns
SAMPLINGS = ("random", "antithetic", "sobol", "sobol-antithetic")


def mask_patterns(
    n: int,
    *,
    grid: int = 16,
    p: float = 0.5,
    sampling: str = "random",
    generator: Optional[torch.Generator] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All ``n`` binary cell patterns and shifts of a RISE run, drawn at once so that they can
    be stratified across masks (the masks themselves: :func:`patterns_to_masks`, per batch).

    * ``"random"``: independent cells kept with probability ``p`` (RISE, D-RISE).
    * ``"antithetic"``: masks come in pairs, a random pattern and its complement at the same
      shift, so every pixel's masks sum to exactly ``n / 2`` (antithetic variates,
      Hammersley & Morton 1956); the complement of a ``p`` pattern keeps ``1 - p`` of the cells,
      so this needs ``p = 0.5``.
    * ``"sobol"``: cell ``c`` of mask ``i`` is kept when coordinate ``c`` of the ``i``-th
      point of a scrambled Sobol sequence (Sobol 1967; Owen 1998) is below ``p``, and the shifts
      are two more coordinates: every cell is kept in almost exactly ``n p`` masks and pairs of
      cells are close to independent across masks: the quasi-Monte Carlo masks of Fel et
      al. ("Look at the Variance! Efficient Black-box Explanations with Sobol-based
      Sensitivity Analysis", NeurIPS 2021).
    * ``"sobol-antithetic"``: Sobol patterns, each followed by its complement (``p = 0.5``).

    Args:
        n: number of masks.
        grid: cells per side of the binary pattern.
        p: probability that a cell is kept.
        sampling: one of :data:`SAMPLINGS`.
        generator: seeded ``torch.Generator``; it also seeds the Sobol scrambling.

    Returns:
        ``(cells, shifts)``: ``Tensor[n, 1, grid, grid]`` of 0 and 1, and ``Tensor[n, 2]``, the
        vertical and horizontal shift of each mask as a fraction of a cell, in [0, 1).

    Example:
        >>> cells, shifts = mask_patterns(4, grid=2, sampling="antithetic")
        >>> (cells[0::2] + cells[1::2]).unique().tolist(), torch.equal(shifts[0], shifts[1])
        ([1.0], True)
    """
    if not 0 < p <= 1 or grid < 1 or n < 1:
        raise TaskcamError(
            f"mask patterns: need n >= 1, 0 < p <= 1 and grid >= 1, got n={n}, p={p}, grid={grid}"
        )
    if sampling not in SAMPLINGS:
        raise TaskcamError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {sampling!r}")
    paired = sampling.endswith("antithetic")
    if paired and p != 0.5:
        raise TaskcamError(
            f"sampling={sampling!r} pairs masks with complements: needs p=0.5, got {p}"
        )
    m = -(-n // 2) if paired else n
    if sampling.startswith("sobol"):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        engine = torch.quasirandom.SobolEngine(grid * grid + 2, scramble=True, seed=seed)
        points = engine.draw(m, dtype=torch.float64).float()  # [m, grid² + 2]
        cells = (points[:, : grid * grid] < p).float().view(m, 1, grid, grid)
        shifts = points[:, grid * grid :]
    else:
        cells = (torch.rand(m, 1, grid, grid, generator=generator) < p).float()
        shifts = torch.rand(m, 2, generator=generator)
    if paired:  # [c0, 1 - c0, c1, 1 - c1, ...]
        cells = torch.stack([cells, 1 - cells], 1).flatten(0, 1)[:n]
        shifts = shifts.repeat_interleave(2, 0)[:n]
    return cells, shifts


def patterns_to_masks(
    cells: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """Smooth masks from :func:`mask_patterns`' cells and shifts, as :func:`rise_masks` makes
    them: up-sampled bilinearly to one cell more than the image and cropped at the shift.

    Args:
        cells: ``Tensor[n, 1, grid, grid]``.
        shifts: ``Tensor[n, 2]`` in [0, 1), fractions of a cell.
        size: ``(H, W)`` of the image.

    Returns:
        ``Tensor[n, 1, H, W]`` in [0, 1].

    Example:
        >>> cells, shifts = mask_patterns(2, grid=4, sampling="antithetic")
        >>> masks = patterns_to_masks(cells, shifts, (32, 48))
        >>> masks.shape, bool(torch.allclose(masks.sum(0), torch.ones(1, 32, 48)))
        (torch.Size([2, 1, 32, 48]), True)
    """
    grid = cells.shape[-1]
    cell_h, cell_w = -(-size[0] // grid), -(-size[1] // grid)
    dy = (shifts[:, 0] * cell_h).long().clamp(0, cell_h - 1)
    dx = (shifts[:, 1] * cell_w).long().clamp(0, cell_w - 1)
    return _smooth(cells.float(), size, dy, dx)
