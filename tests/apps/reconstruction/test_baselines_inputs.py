"""``l1_wavelet_cs`` refuses non-finite measurements, start image and operator buffers (mask, coil maps), and bad
scalar arguments, naming each (issue 12); a NaN mask is refused by the operator itself."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.apps.reconstruction import l1_wavelet_cs
from monai_diffusion.operators.imaging import InpaintingOperator
from monai_diffusion.operators.mri import MRIOperator, synthetic_coil_maps
from tests.test_utils import SPATIAL_2D, SPATIAL_3D


def _problem(dims: int, coils: bool = False):
    spatial = SPATIAL_2D if dims == 2 else SPATIAL_3D
    x = torch.rand(1, 1, *spatial, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mask = torch.zeros(spatial, dtype=torch.float64)
    mask[..., ::2] = 1.0
    maps = synthetic_coil_maps(spatial, 2).to(torch.complex128) if coils else None
    op = MRIOperator(mask, maps, real_image=True, spatial_dims=dims)
    return op, op.A(x), x


def _corrupt(t: torch.Tensor, value: float) -> torch.Tensor:
    out = t.clone()
    out.view(-1)[1] = value
    return out


class TestL1WaveletCSInputs(unittest.TestCase):
    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_non_finite_measurements(self, _, dims):
        op, y, _ = _problem(dims)
        for value in (float("nan"), float("inf")):
            with self.assertRaisesRegex(ValueError, r"^y \(the measurements\) holds 1 NaN or infinite"):
                l1_wavelet_cs(op, _corrupt(y, value), 1e-3, 2, wavelet="haar")
        self.assertTrue(bool(torch.isfinite(l1_wavelet_cs(op, y, 1e-3, 2, wavelet="haar")).all()))

    def test_non_finite_start_image(self):
        op, y, x = _problem(2)
        with self.assertRaisesRegex(ValueError, r"^x0 holds 1 NaN or infinite"):
            l1_wavelet_cs(op, y, 1e-3, 2, wavelet="haar", x0=_corrupt(x, float("nan")))

    def test_non_finite_mask(self):
        mask = torch.ones(SPATIAL_2D)
        mask[0, 0] = float("nan")
        with self.assertRaisesRegex(ValueError, "mask must be binary"):
            MRIOperator(mask, real_image=True)
        # a buffer corrupted after construction (or an operator that does not validate) is caught by the solver
        op, y, _ = _problem(2)
        op.mask.view(-1)[0] = float("nan")
        with self.assertRaisesRegex(ValueError, r"^the operator's 'mask' holds"):
            l1_wavelet_cs(op, y, 1e-3, 2, wavelet="haar")
        inpaint = InpaintingOperator(torch.ones(SPATIAL_2D))
        inpaint.mask.fill_(float("inf"))
        with self.assertRaisesRegex(ValueError, r"^the operator's 'mask' holds"):
            l1_wavelet_cs(inpaint, torch.zeros(1, 1, *SPATIAL_2D), 1e-3, 2, wavelet="haar")

    def test_non_finite_coil_maps(self):
        op, y, _ = _problem(2, coils=True)
        op.sensitivity_maps.view(-1)[0] = complex(float("nan"), 0.0)
        with self.assertRaisesRegex(ValueError, r"^the operator's 'sensitivity_maps' holds 1 NaN"):
            l1_wavelet_cs(op, y, 1e-3, 2, wavelet="haar")

    def test_bad_scalars(self):
        op, y, _ = _problem(2)
        for lam in (float("nan"), float("inf"), -1.0):
            with self.assertRaisesRegex(ValueError, "^lam must be finite and non-negative"):
                l1_wavelet_cs(op, y, lam, 2, wavelet="haar")
        for lipschitz in (float("nan"), 0.0, -1.0):
            with self.assertRaisesRegex(ValueError, "^lipschitz must be finite and positive"):
                l1_wavelet_cs(op, y, 1e-3, 2, wavelet="haar", lipschitz=lipschitz)
        with self.assertRaisesRegex(ValueError, "^num_iter must be non-negative"):
            l1_wavelet_cs(op, y, 1e-3, -1, wavelet="haar")
        with self.assertRaisesRegex(TypeError, "^num_iter must be an int"):
            l1_wavelet_cs(op, y, 1e-3, 2.5, wavelet="haar")
        with self.assertRaisesRegex(TypeError, r"^y \(the measurements\) must be a tensor"):
            l1_wavelet_cs(op, y.numpy(), 1e-3, 2, wavelet="haar")


if __name__ == "__main__":
    unittest.main()
