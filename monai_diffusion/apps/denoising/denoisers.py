"""Learned denoisers on the data set's intensity scale ([0, 1], ``(B, 1, *spatial)``, 2D or 3D).

* :class:`DiffusionDenoiser` starts the reverse process of a healthy prior from the noisy image itself: with the
  noise level ``sigma`` (estimated from the image), the image in model units ``y = 2 x_noisy - 1`` is ``x_0`` plus
  noise of standard deviation ``2 sigma``, which is ``x_t / sqrt(abar_t)`` at the training time whose
  ``sqrt((1 - abar_t) / abar_t)`` equals ``2 sigma``. So ``x_t = sqrt(abar_t) y`` and a few DDIM steps from ``t`` to 0
  give the estimate (the idea of R2D2+, DDM2 and CoreDiff, which start from the noisy image, not from pure noise).
  The noise here is Rician, not Gaussian: the match is approximate where the signal is low.
* :class:`SupervisedDenoiser` wraps a network trained on noisy/clean pairs (the baseline at the same budget).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from monai_diffusion.networks.schedulers.process import marginal_coefficients

__all__ = ["DiffusionDenoiser", "SupervisedDenoiser", "ClassicalDenoiser"]


def _check_noisy(noisy: torch.Tensor) -> torch.Tensor:
    if not isinstance(noisy, torch.Tensor) or noisy.ndim not in (4, 5) or noisy.shape[1] != 1:
        shape = tuple(noisy.shape) if isinstance(noisy, torch.Tensor) else type(noisy).__name__
        raise ValueError(f"noisy must be a (B, 1, H, W) or (B, 1, H, W, D) tensor, got {shape}")
    if noisy.shape[0] == 0:
        raise ValueError("noisy is an empty batch")
    if not torch.isfinite(noisy).all():
        raise ValueError("noisy holds NaN or infinite values")
    return noisy


class DiffusionDenoiser:
    """Denoise with a diffusion prior started at the noise level of the image (see the module docs).

    Args:
        prior: a :class:`~monai_diffusion.apps.prior.DiffusionPrior` (model units [-1, 1]).
        num_steps: network evaluations from the matched time to 0.
        eta: 0 deterministic DDIM; 1 ancestral sampling (a posterior-like sample).
        num_samples: average this many samples (useful with ``eta > 0``).
        noise_estimator: ``(B, 1, ...) -> (B,)`` noise level in [0, 1] units; default
            :func:`~monai_diffusion.apps.denoising.noise.estimate_noise_sigma`.
        sigma_scale: multiply the estimate by this before matching (tuned on validation; 1 = as estimated).
    """

    def __init__(
        self,
        prior,
        num_steps: int = 10,
        eta: float = 0.0,
        num_samples: int = 1,
        noise_estimator: Callable[[torch.Tensor], torch.Tensor] | None = None,
        sigma_scale: float = 1.0,
    ) -> None:
        if int(num_steps) < 1 or int(num_samples) < 1:
            raise ValueError(f"num_steps and num_samples must be >= 1, got {num_steps} and {num_samples}")
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not float(sigma_scale) > 0:
            raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
        if noise_estimator is None:
            from monai_diffusion.apps.denoising.noise import estimate_noise_sigma

            noise_estimator = estimate_noise_sigma
        self.prior = prior
        self.num_steps = int(num_steps)
        self.eta = float(eta)
        self.num_samples = int(num_samples)
        self.noise_estimator = noise_estimator
        self.sigma_scale = float(sigma_scale)

    @property
    def nfe(self) -> int:
        return self.num_steps * self.num_samples

    def __call__(
        self,
        noisy: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor = 0,
        sigma: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoise ``noisy`` ([0, 1]); ``sigma`` (per item, [0, 1] units) is estimated when not given.

        Raises:
            ValueError: bad input, an unknown contrast, or a noise level the schedule does not cover.
        """
        noisy = _check_noisy(noisy)
        self.prior.check_image(noisy, "noisy")
        batch = noisy.shape[0]
        if sigma is None:
            sigma = self.noise_estimator(noisy)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(batch).cpu() * self.sigma_scale
        timesteps = self.prior.timestep_for_noise(2.0 * sigma)  # model units span 2
        labels = self.prior.class_labels(contrast, batch)
        y = 2.0 * noisy.float() - 1.0
        out = torch.empty_like(y)
        for t in torch.unique(timesteps).tolist():
            idx = (timesteps == t).nonzero().reshape(-1)
            alpha, _ = marginal_coefficients(self.prior.sampler, int(t))
            x_t = (alpha.cpu() * y[idx].double()).float()
            x_t = x_t.repeat_interleave(self.num_samples, 0)
            lab = labels[idx].repeat_interleave(self.num_samples, 0) if labels is not None else None
            with torch.no_grad():
                x0 = self.prior.reverse(
                    x_t, int(t), self.num_steps, lab if lab is not None else 0, eta=self.eta, generator=generator
                )
            out[idx] = x0.reshape(len(idx), self.num_samples, *x0.shape[1:]).mean(1)
        return ((out.clamp(-1, 1) + 1) / 2).to(noisy.dtype)


class SupervisedDenoiser:
    """A network trained to map noisy [-1, 1] images to clean ones, on the [0, 1] scale.

    Args:
        network: e.g. MONAI ``BasicUNet`` (trained by the denoising bundle's ``train.json``).
    """

    def __init__(self, network: nn.Module) -> None:
        self.network = network.eval()

    def __call__(
        self,
        noisy: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        sigma: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Denoise ``noisy`` ([0, 1]); ``contrast``, ``sigma`` and ``generator`` are unused (blind network)."""
        noisy = _check_noisy(noisy)
        device = next(self.network.parameters()).device
        with torch.no_grad():
            out = self.network((2.0 * noisy.float() - 1.0).to(device)).float().cpu()
        return ((out.clamp(-1, 1) + 1) / 2).to(noisy.dtype)


class ClassicalDenoiser:
    """Adapt a function ``fn(noisy, sigma=..., **kwargs)`` (e.g. ``nlm_denoise``, ``tv_denoise``) to the
    denoiser call ``(noisy, contrast, sigma, generator)`` used by the evaluation.

    Args:
        fn: the denoising function, or its dotted name (for bundle configs).
        **kwargs: fixed keyword arguments (e.g. ``h_factor`` tuned on validation).
    """

    def __init__(self, fn: Callable | str, **kwargs) -> None:
        if isinstance(fn, str):
            import importlib

            module, _, name = fn.rpartition(".")
            fn = getattr(importlib.import_module(module), name)
        if not callable(fn):
            raise TypeError(f"fn must be callable or a dotted name, got {type(fn).__name__}")
        self.fn: Callable = fn
        self.kwargs = kwargs

    def __call__(
        self,
        noisy: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        sigma: torch.Tensor | float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return self.fn(_check_noisy(noisy), sigma=sigma, **self.kwargs)
