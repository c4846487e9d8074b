"""DDPMScheduler's posterior q(x_s | x_t, x0) and reverse variances, and MONAI's ``_get_mean``/``_get_variance``."""

from __future__ import annotations

import unittest

import torch
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from parameterized import parameterized

from monai_diffusion.networks.schedulers import DDPMScheduler
from monai_diffusion.networks.schedulers.ddpm import posterior_coefficients, reverse_variance
from tests.test_utils import assert_allclose, make_input


def conditional_reference(abar_t: float, abar_s: float, x0: torch.Tensor, x_t: torch.Tensor):
    """Mean and variance of x_s given (x_t, x0) by Gaussian conditioning of the joint law of (x_s, x_t) given x0,
    independently of the closed form of Ho et al. (2020), Eq. 7."""
    var_s, var_t = 1.0 - abar_s, 1.0 - abar_t
    cov = (abar_t / abar_s) ** 0.5 * var_s
    mean = abar_s**0.5 * x0 + cov / var_t * (x_t - abar_t**0.5 * x0)
    return mean, var_s - cov**2 / var_t


def monai_on_our_table(ours: DDPMScheduler, variance_type: str) -> MonaiDDPM:
    """MONAI's scheduler holding our float32 table in float64 (betas derived from it), so both share one process."""
    monai = MonaiDDPM(ours.num_train_timesteps, variance_type=variance_type)
    abar = ours.alphas_cumprod.double()
    monai.alphas_cumprod = abar
    monai.alphas = torch.cat([abar[:1], abar[1:] / abar[:-1]])
    monai.betas = 1.0 - monai.alphas
    monai.one = torch.tensor(1.0, dtype=torch.float64)
    return monai


class TestPosterior(unittest.TestCase):
    @parameterized.expand([(t, s) for t, s in ((999, 998), (500, 499), (1, 0), (0, -1), (700, 350), (40, -1), (3, 1))])
    def test_against_gaussian_conditioning(self, t, s):
        sched = DDPMScheduler(1000)
        x0, x_t = make_input((2, 1, 4, 4), seed=0).double(), make_input((2, 1, 4, 4), seed=1).double()
        abar = sched.alphas_cumprod.double()
        abar_s = 1.0 if s < 0 else float(abar[s])
        mean, var = conditional_reference(float(abar[t]), abar_s, x0, x_t)
        assert_allclose(sched.posterior_mean(t, x0, x_t, prev_timestep=s), mean, rtol=1e-9, atol=1e-12)
        expected_var = max(float(var), 1e-20)  # zero onto clean data, floored
        assert_allclose(sched.posterior_variance(t, prev_timestep=s).double(), expected_var, rtol=1e-5, atol=0)
        if s == t - 1:  # the default is one training step
            assert_allclose(sched.posterior_mean(t, x0, x_t), mean, rtol=1e-9, atol=1e-12)

    @parameterized.expand([("fixed_small",), ("fixed_large",)])
    def test_monai_methods_match_monai(self, variance_type):
        ours = DDPMScheduler(1000, variance_type=variance_type)
        monai = monai_on_our_table(ours, variance_type)
        x0, x_t = make_input((2, 1, 4, 4), seed=0), make_input((2, 1, 4, 4), seed=1)
        for t in (0, 1, 2, 10, 500, 999):
            assert_allclose(
                ours._get_mean(t, x0, x_t), monai._get_mean(t, x0.double(), x_t.double()), rtol=1e-5, atol=1e-6
            )
            assert_allclose(ours._get_variance(t), monai._get_variance(t), rtol=1e-5, atol=0)
        self.assertEqual(float(ours.one), 1.0)

    def test_step_uses_the_same_posterior(self):
        # the respaced DDPM step is the posterior mean at the predicted x0 plus its reverse std times noise
        sched = DDPMScheduler(1000, variance_type="fixed_large", prediction_type="sample")
        sched.set_timesteps(timesteps=[700, 350, 0])
        x0, x_t = make_input((2, 1, 4, 4), seed=0), make_input((2, 1, 4, 4), seed=1)
        prev, _ = sched.step(x0, 700, x_t, generator=torch.Generator().manual_seed(3))
        noise = torch.randn(x_t.shape, generator=torch.Generator().manual_seed(3))
        mean = sched.posterior_mean(700, x0, x_t, prev_timestep=350)
        expected = mean + sched.posterior_variance(700, prev_timestep=350).sqrt() * noise
        assert_allclose(prev, expected, rtol=1e-5, atol=1e-6)

    def test_learned_variances(self):
        beta, beta_tilde = torch.tensor(0.02, dtype=torch.float64), torch.tensor(0.01, dtype=torch.float64)
        ones = torch.ones(2, dtype=torch.float64)
        assert_allclose(reverse_variance("learned_range", beta, beta_tilde, ones), 0.02 * ones)
        assert_allclose(reverse_variance("learned_range", beta, beta_tilde, -ones), 0.01 * ones)
        assert_allclose(reverse_variance("learned_range", beta, beta_tilde, 0 * ones), (0.02 * 0.01) ** 0.5 * ones)
        assert_allclose(reverse_variance("learned", beta, beta_tilde, ones.log() - 3), torch.exp(-3 * ones))
        sched = DDPMScheduler(100, variance_type="learned")
        assert_allclose(sched.posterior_variance(50, torch.full((1, 1, 2, 2), -4.0)), torch.exp(torch.tensor(-4.0)))
        sched = DDPMScheduler(100, variance_type="learned_range")
        _, _, b, bt = posterior_coefficients(sched.alphas_cumprod[50], sched.alphas_cumprod[49])
        assert_allclose(sched.posterior_variance(50, torch.ones(1, 1, 2, 2)), b, rtol=1e-6)
        assert_allclose(sched.posterior_variance(50), bt, rtol=1e-6)  # no values: the posterior variance (MONAI)

    def test_errors(self):
        sched = DDPMScheduler(100)
        x = torch.zeros(1, 1, 2, 2)
        with self.assertRaisesRegex(ValueError, "prev_timestep < timestep"):
            sched.posterior_mean(5, x, x, prev_timestep=5)
        with self.assertRaisesRegex(ValueError, "0 <= timestep <= 99"):
            sched.posterior_variance(100)
        with self.assertRaisesRegex(ValueError, "one integer training time"):
            sched.posterior_variance(2.5)
        with self.assertRaisesRegex(ValueError, "same shape"):
            sched.posterior_mean(5, x, torch.zeros(1, 1, 3, 3))
        with self.assertRaisesRegex(ValueError, "abar_t < abar_prev"):
            posterior_coefficients(0.5, 0.4)
        with self.assertRaisesRegex(ValueError, "variance_type"):
            reverse_variance("small", 0.1, 0.1)


if __name__ == "__main__":
    unittest.main()
