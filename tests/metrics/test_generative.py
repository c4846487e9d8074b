from __future__ import annotations

import math
import unittest

import torch
from monai.metrics import MultiScaleSSIMMetric
from parameterized import parameterized

from monai_diffusion.metrics import frechet_distance, kernel_inception_distance, ms_ssim_diversity, ms_ssim_settings
from tests.test_utils import assert_allclose


def _smooth_images(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """(n, 1, *shape) smooth random images in [-1, 1] (upsampled noise), so MS-SSIM sees structure."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 1) + tuple(s // 4 for s in shape), generator=g)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return 2 * torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=False) - 1


class TestMSSSIMSettings(unittest.TestCase):
    def test_automatic_choice(self):
        k, w = ms_ssim_settings((64, 64))
        self.assertEqual((k, len(w)), (7, 3))
        self.assertAlmostEqual(sum(w), 1.0)
        assert_allclose(w, torch.tensor([0.0448, 0.2856, 0.3001]) / 0.6305, rtol=1e-6)
        self.assertEqual(len(ms_ssim_settings((32, 32, 32))[1]), 2)
        self.assertEqual(ms_ssim_settings((16, 20)), (7, (1.0,)))
        self.assertEqual(ms_ssim_settings((256, 256)), (11, (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)))
        self.assertEqual(len(ms_ssim_settings((64, 64), kernel_size=5)[1]), 3)  # 64/4 = 16 >= 10; 64/8 < 10
        with self.assertRaisesRegex(ValueError, "too small"):
            ms_ssim_settings((8, 8))
        with self.assertRaisesRegex(ValueError, "too small for 5 scales"):
            ms_ssim_settings((64, 64), scales=5)
        with self.assertRaisesRegex(ValueError, "odd"):
            ms_ssim_settings((64, 64), kernel_size=6)

    def test_monai_default_does_not_fit_64px(self):
        # the reason for ms_ssim_settings: MONAI's 5-scale default refuses 64 x 64 images
        x = torch.zeros(1, 1, 64, 64)
        with self.assertRaises(ValueError):
            MultiScaleSSIMMetric(spatial_dims=2)(x, x)


class TestMSSSIMDiversity(unittest.TestCase):
    @parameterized.expand([("2d", (64, 64)), ("3d", (32, 32, 32))])
    def test_copies_distinct_and_determinism(self, _, shape):
        one = _smooth_images(1, shape, seed=0)
        self.assertAlmostEqual(ms_ssim_diversity(one.repeat(4, 1, *([1] * len(shape)))), 1.0, places=5)
        images = _smooth_images(5, shape, seed=1)
        g = torch.Generator().manual_seed(0)
        a = ms_ssim_diversity(images, pairs=7, generator=g)
        b = ms_ssim_diversity(images, pairs=7, generator=torch.Generator().manual_seed(0))
        self.assertEqual(a, b)
        self.assertLess(a, 0.7)  # independent images are far less similar than copies

    def test_all_pairs_equal_explicit_average(self):
        images = _smooth_images(4, (32, 32), seed=2)
        k, w = ms_ssim_settings((32, 32))
        metric = MultiScaleSSIMMetric(spatial_dims=2, data_range=2.0, kernel_size=k, weights=w)
        pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]
        expected = sum(metric(images[i : i + 1], images[j : j + 1]).item() for i, j in pairs) / len(pairs)
        self.assertAlmostEqual(ms_ssim_diversity(images, batch_size=2), expected, places=6)
        # with two images every random pair is that pair (never an image with itself)
        two = images[:2]
        self.assertAlmostEqual(
            ms_ssim_diversity(two, pairs=9, generator=torch.Generator().manual_seed(3)),
            metric(two[:1], two[1:]).item(),
            places=6,
        )

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "N >= 2"):
            ms_ssim_diversity(torch.zeros(1, 1, 64, 64))
        with self.assertRaisesRegex(ValueError, "pairs"):
            ms_ssim_diversity(torch.zeros(3, 1, 64, 64), pairs=0)
        with self.assertRaisesRegex(ValueError, "too small"):
            ms_ssim_diversity(torch.zeros(3, 1, 8, 8))
        with self.assertRaisesRegex(TypeError, "images"):
            ms_ssim_diversity([torch.zeros(1, 64, 64)] * 2)  # type: ignore[arg-type]


class TestFrechetDistance(unittest.TestCase):
    def test_identical_sets_and_symmetry(self):
        g = torch.Generator().manual_seed(0)
        a = torch.randn(500, 8, generator=g) @ torch.randn(8, 8, generator=g)
        self.assertLess(abs(frechet_distance(a, a)), 1e-6)
        self.assertLess(abs(frechet_distance(a, a[torch.randperm(500, generator=g)])), 1e-6)  # order-free
        b = torch.randn(400, 8, generator=g)
        self.assertAlmostEqual(frechet_distance(a, b), frechet_distance(b, a), places=6)

    @staticmethod
    def _gaussian_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """Two 4-d Gaussians whose covariances share eigenvectors Q, and their closed-form Frechet distance
        ``|mu_a - mu_b|^2 + sum_i (sqrt(l_a,i) - sqrt(l_b,i))^2``."""
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
        la = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
        lb = torch.tensor([2.0, 0.5, 0.5, 1.0], dtype=torch.float64)
        mu_a = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)
        mu_b = torch.tensor([0.5, 0.0, 0.0, 0.0], dtype=torch.float64)
        exact = float((mu_a - mu_b).pow(2).sum() + (la.sqrt() - lb.sqrt()).pow(2).sum())
        return q * la.sqrt(), q * lb.sqrt(), mu_a, mu_b, exact

    def test_gaussians_approach_closed_form(self):
        root_a, root_b, mu_a, mu_b, exact = self._gaussian_case()
        g = torch.Generator().manual_seed(1)
        n = 20000
        a = mu_a + torch.randn(n, 4, generator=g, dtype=torch.float64) @ root_a.T
        b = mu_b + torch.randn(n, 4, generator=g, dtype=torch.float64) @ root_b.T
        # the estimate at n = 20000 in 4 dims scatters by 0.064 (std over 20 seeds, exact value 3.457); 0.25 is 4 std
        self.assertAlmostEqual(frechet_distance(a, b), exact, delta=0.25)

    def test_exact_moments_give_closed_form(self):
        # samples whitened to an exact sample mean and (unbiased) covariance: the estimate is the closed form
        root_a, root_b, mu_a, mu_b, exact = self._gaussian_case()
        g = torch.Generator().manual_seed(2)

        def exact_moments(n: int) -> torch.Tensor:
            z = torch.randn(n, 4, generator=g, dtype=torch.float64)
            z = z - z.mean(0)
            chol = torch.linalg.cholesky(z.T @ z / (n - 1))
            return torch.linalg.solve_triangular(chol, z.T, upper=False).T

        a = mu_a + exact_moments(50) @ root_a.T
        b = mu_b + exact_moments(80) @ root_b.T
        self.assertAlmostEqual(frechet_distance(a, b), exact, places=8)

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "feature dimensions differ"):
            frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
        with self.assertRaisesRegex(ValueError, r"\(N >= 2, D\)"):
            frechet_distance(torch.zeros(5), torch.zeros(5))
        with self.assertRaisesRegex(ValueError, "non-finite"):
            frechet_distance(torch.full((3, 2), math.inf), torch.zeros(3, 2))


class TestKernelInceptionDistance(unittest.TestCase):
    def test_matches_explicit_unbiased_mmd(self):
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(6, 3, generator=g) + 0.5

        def k(u, v):
            return (float(u @ v) / 3 + 1) ** 3

        m = 6
        xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        yy = sum(k(y[i].double(), y[j].double()) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
        xy = sum(k(x[i], y[j].double()) for i in range(m) for j in range(m)) / m**2
        # one subset of all rows: the subset is a permutation, which does not change the estimate
        mean, std = kernel_inception_distance(x, y, subsets=1, subset_size=6)
        self.assertAlmostEqual(mean, xx + yy - 2 * xy, places=10)
        self.assertEqual(std, 0.0)

    def test_unbiased_near_zero_can_be_negative(self):
        g = torch.Generator().manual_seed(1)
        means = []
        for seed in range(8):
            a, b = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
            mean, std = kernel_inception_distance(
                a, b, subsets=10, subset_size=100, generator=torch.Generator().manual_seed(seed)
            )
            self.assertGreater(std, 0.0)
            means.append(mean)
        self.assertTrue(min(means) < 0 < max(means), means)
        self.assertLess(abs(sum(means) / len(means)), 0.03)  # a mean shift of 0.5 gives 1.04 below
        shifted = torch.randn(200, 16, generator=g) + 0.5
        a = torch.randn(200, 16, generator=g)
        self.assertGreater(kernel_inception_distance(a, shifted, subsets=10, subset_size=100)[0], 0.1)

    def test_deterministic_and_errors(self):
        g = torch.Generator().manual_seed(2)
        a, b = torch.randn(50, 4, generator=g), torch.randn(60, 4, generator=g)
        r1 = kernel_inception_distance(a, b, subsets=5, generator=torch.Generator().manual_seed(0))
        r2 = kernel_inception_distance(a, b, subsets=5, generator=torch.Generator().manual_seed(0))
        self.assertEqual(r1, r2)
        self.assertGreater(r1[1], 0.0)  # default subset_size: half the smaller set, so the subsets differ
        with self.assertRaisesRegex(ValueError, r"subset_size must be an integer in \[2, 50\]"):
            kernel_inception_distance(a, b, subset_size=51)
        with self.assertRaisesRegex(ValueError, "subsets"):
            kernel_inception_distance(a, b, subsets=0)


if __name__ == "__main__":
    unittest.main()
