"""Classical denoising baselines for MR magnitude images: non-local means and total variation.

* Non-local means (Buades, Coll & Morel, "A non-local algorithm for image denoising", CVPR 2005): each voxel
  becomes a weighted mean of the voxels in a search window, weighted by the similarity of the patches around
  them; :func:`skimage.restoration.denoise_nl_means` with its fast (integral-image) mode, filtering parameter
  ``h = h_factor * sigma`` and the patch distances reduced by ``2 sigma^2`` (``sigma=sigma``).
* Total variation (Rudin, Osher & Fatemi, "Nonlinear total variation based noise removal algorithms", Physica D
  60:259-268, 1992), solved with Chambolle's projection algorithm (Chambolle, "An algorithm for total variation
  minimization and applications", J. Math. Imaging Vis. 20:89-97, 2004);
  :func:`skimage.restoration.denoise_tv_chambolle` with ``weight = weight_factor * sigma``.

Both run on the CPU with NumPy, one batch item and channel at a time, on 2D or 3D images; the noise level
``sigma`` is given, or estimated per item with :func:`~monai_diffusion.apps.denoising.noise.estimate_noise_sigma`
(wavelet MAD, Donoho & Johnstone 1994; biased on Rician images, see there). Their strength factors are meant to be
chosen with :func:`tune_factor` on a validation split. The Rician noise model is that of Gudbjartsson & Patz
(MRM 1995), see :mod:`monai_diffusion.apps.denoising.noise`; neither baseline corrects the Rician bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from skimage.restoration import denoise_nl_means, denoise_tv_chambolle

from monai_diffusion.apps.denoising.noise import SigmaLike, check_image, estimate_noise_sigma, sigma_per_item
from monai_diffusion.metrics.image import masked_psnr

__all__ = ["nlm_denoise", "tv_denoise", "tune_factor"]


def _check_factor(value: float, name: str) -> float:
    """A finite non-negative real number, as a float (ValueError naming ``name`` otherwise)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}.")
    if not math.isfinite(float(value)) or value < 0:
        raise ValueError(f"{name} must be finite and non-negative, got {value!r}.")
    return float(value)


def _check_size(value: int, name: str) -> int:
    """A positive integer (ValueError naming ``name`` otherwise)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _per_item(
    noisy: torch.Tensor, sigma: SigmaLike | None, filter_fn: Callable[[np.ndarray, float], np.ndarray]
) -> torch.Tensor:
    """Apply ``filter_fn(array, sigma_b)`` to each item's channels; items with ``sigma_b = 0`` are left as they are."""
    check_image(noisy, "noisy")
    batch = noisy.shape[0]
    levels = estimate_noise_sigma(noisy).double().cpu() if sigma is None else sigma_per_item(sigma, batch, "sigma")
    arrays = noisy.detach().to(device="cpu", dtype=torch.float64).numpy()
    out = np.empty_like(arrays)
    for b, item in enumerate(arrays):
        level = float(levels[b])
        for c, channel in enumerate(item):
            out[b, c] = filter_fn(channel, level) if level > 0 else channel
    return torch.from_numpy(out).to(device=noisy.device, dtype=noisy.dtype)


def nlm_denoise(
    noisy: torch.Tensor,
    sigma: SigmaLike | None = None,
    h_factor: float = 0.8,
    patch_size: int = 5,
    patch_distance: int = 6,
) -> torch.Tensor:
    """Non-local means denoising of each batch item (Buades et al. 2005) with scikit-image.

    Calls ``denoise_nl_means(x, patch_size, patch_distance, h=h_factor * sigma, fast_mode=True, sigma=sigma)`` on
    each channel of each item.

    Args:
        noisy: ``(B, C, *spatial)`` noisy images (2 or 3 spatial dims).
        sigma: noise level, a number or a ``(B,)`` tensor; ``None`` estimates it per item with
            :func:`~monai_diffusion.apps.denoising.noise.estimate_noise_sigma`. Items with level 0 are returned
            unchanged.
        h_factor: filtering strength relative to ``sigma``.
        patch_size: side of the compared patches, in voxels.
        patch_distance: maximal distance, in voxels, of the patches searched (window side ``2 * d + 1``).

    Returns:
        The denoised images, of the input's shape, dtype and device.

    Raises:
        ValueError: for a bad ``noisy`` (see :func:`~monai_diffusion.apps.denoising.noise.check_image`), ``sigma``
            or parameter.
    """
    h_factor = _check_factor(h_factor, "h_factor")
    patch_size = _check_size(patch_size, "patch_size")
    patch_distance = _check_size(patch_distance, "patch_distance")

    def nlm(array: np.ndarray, level: float) -> np.ndarray:
        return np.asarray(
            denoise_nl_means(
                array,
                patch_size=patch_size,
                patch_distance=patch_distance,
                h=h_factor * level,
                fast_mode=True,
                sigma=level,
                channel_axis=None,
            )
        )

    return _per_item(noisy, sigma, nlm)


def tv_denoise(noisy: torch.Tensor, sigma: SigmaLike | None = None, weight_factor: float = 1.0) -> torch.Tensor:
    """Total-variation denoising of each batch item (Rudin-Osher-Fatemi, Chambolle's algorithm) with scikit-image.

    Calls ``denoise_tv_chambolle(x, weight=weight_factor * sigma)`` on each channel of each item (a larger weight
    removes more noise at the cost of fidelity to the input).

    Args:
        noisy: ``(B, C, *spatial)`` noisy images (2 or 3 spatial dims).
        sigma: noise level, a number or a ``(B,)`` tensor; ``None`` estimates it per item with
            :func:`~monai_diffusion.apps.denoising.noise.estimate_noise_sigma`. Items with level 0 are returned
            unchanged.
        weight_factor: TV weight relative to ``sigma``.

    Returns:
        The denoised images, of the input's shape, dtype and device.

    Raises:
        ValueError: for a bad ``noisy`` (see :func:`~monai_diffusion.apps.denoising.noise.check_image`), ``sigma``
            or ``weight_factor``.
    """
    weight_factor = _check_factor(weight_factor, "weight_factor")

    def tv(array: np.ndarray, level: float) -> np.ndarray:
        if weight_factor == 0:
            return array
        return np.asarray(denoise_tv_chambolle(array, weight=weight_factor * level, channel_axis=None))

    return _per_item(noisy, sigma, tv)


_FACTOR_NAMES: dict[Callable[..., torch.Tensor], str] = {nlm_denoise: "h_factor", tv_denoise: "weight_factor"}


def tune_factor(
    denoise_fn: Callable[..., torch.Tensor],
    noisy: torch.Tensor,
    clean: torch.Tensor,
    mask: torch.Tensor,
    factors: Sequence[float],
    factor_name: str | None = None,
    **kwargs: Any,
) -> tuple[float, dict[float, float]]:
    """Grid-search the strength factor of a denoiser for the best mean masked PSNR; use a validation split only.

    For each factor ``f``, runs ``denoise_fn(noisy, **{factor_name: f}, **kwargs)`` and scores it with
    :func:`~monai_diffusion.metrics.masked_psnr` against ``clean`` (``data_range=1.0``), averaged over the items.

    Args:
        denoise_fn: the denoiser, e.g. :func:`nlm_denoise` or :func:`tv_denoise`.
        noisy: ``(B, C, *spatial)`` noisy validation images.
        clean: the matching noiseless images.
        mask: ``(B, 1 or C, *spatial)`` region to score (nonzero), e.g. the brain.
        factors: the candidate factors (at least one).
        factor_name: the keyword of ``denoise_fn`` that takes the factor; ``None`` is ``"h_factor"`` for
            :func:`nlm_denoise` and ``"weight_factor"`` for :func:`tv_denoise` (required for other denoisers).
        **kwargs: further keyword arguments of ``denoise_fn`` (e.g. ``sigma``, ``patch_size``).

    Returns:
        ``(best_factor, table)``: the factor with the highest mean masked PSNR (the first one on a tie) and
        ``{factor: mean masked PSNR in dB}`` for every candidate, in the given order.

    Raises:
        ValueError: for no or non-numeric ``factors``, a missing ``factor_name``, a ``factor_name`` also in
            ``kwargs``, mismatched ``noisy``/``clean`` shapes, a bad or empty ``mask``, or a bad input to the
            denoiser.
    """
    if not callable(denoise_fn):
        raise ValueError(f"denoise_fn must be callable, got {type(denoise_fn).__name__}.")
    if factor_name is None:
        if denoise_fn not in _FACTOR_NAMES:
            raise ValueError("factor_name is required for a denoiser other than nlm_denoise or tv_denoise.")
        factor_name = _FACTOR_NAMES[denoise_fn]
    if not isinstance(factor_name, str) or not factor_name:
        raise ValueError(f"factor_name must be a non-empty string, got {factor_name!r}.")
    if factor_name in kwargs:
        raise ValueError(f"{factor_name!r} is the tuned factor; do not pass it in kwargs.")
    if isinstance(factors, (str, bytes)) or not isinstance(factors, Sequence) or len(factors) == 0:
        raise ValueError(f"factors must be a non-empty sequence of numbers, got {factors!r}.")
    candidates = [_check_factor(f, "factors") for f in factors]
    check_image(noisy, "noisy")
    check_image(clean, "clean")
    if clean.shape != noisy.shape:
        raise ValueError(f"clean must have the shape of noisy {tuple(noisy.shape)}, got {tuple(clean.shape)}.")
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"mask must be a torch.Tensor, got {type(mask).__name__}.")
    masked_psnr(noisy, clean, mask, data_range=1.0)  # checks the mask (shape, non-empty) before the search
    table: dict[float, float] = {}
    for factor in candidates:
        pred = denoise_fn(noisy, **{factor_name: factor}, **kwargs)
        table[factor] = float(masked_psnr(pred, clean, mask, data_range=1.0).mean())
    best = max(candidates, key=lambda f: table[f])
    return best, table
