"""Contrast-conditional brain MRI generation with latent diffusion: data items, calibrated latent encoder, baselines."""

from __future__ import annotations

from .data import GENERATION_CONTRASTS as GENERATION_CONTRASTS
from .data import contrast_items as contrast_items
from .data import embedded_datalist as embedded_datalist
from .data import generation_transforms as generation_transforms
from .latent import GaussianLatentPrior as GaussianLatentPrior
from .latent import LatentEncoder as LatentEncoder
