"""Small functions shared by the inferers: forward-process coefficients, prediction conversions, timestep batches.

Every forward process of the package has the form ``x_t = alpha_t * x0 + sigma_t * eps`` (Kingma et al., 2021,
"Variational Diffusion Models", Eq. 1; VP: ``alpha^2 + sigma^2 = 1``; VE: ``alpha = 1``). A network predicts one of
``eps`` ("epsilon"), ``x0`` ("sample") or ``v = alpha * eps - sigma * x0`` ("v_prediction"; Salimans & Ho, 2022,
"Progressive Distillation", Sec. 4). Given ``(alpha, sigma)`` at the current timestep these three are
interchangeable; the guidance wrappers and DDIM inversion work in ``eps`` and convert back.

The coefficients and conversions are defined once, in :mod:`monai_diffusion.networks.schedulers.process`, and
re-exported here.
"""

from __future__ import annotations

import torch

from monai_diffusion.networks.schedulers.process import (
    PREDICTION_TYPES,
    from_eps,
    marginal_coefficients,
    to_x0_eps,
    training_target,
)

__all__ = [
    "PREDICTION_TYPES",
    "marginal_coefficients",
    "to_x0_eps",
    "from_eps",
    "training_target",
    "timestep_batch",
]


def timestep_batch(t: torch.Tensor | float | int, batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """A (B,) tensor of one timestep, keeping its dtype (integers for MONAI's tables, floats allowed).

    Raises:
        ValueError: for a vector of timesteps whose length is not ``batch``.
    """
    tt = torch.as_tensor(t, device=device)
    if tt.ndim == 0 or tt.numel() == 1:
        return tt.reshape(1).expand(batch).clone()
    if tt.shape != (batch,):
        raise ValueError(f"timesteps must be a scalar or have shape ({batch},), got {tuple(tt.shape)}")
    return tt
