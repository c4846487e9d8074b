"""Small pure functions shared by the inferers: forward-process coefficients and prediction conversions.

Every forward process of the package has the form ``x_t = alpha_t * x0 + sigma_t * eps`` (Kingma et al., 2021,
"Variational Diffusion Models", Eq. 1; VP: ``alpha^2 + sigma^2 = 1``; VE: ``alpha = 1``). A network predicts one of
``eps`` ("epsilon"), ``x0`` ("sample") or ``v = alpha * eps - sigma * x0`` ("v_prediction"; Salimans & Ho, 2022,
"Progressive Distillation", Sec. 4). Given ``(alpha, sigma)`` at the current timestep these three are
interchangeable; the guidance wrappers and DDIM inversion work in ``eps`` and convert back.
"""

from __future__ import annotations

import torch

from monai_diffusion.networks.schedulers.base import (
    as_batch_coefficient,
    interp,
    log_sigma_table,
    model_output_to_x0_eps,
)

__all__ = [
    "PREDICTION_TYPES",
    "marginal_coefficients",
    "to_x0_eps",
    "from_eps",
    "training_target",
    "timestep_batch",
]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def marginal_coefficients(scheduler, timesteps: torch.Tensor | float | int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(alpha_t, sigma_t)`` of the forward process ``x_t = alpha_t x0 + sigma_t eps`` at model timesteps.

    This is the one place where the inferers look the coefficients up. Schedulers of ``monai_diffusion`` provide
    ``marginal_coefficients(timesteps)``; MONAI's and diffusers' schedulers provide an ``alphas_cumprod`` table
    (VP: ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha_bar)``), read at integer timesteps; fractional ones
    interpolate ``log sigma``, ``sigma = sqrt((1 - alpha_bar) / alpha_bar)``, linearly, as diffusers' Karras/Heun
    samplers map noise levels to times.

    Args:
        scheduler: a scheduler with ``marginal_coefficients`` or ``alphas_cumprod``.
        timesteps: scalar or 1D tensor of timesteps in the scheduler's units.

    Returns:
        ``(alpha, sigma)`` as float64 tensors with the shape of ``timesteps``, on its device.

    Raises:
        TypeError: if the scheduler has neither attribute.
    """
    t = torch.as_tensor(timesteps)
    if hasattr(scheduler, "marginal_coefficients"):
        alpha, sigma = scheduler.marginal_coefficients(t)
        alpha = torch.as_tensor(alpha, dtype=torch.float64, device=t.device)
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=t.device)
        return alpha.reshape(t.shape), sigma.reshape(t.shape)
    if hasattr(scheduler, "alphas_cumprod"):
        log_sigmas = log_sigma_table(torch.as_tensor(scheduler.alphas_cumprod).to(device=t.device))
        grid = torch.arange(log_sigmas.numel(), dtype=torch.float64, device=t.device)
        tf = t.to(torch.float64).clamp(0, log_sigmas.numel() - 1)
        ls = interp(tf.reshape(-1), grid, log_sigmas).reshape(t.shape)
        return torch.sigmoid(-2 * ls).sqrt(), torch.sigmoid(2 * ls).sqrt()
    raise TypeError(
        f"scheduler {type(scheduler).__name__} has neither `marginal_coefficients(timesteps)` nor `alphas_cumprod`"
    )


def to_x0_eps(
    output: torch.Tensor,
    x: torch.Tensor,
    alpha: torch.Tensor | float,
    sigma: torch.Tensor | float,
    prediction_type: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convert a model output to ``(x0_hat, eps_hat)`` given ``x_t = alpha x0 + sigma eps``.

    For ``v = alpha eps - sigma x0`` the inversion ``eps = (alpha v + sigma x) / (alpha^2 + sigma^2)``,
    ``x0 = (alpha x - sigma v) / (alpha^2 + sigma^2)`` holds for any forward process, not only VP.
    """
    _check_prediction_type(prediction_type)
    return model_output_to_x0_eps(output, x, alpha, sigma, prediction_type)


def from_eps(
    eps: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float, prediction_type: str
) -> torch.Tensor:
    """Express a noise estimate ``eps`` in ``prediction_type`` units (inverse of :func:`to_x0_eps`)."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return eps
    a = as_batch_coefficient(alpha, x)
    s = as_batch_coefficient(sigma, x)
    x0 = (x - s * eps) / a
    if prediction_type == "sample":
        return x0
    return a * eps - s * x0


def training_target(
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha: torch.Tensor | float,
    sigma: torch.Tensor | float,
    prediction_type: str,
) -> torch.Tensor:
    """The regression target of denoising score matching for a prediction type (Ho et al., 2020, Eq. 14)."""
    _check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    return as_batch_coefficient(alpha, x0) * noise - as_batch_coefficient(sigma, x0) * x0


def timestep_batch(t: torch.Tensor | float | int, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A (B,) tensor of one timestep, keeping its dtype (integers for MONAI's tables, floats allowed)."""
    tt = torch.as_tensor(t, device=device)
    if tt.ndim == 0 or tt.numel() == 1:
        return tt.reshape(1).expand(batch).clone()
    if tt.shape != (batch,):
        raise ValueError(f"timesteps must be a scalar or have shape ({batch},), got {tuple(tt.shape)}")
    return tt
