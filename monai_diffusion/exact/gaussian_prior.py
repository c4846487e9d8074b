"""A stationary Gaussian image prior: fitted to data, exact score at every noise level, exact MRI posterior.

An exact reference (the reconstruction benchmark's oracle); production code does not import it.

Prior: ``x = m + z`` with ``z`` a real stationary Gaussian field, i.e. covariance ``C = F^H diag(P) F`` for the
centred orthonormal DFT ``F`` and a symmetric power spectrum ``P(f) = P(-f)`` (Wiener-Khinchin). Under the forward
process ``x_t = alpha x + sigma eps`` the noised marginal is ``N(alpha m, alpha^2 C + sigma^2 I)``, so

    score_t(x) = -F^H [ F(x - alpha m) / (alpha^2 P + sigma^2) ],      eps*(x) = -sigma score_t(x),

exactly (the Gaussian case of Tweedie's formula, Efron 2011). :class:`GaussianPriorDenoiser` wraps this as a
"network" in a scheduler's units, so every sampler and posterior sampler can be driven by the true score.

Posterior for single-coil Cartesian MRI of a real image (``y = M (F x + n)``, ``n`` circular complex white noise
with ``E|n_f|^2 = s^2``): measuring frequency ``f`` of a real image also measures ``-f`` (``X(-f) = conj X(f)``),
so with ``n_f = M(f) + M(-f)`` observations and their average ``ybar_f = (M y)(f) + conj (M y)(-f)) / n_f``, each
coefficient's posterior is Gaussian with

    gain g_f = P_f / (P_f + s^2 / n_f),  mean m_f + g_f (ybar_f - m_f),  variance E|X_f - mean|^2 = P_f (1 - g_f)

(``g_f = 0`` where ``n_f = 0``; ``g_f = 1`` where measured and ``s = 0``). The pixel covariance is again circulant,
so every pixel has posterior variance ``mean_f v_f``. For any other real-domain operator the posterior mean solves
``(A^H A + s^2 C^{-1}) x = A^H y + s^2 C^{-1} m`` (conjugate gradients, ``C^{-1}`` diagonal in Fourier).
"""

from __future__ import annotations

import torch
from torch import nn

from monai_diffusion.exact.denoiser import ExactDenoiser
from monai_diffusion.networks.schedulers.process import as_batch_coefficient
from monai_diffusion.operators.base import LinearOperator, conjugate_gradient
from monai_diffusion.operators.mri import effective_mask, fft_centered, hermitian_flip, ifft_centered

__all__ = ["StationaryGaussianPrior", "GaussianPriorDenoiser"]


class StationaryGaussianPrior(nn.Module):
    """Stationary Gaussian prior with mean image ``mean`` (C, *spatial) and power spectrum ``power`` (C, *spatial).

    ``power`` is in MONAI's centred k-space layout and is the variance ``E|X_f - m_f|^2`` of each orthonormal-DFT
    coefficient. Both are float64 buffers.

    Args:
        mean: prior mean image, shape (C, *spatial) (a constant image gives a strictly stationary prior).
        power: power spectrum, same shape, positive and symmetric (``P(f) = P(-f)``; symmetrised here).
    """

    def __init__(self, mean: torch.Tensor, power: torch.Tensor) -> None:
        super().__init__()
        m = torch.as_tensor(mean, dtype=torch.float64)
        p = torch.as_tensor(power, dtype=torch.float64)
        if m.shape != p.shape or m.ndim not in (3, 4):
            raise ValueError(
                f"mean and power must share a shape (C, *spatial) in 2D/3D, got {tuple(m.shape)}, {tuple(p.shape)}"
            )
        if (p <= 0).any():
            raise ValueError("power must be positive")
        self.spatial_dims = m.ndim - 1
        self.mean: torch.Tensor
        self.power: torch.Tensor
        self.register_buffer("mean", m)
        self.register_buffer("power", 0.5 * (p + hermitian_flip(p, self.spatial_dims)))

    @classmethod
    def fit(cls, images: torch.Tensor, constant_mean: bool = False, floor: float = 1e-6) -> StationaryGaussianPrior:
        """Fit the mean image and the average power spectrum of ``images`` (N, C, *spatial) (maximum likelihood
        under stationarity). ``floor`` (relative to the largest power) keeps the spectrum positive."""
        x = torch.as_tensor(images, dtype=torch.float64)
        if x.ndim not in (4, 5) or x.shape[0] < 2:
            raise ValueError(f"images must be (N >= 2, C, *spatial) in 2D/3D, got {tuple(x.shape)}")
        d = x.ndim - 2
        m = x.mean(0)
        if constant_mean:
            m = m.mean(dim=tuple(range(1, m.ndim)), keepdim=True).expand_as(m).clone()
        p = (fft_centered((x - m).to(torch.complex128), d).abs() ** 2).mean(0)
        p = p.clamp_min(floor * float(p.max()))
        return cls(m, p)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2 or tuple(x.shape[1:]) != tuple(self.mean.shape):
            raise ValueError(f"expected images (B, {', '.join(map(str, self.mean.shape))}), got {tuple(x.shape)}")

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num`` prior samples (float64).

        Raises:
            ValueError: ``num`` is not a positive integer.
        """
        if isinstance(num, bool) or not isinstance(num, int) or num < 1:
            raise ValueError(f"num must be a positive integer, got {num!r}")
        w = torch.randn((num, *self.mean.shape), generator=generator, dtype=torch.float64).to(self.mean.device)
        z = ifft_centered(
            self.power.sqrt() * fft_centered(w.to(torch.complex128), self.spatial_dims), self.spatial_dims
        )
        return self.mean + z.real

    def score(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact ``grad log p_t(x)`` of the noised marginal (float64, differentiable)."""
        self._check(x)
        x64 = x.to(torch.float64)
        a = as_batch_coefficient(alpha, x64)
        s = as_batch_coefficient(sigma, x64)
        k = fft_centered((x64 - a * self.mean).to(torch.complex128), self.spatial_dims)
        return -ifft_centered(k / (a**2 * self.power + s**2), self.spatial_dims).real

    def epsilon(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact ``E[eps | x_t = x] = -sigma * score``."""
        return -as_batch_coefficient(sigma, x.to(torch.float64)) * self.score(x, alpha, sigma)

    def posterior_mean(self, x: torch.Tensor, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        """Exact ``E[x0 | x_t = x] = (x + sigma^2 score) / alpha`` (Tweedie)."""
        x64 = x.to(torch.float64)
        return (x64 + as_batch_coefficient(sigma, x64) ** 2 * self.score(x, alpha, sigma)) / as_batch_coefficient(
            alpha, x64
        )

    # ------------------------------------------------------------------ posteriors
    def mri_posterior(
        self, kspace: torch.Tensor, mask: torch.Tensor, noise_std: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exact posterior for single-coil Cartesian MRI of a real image (see module docs).

        Args:
            kspace: measured k-space ``M (F x + n)``, complex, (B, C, *spatial).
            mask: binary mask broadcastable to the k-space.
            noise_std: ``s`` with ``E|n_f|^2 = s^2``.

        Returns:
            ``(mean, coeff_var, pixel_std)``: posterior mean image (B, C, *spatial) float64, the per-coefficient
            posterior variance (B or 1, C, *spatial), and the (spatially constant) per-pixel posterior std (B, C).
        """
        if not kspace.is_complex():
            raise TypeError(f"kspace must be complex, got {kspace.dtype}")
        self._check(kspace)
        d = self.spatial_dims
        y = kspace.to(torch.complex128)
        m = torch.as_tensor(mask, dtype=torch.float64, device=y.device)
        while m.ndim < y.ndim:
            m = m.unsqueeze(0)
        my = m * y
        n = effective_mask(m, d)
        ybar = torch.where(n > 0, (my + torch.conj(hermitian_flip(my, d))) / n.clamp_min(1), torch.zeros_like(my))
        mu = fft_centered(self.mean.to(torch.complex128), d)
        if noise_std > 0:
            gain = torch.where(n > 0, self.power / (self.power + noise_std**2 / n.clamp_min(1)), torch.zeros_like(n))
        else:
            gain = (n > 0).to(torch.float64).expand(torch.broadcast_shapes(n.shape, self.power.shape))
        post = mu + gain * (ybar - mu)
        var = self.power * (1 - gain)
        pixel_std = var.reshape(*var.shape[:2], -1).mean(-1).sqrt()
        return ifft_centered(post, d).real, var, pixel_std.expand(y.shape[0], -1)

    def apply_inverse_covariance(self, x: torch.Tensor) -> torch.Tensor:
        """``C^{-1} x`` (diagonal in Fourier)."""
        k = fft_centered(x.to(torch.complex128), self.spatial_dims)
        return ifft_centered(k / self.power, self.spatial_dims).real.to(x.dtype)

    def map_estimate(
        self, operator: LinearOperator, y: torch.Tensor, noise_std: float, max_iter: int = 100, tol: float = 1e-8
    ) -> torch.Tensor:
        """Posterior mean (= MAP) for a real-domain linear operator and Gaussian noise ``noise_std`` > 0.

        Solves ``(A^H A + v C^{-1}) x = A^H y + v C^{-1} m`` by conjugate gradients (a Wiener filter), with
        ``v = noise_std^2`` for real measurements (std per sample) and ``v = noise_std^2 / 2`` for complex ones
        (circular noise with ``E|n|^2 = noise_std^2``, i.e. ``noise_std^2 / 2`` per real component).
        """
        if noise_std <= 0:
            raise ValueError(f"noise_std must be positive for the CG posterior mean, got {noise_std}")
        mean = self.mean.to(torch.float64).unsqueeze(0)
        s2 = noise_std**2 / (2 if y.is_complex() else 1)
        rhs = operator.A_adjoint(y).to(torch.float64) + s2 * self.apply_inverse_covariance(mean)
        rhs = rhs.expand(y.shape[0], *rhs.shape[1:]).contiguous()

        def normal(v: torch.Tensor) -> torch.Tensor:
            return operator.A_adjoint_A(v) + s2 * self.apply_inverse_covariance(v)

        x0 = mean.expand_as(rhs).contiguous()
        return conjugate_gradient(normal, rhs, x0=x0, max_iter=max_iter, tol=tol)


class GaussianPriorDenoiser(ExactDenoiser):
    """The exact "network" of a :class:`StationaryGaussianPrior` in a scheduler's units.

    ``forward(x, timesteps, **ignored)`` returns the exact epsilon, x0 (``"sample"``) or v prediction at the noise
    level ``(alpha, sigma)`` of ``timesteps``, differentiable in ``x`` (DPS needs that); see
    :class:`~monai_diffusion.exact.denoiser.ExactDenoiser`. Same call signature as MONAI's ``DiffusionModelUNet``;
    computed in float64, returned in ``x``'s dtype.

    Args:
        prior: the Gaussian prior.
        scheduler: any scheduler of the project protocol, or a MONAI/diffusers one with ``alphas_cumprod``.
        prediction_type: defaults to the scheduler's.
    """

    def __init__(self, prior: StationaryGaussianPrior, scheduler, prediction_type: str | None = None) -> None:
        super().__init__(scheduler, prediction_type)
        self.prior = prior

    def score(self, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.prior.score(x, alpha, sigma)
