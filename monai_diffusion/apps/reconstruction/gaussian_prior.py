"""Former home of the Gaussian-prior reference, now :mod:`monai_diffusion.exact.gaussian_prior`; re-exported here so
that existing imports keep working. ``scheduler_coefficients`` is
:func:`monai_diffusion.networks.schedulers.process.marginal_coefficients`."""

from __future__ import annotations

from monai_diffusion.exact.gaussian_prior import GaussianPriorDenoiser as GaussianPriorDenoiser
from monai_diffusion.exact.gaussian_prior import StationaryGaussianPrior as StationaryGaussianPrior
from monai_diffusion.networks.schedulers.process import marginal_coefficients as scheduler_coefficients

__all__ = ["StationaryGaussianPrior", "GaussianPriorDenoiser", "scheduler_coefficients"]
