"""Stratified normal noise: the one helper behind the exact-score tests and benchmarks."""

from __future__ import annotations

import math
import unittest

import torch

from monai_diffusion.exact import stratified_normal


class TestStratifiedNormal(unittest.TestCase):
    def test_quantiles_sorted_or_permuted(self):
        z = stratified_normal((5, 1, 2, 2), seed=None, dtype=torch.float64)
        n = 20
        expected = torch.special.ndtri((torch.arange(n, dtype=torch.float64) + 0.5) / n)
        self.assertTrue(torch.equal(z.flatten(), expected))
        p = stratified_normal((5, 1, 2, 2), seed=3, dtype=torch.float64)
        self.assertTrue(torch.equal(p.flatten().sort().values, expected))
        self.assertFalse(torch.equal(p.flatten(), expected))
        self.assertTrue(torch.equal(p, stratified_normal((5, 1, 2, 2), seed=3, dtype=torch.float64)))
        self.assertEqual(stratified_normal((2, 3)).dtype, torch.float32)

    def test_moments(self):
        z = stratified_normal((8, 1, 32, 32), dtype=torch.float64)
        self.assertAlmostEqual(float(z.mean()), 0.0, places=12)
        self.assertAlmostEqual(float(z.var(unbiased=False)), 1.0, delta=2e-3)

    def test_same_float32_noise_as_the_former_erfinv_helpers(self):
        """The merged helper draws exactly the float32 noise of the former ``sqrt(2) erfinv(2u - 1)`` helpers (tests'
        contract and ``benchmarks/samplers.py``) for the shapes they used, so their figures stand."""
        for shape in ((8, 1, 64, 64), (8, 1, 32, 32), (4, 1, 32, 32), (1, 1, 16, 16)):
            n = math.prod(shape)
            u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
            q = math.sqrt(2.0) * torch.erfinv(2 * u - 1)
            old = q[torch.randperm(n, generator=torch.Generator().manual_seed(0))].reshape(shape).float()
            self.assertTrue(torch.equal(stratified_normal(shape), old), shape)

    def test_empty_shape(self):
        with self.assertRaisesRegex(ValueError, "shape must have at least one element"):
            stratified_normal((0, 3))


if __name__ == "__main__":
    unittest.main()
