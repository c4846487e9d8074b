from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.losses import SpectralLoss, spectral_distance
from tests.test_utils import assert_allclose, make_input, spatial_cases


class TestSpectralLoss(unittest.TestCase):
    @parameterized.expand(spatial_cases())
    def test_parseval_and_zero(self, _, shape):
        a, b = make_input(shape), make_input(shape, seed=1)
        self.assertEqual(SpectralLoss()(a, a).item(), 0.0)
        # orthonormal FFT: the squared spectral distance has the mean of the squared pixel distance
        assert_allclose(SpectralLoss(p=2)(a, b), torch.mean((a - b) ** 2), rtol=1e-5)
        self.assertEqual(SpectralLoss(reduction="none")(a, b).shape, a.shape)

    @parameterized.expand(spatial_cases())
    def test_log_magnitude_is_shift_invariant(self, _, shape):
        a = make_input(shape)
        shifted = torch.roll(a, shifts=3, dims=-1)
        self.assertLess(SpectralLoss(log_magnitude=True)(a, shifted).item(), 1e-5)
        self.assertGreater(SpectralLoss()(a, shifted).item(), 0.1)

    def test_gradient_and_errors(self):
        a = make_input((2, 1, 8, 8)).requires_grad_(True)
        SpectralLoss()(a, torch.zeros_like(a)).backward()
        self.assertTrue(torch.isfinite(a.grad).all())
        with self.assertRaisesRegex(ValueError, "same shape"):
            spectral_distance(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
        with self.assertRaisesRegex(ValueError, "p must be"):
            SpectralLoss(p=3)
        with self.assertRaisesRegex(ValueError, "reduction"):
            SpectralLoss(reduction="max")


if __name__ == "__main__":
    unittest.main()
