"""Classical reconstruction baselines: zero-filled, L1-wavelet compressed sensing (FISTA), filtered back-projection.

* Zero-filled: inverse FFT of the zero-filled k-space (magnitude / root-sum-of-squares for magnitude images,
  ``A^H y``, the sensitivity-weighted combination, for complex images).
* L1-wavelet CS (Lustig, Donoho & Pauly, "Sparse MRI", MRM 2007, eq. 1 in its Lagrangian form)
  ``min_x 0.5 ||A x - y||^2 + lam ||W x||_1`` with an orthonormal wavelet ``W`` (PyWavelets, periodised) solved by
  FISTA (Beck & Teboulle, SIAM J. Imaging Sci. 2009, eq. 4.1-4.3). The coarsest approximation band is left
  unpenalised (it is not sparse). Complex images are shrunk by magnitude (real and imaginary parts share the
  wavelet support).
* FBP: :meth:`~monai_diffusion.operators.ct.ParallelBeamCT.fbp`.
"""

from __future__ import annotations

import math

import numpy as np
import pywt
import torch

from monai_diffusion.operators.base import LinearOperator
from monai_diffusion.operators.ct import ParallelBeamCT
from monai_diffusion.operators.mri import MRIOperator, ifft_centered, root_sum_of_squares

__all__ = ["zero_filled", "filtered_back_projection", "WaveletTransform", "l1_wavelet_cs"]


def zero_filled(operator: LinearOperator, y: torch.Tensor) -> torch.Tensor:
    """Zero-filled reconstruction.

    For :class:`~monai_diffusion.operators.mri.MRIOperator` the conventional one: coil images ``F^H (M y_c)``, then
    for complex images the sensitivity-weighted combination ``A^H y`` (single coil: the image itself), and for
    real (magnitude) images the magnitude, single coil, or the root-sum-of-squares, multi-coil. Other operators:
    ``A^H y``.
    """
    if isinstance(operator, MRIOperator):
        if not operator.real_image:
            return operator.A_adjoint(y)
        operator.check_kspace(y)
        coils = ifft_centered(operator.mask.to(device=y.device, dtype=y.real.dtype) * y, operator.spatial_dims)
        if operator.sensitivity_maps is None:
            return coils.abs()
        return root_sum_of_squares(coils, dim=1, keepdim=True)
    return operator.A_adjoint(y)


def filtered_back_projection(operator: ParallelBeamCT, sinogram: torch.Tensor) -> torch.Tensor:
    """FBP with the Ram-Lak filter (agrees with ``skimage.transform.iradon`` on the same geometry)."""
    if not isinstance(operator, ParallelBeamCT):
        raise TypeError(f"FBP needs a ParallelBeamCT operator, got {type(operator).__name__}")
    return operator.fbp(sinogram)


class WaveletTransform:
    """Orthonormal n-D discrete wavelet transform of each (batch, channel) item as one flat coefficient array.

    Args:
        shape: spatial shape of the images.
        wavelet: a PyWavelets orthogonal wavelet name (``"db4"``, ``"haar"``, ``"sym4"``...).
        level: decomposition levels (default: the largest useful for the shape, at most 4).

    Raises:
        ValueError: for a non-orthogonal wavelet.
    """

    def __init__(self, shape, wavelet: str = "db4", level: int | None = None) -> None:
        w = pywt.Wavelet(wavelet)
        if not w.orthogonal:
            raise ValueError(f"wavelet {wavelet!r} is not orthogonal; the FISTA prox needs an orthonormal transform")
        self.shape = tuple(int(s) for s in shape)
        self.wavelet = wavelet
        max_level = pywt.dwtn_max_level(self.shape, w)
        self.level = min(4, max(max_level, 1)) if level is None else int(level)
        coeffs = pywt.wavedecn(np.zeros(self.shape), wavelet, mode="periodization", level=self.level)
        arr, self.slices = pywt.coeffs_to_array(coeffs)
        self.coeff_shape = arr.shape
        self.approx = np.zeros(arr.shape, dtype=bool)
        self.approx[self.slices[0]] = True

    def forward(self, x: np.ndarray) -> np.ndarray:
        coeffs = pywt.wavedecn(x, self.wavelet, mode="periodization", level=self.level)
        return pywt.coeffs_to_array(coeffs)[0]

    def inverse(self, c: np.ndarray) -> np.ndarray:
        coeffs = pywt.array_to_coeffs(c, self.slices, output_format="wavedecn")
        out = pywt.waverecn(coeffs, self.wavelet, mode="periodization")
        return out[tuple(slice(0, s) for s in self.shape)]

    def shrink(self, x: torch.Tensor, threshold: float) -> torch.Tensor:
        """Proximal map of ``threshold * ||W x||_1`` (detail bands only) on a (B, C, *spatial) tensor."""
        arr = x.detach().cpu().numpy()
        out = np.empty_like(arr)
        for idx in np.ndindex(*arr.shape[:2]):
            item = arr[idx]
            if np.iscomplexobj(item):
                c = self.forward(item.real) + 1j * self.forward(item.imag)
            else:
                c = self.forward(item)
            mag = np.abs(c)
            scale = np.where(self.approx, 1.0, np.maximum(1 - threshold / np.maximum(mag, 1e-30), 0.0))
            c = c * scale
            out[idx] = self.inverse(c.real) + 1j * self.inverse(c.imag) if np.iscomplexobj(c) else self.inverse(c)
        return torch.as_tensor(out, device=x.device)


def _check_finite(x: torch.Tensor, what: str) -> None:
    """Raise ``TypeError`` unless ``x`` is a tensor, ``ValueError`` (naming ``what``) if it holds NaN or inf."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must be a tensor, got {type(x).__name__}")
    if not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{what} holds {bad} NaN or infinite value(s) out of {x.numel()}; expected finite values")


def l1_wavelet_cs(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    num_iter: int = 100,
    wavelet: str = "db4",
    level: int | None = None,
    x0: torch.Tensor | None = None,
    lipschitz: float | None = None,
) -> torch.Tensor:
    """L1-wavelet compressed sensing by FISTA.

    Args:
        operator: the forward operator (MRI, CT, ...).
        y: measurements.
        lam: weight of the wavelet L1 norm.
        num_iter: FISTA iterations.
        wavelet, level: see :class:`WaveletTransform`.
        x0: initial image (default: ``A^H y`` scaled by the step).
        lipschitz: ``||A^H A||`` (default: estimated by power iteration).

    Returns:
        The reconstruction, in the operator's image domain.

    Raises:
        TypeError: ``y`` (or ``x0``) not a tensor, or ``num_iter`` not an int.
        ValueError: ``lam`` negative or not finite, ``num_iter`` negative, ``lipschitz`` not finite and positive,
            or NaN/inf in ``y``, ``x0`` or a buffer of ``operator`` (e.g. its mask or coil maps), named.
    """
    if not math.isfinite(lam) or lam < 0:
        raise ValueError(f"lam must be finite and non-negative, got {lam}")
    if not isinstance(num_iter, int) or isinstance(num_iter, bool):
        raise TypeError(f"num_iter must be an int, got {type(num_iter).__name__}")
    if num_iter < 0:
        raise ValueError(f"num_iter must be non-negative, got {num_iter}")
    if lipschitz is not None and not (math.isfinite(lipschitz) and lipschitz > 0):
        raise ValueError(f"lipschitz must be finite and positive, got {lipschitz}")
    _check_finite(y, "y (the measurements)")
    if x0 is not None:
        _check_finite(x0, "x0")
    for name, buffer in operator.named_buffers() if isinstance(operator, torch.nn.Module) else ():
        if buffer.is_floating_point() or buffer.is_complex():
            _check_finite(buffer, f"the operator's {name!r}")
    aty = operator.A_adjoint(y)
    if lipschitz is None:
        g = torch.Generator().manual_seed(0)
        probe = torch.randn(aty.shape, generator=g, dtype=aty.real.dtype).to(aty.device)
        probe = probe.to(aty.dtype) if aty.is_complex() else probe
        lipschitz = float(operator.norm(probe, 20).max()) * 1.01
    step = 1.0 / max(lipschitz, 1e-12)
    wt = WaveletTransform(aty.shape[2:], wavelet, level)
    x = aty * step if x0 is None else x0.clone()
    z = x.clone()
    t = 1.0
    for _ in range(num_iter):
        grad = operator.A_adjoint(operator.A(z) - y)
        x_new = wt.shrink(z - step * grad, lam * step).to(z.dtype)
        t_new = 0.5 * (1 + (1 + 4 * t * t) ** 0.5)
        z = x_new + ((t - 1) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return x
