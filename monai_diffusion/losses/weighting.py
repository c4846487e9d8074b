"""Per-timestep loss weights for diffusion training.

With ``x_t = alpha x0 + sigma eps`` the signal-to-noise ratio is ``SNR = alpha^2 / sigma^2`` (Kingma et al., 2021,
Eq. 2). Min-SNR-gamma weighting (Hang et al., 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy",
Eq. 9-11) clamps the x0-space weight at ``gamma``: ``w_x0 = min(SNR, gamma)``; expressed for the network's own
target this is ``min(SNR, gamma) / SNR`` for epsilon, ``min(SNR, gamma)`` for x0 and ``min(SNR, gamma) / (SNR + 1)``
for v-prediction (VP). Weights multiply the per-sample squared error.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_diffusion.networks.schedulers.process import PredictionType

__all__ = ["snr", "min_snr_weight", "MinSNRWeighting"]


def snr(alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``alpha^2 / sigma^2``."""
    return alpha.to(torch.float64) ** 2 / sigma.to(torch.float64) ** 2


def min_snr_weight(snr_values: torch.Tensor, gamma: float = 5.0, prediction_type: str = "epsilon") -> torch.Tensor:
    """Min-SNR-gamma weight for a prediction type (Hang et al., 2023).

    Raises:
        ValueError: non-positive gamma or an unknown prediction type.
    """
    if not gamma > 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    ptype = PredictionType.of(prediction_type)
    clipped = torch.clamp(snr_values, max=gamma)
    if ptype is PredictionType.EPSILON:
        return clipped / snr_values
    if ptype is PredictionType.SAMPLE:
        return clipped
    return clipped / (snr_values + 1)


class MinSNRWeighting(nn.Module):
    """Callable ``weights = w(alpha, sigma)`` of shape (B,) for :class:`monai_diffusion.engines.DiffusionPrepareBatch`.

    Args:
        gamma: the clamp (5 in the paper).
        prediction_type: the network's target.
    """

    def __init__(self, gamma: float = 5.0, prediction_type: str = "epsilon") -> None:
        super().__init__()
        min_snr_weight(torch.ones(1), gamma, prediction_type)  # validate
        self.gamma = float(gamma)
        self.prediction_type = prediction_type

    def forward(self, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return min_snr_weight(snr(alpha, sigma), self.gamma, self.prediction_type)
