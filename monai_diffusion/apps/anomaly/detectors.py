"""Unsupervised anomaly detectors: reconstruct a healthy version of the image, and score the residual.

All detectors take images in the model's units ([-1, 1], ``(B, 1, *spatial)``, 2D or 3D), the contrast and the
brain mask, and return ``{"reconstruction", "map"}`` where the map is the post-processed absolute residual
(:func:`anomaly_map`: masked to the brain, then median filtered, as in Baur et al. 2021 and the AnoDDPM code).

* :class:`PartialNoisingDetector` -- AnoDDPM (Wyatt et al., CVPR-W 2022): noise the image to ``t*`` with Gaussian or
  simplex noise, run the healthy prior back to ``t = 0``; lesions are not reproduced.
* :class:`DDIMEncodeDecodeDetector` -- Wolleb et al. (MICCAI 2022) without the classifier: deterministic DDIM
  encoding to ``t_L``, then DDIM decoding with the healthy prior.
* :class:`AutoencoderDetector` -- the reconstruction residual of an autoencoder trained on the same healthy data.
* :class:`IntensityDetector` -- the image intensity itself (thresholding bright FLAIR lesions; Meissen et al. 2021
  showed that this simple baseline beats many learned detectors on FLAIR).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = [
    "anomaly_map",
    "postprocess_map",
    "PartialNoisingDetector",
    "DDIMEncodeDecodeDetector",
    "AutoencoderDetector",
    "IntensityDetector",
]


def _check_pair(image: torch.Tensor, brain_mask: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(image, torch.Tensor) or image.ndim not in (4, 5) or image.shape[1] != 1:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be a (B, 1, H, W) or (B, 1, H, W, D) tensor, got {shape}")
    if brain_mask is None:
        raise ValueError(
            "a brain mask is required (the residual outside the brain is meaningless): pass brain_mask, e.g. the "
            "tissue label > 0 of the embedded data or a skull-stripping mask of your own"
        )
    if not isinstance(brain_mask, torch.Tensor) or brain_mask.shape != image.shape:
        shape = tuple(brain_mask.shape) if isinstance(brain_mask, torch.Tensor) else type(brain_mask).__name__
        raise ValueError(f"brain_mask must have the image's shape {tuple(image.shape)}, got {shape}")
    if not torch.isfinite(image).all():
        raise ValueError("image holds NaN or infinite values")
    mask = brain_mask > 0
    if not mask.flatten(1).any(1).all():
        raise ValueError("brain_mask is empty for at least one item")
    return mask


def anomaly_map(
    image: torch.Tensor, reconstruction: torch.Tensor, brain_mask: torch.Tensor, median_kernel: int = 5
) -> torch.Tensor:
    """``median(|image - reconstruction| * brain) * brain``: the post-processed residual (2D or 3D).

    Args:
        image, reconstruction: ``(B, 1, *spatial)``.
        brain_mask: same shape; nonzero inside the brain.
        median_kernel: odd side of the median filter (1: none).

    Raises:
        ValueError: bad shapes, an empty mask, an even or non-positive kernel.
    """
    mask = _check_pair(image, brain_mask)
    if reconstruction.shape != image.shape:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} must match image {tuple(image.shape)}")
    return postprocess_map((image - reconstruction).abs(), mask, median_kernel)


def postprocess_map(score: torch.Tensor, mask: torch.Tensor, median_kernel: int) -> torch.Tensor:
    """``median(score * mask) * mask`` (2D or 3D): the post-processing every detector applies to its residual."""
    if int(median_kernel) < 1 or int(median_kernel) % 2 == 0:
        raise ValueError(f"median_kernel must be a positive odd integer, got {median_kernel}")
    score = score.float() * mask
    if median_kernel > 1:
        from monai.networks.layers import median_filter

        dims = score.ndim - 2
        score = median_filter(score, kernel_size=(int(median_kernel),) * dims, spatial_dims=dims)
    return score * mask


class _Detector:
    median_kernel: int = 5

    def reconstruct(self, image: torch.Tensor, contrast: Any, generator: torch.Generator | None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self,
        image: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor = 0,
        brain_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """Reconstruct ``image`` and return ``{"reconstruction", "map"}`` (see the module docs)."""
        mask = _check_pair(image, brain_mask)
        with torch.no_grad():
            recon = self.reconstruct(image, contrast, generator)
        return {"reconstruction": recon, "map": postprocess_map((image - recon).abs(), mask, self.median_kernel)}


class PartialNoisingDetector(_Detector):
    """AnoDDPM: partial diffusion to ``start_timestep`` with Gaussian or simplex noise, then DDIM back to 0.

    Args:
        prior: a :class:`~monai_diffusion.apps.prior.DiffusionPrior` of healthy images.
        start_timestep: ``t*`` (AnoDDPM uses 250 of 1000 for brain MRI); larger hides larger lesions but loses
            detail.
        num_steps: network evaluations of the reverse process.
        noise: ``"gaussian"``, ``"simplex"`` (:class:`~monai_diffusion.apps.anomaly.simplex.SimplexNoise` with its
            defaults) or a callable ``noise(shape, generator) -> tensor`` of unit variance.
        eta: 0 deterministic reverse steps, 1 ancestral.
        median_kernel: post-processing (see :func:`anomaly_map`).

    Note: AnoDDPM trains its network with simplex noise. The prior here is trained with Gaussian noise only, so the
    simplex variant feeds it noise it never saw; ``docs/bundles.md`` reports what that costs.
    """

    def __init__(
        self,
        prior,
        start_timestep: int = 250,
        num_steps: int = 10,
        noise: str | Callable = "gaussian",
        eta: float = 0.0,
        median_kernel: int = 5,
    ) -> None:
        if isinstance(noise, str):
            if noise == "gaussian":
                noise = _gaussian
            elif noise == "simplex":
                from monai_diffusion.apps.anomaly.simplex import SimplexNoise

                noise = SimplexNoise()
            else:
                raise ValueError(f"noise must be 'gaussian', 'simplex' or a callable, got {noise!r}")
        if not 0 < int(start_timestep) < prior.num_train_timesteps:
            raise ValueError(f"start_timestep must be in [1, {prior.num_train_timesteps - 1}], got {start_timestep}")
        self.prior = prior
        self.start_timestep = int(start_timestep)
        self.num_steps = int(num_steps)
        self.noise = noise
        self.eta = float(eta)
        self.median_kernel = int(median_kernel)

    def reconstruct(self, image: torch.Tensor, contrast: Any, generator: torch.Generator | None) -> torch.Tensor:
        self.prior.check_image(image)
        noise = self.noise(tuple(image.shape), generator=generator).to(image)
        x_t = self.prior.add_noise(image, noise, self.start_timestep)
        return self.prior.reverse(x_t, self.start_timestep, self.num_steps, contrast, eta=self.eta, generator=generator)


def _gaussian(shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=generator)


class DDIMEncodeDecodeDetector(_Detector):
    """Deterministic DDIM encoding to ``end_timestep`` and decoding with the healthy prior (Wolleb et al. 2022,
    without classifier guidance; add guidance by wrapping the prior's network).

    Args:
        prior: the healthy prior.
        end_timestep: the encoding depth ``L`` (of 1000).
        num_steps: evaluations of each direction.
        median_kernel: post-processing.
    """

    def __init__(self, prior, end_timestep: int = 500, num_steps: int = 20, median_kernel: int = 5) -> None:
        if not 0 < int(end_timestep) < prior.num_train_timesteps:
            raise ValueError(f"end_timestep must be in [1, {prior.num_train_timesteps - 1}], got {end_timestep}")
        self.prior = prior
        self.end_timestep = int(end_timestep)
        self.num_steps = int(num_steps)
        self.median_kernel = int(median_kernel)

    def reconstruct(self, image: torch.Tensor, contrast: Any, generator: torch.Generator | None) -> torch.Tensor:
        z = self.prior.encode(image, self.end_timestep, self.num_steps, contrast)
        return self.prior.reverse(z, self.end_timestep, self.num_steps, contrast, eta=0.0)


class AutoencoderDetector(_Detector):
    """The residual of an autoencoder (any ``nn.Module`` image -> image) trained on healthy images."""

    def __init__(self, autoencoder: nn.Module, median_kernel: int = 5) -> None:
        self.autoencoder = autoencoder.eval()
        self.median_kernel = int(median_kernel)

    def reconstruct(self, image: torch.Tensor, contrast: Any, generator: torch.Generator | None) -> torch.Tensor:
        device = next(self.autoencoder.parameters()).device
        return self.autoencoder(image.to(device)).to(image.device).float()


class IntensityDetector(_Detector):
    """The intensity itself as the anomaly score (bright lesions on FLAIR): the "reconstruction" is a constant
    ``-1`` (the background level of [-1, 1] images), so the map is ``median(image + 1) * brain``."""

    def __init__(self, median_kernel: int = 5) -> None:
        self.median_kernel = int(median_kernel)

    def reconstruct(self, image: torch.Tensor, contrast: Any, generator: torch.Generator | None) -> torch.Tensor:
        return torch.full_like(image, -1.0)
