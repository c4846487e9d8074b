"""Regression tests for MONAI 1.6.1 scheduler defects 1-4 (``REFERENCES.md``).

Each test first shows MONAI's behaviour (and skips itself if MONAI has changed it), then shows ours is correct.
"""

from __future__ import annotations

import math
import unittest

import torch
from monai.networks import schedulers as monai_schedulers

from monai_diffusion.exact import ExactModel, GaussianMixture
from monai_diffusion.networks.schedulers import DDIMScheduler, DDPMScheduler
from tests.networks.schedulers.contract import sample_loop
from tests.test_utils import assert_close_scalar, make_input

GAUSS = GaussianMixture(torch.tensor([1.0]), torch.tensor([0.5]), torch.tensor([0.2]))


class TestDefect1StridedDDPM(unittest.TestCase):
    """DDPM with fewer inference steps than training steps must stay correct (respacing)."""

    def test_fifty_steps(self):
        noise = make_input((4, 1, 32, 32), seed=0)
        theirs = monai_schedulers.DDPMScheduler(clip_sample=False)
        theirs.set_timesteps(50)
        x, _ = sample_loop(theirs, ExactModel(GAUSS, theirs), noise, torch.Generator().manual_seed(1))
        if abs(float(x.mean()) - 0.5) < 0.05:
            self.skipTest("MONAI's DDPMScheduler now respaces correctly")
        self.assertGreater(abs(float(x.mean()) - 0.5), 0.2)  # MONAI: mean ~0.10, std ~0.86

        ours = DDPMScheduler()
        ours.set_timesteps(50)
        x, _ = sample_loop(ours, ExactModel(GAUSS, ours), noise, torch.Generator().manual_seed(1))
        assert_close_scalar(x.mean(), 0.5, atol=0.02, name="mean")
        self.assertLess(abs(float(x.std()) - 0.2), 0.05)


class TestDefect2DDIMGrid(unittest.TestCase):
    """A DDIM step must land on the next grid point, where the model is evaluated next."""

    @staticmethod
    def _landing_abar(scheduler, x0, eps, t) -> float:
        abar = float(scheduler.alphas_cumprod[int(t)])
        xt = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
        prev, _ = scheduler.step(eps, t, xt)
        # prev = sqrt(a) x0 + sqrt(1 - a) eps: read a off the x0 coefficient by least squares
        basis = torch.stack([x0.flatten(), eps.flatten()], dim=1).double()
        coef = torch.linalg.lstsq(basis, prev.flatten().double().unsqueeze(1)).solution
        return float(coef[0, 0]) ** 2

    def test_landing_point(self):
        g = torch.Generator().manual_seed(0)
        x0 = torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
        eps = torch.randn(1, 1, 64, 64, generator=g, dtype=torch.float64)
        theirs = monai_schedulers.DDIMScheduler(clip_sample=False)
        theirs.set_timesteps(10)
        t0, t1 = int(theirs.timesteps[0]), int(theirs.timesteps[1])
        abar_landed = self._landing_abar(theirs, x0, eps, t0)
        abar_next = float(theirs.alphas_cumprod[t1])
        if abs(abar_landed - abar_next) < 1e-3 * abar_next:
            self.skipTest("MONAI's DDIMScheduler now lands on the next grid point")
        self.assertAlmostEqual(abar_landed, float(theirs.alphas_cumprod[t0 - 100]), delta=1e-3 * abar_next)

        ours = DDIMScheduler()
        ours.set_timesteps(10)
        self.assertEqual(ours.timesteps.tolist()[:2], [t0, t1])
        self.assertAlmostEqual(self._landing_abar(ours, x0.float(), eps.float(), t0), abar_next, delta=1e-3 * abar_next)


class TestDefect3DDIMInversion(unittest.TestCase):
    """DDIM inversion over the full range, without IndexError."""

    def test_full_range(self):
        model_mix = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([-0.6, 0.6]), torch.tensor([0.2, 0.2]))
        x0 = model_mix.sample((1, 1, 16, 16), torch.Generator().manual_seed(0)).float()
        theirs = monai_schedulers.DDIMScheduler(clip_sample=False)
        theirs.set_timesteps(10)
        model = ExactModel(model_mix, theirs)
        try:
            x = x0
            for t in theirs.timesteps.flip(0):
                x, _ = theirs.reversed_step(model(x, t), t, x)
        except IndexError:
            pass
        else:
            self.skipTest("MONAI's DDIMScheduler.reversed_step now runs over the full range")

        ours = DDIMScheduler()
        ours.set_timesteps(50)
        model = ExactModel(model_mix, ours)
        x = x0
        for t in ours.timesteps.flip(0):
            x, _ = ours.reversed_step(model(x, t), t, x)
        for t in ours.timesteps:
            x, _ = ours.step(model(x, t), t, x)
        self.assertLess(float((x - x0).norm() / x0.norm()), 0.1)


class TestDefect4Buffers(unittest.TestCase):
    """Tables are buffers (state_dict, .to()) and add_noise does not mutate the scheduler."""

    def test_buffers_and_add_noise(self):
        theirs = monai_schedulers.DDPMScheduler()
        x = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
        theirs.add_noise(x, x, torch.tensor([10, 20]))
        if len(theirs.state_dict()) > 0 and theirs.alphas_cumprod.dtype == torch.float32:
            self.skipTest("MONAI's schedulers now register buffers and keep add_noise pure")
        self.assertEqual(len(theirs.state_dict()), 0)
        self.assertEqual(theirs.alphas_cumprod.dtype, torch.float64)  # overwritten by the input's dtype

        for ours in (DDPMScheduler(), DDIMScheduler()):
            self.assertIn("alphas_cumprod", ours.state_dict())
            before = ours.alphas_cumprod.clone()
            out = ours.add_noise(x, x + 1, torch.tensor([10, 20]))
            self.assertEqual(out.dtype, torch.float64)
            self.assertEqual(ours.alphas_cumprod.dtype, torch.float32)
            torch.testing.assert_close(ours.alphas_cumprod, before, rtol=0, atol=0)
            self.assertEqual(ours.to(torch.float64).alphas_cumprod.dtype, torch.float64)


if __name__ == "__main__":
    unittest.main()
