"""Exact guidance references on Gaussian-mixture data, for tests and ``benchmarks/guidance.py``.

Builds on :mod:`monai_diffusion.exact.mixture`: a mixture whose components carry class labels has a
closed-form noised classifier ``p_t(y | x)`` and closed-form class-conditional scores. Here:

* :class:`ExactClassifier`: ``log p_t(y | x_t)`` for every class, shaped like classifier logits (B, K).
* :class:`ExactConditionalModel`: the exact conditional network ``eps(x_t, t, y)``; a null class id gives the
  unconditional mixture, as a network trained with condition dropout would.
* :func:`guided_ode_quantiles`: the distribution that guided *deterministic* sampling converges to. With exact
  components, classifier guidance at scale ``s`` and classifier-free guidance at scale ``s`` are the same field
  ``eps_g = eps(x) - s sigma grad log p_t(y | x)``, i.e. the score ``grad log p_t(x) + s grad log p_t(y | x)``. For
  ``s != 1`` this is not the score of a diffused distribution, so its probability-flow ODE does not sample the
  tilted ``p(x) p(y|x)^s``; in 1D the ODE map is monotone, so pushing prior quantiles through a fine RK4 solve of
  the DDIM ODE ``d(x / alpha) / d(sigma / alpha) = eps_g`` (Song et al., 2021, Eq. 14) gives the target's
  quantiles to integration accuracy.
* :func:`tilted_density`: ``p(x) p(y|x)^s`` normalised numerically on a grid, to measure that gap.
* :class:`TemperedLabelClassifier`: the guidance that *does* sample the tilt. ``p(x) p(y|x)^s`` is the posterior of
  ``x`` given an auxiliary event ``e`` with likelihood ``P(e | x0) = p(y | x0)^s`` (at most 1 for ``s >= 0``). Its
  exact noised classifier ``P(e | x_t) = E[p(y | x0)^s | x_t]`` guided at scale 1 makes the sampled field the score of the diffused tilt. Per mixture component the
  posterior ``p(x0 | x_t, k)`` is Gaussian, so the expectation is a responsibility-weighted Gauss-Hermite sum.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from monai_diffusion.exact.mixture import ExactModel, GaussianMixture
from monai_diffusion.exact.noise import stratified_normal
from monai_diffusion.networks.schedulers.process import marginal_coefficients

__all__ = [
    "ExactClassifier",
    "ExactConditionalModel",
    "TemperedLabelClassifier",
    "guided_ode_quantiles",
    "tilted_density",
    "wasserstein1_empirical",
    "wasserstein1_density",
]


def _coefficients(scheduler, timesteps: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    alpha, sigma = marginal_coefficients(scheduler, torch.as_tensor(timesteps).reshape(-1))
    if alpha.numel() == 1:
        return alpha.reshape(()).to(x.device), sigma.reshape(()).to(x.device)
    return alpha.to(x.device), sigma.to(x.device)


class ExactClassifier(nn.Module):
    """``log p_t(y = k | x_t)`` for k in ``range(num_classes)``, as (B, K) "logits" (already normalised).

    Args:
        mixture: a per-sample (``elementwise=False``) mixture with component ``labels``.
        scheduler: supplies ``(alpha_t, sigma_t)``.
    """

    def __init__(self, mixture: GaussianMixture, scheduler) -> None:
        super().__init__()
        if mixture.labels is None or mixture.elementwise:
            raise ValueError("ExactClassifier needs a per-sample (elementwise=False) mixture with labels")
        self.mixture = mixture
        self.scheduler = scheduler
        self.num_classes = int(mixture.labels.max()) + 1

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **kwargs) -> torch.Tensor:
        alpha, sigma = _coefficients(self.scheduler, timesteps, x)
        x64 = x.to(torch.float64)
        out = [self.mixture.class_log_prob(x64, k, alpha, sigma) for k in range(self.num_classes)]
        return torch.stack(out, dim=1).to(x.dtype)


class ExactConditionalModel(nn.Module):
    """The exact class-conditional prediction ``model(x_t, t, class_labels=y)``; ``y == null_label`` is unconditional.

    Args:
        mixture: a mixture with component ``labels``.
        scheduler: the forward process (see :class:`~monai_diffusion.exact.mixture.ExactModel`).
        null_label: the class id that means "no condition".
        prediction_type: defaults to the scheduler's.
    """

    def __init__(
        self, mixture: GaussianMixture, scheduler, null_label: int, prediction_type: str | None = None
    ) -> None:
        super().__init__()
        if mixture.labels is None:
            raise ValueError("ExactConditionalModel needs a mixture with labels")
        self.null_label = int(null_label)
        classes = sorted({int(v) for v in mixture.labels.tolist()})
        if self.null_label in classes:
            raise ValueError(f"null_label {null_label} is a real class")
        self.models = nn.ModuleDict(
            {str(k): ExactModel(mixture.condition(k), scheduler, prediction_type) for k in classes}
        )
        self.models[str(self.null_label)] = ExactModel(mixture, scheduler, prediction_type)
        self.calls = 0

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, class_labels: torch.Tensor | None = None, **kwargs):
        self.calls += 1
        if class_labels is None:
            raise ValueError("ExactConditionalModel needs class_labels (use the null label for unconditional)")
        t = torch.as_tensor(timesteps).reshape(-1)
        out = torch.empty_like(x)
        for label in torch.unique(class_labels).tolist():
            key = str(int(label))
            if key not in self.models:
                raise ValueError(f"unknown class label {label}")
            sel = class_labels == label
            ts = t if t.numel() == 1 else t[sel]
            out[sel] = self.models[key](x[sel], ts)
        return out


class TemperedLabelClassifier(nn.Module):
    """Exact classifier of the event ``e`` with ``P(e | x0) = p(y = label | x0)^scale``, as (B, 2) logits.

    Column 1 is ``log P(e | x_t)``, column 0 ``log(1 - P(e | x_t))``, so ``log_softmax`` leaves them unchanged and
    :class:`~monai_diffusion.inferers.guidance.ClassifierGuidance` at scale 1 towards class 1 samples the tilted
    ``p(x) p(y = label | x)^scale``.

    Args:
        mixture: a per-sample (``elementwise=False``) mixture of scalar events with component ``labels``.
        scheduler: supplies ``(alpha_t, sigma_t)``.
        label: the class ``y`` of the tilt.
        scale: the tilt exponent ``s >= 0``.
        num_nodes: Gauss-Hermite nodes per component (the integrand is smooth; 64 is far beyond float64 accuracy
            for the mixtures of the tests).
    """

    nodes: torch.Tensor
    log_weights: torch.Tensor

    def __init__(self, mixture: GaussianMixture, scheduler, label: int, scale: float, num_nodes: int = 64) -> None:
        super().__init__()
        if mixture.labels is None or mixture.elementwise or int(torch.tensor(mixture.means.shape[1:]).prod()) != 1:
            raise ValueError("TemperedLabelClassifier needs a per-sample mixture of scalar events with labels")
        if scale < 0:
            raise ValueError(f"the tilt exponent must be >= 0 (a likelihood power at most 1), got {scale}")
        self.mixture = mixture
        self.scheduler = scheduler
        self.label = int(label)
        self.scale = float(scale)
        nodes, weights = np.polynomial.hermite_e.hermegauss(num_nodes)  # probabilists': weight exp(-z^2 / 2)
        self.register_buffer("nodes", torch.as_tensor(nodes, dtype=torch.float64))
        self.register_buffer("log_weights", torch.as_tensor(np.log(weights / np.sqrt(2 * np.pi)), dtype=torch.float64))

    def log_event_prob(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``log E[p(y | x0)^s | x_t = x]`` per sample, differentiable in ``x`` (float64)."""
        mix = self.mixture
        a = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
        log_resp = mix.component_log_posterior(x.to(torch.float64), a, s)  # (B, K)
        x64 = x.to(torch.float64).reshape(x.shape[0], 1)
        a, s2 = a.reshape(-1, 1), s.reshape(-1, 1) ** 2
        mu = mix.means.reshape(1, -1).to(x64)
        v0 = (mix.stds.reshape(1, -1) ** 2).to(x64)
        post_mean = (s2 * mu + a * v0 * x64) / (s2 + a**2 * v0)  # p(x0 | x_t, k) = N(post_mean, post_var)
        post_var = v0 * s2 / (s2 + a**2 * v0)
        x0 = post_mean.unsqueeze(-1) + post_var.sqrt().unsqueeze(-1) * self.nodes  # (B, K, J)
        shape = (-1, *mix.means.shape[1:])
        log_lik_y = mix.class_log_prob(x0.reshape(shape), self.label, 1.0, 0.0).reshape(x0.shape)
        terms = log_resp.unsqueeze(-1) + self.log_weights + self.scale * log_lik_y
        return torch.logsumexp(terms.flatten(1), dim=1)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, **kwargs) -> torch.Tensor:
        alpha, sigma = _coefficients(self.scheduler, timesteps, x)
        alpha = alpha.expand(x.shape[0]) if alpha.ndim == 0 else alpha
        sigma = sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma
        log_p = self.log_event_prob(x, alpha, sigma).clamp(max=-1e-12)  # keeps log(1 - p) finite
        return torch.stack([torch.log(-torch.expm1(log_p)), log_p], dim=1).to(x.dtype)


def _vp_guided_eps(mixture: GaussianMixture, x: torch.Tensor, label: int, scale: float, lam: float) -> torch.Tensor:
    alpha = (1.0 + lam**2) ** -0.5
    sigma = lam * alpha
    eps = mixture.epsilon(x, alpha, sigma)
    if scale == 0.0:
        return eps
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(mixture.class_log_prob(xg, label, alpha, sigma).sum(), xg)
    return eps - scale * sigma * grad


def guided_ode_quantiles(
    mixture: GaussianMixture,
    label: int,
    scale: float,
    alpha_start: float,
    sigma_start: float,
    num_points: int = 20000,
    num_steps: int = 400,
    lambda_min: float = 1e-4,
) -> torch.Tensor:
    """Quantiles of the output of the guided VP probability-flow ODE started from ``N(0, 1)``.

    Solves ``dy/dlambda = eps_g(alpha y, lambda)`` with ``y = x / alpha``, ``lambda = sigma / alpha`` (the
    DDIM ODE, Song et al., 2021, Eq. 14; VP: ``alpha = (1 + lambda^2)^(-1/2)``) by RK4 on a geometric grid from
    ``sigma_start / alpha_start`` down to ``lambda_min`` and one last Euler step to 0.

    Args:
        mixture: a per-sample mixture of scalar events (means of shape (K, 1, ...)) with labels.
        label: the guided class.
        scale: the guidance scale ``s``.
        alpha_start, sigma_start: coefficients at the first sampler timestep.
        num_points: number of quantiles (probabilities ``(i + 0.5) / num_points``).
        num_steps: RK4 steps.
        lambda_min: where the geometric grid stops.

    Returns:
        sorted float64 quantiles of shape (num_points,).
    """
    if mixture.elementwise or int(torch.tensor(mixture.means.shape[1:]).prod()) != 1:
        raise ValueError("guided_ode_quantiles needs a per-sample mixture of scalar events")
    event = tuple(mixture.means.shape[1:])
    z = stratified_normal((num_points, *event), seed=None, dtype=torch.float64)
    lam0 = sigma_start / alpha_start
    y = z / alpha_start
    geometric = torch.logspace(torch.log10(torch.tensor(lam0)), torch.log10(torch.tensor(lambda_min)), num_steps + 1)
    lams: list[float] = [float(v) for v in geometric] + [0.0]

    def f(yv: torch.Tensor, lam: float) -> torch.Tensor:
        alpha = (1.0 + lam**2) ** -0.5
        return _vp_guided_eps(mixture, alpha * yv, label, scale, lam)

    for i in range(len(lams) - 1):
        l0, l1 = lams[i], lams[i + 1]
        h = l1 - l0
        if l1 == 0.0:
            y = y + h * f(y, l0)
            break
        k1 = f(y, l0)
        k2 = f(y + 0.5 * h * k1, l0 + 0.5 * h)
        k3 = f(y + 0.5 * h * k2, l0 + 0.5 * h)
        k4 = f(y + h * k3, l1)
        y = y + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return torch.sort(y.flatten())[0]


def tilted_density(mixture: GaussianMixture, label: int, scale: float, grid: torch.Tensor) -> torch.Tensor:
    """``p(x) p(y = label | x)^scale`` on a 1D ``grid`` of scalar events, normalised by the trapezoid rule."""
    g = grid.to(torch.float64).reshape(-1, *mixture.means.shape[1:])
    logd = mixture.log_prob(g) + scale * mixture.class_log_prob(g, label, 1.0, 0.0)
    d = torch.exp(logd - logd.max())
    return d / torch.trapezoid(d, grid.to(torch.float64))


def wasserstein1_empirical(a: torch.Tensor, b: torch.Tensor) -> float:
    """1-Wasserstein distance between two 1D empirical distributions, ``integral |F_a - F_b|``."""
    xa = torch.sort(a.detach().flatten().to(torch.float64).cpu())[0]
    xb = torch.sort(b.detach().flatten().to(torch.float64).cpu())[0]
    if not (torch.isfinite(xa).all() and torch.isfinite(xb).all()):
        return float("inf")
    z = torch.sort(torch.cat([xa, xb]))[0]
    fa = torch.searchsorted(xa, z[:-1], right=True).to(torch.float64) / xa.numel()
    fb = torch.searchsorted(xb, z[:-1], right=True).to(torch.float64) / xb.numel()
    return float(((fa - fb).abs() * torch.diff(z)).sum())


def wasserstein1_density(samples: torch.Tensor, grid: torch.Tensor, density: torch.Tensor) -> float:
    """1-Wasserstein distance between 1D samples and a density tabulated on a fine ascending grid."""
    g = grid.to(torch.float64)
    cdf = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumulative_trapezoid(density.to(torch.float64), g)])
    xs = torch.sort(samples.detach().flatten().to(torch.float64).cpu())[0]
    f_emp = torch.searchsorted(xs, g, right=True).to(torch.float64) / xs.numel()
    return float(torch.trapezoid((f_emp - cdf).abs(), g))
