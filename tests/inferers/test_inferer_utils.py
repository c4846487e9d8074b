from __future__ import annotations

import unittest

import torch
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from parameterized import parameterized

from monai_diffusion.inferers.utils import from_eps, marginal_coefficients, to_x0_eps, training_target
from monai_diffusion.networks.schedulers import DDPMScheduler
from tests.test_utils import assert_allclose, make_input


class TestCoefficients(unittest.TestCase):
    def test_monai_table_matches_ours(self):
        t = torch.tensor([0, 10, 500, 999])
        a1, s1 = marginal_coefficients(MonaiDDPM(1000), t)
        a2, s2 = marginal_coefficients(DDPMScheduler(1000), t)
        assert_allclose(a1, a2, atol=1e-6)
        assert_allclose(s1, s2, atol=1e-6)
        assert_allclose(a1**2 + s1**2, torch.ones(4, dtype=torch.float64), atol=1e-12)
        # fractional times interpolate the table
        a_half, _ = marginal_coefficients(MonaiDDPM(1000), torch.tensor(10.5))
        lo, hi = marginal_coefficients(MonaiDDPM(1000), torch.tensor([10, 11]))[0]
        self.assertTrue(min(lo, hi) <= a_half <= max(lo, hi))
        with self.assertRaisesRegex(TypeError, "marginal_coefficients"):
            marginal_coefficients(object(), t)

    @parameterized.expand([("epsilon",), ("sample",), ("v_prediction",)])
    def test_conversions_any_forward_process(self, prediction_type):
        """Round trips hold for VP and non-VP (VE-like) coefficients."""
        x0, eps = make_input((3, 1, 4, 4), dtype=torch.float64), make_input((3, 1, 4, 4), 1, torch.float64)
        for alpha, sigma in (
            (torch.tensor([0.9, 0.5, 0.1]), torch.tensor([0.43589, 0.86603, 0.99499])),
            (torch.ones(3), torch.tensor([0.1, 2.0, 30.0])),
        ):
            a, s = alpha.double(), sigma.double()
            x = a.reshape(-1, 1, 1, 1) * x0 + s.reshape(-1, 1, 1, 1) * eps
            out = training_target(x0, eps, a, s, prediction_type)
            x0_hat, eps_hat = to_x0_eps(out, x, a, s, prediction_type)
            assert_allclose(x0_hat, x0, atol=1e-9)
            assert_allclose(eps_hat, eps, atol=1e-9)
            assert_allclose(from_eps(eps, x, a, s, prediction_type), out, atol=1e-9)
        with self.assertRaisesRegex(ValueError, "prediction_type"):
            to_x0_eps(x0, x0, 1.0, 1.0, "score")


if __name__ == "__main__":
    unittest.main()
