"""Closed-form denoisers for Gaussian-mixture data: the exact answers that samplers are tested against.

For data ``x0 ~ sum_k w_k N(mu_k, diag(s_k^2))`` and any forward process of the form
``x_t = alpha_t * x0 + sigma_t * eps`` (VP: ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``;
VE: ``alpha = 1``; sub-VP: its own pair), the noised marginal is again a Gaussian mixture,

    p_t(x) = sum_k w_k N(x; alpha mu_k, diag(alpha^2 s_k^2 + sigma^2)),

so its score, the posterior mean ``E[x0 | x_t]`` (Tweedie) and the optimal noise prediction are closed-form.
This module holds those formulas as small pure functions on a frozen parameter object.

Two layouts are supported:

* ``elementwise=True``: every element of every sample is an independent draw from the 1D mixture with
  parameters of shape ``(K,)``. A batch of 8 images of 64x64 is then 32768 i.i.d. draws, which makes
  distribution errors (Wasserstein distance, mixture weights) cheap to estimate precisely.
* ``elementwise=False``: the mixture is over whole samples; ``means``/``stds`` have shape ``(K, *event_shape)``.
  A component may carry a class label so that class-conditional scores and the exact classifier
  ``p(y | x_t)`` are available for guidance tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from monai_diffusion.exact.denoiser import ExactDenoiser
from monai_diffusion.networks.schedulers.process import PredictionType, as_batch_coefficient

__all__ = ["GaussianMixture", "ExactModel", "wasserstein1", "mixture_weight_error"]


@dataclass(frozen=True)
class GaussianMixture:
    """A Gaussian mixture with diagonal covariances and its exact noised-marginal quantities.

    Args:
        weights: mixture weights, shape (K,); normalised internally.
        means: component means, shape (K,) if ``elementwise`` else (K, *event_shape).
        stds: component standard deviations, same shape as ``means`` (must be positive).
        elementwise: whether each element is an independent draw of a 1D mixture (see module docs).
        labels: optional class label per component, shape (K,), for class-conditional quantities.
    """

    weights: torch.Tensor
    means: torch.Tensor
    stds: torch.Tensor
    elementwise: bool = True
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        w = torch.as_tensor(self.weights, dtype=torch.float64)
        m = torch.as_tensor(self.means, dtype=torch.float64)
        s = torch.as_tensor(self.stds, dtype=torch.float64)
        if w.ndim != 1 or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be a non-negative 1D tensor with positive sum, got {w}")
        if m.shape != s.shape or m.shape[0] != w.shape[0]:
            raise ValueError(f"means {tuple(m.shape)} and stds {tuple(s.shape)} must both start with K={w.shape[0]}")
        if self.elementwise and m.ndim != 1:
            raise ValueError("elementwise mixtures take means and stds of shape (K,)")
        if (s <= 0).any():
            raise ValueError("stds must be positive")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "stds", s)
        if self.labels is not None:
            lab = torch.as_tensor(self.labels, dtype=torch.long)
            if lab.shape != w.shape:
                raise ValueError(f"labels must have shape ({w.shape[0]},), got {tuple(lab.shape)}")
            object.__setattr__(self, "labels", lab)

    @property
    def num_components(self) -> int:
        return int(self.weights.shape[0])

    # ------------------------------------------------------------------ sampling
    def sample(self, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw data of ``shape`` = (B, *event_shape) in float64."""
        shape = tuple(shape)
        if self.elementwise:
            comp = torch.multinomial(
                self.weights, int(torch.tensor(shape).prod()), replacement=True, generator=generator
            )
            comp = comp.reshape(shape)
            noise = torch.randn(shape, generator=generator, dtype=torch.float64)
            return self.means[comp] + self.stds[comp] * noise
        if tuple(self.means.shape[1:]) != shape[1:]:
            raise ValueError(f"event shape {shape[1:]} does not match the means' {tuple(self.means.shape[1:])}")
        comp = torch.multinomial(self.weights, shape[0], replacement=True, generator=generator)
        noise = torch.randn(shape, generator=generator, dtype=torch.float64)
        return self.means[comp] + self.stds[comp] * noise

    def condition(self, label: int) -> GaussianMixture:
        """The mixture restricted to the components of class ``label`` (weights renormalised)."""
        if self.labels is None:
            raise ValueError("this mixture has no component labels")
        keep = self.labels == label
        if not keep.any():
            raise ValueError(f"no component carries label {label}")
        return GaussianMixture(
            self.weights[keep], self.means[keep], self.stds[keep], self.elementwise, self.labels[keep]
        )

    # ------------------------------------------------------------------ noised marginal
    def _component_terms(
        self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-component log-likelihood of x_t, its mean and variance, with a trailing/leading K axis.

        Returns ``(loglik, mean_t, var_t)``; for elementwise mixtures ``loglik`` has shape (*x.shape, K),
        otherwise (B, K). ``mean_t``/``var_t`` broadcast against ``x`` with the K axis last (elementwise)
        or first after the batch axis (per-sample).
        """
        a = as_batch_coefficient(alpha, x)
        s = as_batch_coefficient(sigma, x)
        mu = self.means.to(x)
        sd = self.stds.to(x)
        if self.elementwise:
            xk = x.unsqueeze(-1)
            a1 = a if a.ndim == 0 else a.unsqueeze(-1)
            s1 = s if s.ndim == 0 else s.unsqueeze(-1)
            mean_t = a1 * mu
            var_t = (a1 * sd) ** 2 + s1**2
            ll = -0.5 * ((xk - mean_t) ** 2 / var_t + torch.log(2 * torch.pi * var_t))
            return ll, mean_t, var_t
        xk = x.unsqueeze(1)  # (B, 1, *event)
        a1 = a if a.ndim == 0 else a.unsqueeze(1)
        s1 = s if s.ndim == 0 else s.unsqueeze(1)
        mean_t = a1 * mu.unsqueeze(0)
        var_t = (a1 * sd.unsqueeze(0)) ** 2 + s1**2
        ll = -0.5 * ((xk - mean_t) ** 2 / var_t + torch.log(2 * torch.pi * var_t))
        return ll.flatten(2).sum(-1), mean_t, var_t

    def _responsibilities(self, ll: torch.Tensor) -> torch.Tensor:
        return torch.softmax(ll + torch.log(self.weights.to(ll)), dim=-1)

    def component_log_posterior(
        self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """``log p(k | x_t = x)`` for every component ``k``, K last (per element if elementwise, else (B, K))."""
        ll, _, _ = self._component_terms(x, alpha, sigma)
        return torch.log_softmax(ll + torch.log(self.weights.to(ll)), dim=-1)

    def log_prob(
        self, x: torch.Tensor, alpha: float | torch.Tensor = 1.0, sigma: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        """log p_t(x) per element (elementwise) or per sample, differentiable in ``x``."""
        ll, _, _ = self._component_terms(x, alpha, sigma)
        return torch.logsumexp(ll + torch.log(self.weights.to(ll)), dim=-1)

    def score(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact score grad_x log p_t(x) of the noised marginal."""
        ll, mean_t, var_t = self._component_terms(x, alpha, sigma)
        r = self._responsibilities(ll)
        if self.elementwise:
            return (r * (mean_t - x.unsqueeze(-1)) / var_t).sum(-1)
        r = r.reshape(*r.shape, *([1] * (x.ndim - 1)))
        return (r * (mean_t - x.unsqueeze(1)) / var_t).sum(1)

    def posterior_mean(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact E[x0 | x_t = x] by Tweedie's formula: (x + sigma^2 * score) / alpha."""
        a = as_batch_coefficient(alpha, x)
        s = as_batch_coefficient(sigma, x)
        return (x + s**2 * self.score(x, alpha, sigma)) / a

    def epsilon(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact optimal noise prediction E[eps | x_t = x] = -sigma * score."""
        return -as_batch_coefficient(sigma, x) * self.score(x, alpha, sigma)

    def velocity(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact v-prediction E[alpha * eps - sigma * x0 | x_t = x] (Salimans & Ho, 2022)."""
        x0, eps = self.posterior_mean(x, alpha, sigma), self.epsilon(x, alpha, sigma)
        return PredictionType.V_PREDICTION.from_x0_eps(x0, eps, alpha, sigma)

    def class_log_prob(
        self, x: torch.Tensor, label: int | torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor
    ) -> torch.Tensor:
        """Exact log p(y = label | x_t = x) of the noised data (per sample; per element if elementwise)."""
        if self.labels is None:
            raise ValueError("this mixture has no component labels")
        logpost = self.component_log_posterior(x, alpha, sigma)
        lab = torch.as_tensor(label, device=x.device)
        if lab.ndim == 0:
            mask = self.labels.to(x.device) == lab
            return torch.logsumexp(logpost.masked_fill(~mask, float("-inf")), dim=-1)
        if lab.shape[0] != x.shape[0]:
            raise ValueError(f"labels must have shape ({x.shape[0]},), got {tuple(lab.shape)}")
        mask = self.labels.to(x.device).unsqueeze(0) == lab.unsqueeze(1)  # (B, K)
        if self.elementwise:
            mask = mask.reshape(x.shape[0], *([1] * (x.ndim - 1)), -1)
        return torch.logsumexp(logpost.masked_fill(~mask, float("-inf")), dim=-1)

    # ------------------------------------------------------------------ 1D summaries
    def cdf(self, values: torch.Tensor) -> torch.Tensor:
        """CDF of an elementwise (1D) mixture."""
        if not self.elementwise:
            raise ValueError("cdf is defined for elementwise (1D) mixtures")
        v = values.to(torch.float64).unsqueeze(-1)
        z = (v - self.means) / (self.stds * 2**0.5)
        return (self.weights * 0.5 * (1 + torch.erf(z))).sum(-1)


def wasserstein1(samples: torch.Tensor, mixture: GaussianMixture, grid_size: int = 20001) -> float:
    """1-Wasserstein distance between the empirical 1D distribution of ``samples`` and an elementwise mixture.

    Computed as the integral of |F_emp - F_true| on a fine grid covering both distributions.
    """
    x = samples.detach().flatten().to(torch.float64).cpu()
    if not torch.isfinite(x).all():
        return float("inf")
    span = (mixture.means.abs() + 8 * mixture.stds).max().item()
    lo = min(x.min().item(), -span)
    hi = max(x.max().item(), span)
    grid = torch.linspace(lo, hi, grid_size, dtype=torch.float64)
    xs, _ = torch.sort(x)
    f_emp = torch.searchsorted(xs, grid, right=True).to(torch.float64) / xs.numel()
    f_true = mixture.cdf(grid)
    return float(torch.trapezoid((f_emp - f_true).abs(), grid))


def mixture_weight_error(samples: torch.Tensor, mixture: GaussianMixture) -> float:
    """Largest absolute error of the share of samples nearest to each component mean (1D mixtures).

    Each sample is assigned to the component with the highest responsibility under the *clean* mixture,
    both for the samples and (by Monte Carlo free integration) for the true mixture, so the comparison is
    between like quantities: the expected share under the true mixture is computed by quadrature.
    """
    if not mixture.elementwise:
        raise ValueError("mixture_weight_error is defined for elementwise (1D) mixtures")
    x = samples.detach().flatten().to(torch.float64).cpu()

    def assign(v: torch.Tensor) -> torch.Tensor:
        ll, _, _ = mixture._component_terms(v, 1.0, 0.0)
        return (ll + torch.log(mixture.weights)).argmax(-1)

    share = torch.bincount(assign(x), minlength=mixture.num_components).to(torch.float64) / x.numel()
    span = (mixture.means.abs() + 10 * mixture.stds).max().item()
    grid = torch.linspace(-span, span, 200001, dtype=torch.float64)
    dens = torch.exp(mixture.log_prob(grid))
    owner = assign(grid)
    expected = torch.stack([torch.trapezoid(dens * (owner == k), grid) for k in range(mixture.num_components)])
    return float((share - expected).abs().max())


class ExactModel(ExactDenoiser):
    """A "network" whose output is the exact optimal prediction for Gaussian-mixture data.

    It maps ``(x_t, timesteps)`` to the exact epsilon, x0 (``"sample"``) or v prediction under the forward process
    ``x_t = alpha_t x0 + sigma_t eps`` of a scheduler, so any sampler can be driven by the true score (see
    :class:`~monai_diffusion.exact.denoiser.ExactDenoiser`).

    Args:
        mixture: the data distribution.
        scheduler: the forward process: any scheduler of this package, or a MONAI/diffusers scheduler with an
            ``alphas_cumprod`` table (fractional timesteps as defined in
            :func:`~monai_diffusion.networks.schedulers.process.table_coefficients`).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``; defaults to the scheduler's own.

    The call signature ``model(x, timesteps, **conditioning)`` matches MONAI's ``DiffusionModelUNet``;
    conditioning keywords are accepted and ignored. Computation is in float64; the output has ``x``'s dtype.
    """

    def __init__(self, mixture: GaussianMixture, scheduler, prediction_type: str | None = None) -> None:
        super().__init__(scheduler, prediction_type)
        self.mixture = mixture

    def score(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.mixture.score(x, alpha, sigma)
