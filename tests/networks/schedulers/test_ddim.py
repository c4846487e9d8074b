from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_diffusion.exact import ExactModel, GaussianMixture
from monai_diffusion.networks.schedulers import DDIMScheduler
from tests.networks.schedulers.contract import SchedulerContract
from tests.test_utils import dims_cases, make_input

MIXTURE = GaussianMixture(
    torch.tensor([0.25, 0.45, 0.30]), torch.tensor([-1.0, 0.1, 1.1]), torch.tensor([0.12, 0.25, 0.15])
)


class TestDDIMContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDIMScheduler
    bundle_args = {"eta": 0.0, "schedule": "cosine", "timestep_spacing": "trailing"}

    def make_scheduler(self, **kw):
        return DDIMScheduler(**kw)


class TestDDIMStochasticContract(SchedulerContract, unittest.TestCase):
    scheduler_class = DDIMScheduler
    bundle_args = {"eta": 1.0}
    stochastic = True

    def make_scheduler(self, **kw):
        return DDIMScheduler(**{"eta": 1.0, **kw})


class TestDDIM(unittest.TestCase):
    @parameterized.expand([("linspace",), ("leading",), ("trailing",), ("log_snr",)])
    def test_step_lands_on_next_grid_point(self, spacing):
        # with the true noise as model output, a deterministic step maps x_t exactly onto x_{t_next}
        s = DDIMScheduler(timestep_spacing=spacing)
        s.set_timesteps(10)
        x0, eps = make_input((2, 1, 8, 8), seed=0), make_input((2, 1, 8, 8), seed=1)
        ts = s.timesteps.tolist()
        for t, t_next in zip(ts[:-1], ts[1:]):
            xt = s.add_noise(x0, eps, torch.tensor(t))
            prev, pred_x0 = s.step(eps, t, xt)
            torch.testing.assert_close(prev, s.add_noise(x0, eps, torch.tensor(t_next)), rtol=0, atol=2e-4)
            torch.testing.assert_close(pred_x0, x0, rtol=0, atol=2e-3)
        prev, _ = s.step(eps, ts[-1], s.add_noise(x0, eps, torch.tensor(ts[-1])))
        torch.testing.assert_close(prev, x0, rtol=0, atol=2e-3)

    @parameterized.expand(dims_cases())
    def test_inversion_round_trip(self, _name, dims):
        # encode with reversed_step over the full range, decode with step: relative error < 0.06 at 50 steps
        s = DDIMScheduler()
        s.set_timesteps(50)
        model = ExactModel(MIXTURE, s)
        x0 = MIXTURE.sample((2, 1, *([16] * dims if dims == 2 else [8] * dims)), torch.Generator().manual_seed(0))
        x0 = x0.float()
        x = x0
        for t in s.timesteps.flip(0):
            x, _ = s.reversed_step(model(x, t), t, x)
        self.assertAlmostEqual(float(x.std()), 1.0, delta=0.1)  # encoded to (nearly) standard normal
        for t in s.timesteps:
            x, _ = s.step(model(x, t), t, x)
        rel = float((x - x0).norm() / x0.norm())
        self.assertLess(rel, 0.06)

    @parameterized.expand([(f"t{t}_{d}d", t, d, tol) for t, tol in ((37, 1e-3), (500, 0.03)) for d in (2, 3)])
    def test_inversion_to_an_intermediate_timestep(self, _name, t_end, dims, tol):
        # encode to an arbitrary t with a custom grid that starts at it (docs/samplers.md): with the true noise the
        # walk lands exactly on add_noise(x0, eps, t); with the exact model the round trip error is small
        # (measured 5e-4 at t=37, 0.021 / 0.016 (2D / 3D) at t=500, 50 grid points)
        s = DDIMScheduler()
        n = min(50, t_end + 1)
        s.set_timesteps(timesteps=torch.linspace(t_end, 0, n).round().long().unique_consecutive().tolist())
        self.assertEqual(int(s.timesteps[0]), t_end)
        shape = (2, 1, *([16] * 2 if dims == 2 else [8] * 3))
        x0, eps = make_input(shape, seed=0), make_input(shape, seed=1)
        x = x0
        for t in s.timesteps.flip(0):
            x, _ = s.reversed_step(eps, t, x)
        torch.testing.assert_close(x, s.add_noise(x0, eps, torch.tensor(t_end)), rtol=0, atol=2e-4)
        model = ExactModel(MIXTURE, s)
        x0 = MIXTURE.sample(shape, torch.Generator().manual_seed(0)).float()
        x = x0
        for t in s.timesteps.flip(0):
            x, _ = s.reversed_step(model(x, t), t, x)
        for t in s.timesteps:
            x, _ = s.step(model(x, t), t, x)
        self.assertLess(float((x - x0).norm() / x0.norm()), tol)

    def test_reversed_step_is_exact_with_true_noise(self):
        s = DDIMScheduler()
        s.set_timesteps(5)
        x0, eps = make_input((2, 1, 8, 8), seed=0), make_input((2, 1, 8, 8), seed=1)
        ts = s.timesteps.flip(0).tolist()
        x = x0
        for t in ts:
            x, _ = s.reversed_step(eps, t, x)
            torch.testing.assert_close(x, s.add_noise(x0, eps, torch.tensor(t)), rtol=0, atol=2e-4)

    def test_eta_out_of_range(self):
        with self.assertRaisesRegex(ValueError, "eta"):
            DDIMScheduler(eta=1.5)
        s = DDIMScheduler()
        s.set_timesteps(5)
        with self.assertRaisesRegex(ValueError, "eta"):
            s.step(torch.zeros(1, 1, 4, 4), s.timesteps[0], torch.zeros(1, 1, 4, 4), eta=-0.1)

    def test_timestep_not_on_grid(self):
        s = DDIMScheduler()
        s.set_timesteps(5)
        with self.assertRaisesRegex(ValueError, "not one of"):
            s.step(torch.zeros(1, 1, 4, 4), 123, torch.zeros(1, 1, 4, 4))

    def test_set_alpha_to_one_false(self):
        s = DDIMScheduler(set_alpha_to_one=False)
        s.set_timesteps(5)
        x0, eps = make_input((1, 1, 4, 4), seed=0), make_input((1, 1, 4, 4), seed=1)
        t = s.timesteps[-1]
        prev, _ = s.step(eps, t, s.add_noise(x0, eps, t))
        abar0 = float(s.alphas_cumprod[0])
        torch.testing.assert_close(prev, math.sqrt(abar0) * x0 + math.sqrt(1 - abar0) * eps, rtol=0, atol=2e-4)


if __name__ == "__main__":
    unittest.main()
