"""Array transforms for k-space simulation, undersampling, zero-filled reconstruction, coil combination and
data consistency.

Layout (one item, no batch axis, as MONAI transforms see it): images are channel-first ``(C, *spatial)``; complex
images and k-space are **native complex tensors** (``torch.complex64``); multi-coil k-space and coil images put the
coils on the channel axis ``(coils, *spatial)`` and the coil maps are ``(coils, *spatial)``. Masks are float 0/1
tensors broadcastable to the k-space (the functions of :mod:`.masks` return the full spatial shape). Real data
where complex is required raise ``TypeError``; shapes that do not match raise ``ValueError``.

Nothing is kept on the transform between calls (no ``transform.mask`` side channel): a transform that draws a mask
returns it.
"""

from __future__ import annotations

import math

import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Randomizable, Transform
from monai.utils import convert_to_tensor

from monai_diffusion.operators.mri import (
    MRIOperator,
    fft_centered,
    ifft_centered,
    root_sum_of_squares,
    smooth_phase,
    synthetic_coil_maps,
)
from monai_diffusion.transforms.kspace.masks import MASK_TYPES, check_mask_args, make_mask

__all__ = ["SimulateKspace", "UndersampleKspace", "ZeroFilled", "CoilCombine", "KspaceDataConsistency"]


def _check_spatial_dims(spatial_dims: int) -> int:
    """Return ``spatial_dims`` as an int, or raise ``ValueError`` unless it is 2 or 3."""
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
    return int(spatial_dims)


def _spatial_dims_ok(x: torch.Tensor, spatial_dims: int, what: str) -> None:
    if x.ndim != spatial_dims + 1:
        raise ValueError(
            f"{what} must be channel-first (C, *spatial) with {spatial_dims} spatial dims, got shape {tuple(x.shape)}"
        )


def _complex(x: NdarrayOrTensor, what: str) -> torch.Tensor:
    t = convert_to_tensor(x, track_meta=False)
    if not t.is_complex():
        raise TypeError(f"{what} must be complex (native complex dtype), got {t.dtype}; see the module docs")
    return t


def _check_maps(
    maps: NdarrayOrTensor, kspace_or_image: torch.Tensor, spatial_dims: int, coils: int | None
) -> torch.Tensor:
    m = _complex(maps, "sensitivity maps")
    _spatial_dims_ok(m, spatial_dims, "sensitivity maps")
    if tuple(m.shape[1:]) != tuple(kspace_or_image.shape[1:]):
        raise ValueError(
            f"sensitivity maps spatial shape {tuple(m.shape[1:])} does not match {tuple(kspace_or_image.shape[1:])}"
        )
    if coils is not None and m.shape[0] != coils:
        raise ValueError(f"{m.shape[0]} sensitivity maps for {coils} coils")
    return m


class SimulateKspace(Randomizable, Transform):
    """Real image ``(1, *spatial)`` -> fully sampled (multi-coil) k-space ``(coils, *spatial)``, complex64.

    The image is given a smooth random phase (:func:`~monai_diffusion.operators.mri.smooth_phase`), multiplied by
    synthetic coil maps (:func:`~monai_diffusion.operators.mri.synthetic_coil_maps`, ``sum_c |S_c|^2 = 1``) and
    Fourier transformed with the centred orthonormal FFT. The maps are deterministic
    (:meth:`sensitivity_maps`); the phase is drawn from the transform's random state (``set_random_state``).

    Args:
        num_coils: number of receive coils (1: single coil, no maps applied).
        spatial_dims: 2 or 3.
        max_phase: largest absolute phase in radians (0 disables the phase).
        noise_std: std of circular complex white noise added to every k-space sample (``E|n|^2 = noise_std^2``).

    Raises:
        TypeError: a complex image (on call).
        ValueError: an image that is not ``(1, *spatial)`` or holds NaN/inf (on call).
    """

    def __init__(
        self, num_coils: int = 1, spatial_dims: int = 2, max_phase: float = math.pi / 2, noise_std: float = 0.0
    ):
        if num_coils < 1:
            raise ValueError(f"num_coils must be >= 1, got {num_coils}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be non-negative, got {noise_std}")
        self.num_coils = int(num_coils)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.max_phase = float(max_phase)
        self.noise_std = float(noise_std)
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def sensitivity_maps(self, spatial_shape) -> torch.Tensor:
        """The coil maps used for ``spatial_shape`` (``(coils, *spatial)``; ones for a single coil)."""
        if self.num_coils == 1:
            return torch.ones((1, *spatial_shape), dtype=torch.complex64)
        return synthetic_coil_maps(spatial_shape, self.num_coils)

    def complex_image(self, img: torch.Tensor) -> torch.Tensor:
        """The phase-modulated complex image ``(1, *spatial)`` for the current random state."""
        gen = torch.Generator().manual_seed(self._seed)
        phase = smooth_phase(img.shape[1:], self.max_phase, generator=gen) if self.max_phase > 0 else None
        x = img.to(torch.float32).to(torch.complex64)
        return x if phase is None else x * torch.polar(torch.ones_like(phase), phase).to(torch.complex64)

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> torch.Tensor:
        x = convert_to_tensor(img, track_meta=False)
        if x.is_complex():
            raise TypeError("SimulateKspace expects a real magnitude image")
        _spatial_dims_ok(x, self.spatial_dims, "image")
        if x.shape[0] != 1:
            raise ValueError(f"SimulateKspace expects a one-channel image (1, *spatial), got {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"SimulateKspace: img holds {bad} NaN or infinite value(s) out of {x.numel()}; expected a finite image"
            )
        if randomize:
            self.randomize()
        xc = self.complex_image(x)
        k = fft_centered(xc * self.sensitivity_maps(x.shape[1:]), self.spatial_dims)
        if self.noise_std > 0:
            gen = torch.Generator().manual_seed(self._seed + 1)
            n = torch.complex(torch.randn(k.shape, generator=gen), torch.randn(k.shape, generator=gen))
            k = k + (self.noise_std / math.sqrt(2)) * n
        return k


class UndersampleKspace(Randomizable, Transform):
    """Multiply k-space by a sampling mask; returns ``(masked_kspace, mask)``.

    Args:
        mask_type: one of :data:`~monai_diffusion.transforms.kspace.masks.MASK_TYPES` (a new mask is drawn per call
            from the transform's random state), ignored when ``mask`` is given.
        acceleration: ``R >= 1``.
        center_fraction: fully-sampled central share.
        spatial_dims: 2 or 3.
        mask: a fixed mask (spatial shape) to use instead of drawing one.
    """

    def __init__(
        self,
        mask_type: str = "random",
        acceleration: float = 4.0,
        center_fraction: float = 0.08,
        spatial_dims: int = 2,
        mask: torch.Tensor | None = None,
    ) -> None:
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}, got {mask_type!r}")
        check_mask_args((2, 2), acceleration, center_fraction)
        self.mask_type = mask_type
        self.acceleration = float(acceleration)
        self.center_fraction = float(center_fraction)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.fixed_mask = None if mask is None else torch.as_tensor(mask, dtype=torch.float32)
        self._seed = 0

    def randomize(self, data=None) -> None:
        self._seed = int(self.R.randint(0, 2**31 - 1))

    def __call__(self, kspace: NdarrayOrTensor, randomize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        k = _complex(kspace, "k-space")
        _spatial_dims_ok(k, self.spatial_dims, "k-space")
        if self.fixed_mask is not None:
            mask = self.fixed_mask
            if tuple(mask.shape[-self.spatial_dims :]) != tuple(k.shape[1:]):
                raise ValueError(
                    f"mask shape {tuple(mask.shape)} does not match k-space spatial shape {tuple(k.shape[1:])}"
                )
        else:
            if randomize:
                self.randomize()
            mask = make_mask(self.mask_type, k.shape[1:], self.acceleration, self.center_fraction, self._seed)
        mask = mask.reshape(k.shape[1:]).unsqueeze(0)
        return k * mask, mask


class ZeroFilled(Transform):
    """Zero-filled reconstruction: inverse centred FFT of the (masked) k-space, then optional coil combination.

    Args:
        spatial_dims: 2 or 3.
        combine: ``None`` (complex coil images), ``"rss"`` (real, root-sum-of-squares) or ``"sensitivity"``
            (complex ``sum_c conj(S_c) x_c``; needs maps).
    """

    def __init__(self, spatial_dims: int = 2, combine: str | None = "rss") -> None:
        if combine not in (None, "rss", "sensitivity"):
            raise ValueError(f"combine must be None, 'rss' or 'sensitivity', got {combine!r}")
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.combine = combine

    def __call__(self, kspace: NdarrayOrTensor, maps: NdarrayOrTensor | None = None) -> torch.Tensor:
        k = _complex(kspace, "k-space")
        _spatial_dims_ok(k, self.spatial_dims, "k-space")
        imgs = ifft_centered(k, self.spatial_dims)
        if self.combine is None:
            return imgs
        return CoilCombine(self.combine, self.spatial_dims)(imgs, maps)


class CoilCombine(Transform):
    """Combine complex coil images ``(coils, *spatial)`` into one channel.

    ``"rss"``: ``sqrt(sum_c |x_c|^2)`` (real; Roemer et al. 1990). ``"sensitivity"``: ``sum_c conj(S_c) x_c /
    sum_c |S_c|^2`` (complex; the SENSE combination for a fully sampled acquisition, Pruessmann et al. 1999).
    """

    def __init__(self, method: str = "rss", spatial_dims: int = 2) -> None:
        if method not in ("rss", "sensitivity"):
            raise ValueError(f"method must be 'rss' or 'sensitivity', got {method!r}")
        self.method = method
        self.spatial_dims = _check_spatial_dims(spatial_dims)

    def __call__(self, coil_images: NdarrayOrTensor, maps: NdarrayOrTensor | None = None) -> torch.Tensor:
        x = _complex(coil_images, "coil images")
        _spatial_dims_ok(x, self.spatial_dims, "coil images")
        if self.method == "rss":
            return root_sum_of_squares(x, dim=0, keepdim=True)
        if maps is None:
            raise ValueError("sensitivity combination needs coil maps")
        s = _check_maps(maps, x, self.spatial_dims, x.shape[0]).to(x.dtype)
        return (torch.conj(s) * x).sum(0, keepdim=True) / (s.abs() ** 2).sum(0, keepdim=True).clamp_min(1e-12)


class KspaceDataConsistency(Transform):
    """Data-consistency projection of a complex image onto measured k-space.

    ``"hard"``: replace the measured samples (``x + A^+(y - A x)``; exact for a single coil, CG for multi-coil).
    ``"soft"``: ``argmin_z ||z - x||^2 + weight ||A z - y||^2`` for noisy data. ``A = M F S`` as in
    :class:`~monai_diffusion.operators.mri.MRIOperator`.

    Args:
        mode: ``"hard"`` or ``"soft"``.
        weight: the soft weight (e.g. ``1 / noise_var``).
        spatial_dims: 2 or 3.
        cg_iters: CG iterations for multi-coil data.
    """

    def __init__(self, mode: str = "hard", weight: float = 1.0, spatial_dims: int = 2, cg_iters: int = 30) -> None:
        if mode not in ("hard", "soft"):
            raise ValueError(f"mode must be 'hard' or 'soft', got {mode!r}")
        if weight < 0:
            raise ValueError(f"weight must be non-negative, got {weight}")
        self.mode = mode
        self.weight = float(weight)
        self.spatial_dims = _check_spatial_dims(spatial_dims)
        self.cg_iters = int(cg_iters)

    def __call__(  # type: ignore[override]
        self,
        image: NdarrayOrTensor,
        kspace: NdarrayOrTensor,
        mask: NdarrayOrTensor,
        maps: NdarrayOrTensor | None = None,
    ) -> torch.Tensor:
        x = _complex(image, "image")
        k = _complex(kspace, "k-space")
        _spatial_dims_ok(x, self.spatial_dims, "image")
        _spatial_dims_ok(k, self.spatial_dims, "k-space")
        m = torch.as_tensor(mask, dtype=torch.float32)
        s = None
        if maps is not None:
            s = _check_maps(maps, k, self.spatial_dims, k.shape[0]).to(k.dtype)
            if x.shape[0] != 1:
                raise ValueError(f"multi-coil data consistency expects a one-channel image, got {tuple(x.shape)}")
        elif x.shape != k.shape:
            raise ValueError(
                f"image {tuple(x.shape)} and single-coil k-space {tuple(k.shape)} must have the same shape"
            )
        op = MRIOperator(m, s, spatial_dims=self.spatial_dims, cg_iters=self.cg_iters)
        xb, kb = x.unsqueeze(0), k.unsqueeze(0).to(x.dtype)
        out = op.project(xb, kb) if self.mode == "hard" else op.soft_project(xb, kb, self.weight)
        return out[0]
