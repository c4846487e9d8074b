"""Step maths of the score-SDE samplers: small pure functions of ``(x, score, sde, times)``.

Equation numbers refer to Song et al., "Score-Based Generative Modeling through Stochastic Differential Equations",
ICLR 2021 ([SDE]). The samplers that call them are in :mod:`.sde`; the SDEs in :mod:`.sde_definitions`.
"""

from __future__ import annotations

import torch

from monai_diffusion.networks.schedulers.process import as_batch_coefficient
from monai_diffusion.networks.schedulers.sde_definitions import SDE

__all__ = ["euler_maruyama_step", "reverse_diffusion_step", "langevin_corrector_step", "probability_flow_derivative"]


def euler_maruyama_step(
    x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse-time SDE ([SDE] eq. 6) from ``t`` down to ``s < t``.

    ``x_s = x_t - [f(x_t, t) - g(t)^2 score] (t - s) + g(t) sqrt(t - s) z``; no noise term when ``noise`` is None.
    """
    dt = t - s
    g = sde.diffusion(t)
    out = x - (sde.drift(x, t) - as_batch_coefficient(g**2, x) * score) * as_batch_coefficient(dt, x)
    if noise is not None:
        out = out + as_batch_coefficient(g * dt.sqrt(), x) * noise
    return out


def reverse_diffusion_step(
    x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor, s: torch.Tensor, noise: torch.Tensor | None
) -> torch.Tensor:
    """The reverse-diffusion predictor ([SDE] eq. 46/47) from ``t`` down to ``s``.

    With the forward step ``x_t = x_s + f_i + G_i z`` (``f_i = (a - 1) x``, ``G_i = b`` from
    :meth:`SDE.transition`): ``x_s = x_t - f_i + G_i^2 score + G_i z``.
    """
    a, b = sde.transition(t, s)
    out = x - as_batch_coefficient(a - 1.0, x) * x + as_batch_coefficient(b**2, x) * score
    if noise is not None:
        out = out + as_batch_coefficient(b, x) * noise
    return out


def langevin_corrector_step(
    x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor, snr: float, alpha: torch.Tensor | float = 1.0
) -> torch.Tensor:
    """One Langevin MCMC step with the step size set by a signal-to-noise ratio ([SDE] Algorithms 4 and 5).

    ``eps = 2 alpha (snr ||z|| / ||score||)^2`` per sample (norms over all non-batch dimensions), then
    ``x + eps score + sqrt(2 eps) z``. A sample whose score is exactly zero (e.g. a freshly built MONAI UNet, whose
    output layer starts at zero) has no step size: it is left unchanged instead of turning into ``inf * 0 = NaN``.
    """
    dims = tuple(range(1, x.ndim))
    grad_norm = torch.linalg.vector_norm(score, dim=dims)
    noise_norm = torch.linalg.vector_norm(noise, dim=dims)
    ratio = torch.where(grad_norm > 0, noise_norm / grad_norm.clamp_min(torch.finfo(grad_norm.dtype).tiny), 0.0)
    step = 2.0 * as_batch_coefficient(alpha, noise_norm) * (snr * ratio) ** 2
    step = torch.where(torch.isfinite(step), step, torch.zeros_like(step))
    step = step.reshape(-1, *([1] * (x.ndim - 1)))
    return x + step * score + (2.0 * step).sqrt() * noise


def probability_flow_derivative(x: torch.Tensor, score: torch.Tensor, sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """``dx/dt`` of the probability-flow ODE ([SDE] eq. 13): ``f(x, t) - 1/2 g(t)^2 score``."""
    return sde.drift(x, t) - 0.5 * as_batch_coefficient(sde.diffusion(t) ** 2, x) * score
