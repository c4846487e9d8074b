"""Cartesian MRI forward operators (single- and multi-coil) with a centred orthonormal FFT.

Model (Pruessmann et al., "SENSE: sensitivity encoding for fast MRI", MRM 1999, eq. 1; Chung & Ye, MedIA 2022,
eq. 10): ``y_c = M F (S_c x)`` for coils ``c = 1..C`` with ``F`` the centred orthonormal DFT (MONAI's
:func:`monai.networks.blocks.fft_utils_t.fftn_centered_t` convention), ``M`` a binary sampling mask and ``S_c`` coil
sensitivity maps (single coil: ``S = 1``).

Layout: images and k-space are native complex tensors, batch-first and channel-first, ``(B, C, *spatial)``;
for multi-coil data the coil axis is the channel axis of the k-space and the image has one channel. With
``real_image=True`` the image domain is real (magnitude images, as in most benchmarks): the adjoint is then the
real part of the complex adjoint, and the exact pseudo-inverse accounts for the Hermitian symmetry of the
spectrum of a real image (measuring frequency ``k`` also measures ``-k``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.operators.base import LinearOperator

__all__ = [
    "fft_centered",
    "ifft_centered",
    "hermitian_flip",
    "effective_mask",
    "synthetic_coil_maps",
    "smooth_phase",
    "root_sum_of_squares",
    "MRIOperator",
]


def _require_complex(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_complex():
        raise TypeError(
            f"{what} must be a complex tensor (native complex dtype), got real dtype {x.dtype} with shape "
            f"{tuple(x.shape)}; trailing-2 real layouts convert with torch.view_as_complex"
        )


def _check_rank(x: torch.Tensor, spatial_dims: int, name: str) -> None:
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}")
    if x.ndim < spatial_dims:
        raise ValueError(f"{name} has {x.ndim} axes, fewer than spatial_dims={spatial_dims}: shape {tuple(x.shape)}")


def fft_centered(x: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Centred orthonormal DFT over the last ``spatial_dims`` axes of a complex tensor.

    Same convention as MONAI's :func:`~monai.networks.blocks.fft_utils_t.fftn_centered_t` (``fftshift(fftn(
    ifftshift(x)))``, ``norm="ortho"``; the tests check the two agree) but on native complex tensors with
    ``torch.fft``'s shifts. Measured on one CPU thread (2026-11-30, 5 repeats): MONAI's trailing-2 helper took
    1.16-1.29x our time on 8 x 64 x 64 and 0.97-1.10x on 8 x 256 x 256, i.e. the two are about level; an earlier
    claim of "about four times faster" did not hold up.

    Raises:
        TypeError: a real input.
        ValueError: fewer than ``spatial_dims`` axes, or ``spatial_dims`` not 1, 2 or 3.
    """
    _require_complex(x, "fft_centered input")
    _check_rank(x, spatial_dims, "fft_centered input")
    dims = tuple(range(-spatial_dims, 0))
    return torch.fft.fftshift(torch.fft.fftn(torch.fft.ifftshift(x, dim=dims), dim=dims, norm="ortho"), dim=dims)


def ifft_centered(k: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Centred orthonormal inverse DFT over the last ``spatial_dims`` axes (inverse of :func:`fft_centered`)."""
    _require_complex(k, "ifft_centered input")
    _check_rank(k, spatial_dims, "ifft_centered input")
    dims = tuple(range(-spatial_dims, 0))
    return torch.fft.fftshift(torch.fft.ifftn(torch.fft.ifftshift(k, dim=dims), dim=dims, norm="ortho"), dim=dims)


def hermitian_flip(k: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Map a centred spectrum ``K(f)`` to ``K(-f)`` over the last ``spatial_dims`` axes.

    In MONAI's centred layout index ``i`` of an axis of length ``N`` holds frequency ``i - N // 2`` (mod ``N``), so
    ``-f`` sits at index ``(2 (N // 2) - i) mod N``. For a real image ``X(-f) = conj(X(f))``.
    """
    out = k
    for d in range(-spatial_dims, 0):
        n = k.shape[d]
        idx = (2 * (n // 2) - torch.arange(n, device=k.device)) % n
        out = out.index_select(d, idx)
    return out


def effective_mask(mask: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    """Number of times each frequency of a real image is observed: ``n(f) = M(f) + M(-f)`` (0, 1 or 2)."""
    return mask + hermitian_flip(mask, spatial_dims)


def root_sum_of_squares(x: torch.Tensor, dim: int = 1, keepdim: bool = True) -> torch.Tensor:
    """Root-sum-of-squares coil combination ``sqrt(sum_c |x_c|^2)`` (Roemer et al., MRM 1990)."""
    return torch.sqrt((x.abs() ** 2).sum(dim=dim, keepdim=keepdim))


def synthetic_coil_maps(
    spatial_shape: Sequence[int], num_coils: int, radius: float = 1.5, normalize: bool = True
) -> torch.Tensor:
    """Smooth synthetic receive-coil sensitivity maps, shape ``(num_coils, *spatial_shape)`` complex64.

    Coils sit on a ring (2D) or on a ring at alternating heights (3D) at ``radius`` times the half field of view;
    each map's magnitude decays with distance from its coil (Biot-Savart-like ``1 / (1 + d^2)``) and its phase
    varies linearly along the ring direction. With ``normalize`` the maps satisfy ``sum_c |S_c|^2 = 1`` at every
    voxel, so the fully-sampled multi-coil operator is an isometry. Deterministic (no randomness).

    Raises:
        ValueError: if ``num_coils < 1`` or the shape is not 2D/3D.
    """
    shape = tuple(int(s) for s in spatial_shape)
    if num_coils < 1:
        raise ValueError(f"num_coils must be >= 1, got {num_coils}")
    if len(shape) not in (2, 3):
        raise ValueError(f"spatial_shape must be 2D or 3D, got {shape}")
    axes = [torch.linspace(-1.0, 1.0, s, dtype=torch.float64) for s in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), 0)  # (D, *shape)
    maps = []
    for c in range(num_coils):
        ang = 2 * math.pi * c / num_coils
        centre = [radius * math.cos(ang), radius * math.sin(ang)]
        if len(shape) == 3:
            centre.append(0.5 * (-1) ** c)
        dist2 = torch.zeros(shape, dtype=torch.float64)
        for i in range(len(shape)):
            dist2 = dist2 + (grid[i] - centre[i]) ** 2
        mag = 1.0 / (1.0 + dist2)
        phase = ang + 0.5 * (grid[0] * math.cos(ang) + grid[1] * math.sin(ang))
        maps.append(torch.polar(mag, phase))
    s = torch.stack(maps, 0)
    if normalize:
        s = s / root_sum_of_squares(s, dim=0, keepdim=True).clamp_min(1e-12)
    return s.to(torch.complex64)


def smooth_phase(
    spatial_shape: Sequence[int],
    max_phase: float = math.pi / 2,
    order: int = 2,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A smooth random phase map (radians), shape ``spatial_shape``: a random low-order cosine series.

    Real MR images carry slowly varying phase (B0 inhomogeneity, receive phase); simulating it makes the image
    complex so that methods cannot rely on a real image. The result lies in ``[-max_phase, max_phase]``.
    """
    shape = tuple(int(s) for s in spatial_shape)
    axes = [torch.linspace(0.0, 1.0, s, dtype=torch.float64) for s in shape]
    grid = torch.meshgrid(*axes, indexing="ij")
    field = torch.zeros(shape, dtype=torch.float64)
    for freqs in torch.cartesian_prod(*[torch.arange(order + 1)] * len(shape)).reshape(-1, len(shape)):
        if int(freqs.sum()) == 0:
            continue
        coef = torch.randn((), generator=generator, dtype=torch.float64) / float(freqs.sum())
        term = torch.ones(shape, dtype=torch.float64)
        for i, f in enumerate(freqs.tolist()):
            term = term * torch.cos(math.pi * f * grid[i])
        field = field + coef * term
    field = field - field.mean()
    return field * (max_phase / field.abs().max().clamp_min(1e-12))


class MRIOperator(LinearOperator):
    """Cartesian MRI: ``y = M F (S x)`` with a binary mask, optional coil maps, centred orthonormal FFT.

    Args:
        mask: binary sampling mask (0/1), real, broadcastable to the k-space ``(B, coils, *spatial)``; e.g. shape
            ``spatial``, ``(1, 1, *spatial)`` or ``(B, 1, *spatial)``.
        sensitivity_maps: optional complex coil maps ``(coils, *spatial)`` or ``(B or 1, coils, *spatial)``;
            ``None`` for single-coil (then every image channel is an independent single-coil acquisition).
        spatial_dims: 2 or 3.
        real_image: whether the image domain is real (see module docs); otherwise images must be complex.
        cg_iters: CG iterations for the multi-coil pseudo-inverse and soft projection.

    Raises:
        ValueError: non-binary mask, complex mask, or maps whose spatial shape does not match the mask.
        TypeError: complex data expected but real given.
    """

    def __init__(
        self,
        mask: torch.Tensor | Sequence,
        sensitivity_maps: torch.Tensor | None = None,
        spatial_dims: int = 2,
        real_image: bool = False,
        cg_iters: int = 30,
        cg_tol: float = 1e-8,
    ) -> None:
        super().__init__(spatial_dims, cg_iters, cg_tol)
        self.mask: torch.Tensor
        self.sensitivity_maps: torch.Tensor | None
        m = torch.as_tensor(mask)
        if m.is_complex():
            raise TypeError("mask must be real (0/1), got a complex tensor")
        m = m.to(torch.float32)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must be binary (values 0 and 1)")
        if not bool(m.any()):
            raise ValueError(f"mask of shape {tuple(m.shape)} samples no k-space point (all zeros)")
        if m.ndim < spatial_dims:
            raise ValueError(f"mask needs at least {spatial_dims} spatial dims, got shape {tuple(m.shape)}")
        while m.ndim < spatial_dims + 2:
            m = m.unsqueeze(0)
        self.register_buffer("mask", m)
        if sensitivity_maps is not None:
            s = torch.as_tensor(sensitivity_maps)
            _require_complex(s, "sensitivity_maps")
            if s.ndim == spatial_dims + 1:
                s = s.unsqueeze(0)
            if s.ndim != spatial_dims + 2:
                raise ValueError(
                    f"sensitivity_maps must have shape (coils, *spatial) or (B, coils, *spatial), got {tuple(s.shape)}"
                )
            self._check_spatial(s.shape[-spatial_dims:], "sensitivity_maps")
            self.register_buffer("sensitivity_maps", s)
        else:
            self.register_buffer("sensitivity_maps", None)
        self.real_image = bool(real_image)
        self.complex_domain = not self.real_image
        self.exact_pinv = sensitivity_maps is None

    @property
    def num_coils(self) -> int | None:
        return None if self.sensitivity_maps is None else int(self.sensitivity_maps.shape[1])

    # ------------------------------------------------------------------ checks
    def _check_spatial(self, spatial: Sequence[int], what: str) -> None:
        mshape = tuple(self.mask.shape[-self.spatial_dims :])
        for ms, s in zip(mshape, spatial):
            if ms not in (1, s):
                raise ValueError(f"mask spatial shape {mshape} does not match {what} spatial shape {tuple(spatial)}")

    def check_image(self, x: torch.Tensor) -> None:
        super().check_image(x)
        self._check_spatial(x.shape[-self.spatial_dims :], "image")
        if self.sensitivity_maps is not None:
            if x.shape[1] != 1:
                raise ValueError(f"multi-coil MRI expects a one-channel image (B, 1, *spatial), got {tuple(x.shape)}")
            if tuple(x.shape[2:]) != tuple(self.sensitivity_maps.shape[2:]):
                raise ValueError(
                    f"image spatial shape {tuple(x.shape[2:])} does not match the coil maps' "
                    f"{tuple(self.sensitivity_maps.shape[2:])}"
                )

    def check_kspace(self, y: torch.Tensor) -> None:
        """Raise a clear error if ``y`` is not complex k-space of a matching shape and coil count."""
        _require_complex(y, "k-space")
        if y.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"k-space must have shape (B, coils, *spatial) with {self.spatial_dims} spatial dims, got {tuple(y.shape)}"
            )
        self._check_spatial(y.shape[-self.spatial_dims :], "k-space")
        if self.sensitivity_maps is not None and y.shape[1] != self.sensitivity_maps.shape[1]:
            raise ValueError(
                f"k-space has {y.shape[1]} coils but the sensitivity maps have {self.sensitivity_maps.shape[1]}"
            )

    def _mask(self, ref: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=ref.device, dtype=ref.real.dtype)

    def _maps(self, ref: torch.Tensor) -> torch.Tensor:
        if self.sensitivity_maps is None:
            raise RuntimeError("this operator has no sensitivity maps")
        return self.sensitivity_maps.to(device=ref.device, dtype=ref.dtype)

    # ------------------------------------------------------------------ contract
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(x)
        xc = x if x.is_complex() else x.to(torch.complex128 if x.dtype == torch.float64 else torch.complex64)
        if self.sensitivity_maps is not None:
            xc = xc * self._maps(xc)
        return self._mask(xc) * fft_centered(xc, self.spatial_dims)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_kspace(y)
        z = ifft_centered(self._mask(y) * y, self.spatial_dims)
        if self.sensitivity_maps is not None:
            z = (torch.conj(self._maps(z)) * z).sum(1, keepdim=True)
        return z.real if self.real_image else z

    def _real_average(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(n, n * ybar)``: observation count per frequency and the sum of the Hermitian-paired measurements."""
        m = self._mask(y)
        my = m * y
        n = effective_mask(m, self.spatial_dims)
        return n, my + torch.conj(hermitian_flip(my, self.spatial_dims))

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Exact ``A^+`` for single-coil data: ``F^H M y`` (complex) or the Hermitian-averaged spectrum (real)."""
        if self.sensitivity_maps is not None:
            self.check_kspace(y)
            return super().pinv(y)
        self.check_kspace(y)
        if not self.real_image:
            return ifft_centered(self._mask(y) * y, self.spatial_dims)
        n, s = self._real_average(y)
        ybar = torch.where(n > 0, s / n.clamp_min(1), torch.zeros_like(s))
        return ifft_centered(ybar, self.spatial_dims).real

    def soft_project(self, x: torch.Tensor, y: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        """Exact soft data consistency for single-coil data (per frequency); CG for multi-coil."""
        if self.sensitivity_maps is not None:
            return super().soft_project(x, y, weight)
        self.check_image(x)
        self.check_kspace(y)
        w = torch.as_tensor(weight, dtype=x.real.dtype, device=x.device)
        xc = x if x.is_complex() else x.to(y.dtype)
        kx = fft_centered(xc, self.spatial_dims)
        if not self.real_image:
            m = self._mask(y)
            return ifft_centered((kx + w * m * y) / (1 + w * m), self.spatial_dims)
        n, s = self._real_average(y)
        k = (kx + 0.5 * w * s) / (1 + 0.5 * w * n)
        return ifft_centered(k, self.spatial_dims).real
