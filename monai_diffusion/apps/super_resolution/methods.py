"""Super-resolution methods on the data set's intensity scale ([0, 1], ``(B, 1, *spatial)``, 2D or 3D).

The degradation is :class:`~monai_diffusion.operators.SuperResolutionOperator`: box averaging over ``f x f`` blocks,
``y = A x``. Every method here is a callable ``method(low_res, factor, contrast=None, generator=None)`` returning
``(high_res, std)``, where ``std`` is the per-pixel standard deviation over posterior samples (``None`` for methods
that give one estimate), so that the evaluation and a bundle config treat them alike.

* :class:`DiffusionSuperResolution` drives the healthy-brain prior of :mod:`monai_diffusion.apps.prior` with a
  posterior method of :mod:`monai_diffusion.inferers.posterior` through the one sampling loop
  (``DiffusionInferer.sample(noise, method.bind(network, y_m), sampler, ...)``): DDNM (Wang et al., ICLR 2023,
  eq. 13; for the averaging downsampler ``A^+`` is exact, nearest upsampling), Score-MRI-style hard data consistency
  on the noise-matched state (Chung & Ye, MedIA 2022, Alg. 1; Song et al., ICLR 2022, eq. 9), DPS (Chung et al.,
  ICLR 2023, Alg. 1) and MCG (Chung et al., NeurIPS 2022, eq. 14-16). The prior works in ``2 x - 1`` units; since
  ``A`` is linear and averages, ``A(2 x - 1) = 2 y - A(1) = 2 y - 1`` is the measurement the methods see.
* :class:`InterpolationSuperResolution`: bicubic / bilinear / nearest interpolation of the low-resolution image,
  and the operator's pseudo-inverse (nearest upsampling, ``mode="pinv"``).
* :class:`WaveletSuperResolution`: the classical regularised reconstruction
  ``min_x 0.5 ||A x - y||^2 + lam ||W x||_1`` by FISTA (:func:`~monai_diffusion.apps.reconstruction.l1_wavelet_cs`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_diffusion.operators import SuperResolutionOperator

__all__ = [
    "SR_METHODS",
    "check_low_res",
    "DiffusionSuperResolution",
    "InterpolationSuperResolution",
    "WaveletSuperResolution",
]

#: the posterior methods of :class:`DiffusionSuperResolution`
SR_METHODS = ("ddnm", "dc", "dps", "mcg")


def check_low_res(low_res: torch.Tensor, factor: int, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Check a low-resolution batch ``(B, 1, *spatial)`` and the factor; returns it as float.

    Args:
        low_res: the measurement on the [0, 1] scale.
        factor: the integer downsampling factor.
        spatial_shape: if given, the high-resolution shape, which ``factor`` must divide and ``low_res`` must be the
            ``factor``-times smaller version of.

    Raises:
        TypeError: ``low_res`` is not a tensor.
        ValueError: a wrong rank, channel count, empty batch, non-finite values, ``factor < 1`` or not an integer,
            or a size that does not match ``spatial_shape / factor``.
    """
    if not isinstance(low_res, torch.Tensor):
        raise TypeError(f"low_res must be a torch.Tensor, got {type(low_res).__name__}")
    if low_res.ndim not in (4, 5) or low_res.shape[1] != 1:
        raise ValueError(f"low_res must be a (B, 1, H, W) or (B, 1, H, W, D) tensor, got {tuple(low_res.shape)}")
    if low_res.shape[0] == 0:
        raise ValueError("low_res is an empty batch")
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be an integer >= 1, got {factor}")
    if not bool(torch.isfinite(low_res).all()):
        raise ValueError("low_res holds NaN or infinite values")
    if spatial_shape is not None:
        shape = tuple(int(s) for s in spatial_shape)
        if any(s % int(factor) for s in shape):
            raise ValueError(f"factor {factor} does not divide the image size {shape}")
        want = tuple(s // int(factor) for s in shape)
        if tuple(low_res.shape[2:]) != want:
            raise ValueError(
                f"low_res of spatial shape {tuple(low_res.shape[2:])} does not match {shape} / {factor} = {want}"
            )
    return low_res.float()


class DiffusionSuperResolution:
    """Posterior sampling with a diffusion prior for ``y = avgpool_f(x)`` (see the module docs).

    Args:
        prior: a :class:`~monai_diffusion.apps.prior.DiffusionPrior` (model units [-1, 1]).
        method: ``"ddnm"`` (null-space projection of the x0 estimate, hard), ``"dc"`` (hard data consistency on the
            noise-matched state after each step), ``"dps"`` or ``"mcg"``.
        num_steps: DDIM steps (network evaluations per sample) from pure noise.
        eta: DDIM ``eta`` (0 deterministic, 1 ancestral).
        num_samples: samples per image; the output is their mean and, for ``num_samples >= 2``, ``std`` is their
            per-pixel standard deviation on the [0, 1] scale (the uncertainty map).
        step_size: the DPS/MCG step on the gradient of ``||y_m - A x0(x_t)||`` (model units).
        batch_size: images per network batch (samples included).

    Raises:
        ValueError: an unknown method or out-of-range settings.
    """

    def __init__(
        self,
        prior,
        method: str = "ddnm",
        num_steps: int = 25,
        eta: float = 0.0,
        num_samples: int = 1,
        step_size: float = 1.0,
        batch_size: int = 32,
    ) -> None:
        if method not in SR_METHODS:
            raise ValueError(f"method must be one of {SR_METHODS}, got {method!r}")
        if int(num_steps) < 1 or int(num_samples) < 1 or int(batch_size) < 1:
            raise ValueError(
                f"num_steps, num_samples and batch_size must be >= 1, got {num_steps}, {num_samples}, {batch_size}"
            )
        if not 0.0 <= float(eta) <= 1.0:
            raise ValueError(f"eta must be in [0, 1], got {eta}")
        if not 0.0 <= float(step_size) < float("inf"):
            raise ValueError(f"step_size must be finite and non-negative, got {step_size}")
        self.prior = prior
        self.method = method
        self.num_steps = int(num_steps)
        self.eta = float(eta)
        self.num_samples = int(num_samples)
        self.step_size = float(step_size)
        self.batch_size = int(batch_size)
        # clip_sample off: a clipped x0 would undo the data consistency of the last step
        self.sampler = copy.deepcopy(prior.sampler)
        self.sampler.clip_sample = False

    @property
    def nfe(self) -> int:
        """Network evaluations per image (a DPS/MCG evaluation also back-propagates through the network)."""
        return self.num_steps * self.num_samples

    def posterior_method(self, operator: SuperResolutionOperator):
        """The :mod:`~monai_diffusion.inferers.posterior` method for ``operator``."""
        from monai_diffusion.inferers import DataConsistencySampler, DPSSampler, MCGSampler, NullSpaceSampler

        if self.method == "ddnm":
            return NullSpaceSampler(operator, mode="hard")
        if self.method == "dc":
            return DataConsistencySampler(operator, mode="hard", noise_matched=True)
        if self.method == "dps":
            return DPSSampler(operator, step_size=self.step_size)
        return MCGSampler(operator, step_size=self.step_size, mode="hard")

    def __call__(
        self,
        low_res: torch.Tensor,
        factor: int,
        contrast: str | int | Sequence | torch.Tensor = 0,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Super-resolve ``low_res`` ([0, 1]) by ``factor``; returns ``(mean, std)`` on the [0, 1] scale.

        The mean is not clipped (DDNM's output is then exactly consistent: ``A(mean) == low_res``).

        Raises:
            ValueError: bad input, or a size the prior was not trained on.
        """
        low_res = check_low_res(low_res, factor, self.prior.spatial_shape)
        batch = low_res.shape[0]
        device = next(self.prior.network.parameters()).device
        operator = SuperResolutionOperator(int(factor), spatial_dims=self.prior.dim)
        self.prior.class_labels(contrast, batch)  # refuses an unknown contrast before any work
        k = self.num_samples
        y_m = (2.0 * low_res - 1.0).repeat(k, *([1] * (low_res.ndim - 1))).to(device)
        method = self.posterior_method(operator)
        return self.prior.posterior(
            lambda rows: (method, y_m[rows]),
            batch,
            k,
            self.num_steps,
            self.sampler,
            contrast,
            self.batch_size,
            generator,
            {"eta": self.eta},
        )


class InterpolationSuperResolution:
    """Interpolation of the low-resolution image: ``"bicubic"``, ``"bilinear"`` (``"trilinear"`` in 3D),
    ``"nearest"``, or ``"pinv"``: the operator's pseudo-inverse ``A^+ y`` (nearest upsampling, exactly consistent).

    Raises:
        ValueError: an unknown mode, or bicubic in 3D.
    """

    MODES = ("bicubic", "bilinear", "trilinear", "nearest", "pinv")

    def __init__(self, mode: str = "bicubic") -> None:
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def __call__(
        self,
        low_res: torch.Tensor,
        factor: int,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Upsample ``low_res`` by ``factor`` (``contrast`` and ``generator`` are unused)."""
        low_res = check_low_res(low_res, factor)
        dims = low_res.ndim - 2
        if self.mode == "pinv":
            return SuperResolutionOperator(int(factor), spatial_dims=dims).pinv(low_res), None
        if self.mode == "bicubic" and dims != 2:
            raise ValueError("bicubic interpolation is 2D only; use 'trilinear' for 3D images")
        mode = {"bilinear": "bilinear" if dims == 2 else "trilinear"}.get(self.mode, self.mode)
        size = [s * int(factor) for s in low_res.shape[2:]]
        if mode == "nearest":
            return F.interpolate(low_res, size=size, mode="nearest"), None
        return F.interpolate(low_res, size=size, mode=mode, align_corners=False), None


class WaveletSuperResolution:
    """L1-wavelet regularised least squares ``min_x 0.5 ||A x - y||^2 + lam ||W x||_1`` (FISTA), started from the
    bicubic (2D) or linear (3D) interpolation.

    Args:
        lam: the wavelet L1 weight (tuned on validation, per factor if a mapping ``{factor: lam}`` is given).
        num_iter: FISTA iterations.
        wavelet: a PyWavelets orthogonal wavelet.
    """

    def __init__(self, lam: float | dict = 1e-3, num_iter: int = 200, wavelet: str = "db4") -> None:
        lams = {int(k): float(v) for k, v in lam.items()} if isinstance(lam, dict) else None
        values = list(lams.values()) if lams is not None else [float(lam)]  # type: ignore[arg-type]
        if any(not v >= 0 for v in values):
            raise ValueError(f"lam must be non-negative, got {lam}")
        self.lams = lams
        self.lam = None if lams is not None else float(lam)  # type: ignore[arg-type]
        self.num_iter = int(num_iter)
        self.wavelet = wavelet

    def lam_for(self, factor: int) -> float:
        """The weight used at ``factor``.

        Raises:
            ValueError: a per-factor mapping without ``factor``.
        """
        if self.lams is None:
            return float(self.lam)  # type: ignore[arg-type]
        if int(factor) not in self.lams:
            raise ValueError(f"no lam for factor {factor}; lam is given for factors {sorted(self.lams)}")
        return self.lams[int(factor)]

    def __call__(
        self,
        low_res: torch.Tensor,
        factor: int,
        contrast: str | int | Sequence | torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, None]:
        from monai_diffusion.apps.reconstruction.baselines import l1_wavelet_cs

        low_res = check_low_res(low_res, factor)
        dims = low_res.ndim - 2
        operator = SuperResolutionOperator(int(factor), spatial_dims=dims)
        start, _ = InterpolationSuperResolution("bicubic" if dims == 2 else "bilinear")(low_res, factor)
        out = l1_wavelet_cs(
            operator,
            low_res,
            self.lam_for(factor),
            num_iter=self.num_iter,
            wavelet=self.wavelet,
            x0=start,
            lipschitz=1.0 / int(factor) ** dims,
        )
        return out.float(), None
