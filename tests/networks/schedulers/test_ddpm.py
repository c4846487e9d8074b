from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.networks.schedulers.contract import SchedulerContract, sample_loop
from tests.test_utils import assert_close_scalar, make_input, spatial_cases

GAUSS = GaussianMixture(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.2]))


class TestDDPMContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDPMScheduler
    bundle_args = {"num_train_timesteps": 1000, "schedule": "scaled_linear_beta", "variance_type": "fixed_large"}
    stochastic = True

    def make_scheduler(self, **kw):
        return DDPMScheduler(**kw)


class WithVarianceChannels(torch.nn.Module):
    """Appends constant variance values ``v`` as C extra output channels (the improved-DDPM layout)."""

    def __init__(self, model: torch.nn.Module, value: float) -> None:
        super().__init__()
        self.model, self.value = model, value

    def forward(self, x, t):
        out = self.model(x, t)
        return torch.cat([out, torch.full_like(out, self.value)], dim=1)


class TestDDPM(unittest.TestCase):
    @parameterized.expand([(n,) for n in (10, 50, 100)])
    def test_respaced_gaussian(self, steps):
        # N(0.5, 0.2^2) data: any number of steps gives the right mean (MONAI 1.6.1: 0.10 at 50 steps), and the
        # fixed-small / fixed-large variances bracket the true std (under- / over-dispersed at few steps)
        stds = {}
        for variance_type in ("fixed_small", "fixed_large"):
            s = DDPMScheduler(variance_type=variance_type)
            s.set_timesteps(steps)
            noise = make_input((4, 1, 32, 32), seed=0)
            x, _ = sample_loop(s, ExactModel(GAUSS, s), noise, torch.Generator().manual_seed(1))
            assert_close_scalar(x.mean(), 0.5, atol=0.02, name=f"mean ({variance_type})")
            stds[variance_type] = float(x.std())
        self.assertLess(stds["fixed_small"], 0.2)
        self.assertGreater(stds["fixed_large"], 0.2)
        if steps >= 100:
            assert_close_scalar(stds["fixed_small"], 0.2, atol=0.035, name="std (fixed_small)")
            assert_close_scalar(stds["fixed_large"], 0.2, atol=0.015, name="std (fixed_large)")

    def test_irregular_custom_subset(self):
        # respacing holds for any subset of the training timesteps, not only evenly spaced ones
        stds = {}
        for variance_type in ("fixed_small", "fixed_large"):
            s = DDPMScheduler(variance_type=variance_type)
            s.set_timesteps(timesteps=[999, 700, 300, 120, 50, 10, 3, 0])
            noise = make_input((4, 1, 32, 32), seed=0)
            x, _ = sample_loop(s, ExactModel(GAUSS, s), noise, torch.Generator().manual_seed(1))
            assert_close_scalar(x.mean(), 0.5, atol=0.02, name=f"mean ({variance_type})")
            stds[variance_type] = float(x.std())
        self.assertLess(stds["fixed_small"], 0.2)
        self.assertGreater(stds["fixed_large"], 0.2)

    def test_respaced_betas_compose_to_alphas_cumprod(self):
        # Nichol & Dhariwal (2021), Sec. 4: prod(1 - beta'_i) over the respaced steps equals abar at each kept t
        s = DDPMScheduler()
        s.set_timesteps(20)
        prod = 1.0
        for i in reversed(range(len(s.timesteps))):
            abar_t, abar_prev = s._abar_pair(i)
            prod *= abar_t / abar_prev
            self.assertAlmostEqual(prod, float(s.alphas_cumprod.double()[int(s.timesteps[i])]), places=6)

    @parameterized.expand([("small", -1.0, "fixed_small"), ("large", 1.0, "fixed_large")])
    def test_learned_range_endpoints(self, _name, value, fixed):
        # v = -1 is log beta-tilde, v = +1 is log beta' (Nichol & Dhariwal 2021, Eq. 15)
        learned, ref = DDPMScheduler(variance_type="learned_range"), DDPMScheduler(variance_type=fixed)
        for s in (learned, ref):
            s.set_timesteps(20)
        noise = make_input((2, 1, 16, 16), seed=0)
        xa, _ = sample_loop(
            learned, WithVarianceChannels(ExactModel(GAUSS, learned), value), noise, torch.Generator().manual_seed(4)
        )
        xb, _ = sample_loop(ref, ExactModel(GAUSS, ref), noise, torch.Generator().manual_seed(4))
        torch.testing.assert_close(xa, xb, rtol=0, atol=1e-4)

    def test_learned_log_variance(self):
        # "learned": the extra channels are the log-variance itself; -inf-like values remove the noise (= mean)
        s = DDPMScheduler(variance_type="learned")
        s.set_timesteps(10)
        x = make_input((1, 1, 8, 8), seed=0)
        out = torch.cat([torch.zeros_like(x), torch.full_like(x, -60.0)], dim=1)
        a, _ = s.step(out, s.timesteps[0], x, torch.Generator().manual_seed(0))
        b, _ = s.step(out, s.timesteps[0], x, torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)

    @parameterized.expand(spatial_cases())
    def test_learned_needs_twice_the_channels(self, _name, shape):
        s = DDPMScheduler(variance_type="learned_range")
        s.set_timesteps(5)
        with self.assertRaisesRegex(ValueError, "output channels"):
            s.step(torch.zeros(shape), s.timesteps[0], torch.zeros(shape))

    def test_last_step_is_noise_free(self):
        s = DDPMScheduler(variance_type="fixed_large")
        s.set_timesteps(10)
        x = make_input((1, 1, 8, 8), seed=0)
        a, x0a = s.step(torch.zeros_like(x), s.timesteps[-1], x, torch.Generator().manual_seed(0))
        b, _ = s.step(torch.zeros_like(x), s.timesteps[-1], x, torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, x0a)

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "variance_type"):
            DDPMScheduler(variance_type="huge")
        with self.assertRaisesRegex(ValueError, "prediction_type"):
            DDPMScheduler(prediction_type="score")
        with self.assertRaisesRegex(ValueError, "timestep_spacing"):
            DDPMScheduler(timestep_spacing="random")
        with self.assertRaisesRegex(ValueError, "schedule"):
            DDPMScheduler(schedule="nope")
        s = DDPMScheduler()
        with self.assertRaisesRegex(ValueError, "num_inference_steps"):
            s.set_timesteps(1001)
        with self.assertRaisesRegex(ValueError, "integer timesteps"):
            s.set_timesteps(timesteps=[900.5, 100.0])
        with self.assertRaisesRegex(ValueError, "decreasing"):
            s.set_timesteps(timesteps=[100, 900])
        with self.assertRaisesRegex(TypeError, "tensors"):
            s.set_timesteps(5)
            s.step([0.0], s.timesteps[0], torch.zeros(1, 1, 4, 4))


if __name__ == "__main__":
    unittest.main()
