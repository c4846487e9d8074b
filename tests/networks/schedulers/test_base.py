from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_diffusion.networks.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerKarrasScheduler,
    HeunKarrasScheduler,
    UniPCMultistepScheduler,
)
from monai_diffusion.networks.schedulers.base import (
    append_dims,
    clip_x0,
    dynamic_threshold,
    interp,
    karras_sigmas,
    log_sigma_table,
    make_schedule,
    model_output_to_x0_eps,
    spaced_timesteps,
)
from tests.test_utils import make_input, spatial_cases


class TestHelpers(unittest.TestCase):
    def test_append_dims(self):
        self.assertEqual(append_dims(torch.ones(3), 5).shape, (3, 1, 1, 1, 1))
        with self.assertRaises(ValueError):
            append_dims(torch.ones(2, 2, 2), 2)

    @parameterized.expand([(p,) for p in ("epsilon", "sample", "v_prediction")])
    def test_prediction_conversion_round_trip(self, prediction_type):
        x0, eps = make_input((2, 1, 8, 8), seed=0), make_input((2, 1, 8, 8), seed=1)
        alpha, sigma = torch.tensor([0.8, 0.3]), torch.tensor([0.6, math.sqrt(1 - 0.09)])
        a, s = alpha.reshape(-1, 1, 1, 1), sigma.reshape(-1, 1, 1, 1)
        xt = a * x0 + s * eps
        output = {"epsilon": eps, "sample": x0, "v_prediction": a * eps - s * x0}[prediction_type]
        got_x0, got_eps = model_output_to_x0_eps(output, xt, alpha, sigma, prediction_type)
        torch.testing.assert_close(got_x0, x0, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(got_eps, eps, rtol=1e-4, atol=1e-4)

    def test_prediction_conversion_errors(self):
        x = torch.zeros(2, 1, 4, 4)
        with self.assertRaisesRegex(ValueError, "prediction_type"):
            model_output_to_x0_eps(x, x, 1.0, 1.0, "score")
        with self.assertRaisesRegex(ValueError, "must match"):
            model_output_to_x0_eps(torch.zeros(2, 2, 4, 4), x, 1.0, 1.0, "epsilon")
        with self.assertRaisesRegex(ValueError, "per-sample"):
            model_output_to_x0_eps(x, x, torch.ones(3), 1.0, "epsilon")

    @parameterized.expand(spatial_cases())
    def test_dynamic_threshold(self, _name, shape):
        x = make_input(shape, seed=0) * 3
        out = dynamic_threshold(x, ratio=0.9, max_value=2.0)
        s = torch.quantile(x.reshape(shape[0], -1).abs(), 0.9, dim=1).clamp(1.0, 2.0)
        expected = torch.stack([x[i].clamp(-s[i], s[i]) / s[i] for i in range(shape[0])])
        torch.testing.assert_close(out, expected)
        self.assertLessEqual(float(out.abs().max()), 1.0 + 1e-6)
        small = make_input(shape, seed=1) * 0.1  # below 1: left unchanged (s is clamped to >= 1)
        torch.testing.assert_close(dynamic_threshold(small), small)
        self.assertEqual(float(clip_x0(x, 1.5).abs().max()), 1.5)

    def test_spacings(self):
        abar = make_schedule("linear_beta", 1000)[2]
        self.assertEqual(spaced_timesteps(10, 1000, "linspace").tolist()[:2], [999.0, 888.0])
        self.assertEqual(spaced_timesteps(10, 1000, "leading").tolist()[:2], [900.0, 800.0])
        trailing = spaced_timesteps(10, 1000, "trailing").tolist()
        self.assertEqual((trailing[0], trailing[-1]), (999.0, 99.0))
        t = spaced_timesteps(10, 1000, "log_snr", abar)
        lam = -interp(t, torch.arange(1000, dtype=torch.float64), log_sigma_table(abar))
        steps = lam[1:] - lam[:-1]
        torch.testing.assert_close(steps, steps.mean().expand_as(steps), rtol=1e-6, atol=1e-6)  # uniform in log-SNR
        k = spaced_timesteps(8, 1000, "karras", abar)
        sig = interp(k, torch.arange(1000, dtype=torch.float64), log_sigma_table(abar)).exp()
        ref = karras_sigmas(8, float(log_sigma_table(abar)[0].exp()), float(log_sigma_table(abar)[-1].exp()))
        torch.testing.assert_close(sig, ref, rtol=1e-6, atol=0)
        for spacing in ("linspace", "leading", "trailing", "log_snr", "karras"):
            ts = spaced_timesteps(25, 1000, spacing, abar)
            self.assertTrue(bool((ts[1:] < ts[:-1]).all()), spacing)
            self.assertTrue(0 <= float(ts.min()) and float(ts.max()) <= 999, spacing)
        with self.assertRaisesRegex(ValueError, "spacing"):
            spaced_timesteps(10, 1000, "cubic")
        with self.assertRaisesRegex(ValueError, "alphas_cumprod"):
            spaced_timesteps(10, 1000, "log_snr")

    def test_log_snr_lambda_min(self):
        """The clipped log-SNR grid: first point T-1, then uniform in lambda from lambda_min; no-op below lambda_T."""
        grid = torch.arange(1000, dtype=torch.float64)
        for name in ("cosine", "linear_beta"):
            abar = make_schedule(name, 1000)[2]
            t = spaced_timesteps(11, 1000, "log_snr", abar, lambda_min=-3.0)
            lam = -interp(t, grid, log_sigma_table(abar))
            self.assertEqual(float(t[0]), 999.0)
            expected = torch.linspace(-3.0, float(-log_sigma_table(abar)[0]), 11, dtype=torch.float64)[1:]
            torch.testing.assert_close(lam[1:], expected, rtol=1e-6, atol=1e-6)
        abar = make_schedule("linear_beta", 1000)[2]  # lambda_{999} = -5.06 > -8: the option changes nothing
        torch.testing.assert_close(
            spaced_timesteps(10, 1000, "log_snr", abar, lambda_min=-8.0), spaced_timesteps(10, 1000, "log_snr", abar)
        )

    def test_schedules(self):
        for name in ("linear", "scaled_linear", "cosine", "linear_beta", "sigmoid_beta"):
            betas, alphas, abar = make_schedule(name, 1000)
            self.assertEqual(betas.shape, (1000,))
            self.assertTrue(bool((abar[1:] < abar[:-1]).all()))
            torch.testing.assert_close(abar, torch.cumprod(1 - betas, 0))


class TestDiscreteTimeScheduler(unittest.TestCase):
    def test_marginal_coefficients(self):
        s = DDIMScheduler(schedule="cosine")
        t = torch.tensor([0, 10, 500, 999])
        alpha, sigma = s.marginal_coefficients(t)
        torch.testing.assert_close(alpha, s.alphas_cumprod.double()[t].sqrt(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(alpha**2 + sigma**2, torch.ones(4, dtype=torch.float64))
        a_mid, _ = s.marginal_coefficients(torch.tensor([500.5]))
        self.assertTrue(float(alpha[3]) < float(a_mid) < float(alpha[2]))
        with self.assertRaisesRegex(ValueError, "lie in"):
            s.marginal_coefficients(torch.tensor([1000.0]))

    def test_custom_and_fractional_timesteps(self):
        s = DPMSolverMultistepScheduler()
        s.set_timesteps(timesteps=[999.0, 600.5, 250.25, 40.0])
        self.assertEqual(len(s.timesteps), 4)
        self.assertAlmostEqual(float(s.timesteps[1]), 600.5, places=3)
        x0, eps = make_input((1, 1, 4, 4), seed=0), make_input((1, 1, 4, 4), seed=1)
        xt = s.add_noise(x0, eps, s.timesteps[1])
        a, sg = s.marginal_coefficients(s.timesteps[1])
        torch.testing.assert_close(xt, float(a) * x0 + float(sg) * eps)

    @parameterized.expand(
        [
            (cls.__name__, cls)
            for cls in (
                DDPMScheduler,
                DDIMScheduler,
                DPMSolverMultistepScheduler,
                UniPCMultistepScheduler,
                EulerKarrasScheduler,
                HeunKarrasScheduler,
            )
        ]
    )
    def test_step_count_validation(self, _name, cls):
        # a non-positive step count must raise, not leave an empty timestep list (it did for the multistep solvers)
        s = cls()
        for n in (0, -3):
            with self.assertRaisesRegex(ValueError, "num_inference_steps"):
                s.set_timesteps(n)
        with self.assertRaisesRegex(TypeError, "num_inference_steps"):
            s.set_timesteps(2.5)
        s.set_timesteps(1)
        self.assertGreaterEqual(len(s.timesteps), 1)

    def test_counter_checks_order(self):
        s = DPMSolverMultistepScheduler()
        s.set_timesteps(5)
        x = torch.zeros(1, 1, 4, 4)
        with self.assertRaisesRegex(ValueError, "expected timestep"):
            s.step(x, s.timesteps[1], x)
        for t in s.timesteps:
            s.step(x, t, x)
        with self.assertRaisesRegex(ValueError, "set_timesteps"):
            s.step(x, s.timesteps[-1], x)

    def test_clip_and_threshold_are_exclusive(self):
        with self.assertRaisesRegex(ValueError, "at most one"):
            DDIMScheduler(clip_sample=True, thresholding=True)

    def test_clipping_applies_to_x0(self):
        s = DDIMScheduler(clip_sample=True)
        s.set_timesteps(5)
        x = torch.full((1, 1, 4, 4), 5.0)
        _, x0 = s.step(torch.zeros_like(x), s.timesteps[-1], x)
        self.assertLessEqual(float(x0.max()), 1.0)
        t = DDIMScheduler(thresholding=True, sample_max_value=3.0)
        t.set_timesteps(5)
        _, x0 = t.step(torch.zeros_like(x), t.timesteps[-1], x)
        self.assertLessEqual(float(x0.max()), 1.0 + 1e-6)


class TestForwardProcessCompatibility(unittest.TestCase):
    def test_discrete_pairs(self):
        from monai.networks import schedulers as monai_schedulers

        from monai_diffusion.networks.schedulers import (
            DDPMScheduler,
            HeunKarrasScheduler,
            UniPCMultistepScheduler,
            check_forward_process,
        )

        check_forward_process(DDPMScheduler(), DPMSolverMultistepScheduler())
        check_forward_process(monai_schedulers.DDPMScheduler(), HeunKarrasScheduler())
        check_forward_process(DDPMScheduler(schedule="cosine"), UniPCMultistepScheduler(schedule="cosine"))
        with self.assertRaisesRegex(ValueError, "cosine"):
            check_forward_process(DDPMScheduler(schedule="cosine"), DPMSolverMultistepScheduler())


if __name__ == "__main__":
    unittest.main()
