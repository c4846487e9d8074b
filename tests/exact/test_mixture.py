"""The closed-form Gaussian-mixture quantities agree with autograd and with sampling."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.exact import GaussianMixture, mixture_weight_error, wasserstein1
from tests.test_utils import assert_allclose


def _elementwise() -> GaussianMixture:
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([-1.0, 1.0]), torch.tensor([0.2, 0.3]), labels=[0, 1])


def _per_sample() -> GaussianMixture:
    g = torch.Generator().manual_seed(1)
    return GaussianMixture(
        torch.tensor([0.4, 0.6]),
        torch.randn(2, 1, 3, 3, generator=g),
        torch.rand(2, 1, 3, 3, generator=g) + 0.2,
        elementwise=False,
        labels=[0, 1],
    )


class TestGaussianMixture(unittest.TestCase):
    @parameterized.expand([("elementwise", _elementwise, (4, 1, 3, 3)), ("per_sample", _per_sample, (4, 1, 3, 3))])
    def test_score_matches_autograd(self, _, make, shape):
        gm = make()
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        for alpha, sigma in [(0.6, 0.8), (torch.rand(4, dtype=torch.float64) + 0.1, 0.3)]:
            (grad,) = torch.autograd.grad(gm.log_prob(x, alpha, sigma).sum(), x)
            assert_allclose(gm.score(x, alpha, sigma), grad, rtol=1e-9, atol=1e-9)

    def test_tweedie_matches_monte_carlo(self):
        gm = _elementwise()
        g = torch.Generator().manual_seed(0)
        x0 = gm.sample((1, 400_000), g)
        alpha, sigma = 0.8, 0.6
        xt = alpha * x0 + sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
        # E[x0 | x_t in bin] estimated by binning x_t, compared with the closed form at the bin centre
        centre = torch.tensor(0.5, dtype=torch.float64)
        sel = (xt - centre).abs() < 0.01
        self.assertGreater(int(sel.sum()), 2000)
        mc = x0[sel].mean()
        exact = gm.posterior_mean(centre.reshape(1, 1), alpha, sigma).squeeze()
        self.assertLess(abs(float(mc - exact)), 0.02)

    def test_class_posteriors_sum_to_one(self):
        gm = _per_sample()
        x = torch.randn(5, 1, 3, 3, dtype=torch.float64)
        total = gm.class_log_prob(x, 0, 0.7, 0.7).exp() + gm.class_log_prob(x, 1, 0.7, 0.7).exp()
        assert_allclose(total, torch.ones(5, dtype=torch.float64), rtol=1e-12)

    def test_distribution_errors_small_for_true_samples_and_large_for_wrong_ones(self):
        gm = _elementwise()
        x = gm.sample((8, 1, 32, 32), torch.Generator().manual_seed(0))
        self.assertLess(wasserstein1(x, gm), 0.03)
        self.assertLess(mixture_weight_error(x, gm), 0.02)
        self.assertGreater(wasserstein1(x + 0.5, gm), 0.4)
        self.assertGreater(mixture_weight_error(x.abs(), gm), 0.2)

    def test_bad_parameters(self):
        with self.assertRaises(ValueError):
            GaussianMixture(torch.tensor([1.0]), torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0]))
        with self.assertRaises(ValueError):
            GaussianMixture(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([0.0]))
        with self.assertRaises(ValueError):
            _elementwise().epsilon(torch.zeros(3, 4), torch.ones(2), 0.5)


class TestExactModel(unittest.TestCase):
    def test_monai_ddpm_at_full_steps_reproduces_the_mixture(self):
        """MONAI's DDPM with all 1000 steps is correct (defect 1 is only about strided steps)."""
        from monai.networks.schedulers import DDPMScheduler

        from monai_diffusion.exact import ExactModel

        gm = _elementwise()
        sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=False)
        sched.set_timesteps(1000)
        model = ExactModel(gm, sched)
        g = torch.Generator().manual_seed(0)
        x = torch.randn((4, 1, 32, 32), generator=g)
        with torch.no_grad():
            for t in sched.timesteps:
                x, _ = sched.step(model(x, t), t, x, generator=g)
        self.assertEqual(model.calls, 1000)
        self.assertLess(wasserstein1(x, gm), 0.05)
        self.assertLess(mixture_weight_error(x, gm), 0.03)

    def test_prediction_types_are_consistent(self):
        from monai_diffusion.exact import ExactModel

        class Coeffs:
            def marginal_coefficients(self, t):
                a = torch.cos(torch.as_tensor(t, dtype=torch.float64) / 1000 * torch.pi / 2)
                return a, (1 - a**2).sqrt()

        gm = _elementwise()
        x = torch.randn(3, 1, 4, 4, dtype=torch.float64)
        t = torch.tensor(400)
        eps = ExactModel(gm, Coeffs(), "epsilon")(x, t)
        x0 = ExactModel(gm, Coeffs(), "sample")(x, t)
        v = ExactModel(gm, Coeffs(), "v_prediction")(x, t)
        a, s = Coeffs().marginal_coefficients(t)
        assert_allclose(a * x0 + s * eps, x, rtol=1e-10, atol=1e-10)
        assert_allclose(v, a * eps - s * x0, rtol=1e-10, atol=1e-10)

    def test_fractional_timesteps_interpolate_log_sigma_of_a_monai_table(self):
        from monai.networks.schedulers import DDPMScheduler

        from monai_diffusion.exact import ExactModel

        sched = DDPMScheduler(num_train_timesteps=1000)
        model = ExactModel(_elementwise(), sched)
        a3, s3 = model.coefficients(torch.tensor([3.0]))
        a4, _ = model.coefficients(torch.tensor([4.0]))
        ah, sh = model.coefficients(torch.tensor([3.5]))
        assert_allclose(a3**2, sched.alphas_cumprod[3].double(), rtol=1e-6)
        log_sigma = lambda a: 0.5 * torch.log((1 - a**2) / a**2)  # noqa: E731
        assert_allclose(log_sigma(ah), (log_sigma(a3) + log_sigma(a4)) / 2, rtol=1e-10)
        assert_allclose(ah**2 + sh**2, torch.ones(1, dtype=torch.float64), rtol=1e-12)
        self.assertLess(float(ah), float(a3))
