"""Former home of the exact guidance references, now :mod:`monai_diffusion.exact.guidance`; re-exported here so that
existing imports keep working."""

from __future__ import annotations

from monai_diffusion.exact.guidance import ExactClassifier as ExactClassifier
from monai_diffusion.exact.guidance import ExactConditionalModel as ExactConditionalModel
from monai_diffusion.exact.guidance import TemperedLabelClassifier as TemperedLabelClassifier
from monai_diffusion.exact.guidance import guided_ode_quantiles as guided_ode_quantiles
from monai_diffusion.exact.guidance import tilted_density as tilted_density
from monai_diffusion.exact.guidance import wasserstein1_density as wasserstein1_density
from monai_diffusion.exact.guidance import wasserstein1_empirical as wasserstein1_empirical

__all__ = [
    "ExactClassifier",
    "ExactConditionalModel",
    "TemperedLabelClassifier",
    "guided_ode_quantiles",
    "tilted_density",
    "wasserstein1_empirical",
    "wasserstein1_density",
]
