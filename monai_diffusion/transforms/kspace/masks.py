"""k-space undersampling masks as pure, seeded functions.

Every function returns a float32 0/1 tensor of the full ``shape`` (the k-space spatial shape, 2D or 3D, centred
layout) with lines along the last axis (1D masks) or points in the last two axes (2D masks; the first axis of a
3D shape is the fully-sampled readout). ``acceleration`` ``R >= 1`` is the ratio of grid size to samples and
``center_fraction`` the share of central lines (or of each axis of the central box) always sampled.

* :func:`random_mask`, :func:`equispaced_mask`: MONAI's ``RandomKspaceMask`` / ``EquispacedKspaceMask``
  (fastMRI conventions: the expected number of lines is ``N / R``) re-exposed as functions.
* :func:`gaussian_mask_1d`: variable-density lines drawn without replacement with a Gaussian density
  (Lustig et al., "Sparse MRI", MRM 2007, Sec. "Variable density random undersampling"); exactly ``round(N / R)``
  lines.
* :func:`poisson_disc_mask_2d`: variable-density Poisson-disc sampling (dart throwing with a radius growing with the
  distance from the centre; Lustig et al. 2007 and Vasanawala et al., Radiology 2010), radius scale found by
  bisection to reach the target acceleration (typically within a few percent).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.apps.reconstruction.transforms.array import EquispacedKspaceMask, RandomKspaceMask

__all__ = [
    "check_mask_args",
    "random_mask",
    "equispaced_mask",
    "gaussian_mask_1d",
    "poisson_disc_mask_2d",
    "make_mask",
    "acceleration_of",
    "MASK_TYPES",
]

MASK_TYPES = ("random", "equispaced", "gaussian", "poisson")


def check_mask_args(shape: Sequence[int], acceleration: float, center_fraction: float) -> tuple[int, ...]:
    """Validate mask arguments and return the shape as a tuple.

    Raises:
        ValueError: a shape that is not 2D/3D with positive sides, ``acceleration < 1``, or ``center_fraction``
            outside ``[0, 1]`` or larger than ``1 / acceleration``.
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) not in (2, 3) or min(shp) < 1:
        raise ValueError(f"mask shape must be 2D or 3D with positive sides, got {tuple(shape)}")
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1 (grid size / samples), got {acceleration}")
    if not 0 <= center_fraction <= 1:
        raise ValueError(f"center_fraction must lie in [0, 1], got {center_fraction}")
    if center_fraction > 1.0 / acceleration + 1e-12:
        raise ValueError(
            f"center_fraction {center_fraction} exceeds the sampled share 1/acceleration = {1.0 / acceleration:.4f}"
        )
    return shp


def _lines_to_mask(lines: torch.Tensor | np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    line = torch.as_tensor(np.asarray(lines), dtype=torch.float32).reshape(-1)
    return line.expand(*shape).clone()


def _monai_lines(cls, shape: tuple[int, ...], acceleration: float, center_fraction: float, seed: int) -> torch.Tensor:
    if acceleration == 1:
        return torch.ones(shape)
    t = cls(center_fractions=[center_fraction], accelerations=[acceleration], spatial_dims=1, is_complex=False)
    t.set_random_state(seed=seed)
    t(torch.ones(1, shape[-1]))
    return _lines_to_mask(t.mask, shape)


def random_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int = 0
) -> torch.Tensor:
    """MONAI's random line mask: ``round(N * cf)`` central lines plus lines kept with probability
    ``(N / R - N_low) / (N - N_low)`` (expected ``N / R`` lines)."""
    shp = check_mask_args(shape, acceleration, center_fraction)
    return _monai_lines(RandomKspaceMask, shp, acceleration, center_fraction, seed)


def equispaced_mask(
    shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int = 0
) -> torch.Tensor:
    """MONAI's equispaced line mask (random offset from ``seed``) with a fully sampled centre."""
    shp = check_mask_args(shape, acceleration, center_fraction)
    return _monai_lines(EquispacedKspaceMask, shp, acceleration, center_fraction, seed)


def _centre_slice(n: int, frac: float) -> slice:
    low = int(round(n * frac))
    start = (n - low + 1) // 2
    return slice(start, start + low)


def gaussian_mask_1d(
    shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int = 0, std: float = 0.25
) -> torch.Tensor:
    """Variable-density random lines: the central lines plus lines drawn without replacement with probability
    proportional to ``exp(-d^2 / (2 (std N)^2))`` of their distance ``d`` from the centre; exactly
    ``max(round(N / R), N_low)`` lines."""
    shp = check_mask_args(shape, acceleration, center_fraction)
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}")
    n = shp[-1]
    lines = torch.zeros(n)
    lines[_centre_slice(n, center_fraction)] = 1
    need = max(int(round(n / acceleration)) - int(lines.sum()), 0)
    if need:
        d = torch.arange(n, dtype=torch.float64) - n // 2
        w = torch.exp(-(d**2) / (2 * (std * n) ** 2)) * (1 - lines.double())
        g = torch.Generator().manual_seed(int(seed))
        lines[torch.multinomial(w, need, replacement=False, generator=g)] = 1
    return _lines_to_mask(lines, shp)


def _dart_throw(order: np.ndarray, radius: np.ndarray, h: int, w: int, preset: np.ndarray) -> np.ndarray:
    """Accept points in ``order`` whose disc of their own radius holds no accepted point (grid-local check)."""
    acc = preset.copy()
    for p in order:
        i, j = divmod(int(p), w)
        if acc[i, j]:
            continue
        r = radius[i, j]
        ri = int(math.ceil(r))
        i0, i1, j0, j1 = max(i - ri, 0), min(i + ri + 1, h), max(j - ri, 0), min(j + ri + 1, w)
        win = acc[i0:i1, j0:j1]
        if win.any():
            ii, jj = np.nonzero(win)
            if (((ii + i0 - i) ** 2 + (jj + j0 - j) ** 2) < r * r).any():
                continue
        acc[i, j] = True
    return acc


def poisson_disc_mask_2d(
    shape: Sequence[int],
    acceleration: float,
    center_fraction: float = 0.08,
    seed: int = 0,
    density_slope: float = 2.0,
    max_iter: int = 14,
) -> torch.Tensor:
    """Variable-density Poisson-disc points in the last two axes with a fully sampled central box.

    The exclusion radius at normalised distance ``rho`` in ``[0, 1]`` from the centre is
    ``r0 (1 + density_slope * rho)``; ``r0`` is bisected so the sample count approaches ``size / R``.
    """
    shp = check_mask_args(shape, acceleration, center_fraction)
    h, w = shp[-2:]
    target = h * w / acceleration
    preset = np.zeros((h, w), dtype=bool)
    preset[_centre_slice(h, center_fraction), _centre_slice(w, center_fraction)] = True
    if acceleration == 1:
        return torch.ones(shp)
    yy, xx = np.meshgrid(np.arange(h) - h // 2, np.arange(w) - w // 2, indexing="ij")
    rho = np.sqrt((yy / max(h / 2, 1)) ** 2 + (xx / max(w / 2, 1)) ** 2) / math.sqrt(2)
    order = np.random.RandomState(int(seed)).permutation(h * w)
    lo, hi = 0.5, math.sqrt(acceleration) * 2
    best, best_err = None, float("inf")
    for _ in range(max_iter):
        r0 = 0.5 * (lo + hi)
        acc = _dart_throw(order, r0 * (1 + density_slope * rho), h, w, preset)
        count = int(acc.sum())
        if abs(count - target) < best_err:
            best, best_err = acc, abs(count - target)
        if count > target:
            lo = r0
        else:
            hi = r0
        if best_err <= 0.005 * target:
            break
    plane = torch.as_tensor(best, dtype=torch.float32)
    return plane.expand(*shp).clone()


def make_mask(
    mask_type: str, shape: Sequence[int], acceleration: float, center_fraction: float = 0.08, seed: int = 0
) -> torch.Tensor:
    """Dispatch by name: one of :data:`MASK_TYPES`."""
    fns = {
        "random": random_mask,
        "equispaced": equispaced_mask,
        "gaussian": gaussian_mask_1d,
        "poisson": poisson_disc_mask_2d,
    }
    if mask_type not in fns:
        raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
    return fns[mask_type](shape, acceleration, center_fraction, seed)


def acceleration_of(mask: torch.Tensor) -> float:
    """Achieved acceleration: grid size / number of sampled points.

    Raises:
        ValueError: a mask that samples nothing (its acceleration is undefined).
    """
    m = torch.as_tensor(mask)
    sampled = float(m.sum())
    if sampled <= 0:
        raise ValueError(f"mask of shape {tuple(m.shape)} samples no k-space point; acceleration is undefined")
    return float(m.numel() / sampled)
