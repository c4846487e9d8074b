"""Accelerated single-coil Cartesian MRI of magnitude images with a healthy diffusion prior, and the classical
reconstructors on the same call, for bundle configs.

Data layout at the boundaries: images are real ``(B, 1, *spatial)`` tensors on the data set's scale [0, 1]; k-space is
the complex ``(B, 1, *spatial)`` output of :class:`~monai_diffusion.operators.mri.MRIOperator` with
``real_image=True`` (centred orthonormal FFT, zeros off the mask); masks are real ``(B, 1, *spatial)`` 0/1 tensors,
one per image.

* :func:`simulate_kspace` draws one seeded line mask per image (variable-density Gaussian lines with a fully sampled
  centre by default) and returns the undersampled k-space of the images.
* :class:`PosteriorReconstructor` samples the posterior of a :class:`~monai_diffusion.apps.prior.DiffusionPrior`
  given the k-space: a posterior method of :mod:`monai_diffusion.inferers.posterior` bound to the prior network and
  the measurement, driven by ``DiffusionInferer.sample(noise, method.bind(network, y), scheduler, ...)`` with DDIM
  on the prior's training schedule (clipping off: a clipped x0 undoes hard data consistency). The prior works in
  ``2 x - 1`` units, so the methods get ``y_m = A(2 x - 1) = 2 y - A(1)`` (exact: ``A`` is linear). It returns the
  mean of ``num_samples`` posterior samples and their per-pixel standard deviation (the uncertainty map).
* :class:`ZeroFilledReconstructor` and :class:`CSReconstructor` (L1-wavelet compressed sensing, FISTA) are the
  baselines, with the same call.

Every reconstructor is called as ``method(kspace, masks, contrast, generator=g)`` and returns ``(image, std)``
(``std`` is ``None`` for point estimates), both on [0, 1] units and unclipped.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from enum import Enum

import torch

from monai_diffusion.operators.mri import MRIOperator

__all__ = [
    "PosteriorMethod",
    "simulate_kspace",
    "sampling_masks",
    "PosteriorReconstructor",
    "ZeroFilledReconstructor",
    "CSReconstructor",
]


class PosteriorMethod(str, Enum):
    """Posterior methods of :mod:`monai_diffusion.inferers.posterior` by name (all with hard data consistency)."""

    MCG = "mcg"  # Chung et al., NeurIPS 2022: DPS gradient step, then noise-matched projection
    DDNM = "ddnm"  # Wang et al., ICLR 2023: range-null-space correction of the x0 estimate
    SCORE_MRI = "score_mri"  # Chung & Ye, MedIA 2022: noise-matched projection of x after every step
    DPS = "dps"  # Chung et al., ICLR 2023: gradient of ||y - A x0(x_t)||


def _check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim not in (4, 5) or images.shape[1] != 1 or images.shape[0] == 0:
        raise ValueError(
            f"{name} must be a non-empty (B, 1, H, W) or (B, 1, H, W, D) tensor, got {tuple(images.shape)}"
        )
    if images.is_complex() or not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} must be real and finite")
    return images


def _check_acceleration(acceleration: float) -> float:
    acceleration = float(acceleration)
    if not acceleration >= 1.0 or acceleration == float("inf"):
        raise ValueError(f"the acceleration R must be a finite number >= 1 (1: fully sampled), got {acceleration}")
    return acceleration


def sampling_masks(
    num: int,
    spatial_shape: Sequence[int],
    acceleration: float,
    center_fraction: float = 0.08,
    mask_type: str = "gaussian",
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """One line mask per image, ``(num, 1, *spatial_shape)``, image ``i`` drawn with seed ``seeds[i]`` (default
    ``i``); see :func:`monai_diffusion.transforms.kspace.masks.make_mask`.

    Raises:
        ValueError: ``acceleration < 1``, or a wrong number of seeds.
    """
    from monai_diffusion.transforms.kspace.masks import make_mask

    acceleration = _check_acceleration(acceleration)
    seeds = list(range(num)) if seeds is None else [int(s) for s in seeds]
    if len(seeds) != num:
        raise ValueError(f"got {len(seeds)} mask seeds for {num} images")
    shape = tuple(int(s) for s in spatial_shape)
    if acceleration == 1.0:
        return torch.ones((num, 1, *shape))
    return torch.stack([make_mask(mask_type, shape, acceleration, center_fraction, seed=s) for s in seeds])[:, None]


def simulate_kspace(
    images: torch.Tensor,
    acceleration: float,
    center_fraction: float = 0.08,
    mask_type: str = "gaussian",
    seeds: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Undersampled single-coil k-space of real images: ``(kspace, masks)``, one seeded mask per image.

    Args:
        images: real ``(B, 1, *spatial)`` images (the fully sampled magnitude images).
        acceleration: the undersampling factor R >= 1 (1: every line).
        center_fraction: fraction of fully sampled central lines.
        mask_type: ``"gaussian"`` (variable-density lines), ``"equispaced"``, ``"random"`` or ``"poisson"``.
        seeds: one mask seed per image (default ``0..B-1``).

    Raises:
        ValueError: bad images, ``acceleration < 1`` or a wrong number of seeds.
    """
    images = _check_images(images)
    masks = sampling_masks(images.shape[0], images.shape[2:], acceleration, center_fraction, mask_type, seeds)
    kspace = MRIOperator(masks, spatial_dims=images.ndim - 2, real_image=True).A(images.float())
    return kspace, masks


def _check_kspace(kspace: torch.Tensor, masks: torch.Tensor) -> None:
    if not isinstance(kspace, torch.Tensor) or not kspace.is_complex():
        raise TypeError(f"kspace must be a complex tensor, got {getattr(kspace, 'dtype', type(kspace).__name__)}")
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != tuple(kspace.shape):
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"masks must have the k-space shape {tuple(kspace.shape)} (one mask per image), got {got}")
    if kspace.ndim not in (4, 5) or kspace.shape[1] != 1:
        raise ValueError(f"kspace must be single-coil (B, 1, *spatial), got {tuple(kspace.shape)}")


def _batches(n: int, size: int):
    for start in range(0, n, size):
        yield slice(start, start + size)


class PosteriorReconstructor:
    """Posterior sampling of a diffusion prior given undersampled k-space (see the module docs).

    Args:
        prior: a :class:`~monai_diffusion.apps.prior.DiffusionPrior` (epsilon network in ``[-1, 1]`` units).
        method: a :class:`PosteriorMethod` name: ``"mcg"``, ``"ddnm"``, ``"score_mri"`` or ``"dps"``.
        num_steps: DDIM steps (network evaluations per sample).
        eta: DDIM stochasticity (1: ancestral; better than 0 for the hard methods on validation).
        num_samples: posterior samples averaged per image (``>= 2`` gives the standard deviation).
        step_size: the gradient step of DPS and MCG (ignored by the others).
        batch_size: images per network batch (samples of one image share a batch when they fit).
        progress: show a progress bar over batches.

    Raises:
        ValueError: an unknown method or a non-positive count.
    """

    def __init__(
        self,
        prior,
        method: str | PosteriorMethod = PosteriorMethod.MCG,
        num_steps: int = 25,
        eta: float = 1.0,
        num_samples: int = 4,
        step_size: float = 1.0,
        batch_size: int = 16,
        progress: bool = False,
    ) -> None:
        try:
            self.method = PosteriorMethod(method)
        except ValueError:
            raise ValueError(f"method must be one of {[m.value for m in PosteriorMethod]}, got {method!r}") from None
        if int(num_steps) < 1 or int(num_samples) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"num_steps, num_samples and batch_size must be >= 1, got {num_steps}, {num_samples}, {batch_size}"
            )
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not float(step_size) >= 0:
            raise ValueError(f"step_size must be non-negative, got {step_size}")
        self.prior = prior
        self.num_steps = int(num_steps)
        self.eta = float(eta)
        self.num_samples = int(num_samples)
        self.step_size = float(step_size)
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        # the prior's own training schedule; clipping off (a clipped x0 undoes hard data consistency)
        self.scheduler = copy.deepcopy(prior.sampler)
        self.scheduler.clip_sample = False
        self.scheduler.eta = self.eta

    @property
    def nfe(self) -> int:
        """Network evaluations per image (DPS and MCG also back-propagate through each)."""
        return self.num_steps * self.num_samples

    def posterior_method(self, operator: MRIOperator):
        """The posterior method object for one batch's operator."""
        from monai_diffusion.inferers.posterior import DataConsistencySampler, DPSSampler, MCGSampler, NullSpaceSampler

        if self.method is PosteriorMethod.MCG:
            return MCGSampler(operator, step_size=self.step_size, mode="hard")
        if self.method is PosteriorMethod.DDNM:
            return NullSpaceSampler(operator, mode="hard")
        if self.method is PosteriorMethod.SCORE_MRI:
            return DataConsistencySampler(operator, mode="hard")
        return DPSSampler(operator, step_size=self.step_size)

    def __call__(
        self,
        kspace: torch.Tensor,
        masks: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Reconstruct ``(mean, std)`` ([0, 1] units, unclipped); ``std`` is ``None`` for one sample.

        Args:
            kspace: complex ``(B, 1, *spatial)`` single-coil k-space (zeros off the mask).
            masks: ``(B, 1, *spatial)`` sampling masks.
            contrast: the class label(s) of the prior (a name or id for all, or one per image).
            generator: the sampler's randomness (initial noise, ancestral steps, noise-matched data).

        Raises:
            TypeError, ValueError: k-space that is not complex, masks of another shape, a size the prior was not
                trained on, or a contrast it does not know.
        """
        _check_kspace(kspace, masks)
        b, spatial = kspace.shape[0], tuple(kspace.shape[2:])
        if spatial != tuple(self.prior.spatial_shape):
            raise ValueError(
                f"the prior was trained on {self.prior.spatial_shape} images; got k-space of spatial shape {spatial}"
            )
        self.prior.class_labels(contrast, b)  # refuses an unknown contrast before any work
        device = next(self.prior.network.parameters()).device
        n = self.num_samples
        # sample index major: rows [k * b + i] hold sample k of image i
        y = kspace.repeat(n, *([1] * (kspace.ndim - 1)))
        m = masks.repeat(n, *([1] * (masks.ndim - 1)))

        def bind_batch(rows: slice):
            operator = MRIOperator(m[rows].to(device), spatial_dims=len(spatial), real_image=True)
            ones = torch.ones((y[rows].shape[0], 1, *spatial), device=device)
            return self.posterior_method(operator), 2.0 * y[rows].to(device) - operator.A(ones)

        return self.prior.posterior(
            bind_batch, b, n, self.num_steps, self.scheduler, contrast, self.batch_size, generator, None, self.progress
        )


class ZeroFilledReconstructor:
    """The magnitude of the inverse FFT of the zero-filled k-space (the baseline every method must beat)."""

    nfe = 0

    def __call__(
        self,
        kspace: torch.Tensor,
        masks: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, None]:
        from monai_diffusion.apps.reconstruction.baselines import zero_filled

        _check_kspace(kspace, masks)
        operator = MRIOperator(masks, spatial_dims=kspace.ndim - 2, real_image=True)
        return zero_filled(operator, kspace).float(), None


class CSReconstructor:
    """L1-wavelet compressed sensing (Lustig et al. 2007) by FISTA on the real image
    (:func:`~monai_diffusion.apps.reconstruction.baselines.l1_wavelet_cs`).

    Args:
        lam: weight of the wavelet L1 norm (data in [0, 1] units).
        wavelet: an orthogonal PyWavelets wavelet.
        num_iter: FISTA iterations.
    """

    nfe = 0

    def __init__(self, lam: float = 1e-4, wavelet: str = "haar", num_iter: int = 100) -> None:
        self.lam = float(lam)
        self.wavelet = wavelet
        self.num_iter = int(num_iter)

    def __call__(
        self,
        kspace: torch.Tensor,
        masks: torch.Tensor,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, None]:
        from monai_diffusion.apps.reconstruction.baselines import l1_wavelet_cs

        _check_kspace(kspace, masks)
        operator = MRIOperator(masks, spatial_dims=kspace.ndim - 2, real_image=True)
        return l1_wavelet_cs(operator, kspace, self.lam, self.num_iter, wavelet=self.wavelet).float(), None
