"""Linear forward operators for inverse problems: the common contract and generic solvers.

Every operator maps an image ``x`` (batch-first, channel-first, 2D or 3D) to a measurement ``y = A x`` and
provides the adjoint ``A^H`` under the real inner product ``<a, b> = Re sum conj(a) b``, the normal operator
``A^H A``, and a pseudo-inverse ``A^+``. Operators whose pseudo-inverse is cheap and exact override
:meth:`LinearOperator.pinv` and set ``exact_pinv = True``; the others inherit a conjugate-gradient least-squares
solve. Data consistency is built from these pieces:

* hard (range-null space) projection ``x + A^+ (y - A x)`` (Wang et al., "Zero-shot image restoration using
  denoising diffusion null-space model", ICLR 2023, eq. 7);
* soft (weighted) projection ``argmin_z ||z - x||^2 + w ||A z - y||^2 = (I + w A^H A)^{-1} (x + w A^H y)``
  for noisy measurements (the proximal step of Chung & Ye, "Score-based diffusion models for accelerated MRI",
  MedIA 2022, eq. 14, with a finite weight).

Images whose operator domain is complex are native complex tensors; real domains take real tensors.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

__all__ = ["LinearOperator", "conjugate_gradient", "batch_inner", "power_iteration"]


def batch_inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Real inner product ``Re sum conj(a) * b`` per batch element, shape (B,) broadcastable as (B, 1, ...)."""
    prod = torch.conj(a) * b if a.is_complex() or b.is_complex() else a * b
    out = prod.reshape(prod.shape[0], -1).sum(-1)
    return out.real if out.is_complex() else out


def _bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.reshape(-1, *([1] * (x.ndim - 1)))


def conjugate_gradient(
    apply: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    x0: torch.Tensor | None = None,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> torch.Tensor:
    """Solve ``apply(x) = rhs`` for a Hermitian positive semi-definite ``apply``, independently per batch element.

    Conjugate gradients (Hestenes & Stiefel, 1952) with the real inner product, so complex Hermitian systems are
    handled as real symmetric ones of twice the size. Iteration stops early once every batch element's residual
    norm falls below ``tol`` times its right-hand-side norm. Differentiable (plain tensor arithmetic).

    Args:
        apply: the linear map ``x -> M x`` (Hermitian PSD).
        rhs: right-hand side, shape (B, ...).
        x0: initial guess (zeros if None).
        max_iter: iteration cap.
        tol: relative residual tolerance.

    Returns:
        The approximate solution, same shape and dtype as ``rhs``.
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - apply(x) if x0 is not None else rhs.clone()
    p = r.clone()
    rs = batch_inner(r, r)
    stop = (tol**2) * batch_inner(rhs, rhs).clamp_min(torch.finfo(rs.dtype).tiny)
    for _ in range(max_iter):
        if bool((rs <= stop).all()):
            break
        ap = apply(p)
        denom = batch_inner(p, ap)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        x = x + _bcast(alpha, x) * p
        r = r - _bcast(alpha, r) * ap
        rs_new = batch_inner(r, r)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(torch.finfo(rs.dtype).tiny), torch.zeros_like(rs))
        p = r + _bcast(beta, p) * p
        rs = rs_new
    return x


def power_iteration(
    apply: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, num_iter: int = 30
) -> torch.Tensor:
    """Largest eigenvalue of a Hermitian PSD map per batch element by power iteration (e.g. ``||A^H A||``)."""
    x = x0 / _bcast(batch_inner(x0, x0).sqrt().clamp_min(1e-30), x0)
    lam = torch.zeros(x0.shape[0], dtype=x0.real.dtype, device=x0.device)
    for _ in range(num_iter):
        y = apply(x)
        lam = batch_inner(x, y)
        x = y / _bcast(batch_inner(y, y).sqrt().clamp_min(1e-30), y)
    return lam


class LinearOperator(nn.Module):
    """Base class of linear forward operators ``y = A x`` (deepinv-style ``A`` / ``A_adjoint`` contract).

    Subclasses implement :meth:`A` and :meth:`A_adjoint` (exact adjoints under the real inner product, checked by
    the shared contract test), and may override :meth:`A_adjoint_A`, :meth:`pinv` and :meth:`soft_project` with
    cheap closed forms. ``forward`` is ``A``. Operator state (masks, maps, angles) lives in registered buffers so
    ``.to()`` and ``state_dict`` carry it; constructors take JSON-serialisable arguments or tensors so the
    operator can be built from a MONAI bundle config (``_target_``).

    Args:
        spatial_dims: number of spatial dimensions of the image (2 or 3).
        cg_iters: iterations of the conjugate-gradient solves used by the generic :meth:`pinv` and
            :meth:`soft_project`.
        cg_tol: relative residual tolerance of those solves.

    Attributes:
        complex_domain: whether images must be complex tensors (``True``), real tensors (``False``) or either
            (``None``).
        exact_pinv: whether :meth:`pinv` is an exact closed form (otherwise a CG least-squares solve).
    """

    complex_domain: bool | None = None
    exact_pinv: bool = False

    def __init__(self, spatial_dims: int = 2, cg_iters: int = 30, cg_tol: float = 1e-8) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        self.spatial_dims = int(spatial_dims)
        self.cg_iters = int(cg_iters)
        self.cg_tol = float(cg_tol)

    # ------------------------------------------------------------------ checks
    def check_image(self, x: torch.Tensor) -> None:
        """Raise a clear error if ``x`` is not a (B, C, *spatial) tensor of the operator's domain type."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor image, got {type(x).__name__}")
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects an image of shape (B, C, *spatial) with {self.spatial_dims} spatial "
                f"dims ({self.spatial_dims + 2} dims), got shape {tuple(x.shape)}"
            )
        if self.complex_domain is True and not x.is_complex():
            raise TypeError(
                f"{type(self).__name__} works on complex images; got a real tensor of dtype {x.dtype}. "
                "Convert with torch.complex(real, imag) or x.to(torch.complex64)."
            )
        if self.complex_domain is False and x.is_complex():
            raise TypeError(f"{type(self).__name__} works on real images; got a complex tensor of dtype {x.dtype}")

    # ------------------------------------------------------------------ the contract
    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - operator notation
        """Forward operator ``y = A x``."""
        raise NotImplementedError

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Adjoint ``A^H y`` with ``<A x, y> = <x, A^H y>`` (real inner product)."""
        raise NotImplementedError

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Normal operator ``A^H A x``."""
        return self.A_adjoint(self.A(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def pinv(self, y: torch.Tensor) -> torch.Tensor:
        """Moore-Penrose pseudo-inverse ``A^+ y``: the minimum-norm least-squares solution.

        Generic version: conjugate gradients on the normal equations ``A^H A x = A^H y`` started from zero (CG
        stays in the range of ``A^H``, so it converges to the minimum-norm solution).
        """
        rhs = self.A_adjoint(y)
        return conjugate_gradient(self.A_adjoint_A, rhs, max_iter=self.cg_iters, tol=self.cg_tol)

    def project(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Hard data consistency ``x + A^+ (y - A x)`` (DDNM range-null decomposition, Wang et al. 2023, eq. 7).

        With an exact pseudo-inverse this is the orthogonal projection onto ``{z : A z = A A^+ y}``: idempotent,
        and ``A`` of the result equals ``y`` whenever ``y`` lies in the range of ``A``.
        """
        return x + self.pinv(y - self.A(x))

    def soft_project(self, x: torch.Tensor, y: torch.Tensor, weight: float | torch.Tensor) -> torch.Tensor:
        """Soft data consistency ``argmin_z ||z - x||^2 + weight ||A z - y||^2`` for noisy measurements.

        Solves ``(I + weight A^H A) z = x + weight A^H y`` by conjugate gradients; ``weight -> inf`` tends to
        :meth:`project`, ``weight = 0`` returns ``x``.
        """
        w = torch.as_tensor(weight, dtype=x.real.dtype, device=x.device)
        rhs = x + w * self.A_adjoint(y)
        return conjugate_gradient(
            lambda z: z + w * self.A_adjoint_A(z), rhs, x0=x, max_iter=self.cg_iters, tol=self.cg_tol
        )

    def norm(self, x0: torch.Tensor, num_iter: int = 30) -> torch.Tensor:
        """Estimate of ``||A^H A||`` per batch element by power iteration started at ``x0``."""
        return power_iteration(self.A_adjoint_A, x0, num_iter)
