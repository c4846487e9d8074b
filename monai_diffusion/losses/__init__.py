"""Losses used by the training recipes.

Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .spectral import SpectralLoss as SpectralLoss
from .spectral import spectral_distance as spectral_distance
from .weighting import MinSNRWeighting as MinSNRWeighting
from .weighting import min_snr_weight as min_snr_weight
from .weighting import snr as snr
