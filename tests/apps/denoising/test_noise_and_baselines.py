"""Rician noise, the wavelet noise-level estimate and the classical denoising baselines (NLM, TV)."""

from __future__ import annotations

import math
import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_diffusion.apps.denoising.baselines import nlm_denoise, tune_factor, tv_denoise
from monai_diffusion.apps.denoising.noise import (
    BRAIN_SLICE_64_CORRECTION,
    add_rician_noise,
    estimate_noise_sigma,
)
from monai_diffusion.data.simulate import make_grid, simulate_subject, subject_seed
from monai_diffusion.metrics.image import masked_psnr

_CACHE: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}


def _brain(dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noiseless T1w images and brain masks: two 64x64 mid-brain axial slices (2D) or one 24^3 volume (3D)."""
    key = f"{dim}d"
    if key not in _CACHE:
        images, masks = [], []
        grid = make_grid(dim, 64 if dim == 2 else 24)
        for i in range(2 if dim == 2 else 1):
            sim = simulate_subject(subject_seed(0, i), grid, lesions=False, contrasts=("t1w",), clean=True)
            label = sim["label"]
            if dim == 2:
                brain_z = np.flatnonzero(label.reshape(-1, label.shape[2]).any(0))
                z = int(brain_z[len(brain_z) // 2])
                images.append(sim["t1w_clean"][:, :, z])
                masks.append(label[:, :, z] > 0)
            else:
                images.append(sim["t1w_clean"])
                masks.append(label > 0)
        _CACHE[key] = (torch.from_numpy(np.stack(images))[:, None], torch.from_numpy(np.stack(masks))[:, None])
    return _CACHE[key]


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TestRicianNoise(unittest.TestCase):
    def test_rayleigh_background(self):
        sigma = 0.05
        noisy = add_rician_noise(torch.zeros(2, 1, 64, 64), sigma, _gen())
        self.assertEqual(noisy.shape, (2, 1, 64, 64))
        self.assertEqual(noisy.dtype, torch.float32)
        self.assertGreaterEqual(float(noisy.min()), 0.0)
        # Rayleigh: mean sigma sqrt(pi/2), std sigma sqrt(2 - pi/2); 8192 samples give a standard error of 0.6%
        self.assertAlmostEqual(float(noisy.mean()), sigma * math.sqrt(math.pi / 2), delta=0.03 * sigma)
        self.assertAlmostEqual(float(noisy.std()), sigma * math.sqrt(2 - math.pi / 2), delta=0.05 * sigma)

    def test_high_signal_is_nearly_gaussian(self):
        sigma, level = 0.02, 0.5
        noisy = add_rician_noise(torch.full((2, 1, 64, 64), level), sigma, _gen(1))
        # Rician mean ~ x + sigma^2 / (2x) = 0.5004 for x >> sigma
        self.assertAlmostEqual(float(noisy.mean()), level + sigma**2 / (2 * level), delta=0.001)
        self.assertAlmostEqual(float(noisy.std()), sigma, delta=0.05 * sigma)

    def test_3d_and_clipping(self):
        image = torch.full((1, 1, 24, 24, 24), 0.98)
        clipped = add_rician_noise(image, 0.1, _gen(2))
        unclipped = add_rician_noise(image, 0.1, _gen(2), clip=False)
        self.assertEqual(clipped.shape, image.shape)
        self.assertLessEqual(float(clipped.max()), 1.0)
        self.assertGreater(float(unclipped.max()), 1.0)
        torch.testing.assert_close(clipped, unclipped.clamp(0, 1))

    def test_determinism(self):
        image, _ = _brain(2)
        a = add_rician_noise(image, 0.05, _gen(7))
        b = add_rician_noise(image, 0.05, _gen(7))
        c = add_rician_noise(image, 0.05, _gen(8))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        self.assertFalse(torch.equal(a, c))

    def test_per_item_sigma(self):
        image = torch.full((3, 1, 64, 64), 0.5)
        sigma = torch.tensor([0.0, 0.01, 0.08])
        noisy = add_rician_noise(image, sigma, _gen(3))
        torch.testing.assert_close(noisy[0], image[0], rtol=0, atol=1e-7)
        std = noisy.flatten(1).std(1)
        self.assertAlmostEqual(float(std[1]), 0.01, delta=0.001)
        self.assertAlmostEqual(float(std[2]), 0.08, delta=0.006)

    def test_float64_kept(self):
        noisy = add_rician_noise(torch.zeros(1, 1, 16, 16, dtype=torch.float64), 0.1, _gen())
        self.assertEqual(noisy.dtype, torch.float64)

    @parameterized.expand(
        [
            ("negative", torch.zeros(1, 1, 8, 8), -0.1, "sigma"),
            ("nan_sigma", torch.zeros(1, 1, 8, 8), float("nan"), "sigma"),
            ("inf_sigma", torch.zeros(1, 1, 8, 8), float("inf"), "sigma"),
            ("bool_sigma", torch.zeros(1, 1, 8, 8), True, "sigma"),
            ("wrong_length", torch.zeros(2, 1, 8, 8), torch.tensor([0.1, 0.1, 0.1]), "sigma"),
            ("negative_item", torch.zeros(2, 1, 8, 8), torch.tensor([0.1, -0.1]), "sigma"),
            ("nan_image", torch.full((1, 1, 8, 8), float("nan")), 0.1, "image"),
            ("no_channel", torch.zeros(1, 8, 8), 0.1, "image"),
            ("1d", torch.zeros(1, 1, 8), 0.1, "image"),
            ("4d", torch.zeros(1, 1, 4, 4, 4, 4), 0.1, "image"),
            ("integer", torch.zeros(1, 1, 8, 8, dtype=torch.int64), 0.1, "image"),
        ]
    )
    def test_bad_input(self, _, image, sigma, name):
        with self.assertRaisesRegex(ValueError, name):
            add_rician_noise(image, sigma)


class TestEstimateNoiseSigma(unittest.TestCase):
    def test_gaussian_noise_on_constant_image(self):
        # per-array spread of the estimate (20 seeds): 3-4% at 64^2, 2.5% at 32^3; the symmetric boundary
        # extension biases small arrays low (-1% at 64^2, -5% at 32^3, -7% at 24^3): tolerance 10% in 2D, 15% in 3D
        for shape, sigma, rtol in (
            ((2, 1, 64, 64), torch.tensor([0.02, 0.08]), 0.1),
            ((1, 1, 32, 32, 32), torch.tensor([0.05]), 0.15),
        ):
            noise = torch.randn(shape, generator=_gen(4))
            image = 0.5 + sigma.view(-1, *[1] * (len(shape) - 1)) * noise
            estimate = estimate_noise_sigma(image)
            self.assertEqual(estimate.shape, (shape[0],))
            self.assertEqual(estimate.dtype, torch.float32)
            torch.testing.assert_close(estimate, sigma, rtol=rtol, atol=0)

    def test_channels_are_averaged(self):
        noise = torch.randn(1, 2, 64, 64, generator=_gen(5))
        image = 0.5 + torch.tensor([0.02, 0.06]).view(1, 2, 1, 1) * noise
        estimate = estimate_noise_sigma(image)
        torch.testing.assert_close(estimate, torch.tensor([0.04]), rtol=0.1, atol=0)

    def test_brain_slice_bias_and_correction(self):
        # measured on 45 slices: mean relative error -0.20 at sigma 0.05 (spread 0.04); corrected within 0.015
        image, _ = _brain(2)
        sigma = 0.05
        noisy = add_rician_noise(image, sigma, _gen(6))
        raw = estimate_noise_sigma(noisy) / sigma - 1
        self.assertTrue(bool(((raw > -0.32) & (raw < -0.08)).all()), raw)
        corrected = estimate_noise_sigma(noisy, correction=BRAIN_SLICE_64_CORRECTION) / sigma - 1
        self.assertLess(float(corrected.mean().abs()), 0.1, corrected)
        self.assertLess(float(corrected.mean().abs()), float(raw.mean().abs()))

    @parameterized.expand(
        [
            ("nan_image", torch.full((1, 1, 8, 8), float("nan")), None, "image"),
            ("wrong_ndim", torch.zeros(8, 8), None, "image"),
            ("not_tensor", np.zeros((1, 1, 8, 8)), None, "image"),
            ("bad_correction", torch.zeros(1, 1, 16, 16), (1.0,), "correction"),
            ("nan_correction", torch.zeros(1, 1, 16, 16), (float("nan"), 0.0), "correction"),
        ]
    )
    def test_bad_input(self, _, image, correction, name):
        with self.assertRaisesRegex(ValueError, name):
            estimate_noise_sigma(image, correction=correction)


class TestBaselines(unittest.TestCase):
    @parameterized.expand(
        [
            # dim, denoiser, keyword arguments (3D: factors near the optimum for the tiny 24^3 brain, where the
            # gain is about +0.9 dB for NLM with the true sigma and +1.0 to +1.3 dB for TV)
            (2, nlm_denoise, {}),
            (2, nlm_denoise, {"sigma": 0.05}),
            (2, tv_denoise, {}),
            (2, tv_denoise, {"sigma": torch.tensor([0.05, 0.05])}),
            (3, nlm_denoise, {"sigma": 0.05}),
            (3, nlm_denoise, {"h_factor": 1.2}),
            (3, tv_denoise, {"weight_factor": 0.5}),
        ]
    )
    def test_improves_masked_psnr(self, dim, denoise_fn, kwargs):
        clean, mask = _brain(dim)
        noisy = add_rician_noise(clean, 0.05, _gen(10 + dim))
        denoised = denoise_fn(noisy, **kwargs)
        self.assertEqual(denoised.shape, noisy.shape)
        self.assertEqual(denoised.dtype, torch.float32)
        self.assertEqual(denoised.device, noisy.device)
        before = masked_psnr(noisy, clean, mask, data_range=1.0)
        after = masked_psnr(denoised, clean, mask, data_range=1.0)
        self.assertTrue(bool((after > before + 0.3).all()), (before, after))

    def test_zero_sigma_item_unchanged(self):
        clean, _ = _brain(2)
        noisy = add_rician_noise(clean, 0.05, _gen(12))
        for fn in (nlm_denoise, tv_denoise):
            out = fn(noisy, sigma=torch.tensor([0.0, 0.05]))
            torch.testing.assert_close(out[0], noisy[0], rtol=0, atol=0)
            self.assertFalse(torch.allclose(out[1], noisy[1]))

    def test_tune_factor(self):
        clean, mask = _brain(2)
        noisy = add_rician_noise(clean, 0.05, _gen(13))
        factors = [0.1, 0.5, 4.0]
        best, table = tune_factor(tv_denoise, noisy, clean, mask, factors, sigma=0.05)
        self.assertIn(best, factors)
        self.assertEqual(list(table), factors)
        self.assertEqual(best, max(table, key=table.get))
        # the strongest TV weight over-smooths and the weakest barely denoises: the middle one wins
        self.assertEqual(best, 0.5)
        expected = float(masked_psnr(tv_denoise(noisy, 0.05, weight_factor=0.5), clean, mask, data_range=1.0).mean())
        self.assertAlmostEqual(table[0.5], expected, places=4)
        # explicit factor name for any denoiser
        best_nlm, table_nlm = tune_factor(
            lambda x, strength: nlm_denoise(x, sigma=0.05, h_factor=strength),
            noisy,
            clean,
            mask,
            [0.2, 1.2],
            "strength",
        )
        self.assertIn(best_nlm, (0.2, 1.2))
        self.assertGreater(table_nlm[1.2], table_nlm[0.2])

    @parameterized.expand(
        [
            ("nan", lambda x: nlm_denoise(x * float("nan")), "noisy"),
            ("ndim", lambda x: tv_denoise(x[0]), "noisy"),
            ("sigma", lambda x: nlm_denoise(x, sigma=-0.1), "sigma"),
            ("sigma_shape", lambda x: tv_denoise(x, sigma=torch.ones(3)), "sigma"),
            ("h_factor", lambda x: nlm_denoise(x, h_factor=-1.0), "h_factor"),
            ("patch_size", lambda x: nlm_denoise(x, patch_size=0), "patch_size"),
            ("patch_distance", lambda x: nlm_denoise(x, patch_distance=2.5), "patch_distance"),
            ("weight_factor", lambda x: tv_denoise(x, weight_factor=float("inf")), "weight_factor"),
            ("no_factors", lambda x: tune_factor(tv_denoise, x, x, torch.ones_like(x), []), "factors"),
            ("nan_factor", lambda x: tune_factor(tv_denoise, x, x, torch.ones_like(x), [float("nan")]), "factors"),
            ("no_name", lambda x: tune_factor(lambda y, f: y, x, x, torch.ones_like(x), [1.0]), "factor_name"),
            ("shape", lambda x: tune_factor(tv_denoise, x, x[:1], torch.ones_like(x), [1.0]), "clean"),
            ("empty_mask", lambda x: tune_factor(tv_denoise, x, x, torch.zeros_like(x), [1.0]), "mask"),
            ("mask_type", lambda x: tune_factor(tv_denoise, x, x, None, [1.0]), "mask"),
        ]
    )
    def test_bad_input(self, _, call, name):
        image = torch.rand(2, 1, 16, 16, generator=_gen(14))
        with self.assertRaisesRegex(ValueError, name):
            call(image)


if __name__ == "__main__":
    unittest.main()
