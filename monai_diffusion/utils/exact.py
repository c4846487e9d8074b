"""Former home of the Gaussian-mixture references, now :mod:`monai_diffusion.exact.mixture`; re-exported here so that
existing imports keep working."""

from __future__ import annotations

from monai_diffusion.exact.mixture import ExactModel as ExactModel
from monai_diffusion.exact.mixture import GaussianMixture as GaussianMixture
from monai_diffusion.exact.mixture import mixture_weight_error as mixture_weight_error
from monai_diffusion.exact.mixture import wasserstein1 as wasserstein1

__all__ = ["GaussianMixture", "ExactModel", "wasserstein1", "mixture_weight_error"]
