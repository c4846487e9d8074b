"""The base of the exact "networks": the optimal prediction of a closed-form score at a scheduler's noise levels."""

from __future__ import annotations

import torch
from torch import nn

from monai_diffusion.networks.schedulers.process import (
    PredictionType,
    as_batch_coefficient,
    marginal_coefficients,
    prediction_type_of,
)

__all__ = ["ExactDenoiser"]


class ExactDenoiser(nn.Module):
    """A "network" ``model(x_t, timesteps, **ignored)`` returning the exact optimal prediction of a known score.

    With ``x_t = alpha x0 + sigma eps`` and the exact score ``s = grad log p_t(x_t)`` (:meth:`score`, from a subclass)
    the optimal predictions are ``eps = -sigma s`` and ``x0 = (x_t + sigma^2 s) / alpha`` (Tweedie), returned in the
    scheduler's prediction type. ``(alpha, sigma)`` come from
    :func:`~monai_diffusion.networks.schedulers.process.marginal_coefficients` of the scheduler, so any sampler of
    this package, MONAI's or diffusers' can be driven by the true score. Same call signature as MONAI's
    ``DiffusionModelUNet``; computed in float64, returned in ``x``'s dtype.

    Args:
        scheduler: the forward process (anything :func:`marginal_coefficients` accepts).
        prediction_type: ``"epsilon"``, ``"sample"`` or ``"v_prediction"``; defaults to the scheduler's own.

    Attributes:
        calls: the number of forward passes, to count function evaluations (NFE).
    """

    def __init__(self, scheduler, prediction_type: str | None = None) -> None:
        super().__init__()
        self.scheduler = scheduler
        ptype = prediction_type_of(scheduler) if prediction_type is None else PredictionType.of(prediction_type)
        self.prediction_type: str = ptype.value
        self.calls = 0

    def coefficients(self, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, sigma)`` of the scheduler at ``timesteps`` (float64)."""
        return marginal_coefficients(self.scheduler, timesteps)

    def score(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The exact ``grad log p_t(x)`` of the noised data, float64 (to implement)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | float | int, *args, **kwargs) -> torch.Tensor:
        self.calls += 1
        t = torch.as_tensor(timesteps).reshape(-1)
        if t.numel() > 1 and bool((t == t[0]).all()):
            t = t[:1]
        alpha, sigma = self.coefficients(t)
        alpha = alpha.reshape(-1).to(x.device)
        sigma = sigma.reshape(-1).to(x.device)
        if alpha.numel() == 1:
            alpha, sigma = alpha[0], sigma[0]
        x64 = x.to(torch.float64)
        score = self.score(x64, alpha, sigma)
        a, s = as_batch_coefficient(alpha, x64), as_batch_coefficient(sigma, x64)
        eps = -s * score
        ptype = PredictionType(self.prediction_type)
        if ptype is PredictionType.EPSILON:
            return eps.to(x.dtype)
        x0 = (x64 + s**2 * score) / a
        return ptype.from_x0_eps(x0, eps, alpha, sigma).to(x.dtype)
