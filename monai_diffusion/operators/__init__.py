"""Linear forward operators for inverse problems (MRI, CT, super-resolution, inpainting, denoising)."""

from __future__ import annotations

from .base import LinearOperator, batch_inner, conjugate_gradient, power_iteration
from .ct import ParallelBeamCT, radon_weights, ramp_filter
from .imaging import IdentityOperator, InpaintingOperator, SuperResolutionOperator
from .mri import (
    MRIOperator,
    effective_mask,
    fft_centered,
    hermitian_flip,
    ifft_centered,
    root_sum_of_squares,
    smooth_phase,
    synthetic_coil_maps,
)

__all__ = [
    "LinearOperator",
    "batch_inner",
    "conjugate_gradient",
    "power_iteration",
    "ParallelBeamCT",
    "ramp_filter",
    "radon_weights",
    "IdentityOperator",
    "InpaintingOperator",
    "SuperResolutionOperator",
    "MRIOperator",
    "effective_mask",
    "fft_centered",
    "hermitian_flip",
    "ifft_centered",
    "root_sum_of_squares",
    "smooth_phase",
    "synthetic_coil_maps",
]
