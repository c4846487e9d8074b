"""Image-domain forward operators: denoising (identity), inpainting (mask) and super-resolution (box downsampling).

These are the linear degradations of DDRM/DDNM/DPS (Kawar et al. 2022; Wang et al. 2023; Chung et al. 2023). All
three have an exact, cheap pseudo-inverse. They accept real or complex images, 2D or 3D, batch-first and
channel-first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from monai_diffusion.operators.base import LinearOperator

__all__ = ["IdentityOperator", "InpaintingOperator", "SuperResolutionOperator"]


class IdentityOperator(LinearOperator):
    """``A = I``: denoising. ``A^H = A^+ = I``."""

    exact_pinv = True

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(x)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(y)
        return y

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.A_adjoint(y)

    def soft_project(self, x: torch.Tensor, y: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        w = torch.as_tensor(weight, dtype=x.real.dtype, device=x.device)
        return (x + w * y) / (1 + w)


class InpaintingOperator(LinearOperator):
    """``A x = m * x`` with a binary mask ``m`` (1 = observed); the measurement keeps the image shape.

    ``A`` is an orthogonal projection, so ``A^H = A^+ = A``.

    Args:
        mask: binary mask broadcastable to the image ``(B, C, *spatial)`` (e.g. shape ``spatial``).
        spatial_dims: 2 or 3.

    Raises:
        ValueError: non-binary mask, or a mask whose spatial shape does not broadcast to the image.
    """

    exact_pinv = True

    def __init__(self, mask: torch.Tensor | Sequence, spatial_dims: int = 2) -> None:
        super().__init__(spatial_dims)
        self.mask: torch.Tensor
        m = torch.as_tensor(mask)
        if m.is_complex():
            raise TypeError("mask must be real (0/1), got a complex tensor")
        m = m.to(torch.float32)
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must be binary (values 0 and 1)")
        if m.ndim < spatial_dims:
            raise ValueError(f"mask needs at least {spatial_dims} spatial dims, got shape {tuple(m.shape)}")
        while m.ndim < spatial_dims + 2:
            m = m.unsqueeze(0)
        self.register_buffer("mask", m)

    def check_image(self, x: torch.Tensor) -> None:
        super().check_image(x)
        for ms, s in zip(self.mask.shape, x.shape):
            if ms not in (1, s):
                raise ValueError(f"mask shape {tuple(self.mask.shape)} does not broadcast to {tuple(x.shape)}")

    def _m(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask.to(device=x.device, dtype=x.real.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(x)
        return self._m(x) * x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        return self.A(y)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        return self.A(y)

    def soft_project(self, x: torch.Tensor, y: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        self.check_image(x)
        m = self._m(x)
        w = torch.as_tensor(weight, dtype=x.real.dtype, device=x.device)
        return (x + w * m * y) / (1 + w * m)


class SuperResolutionOperator(LinearOperator):
    """Downsampling by an integer factor with box (average) pooling: ``A x = avgpool_f(x)``.

    ``A^H y = upsample_nearest(y) / f^d`` and ``A A^H = I / f^d``, so ``A^+ = f^d A^H`` (nearest upsampling).

    Args:
        factor: integer downsampling factor ``f >= 1`` (the same along every spatial axis).
        spatial_dims: 2 or 3.

    Raises:
        ValueError: ``factor < 1``, or image sides not divisible by ``factor``.
    """

    exact_pinv = True

    def __init__(self, factor: int = 2, spatial_dims: int = 2) -> None:
        super().__init__(spatial_dims)
        if int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor}")
        self.factor = int(factor)

    def check_image(self, x: torch.Tensor) -> None:
        super().check_image(x)
        if any(s % self.factor for s in x.shape[2:]):
            raise ValueError(f"image spatial shape {tuple(x.shape[2:])} is not divisible by factor {self.factor}")

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        if x.is_complex():
            return torch.complex(pool(x.real, self.factor), pool(x.imag, self.factor))
        return pool(x, self.factor)

    def _up(self, y: torch.Tensor) -> torch.Tensor:
        out = y
        for d in range(2, y.ndim):
            out = out.repeat_interleave(self.factor, dim=d)
        return out

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        self.check_image(x)
        return self._pool(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        super().check_image(y)
        return self._up(y) / self.factor**self.spatial_dims

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        super().check_image(y)
        return self._up(y)
