"""Super-resolution of brain MR slices with the healthy-brain diffusion prior (DDNM, Score-MRI-style data
consistency, DPS, MCG through the one sampling loop), interpolation and L1-wavelet baselines, and the evaluation
against the exact noiseless images."""

from __future__ import annotations

from .evaluation import degrade as degrade
from .evaluation import load_super_resolution_data as load_super_resolution_data
from .evaluation import low_res_items as low_res_items
from .evaluation import super_resolution_items as super_resolution_items
from .evaluation import super_resolution_report as super_resolution_report
from .evaluation import super_resolve_low_res as super_resolve_low_res
from .methods import SR_METHODS as SR_METHODS
from .methods import DiffusionSuperResolution as DiffusionSuperResolution
from .methods import InterpolationSuperResolution as InterpolationSuperResolution
from .methods import WaveletSuperResolution as WaveletSuperResolution
from .methods import check_low_res as check_low_res
