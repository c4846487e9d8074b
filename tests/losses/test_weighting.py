from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from monai_diffusion.losses import MinSNRWeighting, min_snr_weight, snr
from tests.test_utils import assert_allclose


class TestMinSNR(unittest.TestCase):
    @parameterized.expand([("epsilon",), ("sample",), ("v_prediction",)])
    def test_equivalent_x0_weight(self, prediction_type):
        """Every parameterisation gives the same x0-space weight min(SNR, gamma) (Hang et al., 2023)."""
        alpha = torch.tensor([0.99, 0.9, 0.5, 0.1], dtype=torch.float64)
        sigma = (1 - alpha**2).sqrt()
        s = snr(alpha, sigma)
        w = MinSNRWeighting(5.0, prediction_type)(alpha, sigma)
        # the squared error of each parameterisation is (x0-space error)^2 times this factor
        factor = {"epsilon": s, "sample": torch.ones_like(s), "v_prediction": s + 1}[prediction_type]
        assert_allclose(w * factor, torch.clamp(s, max=5.0), rtol=1e-12)

    def test_values_and_errors(self):
        self.assertEqual(min_snr_weight(torch.tensor([1.0, 10.0]), 5.0).tolist(), [1.0, 0.5])
        with self.assertRaisesRegex(ValueError, "gamma"):
            MinSNRWeighting(0.0)
        with self.assertRaisesRegex(ValueError, "prediction_type"):
            MinSNRWeighting(5.0, "score")


if __name__ == "__main__":
    unittest.main()
