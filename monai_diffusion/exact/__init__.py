"""Exact references: closed-form answers that samplers, guidance and posterior samplers are measured against.

Used by the tests, the benchmarks, the tutorials and the docs' figures; production code never imports this package
(``tests/test_layering.py`` checks that). One file per reference:

* ``denoiser``: :class:`ExactDenoiser`, the base of the exact "networks" (optimal prediction from a known score).
* ``mixture``: Gaussian-mixture data with exact noised scores, :class:`ExactModel`, W1 and mixture-weight errors.
* ``guidance``: exact classifier, class-conditional model, guided-ODE target and tilted density on a labelled
  mixture.
* ``gaussian_prior``: a stationary Gaussian image prior with its exact denoiser and exact MRI posterior.
* ``noise``: stratified standard normal noise (normal quantiles), the initial noise of exact-score runs.

Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .denoiser import ExactDenoiser as ExactDenoiser
from .gaussian_prior import GaussianPriorDenoiser as GaussianPriorDenoiser
from .gaussian_prior import StationaryGaussianPrior as StationaryGaussianPrior
from .guidance import ExactClassifier as ExactClassifier
from .guidance import ExactConditionalModel as ExactConditionalModel
from .guidance import TemperedLabelClassifier as TemperedLabelClassifier
from .guidance import guided_ode_quantiles as guided_ode_quantiles
from .guidance import tilted_density as tilted_density
from .guidance import wasserstein1_density as wasserstein1_density
from .guidance import wasserstein1_empirical as wasserstein1_empirical
from .mixture import ExactModel as ExactModel
from .mixture import GaussianMixture as GaussianMixture
from .mixture import mixture_weight_error as mixture_weight_error
from .mixture import wasserstein1 as wasserstein1
from .noise import stratified_normal as stratified_normal
