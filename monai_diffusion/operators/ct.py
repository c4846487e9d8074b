"""Parallel-beam CT: a differentiable Radon transform, its exact adjoint, and filtered back-projection in torch.

Geometry (the one of :func:`skimage.transform.radon` with ``circle=True``): a square ``N x N`` image with centre
``c = N // 2``; for a projection angle ``theta`` the ray through detector bin ``s`` is sampled at ``N`` points
``r = 0..N-1``,

    col = c + cos(theta) (s - c) + sin(theta) (r - c),    row = c - sin(theta) (s - c) + cos(theta) (r - c),

the image is read there by bilinear interpolation (zero outside), and the samples are summed:
``p_theta(s) = sum_r image(row, col)``. This is a sparse matrix ``W`` with four entries per sample; the forward
operator gathers with its weights and the back-projector scatters with the same weights (``index_add``), so the
two are exact adjoints of one another to rounding (Kak & Slaney, "Principles of computerized tomographic
imaging", 1988, ch. 3 for the projection model). Filtered back-projection (Kak & Slaney eq. 3.61-3.62) uses the
band-limited Ram-Lak kernel and a pixel-driven back-projection with linear interpolation on the detector,
scaled by ``pi / (2 n_angles)``.

Sinogram layout: ``(B, C, n_angles, N)`` for 2D images ``(B, C, N, N)``; 3D volumes ``(B, C, D, N, N)`` are
projected slice by slice to ``(B, C, D, n_angles, N)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from monai_diffusion.operators.base import LinearOperator

__all__ = ["ramp_filter", "radon_weights", "ParallelBeamCT"]


def ramp_filter(size: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Frequency response (FFT order) of the band-limited Ram-Lak ramp filter of length ``size``.

    Built in the spatial domain to avoid the zero-frequency bias of a sampled ``|f|`` (Kak & Slaney eq. 3.61):
    ``h(0) = 1/4``, ``h(n) = -1 / (pi n)^2`` for odd ``n``, ``0`` for even ``n``; the response is ``2 Re FFT(h)``.
    """
    n = torch.arange(size, dtype=torch.float64)
    n = torch.where(n < size / 2, n, n - size)
    h = torch.zeros(size, dtype=torch.float64)
    odd = (n.abs() % 2) == 1
    h[odd] = -1.0 / (math.pi * n[odd]) ** 2
    h[0] = 0.25
    return (2 * torch.fft.fft(h).real).to(dtype)


def radon_weights(
    size: int, theta_rad: torch.Tensor, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices and bilinear weights of the projection matrix for a chunk of angles.

    Returns:
        ``(idx, w)`` of shape ``(4, A, N, N)`` (neighbour, angle, ray sample r, detector s): flat pixel indices
        (clamped into range) and weights (zero for neighbours outside the image).
    """
    c = size // 2
    ar = torch.arange(size, dtype=dtype) - c
    cos = torch.cos(theta_rad).to(dtype).reshape(-1, 1, 1)
    sin = torch.sin(theta_rad).to(dtype).reshape(-1, 1, 1)
    r = ar.reshape(1, -1, 1)
    s = ar.reshape(1, 1, -1)
    col = c + cos * s + sin * r
    row = c - sin * s + cos * r
    r0 = torch.floor(row)
    c0 = torch.floor(col)
    fr = row - r0
    fc = col - c0
    r0 = r0.long()
    c0 = c0.long()
    idx, wts = [], []
    for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
        rr = r0 + dr
        cc = c0 + dc
        ok = (rr >= 0) & (rr < size) & (cc >= 0) & (cc < size)
        idx.append(rr.clamp(0, size - 1) * size + cc.clamp(0, size - 1))
        wts.append(torch.where(ok, w, torch.zeros_like(w)))
    return torch.stack(idx), torch.stack(wts)


class ParallelBeamCT(LinearOperator):
    """Parallel-beam Radon transform ``A`` with exact adjoint (back-projection) and filtered back-projection.

    Args:
        image_size: side ``N`` of the square image (the object should lie inside the inscribed circle).
        angles: projection angles in degrees (list) or a number of equispaced angles in ``[0, 180)``.
        spatial_dims: 2 (images) or 3 (volumes projected slice by slice along the first spatial axis).
        angle_chunk: angles processed at once (bounds memory: ``4 * chunk * N^2`` indices).
        cg_iters: CG iterations for the generic pseudo-inverse and soft projection.

    Raises:
        ValueError: on a non-positive size or no angles, and on images that are not square ``N x N``.
    """

    complex_domain = False

    def __init__(
        self,
        image_size: int,
        angles: int | Sequence[float] = 180,
        spatial_dims: int = 2,
        angle_chunk: int = 16,
        cg_iters: int = 30,
        cg_tol: float = 1e-8,
    ) -> None:
        super().__init__(spatial_dims, cg_iters, cg_tol)
        if spatial_dims not in (2, 3):
            raise ValueError(f"ParallelBeamCT supports spatial_dims 2 or 3, got {spatial_dims}")
        if int(image_size) < 2:
            raise ValueError(f"image_size must be >= 2, got {image_size}")
        if isinstance(angles, int):
            if angles < 1:
                raise ValueError(f"need at least one angle, got {angles}")
            theta = torch.arange(angles, dtype=torch.float64) * (180.0 / angles)
        else:
            theta = torch.as_tensor(list(angles), dtype=torch.float64)
            if theta.numel() == 0:
                raise ValueError("angles is empty")
        self.theta: torch.Tensor
        self.image_size = int(image_size)
        self.angle_chunk = max(1, int(angle_chunk))
        self.register_buffer("theta", theta)

    @property
    def num_angles(self) -> int:
        return int(self.theta.numel())

    def check_image(self, x: torch.Tensor) -> None:
        super().check_image(x)
        n = self.image_size
        if tuple(x.shape[-2:]) != (n, n):
            raise ValueError(f"ParallelBeamCT expects {n}x{n} images in the last two dims, got {tuple(x.shape)}")

    def check_sinogram(self, y: torch.Tensor) -> None:
        if not isinstance(y, torch.Tensor) or y.is_complex():
            raise TypeError("sinogram must be a real torch.Tensor")
        want = (self.num_angles, self.image_size)
        if y.ndim != self.spatial_dims + 2 or tuple(y.shape[-2:]) != want:
            raise ValueError(
                f"sinogram must have shape (B, C, {'D, ' if self.spatial_dims == 3 else ''}{want[0]}, {want[1]}), "
                f"got {tuple(y.shape)}"
            )

    def _chunks(self, dtype: torch.dtype, device: torch.device):
        theta = torch.deg2rad(self.theta.to(torch.float64))
        for a0 in range(0, self.num_angles, self.angle_chunk):
            idx, w = radon_weights(self.image_size, theta[a0 : a0 + self.angle_chunk], torch.float64)
            yield a0, idx.to(device), w.to(device=device, dtype=dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(x)
        n = self.image_size
        lead = x.shape[:-2]
        flat = x.reshape(-1, n * n)
        outs = []
        for _, idx, w in self._chunks(x.dtype, x.device):
            acc = w[0] * flat[:, idx[0]]  # (M, A, r, s)
            for k in range(1, 4):
                acc = acc + w[k] * flat[:, idx[k]]
            outs.append(acc.sum(-2))  # sum over ray samples r
        return torch.cat(outs, 1).reshape(*lead, self.num_angles, n)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_sinogram(y)
        n = self.image_size
        lead = y.shape[:-2]
        flat = y.reshape(-1, self.num_angles, n)
        out = torch.zeros(flat.shape[0], n * n, dtype=y.dtype, device=y.device)
        for a0, idx, w in self._chunks(y.dtype, y.device):
            a1 = a0 + idx.shape[1]
            src = flat[:, a0:a1].unsqueeze(2)  # (M, A, 1, s): constant along the ray
            for k in range(4):
                out = out.index_add(1, idx[k].reshape(-1), (w[k] * src).reshape(flat.shape[0], -1))
        return out.reshape(*lead, n, n)

    def filter_sinogram(self, y: torch.Tensor) -> torch.Tensor:
        """Ramp-filter each projection along the detector axis.

        Projections are zero-padded symmetrically to the image diagonal ``L = ceil(sqrt(2) N)`` (the filtered
        signal spills beyond the detector and pixels on the inscribed circle read it), then to a power of two of
        at least ``2 L`` (minimum 64) for the FFT, the lengths skimage uses for ``circle=True``.

        Returns:
            Filtered projections of shape ``(..., n_angles, L)`` with detector centre at index ``L // 2``.
        """
        self.check_sinogram(y)
        n = self.image_size
        diag = int(math.ceil(math.sqrt(2) * n))
        before = diag // 2 - n // 2
        size = max(64, 2 ** int(math.ceil(math.log2(2 * diag))))
        filt = ramp_filter(size, y.dtype).to(y.device)
        spec = torch.fft.fft(torch.nn.functional.pad(y, (before, size - n - before)), dim=-1) * filt
        return torch.fft.ifft(spec, dim=-1).real[..., :diag]

    def backproject_pixel(self, y: torch.Tensor) -> torch.Tensor:
        """Pixel-driven back-projection: each pixel reads every projection at ``t = cos(theta) x - sin(theta) y``
        by linear interpolation (zero outside the detector). Close to, but not exactly, ``A^H``.

        Args:
            y: projections ``(..., n_angles, L)`` with any detector length ``L`` centred at ``L // 2``.
        """
        if not isinstance(y, torch.Tensor) or y.is_complex() or y.shape[-2] != self.num_angles:
            raise ValueError(f"expected real projections (..., {self.num_angles}, L), got {tuple(y.shape)}")
        n = self.image_size
        c = n // 2
        length = y.shape[-1]
        lead = y.shape[:-2]
        flat = y.reshape(-1, self.num_angles, length)
        coords = torch.arange(n, dtype=y.dtype, device=y.device) - c
        rows = coords.reshape(-1, 1)
        cols = coords.reshape(1, -1)
        out = torch.zeros(flat.shape[0], n, n, dtype=y.dtype, device=y.device)
        theta = torch.deg2rad(self.theta.to(y.dtype)).to(y.device)
        for a in range(self.num_angles):
            t = cols * torch.cos(theta[a]) - rows * torch.sin(theta[a]) + length // 2
            t0 = torch.floor(t)
            f = t - t0
            t0 = t0.long()
            proj = flat[:, a]
            for off, wt in ((0, 1 - f), (1, f)):
                ti = t0 + off
                ok = (ti >= 0) & (ti < length)
                val = proj[:, ti.clamp(0, length - 1)]
                out = out + torch.where(ok, wt, torch.zeros_like(wt)) * val
        return out.reshape(*lead, n, n)

    def fbp(self, y: torch.Tensor, circle: bool = True) -> torch.Tensor:
        """Filtered back-projection ``(pi / (2 n_angles)) * backproject(ramp * y)``, zero outside the circle."""
        rec = self.backproject_pixel(self.filter_sinogram(y)) * (math.pi / (2 * self.num_angles))
        if circle:
            n = self.image_size
            c = torch.arange(n, dtype=y.dtype, device=y.device) - n // 2
            inside = (c.reshape(-1, 1) ** 2 + c.reshape(1, -1) ** 2) <= (n // 2) ** 2
            rec = rec * inside
        return rec
