"""Exact-score tests: driven by the closed-form optimal network for Gaussian-mixture data, every sampler must
reproduce the mixture within the tolerances stated here (and in docs/samplers.md) at the stated NFE.

The data are a 3-component 1D mixture, every pixel of a (4, 1, 32, 32) batch an independent draw (4096 samples).
Initial noise is stratified (normal quantiles), so deterministic samplers are measured without Monte-Carlo noise.
"""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture, mixture_weight_error, stratified_normal, wasserstein1
from monai_diffusion.networks.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerKarrasScheduler,
    HeunKarrasScheduler,
    UniPCMultistepScheduler,
)
from tests.networks.schedulers.contract import sample_loop
from tests.test_utils import assert_close_scalar

MIXTURE = GaussianMixture(
    torch.tensor([0.25, 0.45, 0.30]), torch.tensor([-1.0, 0.1, 1.1]), torch.tensor([0.12, 0.25, 0.15])
)
SHAPE = (4, 1, 32, 32)
MEAN = float((MIXTURE.weights * MIXTURE.means).sum())
STD = float(((MIXTURE.weights * (MIXTURE.stds**2 + MIXTURE.means**2)).sum() - MEAN**2).sqrt())

# name, factory, num_inference_steps, NFE, W1 tolerance, weight-error tolerance (stated in docs/samplers.md)
CASES = [
    ("ddpm_100", lambda: DDPMScheduler(), 100, 100, 0.04, 0.03),
    ("ddpm_large_100", lambda: DDPMScheduler(variance_type="fixed_large"), 100, 100, 0.04, 0.03),
    ("ddim_50", lambda: DDIMScheduler(), 50, 50, 0.035, 0.03),
    ("ddim_eta1_100", lambda: DDIMScheduler(eta=1.0), 100, 100, 0.04, 0.03),
    ("dpm2_10", lambda: DPMSolverMultistepScheduler(), 10, 10, 0.045, 0.035),
    ("dpm2_20", lambda: DPMSolverMultistepScheduler(), 20, 20, 0.012, 0.01),
    ("dpm3_20", lambda: DPMSolverMultistepScheduler(solver_order=3), 20, 20, 0.01, 0.01),
    ("unipc2_10", lambda: UniPCMultistepScheduler(), 10, 10, 0.03, 0.012),
    ("unipc3_20", lambda: UniPCMultistepScheduler(solver_order=3), 20, 20, 0.006, 0.006),
    ("euler_50", lambda: EulerKarrasScheduler(), 50, 50, 0.045, 0.05),
    ("heun_20", lambda: HeunKarrasScheduler(), 20, 39, 0.035, 0.02),
]


class TestExactScoreSampling(unittest.TestCase):
    @parameterized.expand(CASES)
    def test_reproduces_mixture(self, _name, factory, steps, nfe, w1_tol, weight_tol):
        scheduler = factory()
        scheduler.set_timesteps(steps)
        model = ExactModel(MIXTURE, scheduler)
        x, _ = sample_loop(scheduler, model, stratified_normal(SHAPE), torch.Generator().manual_seed(0))
        self.assertEqual(model.calls, nfe)
        w1 = wasserstein1(x, MIXTURE)
        self.assertLess(w1, w1_tol, f"W1 {w1:.4f}")
        werr = mixture_weight_error(x, MIXTURE)
        self.assertLess(werr, weight_tol, f"weight error {werr:.4f}")
        assert_close_scalar(x.mean(), MEAN, atol=max(0.03, w1_tol), name="mean")
        assert_close_scalar(x.std(), STD, atol=max(0.03, w1_tol), name="std")

    def test_pure_noise_is_far_from_the_mixture(self):
        # the tolerances above are meaningful: the prior itself is far away
        self.assertGreater(wasserstein1(stratified_normal(SHAPE), MIXTURE), 0.2)

    @parameterized.expand(
        [
            ("ddpm", DDPMScheduler),
            ("ddim", DDIMScheduler),
            ("dpm", DPMSolverMultistepScheduler),
            ("unipc", UniPCMultistepScheduler),
            ("euler", EulerKarrasScheduler),
            ("heun", HeunKarrasScheduler),
        ]
    )
    def test_prediction_types_agree(self, _name, cls):
        # the same exact model in epsilon, x0 and v form gives the same samples (same generator for DDPM's noise)
        outs = []
        for prediction_type in ("epsilon", "sample", "v_prediction"):
            s = cls(prediction_type=prediction_type)
            s.set_timesteps(8)
            gen = torch.Generator().manual_seed(5)
            x, _ = sample_loop(s, ExactModel(MIXTURE, s), stratified_normal((2, 1, 16, 16)), gen)
            outs.append(x)
        torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=2e-3)
        torch.testing.assert_close(outs[2], outs[0], rtol=0, atol=2e-3)

    def test_ddim_eta_one_is_ddpm(self):
        # Song et al. (2021a), Eq. 16: eta = 1 gives the DDPM posterior variance (respaced)
        a, b = DDIMScheduler(eta=1.0), DDPMScheduler()
        for s in (a, b):
            s.set_timesteps(25)
        xa, _ = sample_loop(a, ExactModel(MIXTURE, a), stratified_normal(SHAPE), torch.Generator().manual_seed(3))
        xb, _ = sample_loop(b, ExactModel(MIXTURE, b), stratified_normal(SHAPE), torch.Generator().manual_seed(3))
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-4)

    def test_euler_matches_ddim_on_the_same_grid(self):
        # Euler on the VE ODE with x0 parameterisation is DDIM (Karras et al. 2022, Sec. 3)
        e = EulerKarrasScheduler()
        e.set_timesteps(12)
        d = DDIMScheduler()
        d.set_timesteps(timesteps=[999, 800, 600, 400, 200, 50, 10, 0])
        e.set_timesteps(timesteps=[999, 800, 600, 400, 200, 50, 10, 0])
        xe, _ = sample_loop(e, ExactModel(MIXTURE, e), stratified_normal((2, 1, 16, 16)))
        xd, _ = sample_loop(d, ExactModel(MIXTURE, d), stratified_normal((2, 1, 16, 16)))
        torch.testing.assert_close(xe, xd, rtol=0, atol=1e-4)


if __name__ == "__main__":
    unittest.main()
