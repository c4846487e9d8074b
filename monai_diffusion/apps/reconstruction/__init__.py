"""Reconstruction baselines and the Gaussian-prior reference: zero-filled, L1-wavelet CS (FISTA), FBP, exact posterior."""

from __future__ import annotations

from .gaussian_prior import GaussianPriorDenoiser as GaussianPriorDenoiser
from .gaussian_prior import StationaryGaussianPrior as StationaryGaussianPrior
from .gaussian_prior import scheduler_coefficients as scheduler_coefficients
