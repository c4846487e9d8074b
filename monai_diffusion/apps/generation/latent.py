"""The first stage of latent diffusion as a calibrated encoder for training, and the non-diffusion baselines.

:class:`LatentEncoder` turns images into scaled latents ``scale_factor * E(x)`` for
:class:`~monai_diffusion.engines.prepare_batch.DiffusionPrepareBatch` (Rombach et al., 2022, Sec. 4.3.2). Its
scale factor is a registered buffer, estimated by :meth:`LatentEncoder.calibrate` after the autoencoder has been
trained, so that one training config can build both stages up front and run them in order.

:class:`GaussianLatentPrior` is the non-diffusion generative baseline in the same latent space: a Gaussian per class
(mean and full covariance of the training latents, with shrinkage), sampled and decoded by the same decoder. With
``identity=True`` it is the VAE's own N(0, I) prior.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from monai_diffusion.inferers.latent import encode_latent, estimate_scale_factor, frozen

__all__ = ["LatentEncoder", "GaussianLatentPrior"]


class LatentEncoder(nn.Module):
    """``images -> scale_factor * E(images)`` with a frozen first stage (eval mode, no gradient).

    Args:
        autoencoder: MONAI ``AutoencoderKL`` or ``VQVAE``.
        scale_factor: a known factor; ``None`` leaves it unset until :meth:`calibrate`.
        image_key: key of images in dict batches for :meth:`calibrate`.
    """

    scale_factor: torch.Tensor

    def __init__(self, autoencoder: nn.Module, scale_factor: float | None = None, image_key: str = "image") -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.image_key = image_key
        value = float("nan") if scale_factor is None else float(scale_factor)
        if scale_factor is not None and not value > 0:
            raise ValueError(f"scale_factor must be positive, got {scale_factor}")
        self.register_buffer("scale_factor", torch.tensor(value, dtype=torch.float32))

    @property
    def calibrated(self) -> bool:
        return bool(torch.isfinite(self.scale_factor))

    def calibrate(self, data: torch.Tensor | Iterable, max_batches: int | None = 20) -> float:
        """Set the scale factor to ``1 / std`` of the latents of ``data`` (see ``estimate_scale_factor``)."""
        value = estimate_scale_factor(self.autoencoder, data, image_key=self.image_key, max_batches=max_batches)
        self.scale_factor.fill_(value)
        return value

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not self.calibrated:
            raise RuntimeError(
                "LatentEncoder has no scale factor yet: call calibrate(data) after training the autoencoder"
            )
        with frozen(self.autoencoder):
            z = encode_latent(self.autoencoder, images)
        return z * self.scale_factor.to(z.dtype)


class GaussianLatentPrior(nn.Module):
    """A Gaussian per class in latent space: the non-diffusion baseline of the generation bundle.

    ``fit`` stores, per class, the mean and a Cholesky factor of the covariance of the flattened *unscaled* latents
    (shrunk towards its diagonal by ``shrinkage`` so it stays positive definite with few samples); ``sample`` draws
    latents that the first stage's decoder turns into images. ``identity=True`` skips fitting and samples the
    VAE's own prior N(0, I).

    Args:
        num_classes: number of classes (contrasts).
        latent_shape: (C, *spatial) of one latent.
        shrinkage: weight of the diagonal in ``(1 - a) S + a diag(S)``.
        identity: use N(0, I) for every class.
    """

    mean: torch.Tensor
    chol: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        latent_shape: Sequence[int],
        shrinkage: float = 0.1,
        identity: bool = False,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
        self.latent_shape = tuple(int(s) for s in latent_shape)
        dim = 1
        for s in self.latent_shape:
            dim *= s
        self.shrinkage = float(shrinkage)
        self.identity = bool(identity)
        self.register_buffer("mean", torch.zeros(num_classes, dim))
        self.register_buffer("chol", torch.eye(dim).repeat(num_classes, 1, 1))

    @torch.no_grad()
    def fit(self, latents: torch.Tensor, labels: torch.Tensor) -> GaussianLatentPrior:
        """Fit mean and covariance per class from unscaled latents (N, C, *spatial) and integer labels (N,)."""
        if self.identity:
            return self
        flat = latents.reshape(latents.shape[0], -1).double()
        if flat.shape[1] != self.mean.shape[1]:
            raise ValueError(f"latents have {flat.shape[1]} values each, the prior expects {self.mean.shape[1]}")
        labels = torch.as_tensor(labels).reshape(-1).long()
        for c in range(self.mean.shape[0]):
            x = flat[labels == c]
            if x.shape[0] < 2:
                raise ValueError(f"class {c} has {x.shape[0]} latents; need at least 2 to fit a covariance")
            mu = x.mean(0)
            cov = torch.cov((x - mu).T)
            cov = (1 - self.shrinkage) * cov + self.shrinkage * torch.diag(torch.diag(cov))
            cov = cov + 1e-6 * torch.eye(cov.shape[0], dtype=cov.dtype)
            self.mean[c] = mu.float()
            self.chol[c] = torch.linalg.cholesky(cov).float()
        return self

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Unscaled latents (N, C, *spatial) for integer class labels (N,)."""
        labels = torch.as_tensor(labels).reshape(-1).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.mean.shape[0]):
            raise ValueError(f"labels must be in [0, {self.mean.shape[0] - 1}], got {labels.tolist()}")
        noise = torch.randn(labels.shape[0], self.mean.shape[1], generator=generator)
        labels_cpu = labels.cpu()
        z = self.mean.cpu()[labels_cpu] + torch.einsum("nij,nj->ni", self.chol.cpu()[labels_cpu], noise)
        return z.reshape(labels.shape[0], *self.latent_shape).to(self.mean.device)
