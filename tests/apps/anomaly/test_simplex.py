"""Multi-octave simplex noise (AnoDDPM): shapes, seeding, standardisation, raw-noise properties, spectrum, errors."""

from __future__ import annotations

import itertools
import math
import unittest

import torch
from monai.bundle import ConfigParser
from parameterized import parameterized

from monai_diffusion.apps.anomaly.simplex import (
    _SCALE,
    TABLE_SIZE,
    SimplexNoise,
    _gradients,
    _hash,
    simplex_2d,
    simplex_3d,
    simplex_noise,
)

RAW = {2: simplex_2d, 3: simplex_3d}
SHAPES = [("2d", (3, 2, 24, 20)), ("3d", (2, 1, 10, 12, 8))]


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _perm(seed: int) -> torch.Tensor:
    return torch.randperm(TABLE_SIZE, generator=_gen(seed))


def _low_frequency_share(x: torch.Tensor, cutoff: float) -> float:
    """Share of the (non-DC) power of ``x`` (B, C, *spatial) at radial frequencies below ``cutoff`` cycles/pixel."""
    spatial = x.shape[2:]
    power = torch.fft.fftn(x.double(), dim=tuple(range(2, x.ndim))).abs().pow(2).sum(dim=(0, 1))
    freqs = torch.meshgrid(*[torch.fft.fftfreq(s, dtype=torch.float64) for s in spatial], indexing="ij")
    radius = torch.sqrt(sum(f**2 for f in freqs))
    power[(0,) * len(spatial)] = 0  # DC (zero after standardisation anyway)
    return float(power[radius < cutoff].sum() / power.sum())


def _brute_force(points: torch.Tensor, perm: torch.Tensor) -> torch.Tensor:
    """Sum of the radial kernels of *all* lattice vertices near ``points`` (P, d): equals the simplex traversal
    only if no vertex outside the containing simplex reaches the point, i.e. the noise is continuous."""
    d = points.shape[-1]
    skew, unskew = (math.sqrt(d + 1) - 1) / d, (1 - 1 / math.sqrt(d + 1)) / d
    cell = torch.floor(points + points.sum(-1, keepdim=True) * skew).long()
    grads = _gradients(d, torch.float64, points.device)
    total = torch.zeros(points.shape[0], dtype=torch.float64)
    for shift in itertools.product(range(-2, 4), repeat=d):
        vertex = cell + torch.tensor(shift)
        pos = vertex.double() - vertex.sum(-1, keepdim=True).double() * unskew
        offset = points - pos
        t = (0.5 - (offset**2).sum(-1)).clamp_min(0)
        g = grads[_hash(vertex[None], perm[None])[0] % grads.shape[0]]
        total += t**4 * (g * offset).sum(-1)
    return total


class TestSimplexNoise(unittest.TestCase):
    @parameterized.expand(SHAPES)
    def test_shape_dtype_device(self, _, shape):
        x = simplex_noise(shape, generator=_gen(0))
        self.assertEqual(tuple(x.shape), shape)
        self.assertEqual(x.dtype, torch.float32)
        self.assertTrue(torch.isfinite(x).all())
        y = simplex_noise(list(shape), octaves=2, generator=_gen(0), dtype=torch.float64, device="cpu")
        self.assertEqual((y.dtype, y.device.type), (torch.float64, "cpu"))

    @parameterized.expand(SHAPES)
    def test_seeded_generator_is_deterministic_and_fields_differ(self, _, shape):
        a = simplex_noise(shape, generator=_gen(7))
        b = simplex_noise(shape, generator=_gen(7))
        c = simplex_noise(shape, generator=_gen(8))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        self.assertGreater((a - c).abs().mean().item(), 0.3)
        fields = a.reshape(-1, *shape[2:])  # every (item, channel) is an independent field
        for i, j in itertools.combinations(range(fields.shape[0]), 2):
            self.assertGreater((fields[i] - fields[j]).abs().mean().item(), 0.3, f"fields {i} and {j}")

    def test_generator_is_the_only_randomness(self):
        torch.manual_seed(0)
        a = simplex_noise((2, 1, 16, 16), generator=_gen(3))
        torch.manual_seed(1)
        b = simplex_noise((2, 1, 16, 16), generator=_gen(3))
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    @parameterized.expand(
        [("2d_default", (4, 2, 32, 32), {}), ("3d_one_octave", (3, 1, 12, 12, 12), {"octaves": 1, "frequency": 0.1})]
    )
    def test_standardised_per_field(self, _, shape, kwargs):
        x = simplex_noise(shape, generator=_gen(1), dtype=torch.float64, **kwargs)
        flat = x.reshape(shape[0], shape[1], -1)
        torch.testing.assert_close(flat.mean(-1), torch.zeros(shape[:2], dtype=torch.float64), rtol=0, atol=1e-10)
        torch.testing.assert_close(flat.std(-1, correction=0), torch.ones(shape[:2], dtype=torch.float64))

    def test_callable_class_and_bundle_config(self):
        cfg = {
            "noise": {
                "_target_": "monai_diffusion.apps.anomaly.simplex.SimplexNoise",
                "octaves": 3,
                "frequency": 0.125,
                "persistence": 0.5,
            }
        }
        maker = ConfigParser(cfg).get_parsed_content("noise")
        self.assertIsInstance(maker, SimplexNoise)
        like = torch.zeros(2, 1, 16, 16, dtype=torch.float64)
        x = maker(like, generator=_gen(5))
        self.assertEqual((tuple(x.shape), x.dtype), ((2, 1, 16, 16), torch.float64))
        expected = simplex_noise((2, 1, 16, 16), 3, 0.125, 0.5, generator=_gen(5), dtype=torch.float64)
        torch.testing.assert_close(x, expected, rtol=0, atol=0)
        self.assertEqual(maker((1, 1, 8, 8, 8), generator=_gen(5)).dtype, torch.float32)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_raw_noise_bounded_and_nearly_tight(self, _, d):
        points = (torch.rand(50000, d, dtype=torch.float64, generator=_gen(2)) - 0.5) * 40
        values = RAW[d](points, _perm(0))
        self.assertLessEqual(values.abs().max().item(), 1.0)
        self.assertGreater(values.abs().max().item(), 0.8)  # the scale is not needlessly small
        self.assertGreater(values.std().item(), 0.2)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_raw_noise_zero_at_lattice_vertices(self, _, d):
        lattice = torch.randint(-300, 300, (500, d), generator=_gen(4)).double()
        unskew = (1 - 1 / math.sqrt(d + 1)) / d
        vertices = lattice - lattice.sum(-1, keepdim=True) * unskew
        self.assertLess(RAW[d](vertices, _perm(1)).abs().max().item(), 1e-12)
        shifted = RAW[d](vertices + 0.2, _perm(1))  # but not zero elsewhere
        self.assertGreater(shifted.abs().mean().item(), 0.05)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_raw_noise_is_a_sum_of_continuous_kernels(self, _, d):
        points = (torch.rand(1500, d, dtype=torch.float64, generator=_gen(6)) - 0.5) * 30
        expected = _SCALE[d] * _brute_force(points, _perm(2))
        self.assertGreater(expected.std().item(), 0.1)
        torch.testing.assert_close(RAW[d](points, _perm(2)), expected, rtol=0, atol=1e-12)

    @parameterized.expand([("2d", 2), ("3d", 3)])
    def test_raw_noise_small_displacement_small_change(self, _, d):
        start = torch.rand(100, d, dtype=torch.float64, generator=_gen(9)) * 50
        direction = torch.nn.functional.normalize(torch.randn(100, d, dtype=torch.float64, generator=_gen(10)), dim=-1)
        steps = torch.linspace(0, 3, 3001, dtype=torch.float64)  # 1e-3 lattice units, crossing many simplices
        path = start[:, None] + steps[None, :, None] * direction[:, None]
        values = RAW[d](path, _perm(3))
        jumps = values.diff(dim=1).abs()
        self.assertLess(jumps.max().item(), 0.02)  # Lipschitz: a 1e-3 step changes the value by < 0.02
        self.assertGreater((values.amax(1) - values.amin(1)).mean().item(), 0.5)  # yet it varies along the path

    def test_raw_noise_batched_tables(self):
        points = torch.rand(2, 100, 2, dtype=torch.float64, generator=_gen(11)) * 10
        perms = torch.stack([_perm(0), _perm(1)])
        out = simplex_2d(points, perms)
        torch.testing.assert_close(out[0], simplex_2d(points[0], _perm(0)))
        torch.testing.assert_close(out[1], simplex_2d(points[1], _perm(1)))
        self.assertGreater((out[0] - simplex_2d(points[0], _perm(1))).abs().max().item(), 0.1)

    @parameterized.expand([("2d", (8, 1, 64, 64)), ("3d", (2, 1, 32, 32, 32))])
    def test_low_frequency_compared_with_white_noise(self, _, shape):
        simplex = _low_frequency_share(simplex_noise(shape, generator=_gen(12)), cutoff=1 / 8)
        white = _low_frequency_share(torch.randn(shape, generator=_gen(12)), cutoff=1 / 8)
        self.assertGreater(simplex, 0.5)
        self.assertGreater(simplex, 5 * white)

    def test_frequency_sets_feature_size(self):
        def lag1(frequency):
            x = simplex_noise((4, 1, 64, 64), octaves=1, frequency=frequency, generator=_gen(13), dtype=torch.float64)
            return (x[..., 1:] * x[..., :-1]).mean().item()

        coarse, fine = lag1(1 / 32), lag1(1 / 3)
        self.assertGreater(coarse, 0.95)
        self.assertLess(fine, coarse - 0.2)

    @parameterized.expand(
        [
            ("one_spatial_dim", {"shape": (2, 1, 16)}, "shape"),
            ("four_spatial_dims", {"shape": (1, 1, 4, 4, 4, 4)}, "shape"),
            ("zero_size", {"shape": (1, 1, 0, 4)}, "shape"),
            ("octaves_zero", {"octaves": 0}, "octaves"),
            ("octaves_negative", {"octaves": -2}, "octaves"),
            ("octaves_float", {"octaves": 2.5}, "octaves"),
            ("octaves_bool", {"octaves": True}, "octaves"),
            ("frequency_zero", {"frequency": 0.0}, "frequency"),
            ("frequency_negative", {"frequency": -0.1}, "frequency"),
            ("frequency_inf", {"frequency": math.inf}, "frequency"),
            ("frequency_nan", {"frequency": math.nan}, "frequency"),
            ("persistence_zero", {"persistence": 0}, "persistence"),
            ("persistence_negative", {"persistence": -0.8}, "persistence"),
            ("persistence_inf", {"persistence": math.inf}, "persistence"),
            ("persistence_nan", {"persistence": math.nan}, "persistence"),
        ]
    )
    def test_bad_arguments(self, _, kwargs, name):
        kwargs = {"shape": (1, 1, 8, 8), **kwargs}
        with self.assertRaisesRegex(ValueError, name):
            simplex_noise(**kwargs)
        if name != "shape":
            kwargs.pop("shape")
            with self.assertRaisesRegex(ValueError, name):
                SimplexNoise(**kwargs)
        else:
            with self.assertRaisesRegex(ValueError, name):
                SimplexNoise()(kwargs["shape"])

    def test_raw_bad_points_or_table(self):
        with self.assertRaisesRegex(ValueError, "points"):
            simplex_2d(torch.zeros(5, 3), _perm(0))
        with self.assertRaisesRegex(ValueError, "perm"):
            simplex_3d(torch.zeros(5, 3), torch.arange(100))


if __name__ == "__main__":
    unittest.main()
