"""Heun's grid (issue 12): why diffusers' default Heun beat ours on the exact mixture, and why the default stays.

Our default is Eq. 5 of Karras et al. (``rho = 7``); diffusers' ``HeunDiscreteScheduler`` defaults to evenly spaced
training times (``timestep_spacing="linspace"`` here). On the same grid the two give the same samples. Eq. 5 puts its
fine steps at small noise levels: worse for a smooth mixture whose modes form at sigma 0.3-4 (1.4x the W1 at 19
NFE), better for data with narrow modes (4.5x lower W1 at 39 NFE) and for the trained ``brain_prior`` network
(``benchmarks/lambda_min.py --heun``, docs/samplers.md).
"""

from __future__ import annotations

import importlib.util
import unittest

import torch

from monai_diffusion.exact import ExactModel, GaussianMixture, stratified_normal, wasserstein1
from monai_diffusion.networks.schedulers import HeunKarrasScheduler
from tests.networks.schedulers.contract import sample_loop

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None  # a benchmark-only dependency (`bench` extra)

# the mixture of benchmarks/samplers.py and test_exact_sampling.py: modes of std 0.12-0.25
SMOOTH = GaussianMixture(
    torch.tensor([0.25, 0.45, 0.30]), torch.tensor([-1.0, 0.1, 1.1]), torch.tensor([0.12, 0.25, 0.15])
)
# the "narrow" mixture of benchmarks/spacing.py: modes of std 0.05
NARROW = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([-0.3, 0.3]), torch.tensor([0.05, 0.05]))


def heun_w1(scheduler: HeunKarrasScheduler, steps: int, mixture: GaussianMixture) -> tuple[float, int, torch.Tensor]:
    """W1 to the mixture, NFE and samples of ``steps`` Heun steps under the exact score (4096 stratified samples)."""
    scheduler.set_timesteps(steps)
    model = ExactModel(mixture, scheduler)
    x, _ = sample_loop(scheduler, model, stratified_normal((4, 1, 32, 32)))
    return wasserstein1(x, mixture), model.calls, x


class TestHeunGrid(unittest.TestCase):
    def test_default_is_karras_eq5(self):
        s = HeunKarrasScheduler()
        self.assertEqual(s.timestep_spacing, "karras")
        s.set_timesteps(10)
        self.assertEqual(len(s.timesteps), 19)
        self.assertEqual(float(s.timesteps[0]), 999.0)
        # Eq. 5 between sigma 157 and 0.01: the second level is sigma 85.7, at a fractional time
        alpha, sigma = s.marginal_coefficients(s.timesteps[1])
        self.assertAlmostEqual(float(sigma / alpha), 85.71, places=1)
        self.assertNotEqual(float(s.timesteps[1]), round(float(s.timesteps[1])))

    def test_linspace_grid(self):
        s = HeunKarrasScheduler(timestep_spacing="linspace")
        s.set_timesteps(10)
        levels = [999, 888, 777, 666, 555, 444, 333, 222, 111, 0]
        expected = torch.tensor(levels[:1] + [t for t in levels[1:] for _ in range(2)])
        self.assertEqual(s.timesteps.dtype, torch.int64)
        torch.testing.assert_close(s.timesteps, expected)

    def test_linspace_is_better_on_the_smooth_mixture(self):
        # measured: 0.0674 (linspace) vs 0.0927 (karras) at 19 NFE
        w1_linspace, nfe_linspace, _ = heun_w1(HeunKarrasScheduler(timestep_spacing="linspace"), 10, SMOOTH)
        w1_karras, nfe_karras, _ = heun_w1(HeunKarrasScheduler(), 10, SMOOTH)
        self.assertEqual((nfe_linspace, nfe_karras), (19, 19))
        self.assertLess(w1_linspace, 0.075)
        self.assertLess(w1_linspace, 0.8 * w1_karras)

    def test_karras_is_better_for_narrow_modes(self):
        # measured: 0.0077 (karras) vs 0.0348 (linspace) at 39 NFE: linspace's last step, sigma 0.38 -> 0.01, is
        # too long for modes of std 0.05
        w1_karras, nfe, _ = heun_w1(HeunKarrasScheduler(), 20, NARROW)
        w1_linspace, _, _ = heun_w1(HeunKarrasScheduler(timestep_spacing="linspace"), 20, NARROW)
        self.assertEqual(nfe, 39)
        self.assertLess(w1_karras, 0.012)
        self.assertLess(w1_karras, 0.4 * w1_linspace)

    @unittest.skipUnless(HAS_DIFFUSERS, "diffusers is not installed")
    def test_linspace_matches_diffusers_default_heun(self):
        """Same grid and the same method as diffusers' ``HeunDiscreteScheduler`` with its defaults: same samples."""
        from diffusers import HeunDiscreteScheduler

        theirs = HeunDiscreteScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
        theirs.set_timesteps(10)
        ours = HeunKarrasScheduler(timestep_spacing="linspace")
        w1_ours, _, x_ours = heun_w1(ours, 10, SMOOTH)
        torch.testing.assert_close(ours.timesteps.double(), theirs.timesteps.double())
        model = ExactModel(SMOOTH, theirs, prediction_type="epsilon")
        x = stratified_normal((4, 1, 32, 32)) * theirs.init_noise_sigma
        for t in theirs.timesteps:
            x = theirs.step(model(theirs.scale_model_input(x, t), t), t, x).prev_sample
        self.assertEqual(model.calls, 19)
        torch.testing.assert_close(x_ours, x.float(), rtol=0, atol=1e-3)  # measured 4e-5
        self.assertAlmostEqual(w1_ours, wasserstein1(x, SMOOTH), places=3)


if __name__ == "__main__":
    unittest.main()
