"""Reconstruction baselines and the Gaussian-prior reference: zero-filled, L1-wavelet CS (FISTA), FBP, exact posterior."""

from __future__ import annotations

from .baselines import WaveletTransform as WaveletTransform
from .baselines import filtered_back_projection as filtered_back_projection
from .baselines import l1_wavelet_cs as l1_wavelet_cs
from .baselines import zero_filled as zero_filled
from .gaussian_prior import GaussianPriorDenoiser as GaussianPriorDenoiser
from .gaussian_prior import StationaryGaussianPrior as StationaryGaussianPrior
from .gaussian_prior import scheduler_coefficients as scheduler_coefficients
