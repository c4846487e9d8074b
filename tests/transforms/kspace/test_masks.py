"""k-space masks: acceleration, centre, reproducibility by seed, bad arguments."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.transforms.kspace.masks import (
    acceleration_of,
    equispaced_mask,
    gaussian_mask_1d,
    make_mask,
    poisson_disc_mask_2d,
    random_mask,
)

LINE_FNS = [("random", random_mask), ("equispaced", equispaced_mask), ("gaussian", gaussian_mask_1d)]


class TestLineMasks(unittest.TestCase):
    @parameterized.expand([(n, f, s) for n, f in LINE_FNS for s in ((64, 64), (8, 16, 64))])
    def test_lines_centre_and_acceleration(self, name, fn, shape):
        for r in (4, 8):
            m = fn(shape, r, 0.08, seed=3)
            self.assertEqual(tuple(m.shape), shape)
            self.assertTrue(bool(((m == 0) | (m == 1)).all()))
            # lines: constant along every axis but the last
            self.assertTrue(bool((m == m.reshape(-1, shape[-1])[:1].reshape(*([1] * (len(shape) - 1)), -1)).all()))
            line = m.reshape(-1, shape[-1])[0]
            low = round(64 * 0.08)
            start = (64 - low + 1) // 2
            self.assertTrue(bool(line[start : start + low].all()), "centre lines sampled")
            # MONAI's random mask hits N/R only in expectation; its equispaced spacing is rounded on small grids
            tol = {"random": 0.5, "equispaced": 0.2, "gaussian": 0.05}[name]
            self.assertLess(abs(acceleration_of(m) - r) / r, tol)
            assert torch.equal(m, fn(shape, r, 0.08, seed=3))

    def test_random_mask_seed_changes_pattern(self):
        self.assertFalse(torch.equal(random_mask((64, 64), 4, 0.08, 0), random_mask((64, 64), 4, 0.08, 1)))
        self.assertFalse(torch.equal(gaussian_mask_1d((64, 64), 4, 0.08, 0), gaussian_mask_1d((64, 64), 4, 0.08, 1)))

    def test_gaussian_density_decays(self):
        hits = sum(gaussian_mask_1d((1, 128), 4, 0.04, seed=s)[0] for s in range(40))
        centre = hits[64 - 16 : 64 + 16].mean()
        edge = torch.cat([hits[:16], hits[-16:]]).mean()
        self.assertGreater(float(centre), 2 * float(edge))


class TestPoissonDisc(unittest.TestCase):
    @parameterized.expand([("2d", (32, 32)), ("3d", (4, 32, 24))])
    def test_acceleration_centre_seed(self, _, shape):
        m = poisson_disc_mask_2d(shape, 4, 0.1, seed=1)
        self.assertEqual(tuple(m.shape), shape)
        self.assertLess(abs(acceleration_of(m) - 4) / 4, 0.05)
        plane = m.reshape(-1, *shape[-2:])[0]
        h, w = shape[-2:]
        self.assertTrue(bool(plane[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].all()))
        assert torch.equal(m, poisson_disc_mask_2d(shape, 4, 0.1, seed=1))
        self.assertFalse(torch.equal(m, poisson_disc_mask_2d(shape, 4, 0.1, seed=2)))

    def test_density_decays_from_centre(self):
        # variable density: points (outside the fully sampled box) are denser near the centre than at the edge
        import math

        n = 48
        yy, xx = torch.meshgrid(torch.arange(n) - n // 2, torch.arange(n) - n // 2, indexing="ij")
        rho = torch.sqrt((yy / (n / 2)) ** 2 + (xx / (n / 2)) ** 2) / math.sqrt(2)
        inner = (rho < 0.35) & ((yy.abs() > 3) | (xx.abs() > 3))
        m = poisson_disc_mask_2d((n, n), 4, 0.08, seed=0)
        self.assertGreater(float(m[inner].mean()), 1.5 * float(m[rho > 0.6].mean()))


class TestBadArguments(unittest.TestCase):
    @parameterized.expand([(n,) for n in ("random", "equispaced", "gaussian", "poisson")])
    def test_errors(self, name):
        with self.assertRaises(ValueError):
            make_mask(name, (16, 16), 0.5)  # acceleration below 1
        with self.assertRaises(ValueError):
            make_mask(name, (16, 16), 4, 1.5)
        with self.assertRaises(ValueError):
            make_mask(name, (16, 16), 4, 0.5)  # centre larger than the sampled share
        with self.assertRaises(ValueError):
            make_mask(name, (16,), 4)
        self.assertTrue(bool(make_mask(name, (16, 16), 1, 0.0).all()))

    def test_unknown_type(self):
        with self.assertRaises(ValueError):
            make_mask("spiral", (16, 16), 4)


if __name__ == "__main__":
    unittest.main()
