"""Gaussian prior (exact score, exact MRI posterior vs dense linear algebra) and classical baselines."""

from __future__ import annotations

import unittest

import numpy as np
import torch
from parameterized import parameterized

from monai_diffusion.apps.reconstruction.baselines import (
    WaveletTransform,
    filtered_back_projection,
    l1_wavelet_cs,
    zero_filled,
)
from monai_diffusion.exact import GaussianPriorDenoiser, StationaryGaussianPrior
from monai_diffusion.networks.schedulers import DDIMScheduler
from monai_diffusion.operators import MRIOperator, ParallelBeamCT, fft_centered, ifft_centered
from tests.test_utils import assert_allclose


def _prior(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    power = torch.rand((1, *shape), generator=g, dtype=torch.float64) + 0.2
    mean = torch.rand((1, *shape), generator=g, dtype=torch.float64)
    return StationaryGaussianPrior(mean, power)


def _dense_covariance(prior: StationaryGaussianPrior) -> torch.Tensor:
    """C = F^H diag(P) F as a dense real matrix, column by column."""
    shape = prior.mean.shape[1:]
    n = int(np.prod(shape))
    eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
    d = len(shape)
    cols = ifft_centered(prior.power * fft_centered(eye.to(torch.complex128), d), d).real
    return cols.reshape(n, n).T


class TestGaussianPrior(unittest.TestCase):
    def test_sample_count_checked(self):
        with self.assertRaisesRegex(ValueError, "num must be a positive integer, got 0"):
            _prior((4, 5)).sample(0)

    @parameterized.expand([("2d", (4, 5)), ("3d", (3, 4, 2))])
    def test_score_matches_dense_formula(self, _, shape):
        prior = _prior(shape)
        c = _dense_covariance(prior)
        self.assertLess(float((c - c.T).abs().max()), 1e-12, "covariance is real symmetric")
        x = torch.randn((2, 1, *shape), dtype=torch.float64)
        a, s = 0.7, 0.5
        n = c.shape[0]
        cov_t = a**2 * c + s**2 * torch.eye(n, dtype=torch.float64)
        ref = -torch.linalg.solve(cov_t, (x - a * prior.mean).reshape(2, n).T).T.reshape(x.shape)
        assert_allclose(prior.score(x, a, s), ref, rtol=1e-9, atol=1e-10)
        # Tweedie and the epsilon prediction follow
        assert_allclose(prior.posterior_mean(x, a, s), (x + s**2 * ref) / a, rtol=1e-9, atol=1e-10)

    def test_fit_and_sample_roundtrip(self):
        prior = _prior((8, 8), seed=1)
        samples = prior.sample(3000, torch.Generator().manual_seed(0))
        fitted = StationaryGaussianPrior.fit(samples)
        assert_allclose(fitted.mean, prior.mean, atol=0.1)
        ratio = fitted.power / prior.power
        self.assertLess(float((ratio - 1).abs().mean()), 0.06)

    @parameterized.expand([("noisy", 0.3), ("nearly_noiseless", 1e-3)])
    def test_mri_posterior_matches_dense_conditioning(self, _, noise):
        shape = (4, 6)
        prior = _prior(shape, seed=2)
        mask = torch.zeros(shape)
        mask[:, [0, 2, 3]] = 1  # column 2 is measured without its Hermitian partner (4)
        op = MRIOperator(mask, real_image=True)
        x = prior.sample(1, torch.Generator().manual_seed(3))
        y = (
            op.A(x)
            + mask
            * noise
            * torch.complex(torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64))
            / 2**0.5
        )
        mean, var, pix_std = prior.mri_posterior(y, mask, noise)
        # dense: the real-linear map x -> (Re, Im) of the measured coefficients, noise variance noise^2 / 2 each
        n = int(np.prod(shape))
        eye = torch.eye(n, dtype=torch.float64).reshape(n, 1, *shape)
        ak = op.A(eye)[:, 0][:, mask.bool()]  # (n, m)
        a_mat = torch.cat([ak.real, ak.imag], 1).T  # (2m, n)
        yv = torch.cat([y[0, 0][mask.bool()].real, y[0, 0][mask.bool()].imag])
        c = _dense_covariance(prior)
        s = a_mat @ c @ a_mat.T + (noise**2 / 2) * torch.eye(a_mat.shape[0], dtype=torch.float64)
        gain = c @ a_mat.T @ torch.linalg.pinv(s, hermitian=True)
        m0 = prior.mean.reshape(-1)
        ref_mean = m0 + gain @ (yv - a_mat @ m0)
        ref_cov = c - gain @ a_mat @ c
        assert_allclose(mean.reshape(-1), ref_mean, rtol=1e-6, atol=1e-6)
        assert_allclose(pix_std[0, 0] ** 2, torch.diagonal(ref_cov).mean(), rtol=1e-6, atol=1e-9)
        assert_allclose(torch.diagonal(ref_cov), torch.diagonal(ref_cov).mean().expand(n), rtol=1e-6, atol=1e-9)
        if noise > 0.1:  # the CG posterior mean for a general operator agrees with the closed form
            assert_allclose(prior.map_estimate(op, y, noise, max_iter=200, tol=1e-12), mean, rtol=1e-6, atol=1e-6)

    def test_denoiser_prediction_types_agree(self):
        prior = _prior((6, 6))
        x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
        sched = DDIMScheduler(1000)
        t = torch.tensor([400, 400])
        a, s = (float(v) for v in sched.marginal_coefficients(400))
        eps = GaussianPriorDenoiser(prior, sched, "epsilon")(x, t)
        x0 = GaussianPriorDenoiser(prior, sched, "sample")(x, t)
        v = GaussianPriorDenoiser(prior, sched, "v_prediction")(x, t)
        assert_allclose(a * x0 + s * eps, x, rtol=1e-9, atol=1e-10)
        assert_allclose(v, a * eps - s * x0, rtol=1e-9, atol=1e-10)

    def test_bad_input(self):
        with self.assertRaises(ValueError):
            StationaryGaussianPrior(torch.zeros(1, 4, 4), -torch.ones(1, 4, 4))
        with self.assertRaises(ValueError):
            StationaryGaussianPrior.fit(torch.zeros(1, 1, 4, 4))
        prior = _prior((4, 4))
        with self.assertRaises(TypeError):
            prior.mri_posterior(torch.zeros(1, 1, 4, 4), torch.ones(4, 4))
        with self.assertRaises(ValueError):
            prior.score(torch.zeros(1, 1, 5, 5), 1.0, 0.1)


class TestBaselines(unittest.TestCase):
    def test_zero_filled_and_fbp(self):
        mask = torch.zeros(8, 8)
        mask[:, ::2] = 1
        op = MRIOperator(mask)
        y = op.A(torch.complex(torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)))
        assert_allclose(zero_filled(op, y), op.A_adjoint(y))
        with self.assertRaises(TypeError):
            filtered_back_projection(op, y)
        ct = ParallelBeamCT(16, 8)
        self.assertEqual(filtered_back_projection(ct, ct.A(torch.rand(1, 1, 16, 16))).shape, (1, 1, 16, 16))

    @parameterized.expand([("2d", (16, 12)), ("3d", (8, 8, 8))])
    def test_wavelet_is_orthonormal(self, _, shape):
        wt = WaveletTransform(shape, "db2", level=1)
        x = np.random.RandomState(0).randn(*shape)
        c = wt.forward(x)
        self.assertAlmostEqual(float(np.linalg.norm(c)), float(np.linalg.norm(x)), places=8)
        np.testing.assert_allclose(wt.inverse(c), x, atol=1e-10)
        with self.assertRaises(ValueError):
            WaveletTransform(shape, "bior2.2")

    def test_cs_beats_zero_filled_on_piecewise_constant(self):
        x = torch.zeros(1, 1, 32, 32, dtype=torch.float64)
        x[..., 8:24, 10:22] = 1.0
        x[..., 12:18, 12:16] = 0.5
        g = torch.Generator().manual_seed(0)
        lines = (torch.rand(32, generator=g) < 0.25).double()
        lines[14:18] = 1
        mask = lines.expand(32, 32)
        op = MRIOperator(mask, real_image=True)
        y = op.A(x)
        err_zf = float((zero_filled(op, y) - x).norm())
        err_cs = float((l1_wavelet_cs(op, y, 1e-3, 60, wavelet="haar") - x).norm())
        self.assertLess(err_cs, 0.7 * err_zf)
        # lam = 0: FISTA on the least-squares term keeps the data consistent
        ls = l1_wavelet_cs(op, y, 0.0, 80, wavelet="haar")
        assert_allclose(op.A(ls), y, atol=1e-5)
        with self.assertRaises(ValueError):
            l1_wavelet_cs(op, y, -1.0)


if __name__ == "__main__":
    unittest.main()
