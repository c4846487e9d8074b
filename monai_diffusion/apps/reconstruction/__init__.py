"""Reconstruction baselines: zero-filled, L1-wavelet CS (FISTA), FBP; accelerated MRI with a diffusion prior
(:mod:`.mri`: ``PosteriorReconstructor``, ``simulate_kspace``) and its evaluation (:mod:`.evaluation`), loaded on
first use.

The Gaussian-prior reference (exact score and posterior) lives in :mod:`monai_diffusion.exact.gaussian_prior`;
``StationaryGaussianPrior``, ``GaussianPriorDenoiser`` and ``scheduler_coefficients`` are still importable from here
(loaded on first use, so that importing this package does not import the exact references)."""

from __future__ import annotations

from typing import Any

from .baselines import WaveletTransform as WaveletTransform
from .baselines import filtered_back_projection as filtered_back_projection
from .baselines import l1_wavelet_cs as l1_wavelet_cs
from .baselines import zero_filled as zero_filled

_MOVED = ("GaussianPriorDenoiser", "StationaryGaussianPrior", "scheduler_coefficients")
_LAZY = {
    "CSReconstructor": "mri",
    "PosteriorMethod": "mri",
    "PosteriorReconstructor": "mri",
    "ZeroFilledReconstructor": "mri",
    "sampling_masks": "mri",
    "simulate_kspace": "mri",
    "load_reconstruction_data": "evaluation",
    "reconstruction_items": "evaluation",
    "reconstruction_report": "evaluation",
}
__all__ = ["WaveletTransform", "filtered_back_projection", "l1_wavelet_cs", "zero_filled", *_MOVED, *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from . import gaussian_prior

        return getattr(gaussian_prior, name)
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
