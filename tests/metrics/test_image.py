from __future__ import annotations

import math
import unittest

import torch
from monai.metrics import PSNRMetric, SSIMMetric
from parameterized import parameterized

from monai_diffusion.metrics import masked_mse, masked_psnr, masked_ssim
from tests.test_utils import assert_allclose, dims_cases


def _box_mask(shape: tuple[int, ...], margin: int) -> torch.Tensor:
    """(B, 1, *spatial) mask that is 1 except in a border of ``margin`` pixels."""
    mask = torch.zeros(shape[0], 1, *shape[2:])
    inner = (slice(None), slice(None)) + tuple(slice(margin, s - margin) for s in shape[2:])
    mask[inner] = 1
    return mask


class TestMaskedPSNR(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_known_constant_error_inside_mask(self, _, dim):
        shape = (2, 1) + (12,) * dim
        target = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        mask = _box_mask(shape, 3)
        # error 0.1 (item 0) and 0.01 (item 1) inside the mask, 5.0 outside: only the inside counts
        err = torch.tensor([0.1, 0.01]).view(2, *([1] * (dim + 1)))
        pred = torch.where(mask > 0, target + err, target + 5.0)
        assert_allclose(masked_psnr(pred, target, mask, data_range=1.0), [20.0, 40.0], rtol=1e-5)
        shift = 20 * math.log10(2)  # data_range 2 raises the peak by a factor 4 in power
        assert_allclose(masked_psnr(pred, target, mask, data_range=2.0), [20.0 + shift, 40.0 + shift], rtol=1e-5)
        assert_allclose(masked_mse(pred, target, mask), [0.01, 1e-4], rtol=1e-4)

    @parameterized.expand(dims_cases())
    def test_full_mask_matches_monai_and_identical_is_inf(self, _, dim):
        shape = (3, 2) + (8,) * dim
        g = torch.Generator().manual_seed(1)
        pred, target = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        ones = torch.ones(3, 1, *shape[2:])
        expected = PSNRMetric(max_val=1.0, reduction="none")(pred, target).reshape(-1)
        assert_allclose(masked_psnr(pred, target, ones, 1.0), expected, rtol=1e-5)
        self.assertTrue(torch.isinf(masked_psnr(target, target, ones, 1.0)).all())

    def test_per_channel_mask(self):
        target = torch.zeros(1, 2, 4, 4)
        pred = target.clone()
        pred[:, 1] = 1.0  # channel 1 wrong everywhere, channel 0 right
        mask = torch.zeros(1, 2, 4, 4)
        mask[:, 0] = 1
        self.assertTrue(torch.isinf(masked_psnr(pred, target, mask, 1.0)).all())
        mask[:, 1, 0, 0] = 1  # one wrong pixel among 17 -> MSE 1/17
        assert_allclose(masked_psnr(pred, target, mask, 1.0), [10 * math.log10(17)], rtol=1e-6)

    def test_errors(self):
        x = torch.zeros(2, 1, 8, 8)
        mask = torch.ones_like(x)
        with self.assertRaisesRegex(ValueError, "same shape"):
            masked_psnr(x, torch.zeros(2, 1, 8, 9), mask, 1.0)
        empty = mask.clone()
        empty[1] = 0
        with self.assertRaisesRegex(ValueError, r"mask is empty for batch item\(s\) \[1\]"):
            masked_psnr(x, x + 1, empty, 1.0)
        with self.assertRaisesRegex(ValueError, "mask must have shape"):
            masked_psnr(x, x, torch.ones(2, 1, 8, 7), 1.0)
        with self.assertRaisesRegex(ValueError, "1 or 1 channels|mask must have"):
            masked_psnr(x, x, torch.ones(2, 3, 8, 8), 1.0)
        with self.assertRaisesRegex(ValueError, "data_range"):
            masked_psnr(x, x + 1, mask, 0.0)
        with self.assertRaisesRegex(TypeError, "target must be a torch.Tensor"):
            masked_psnr(x, x.numpy(), mask, 1.0)  # type: ignore[arg-type]
        with self.assertRaisesRegex(ValueError, r"\(B, C, H, W\)"):
            masked_psnr(torch.zeros(8, 8), torch.zeros(8, 8), torch.ones(8, 8), 1.0)


class TestMaskedSSIM(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_identical_inside_mask_is_one(self, _, dim):
        size = 24 if dim == 2 else 16
        shape = (2, 1) + (size,) * dim
        target = torch.rand(shape, generator=torch.Generator().manual_seed(0))
        assert_allclose(masked_ssim(target, target, torch.ones_like(target), 1.0), [1.0, 1.0], atol=1e-6)
        # differences farther than half a window (5 pixels) from the mask do not reach it
        mask = torch.zeros_like(target)
        mask[(slice(None), slice(None)) + (slice(0, 4),) * dim] = 1
        pred = target.clone()
        pred[(slice(None), slice(None)) + (slice(10, None),) * dim] = 0.0
        assert_allclose(masked_ssim(pred, target, mask, 1.0), [1.0, 1.0], atol=1e-6)
        self.assertTrue((masked_ssim(pred, target, torch.ones_like(target), 1.0) < 0.95).all())

    @parameterized.expand(dims_cases())
    def test_constant_images_closed_form(self, _, dim):
        # constant images: sigma = 0, so SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 L)^2; dark values make
        # C1 matter (5/6 with it, 4/5 without) and keep MONAI's float32 variances far below C2
        shape = (1, 1) + (12,) * dim
        a, b = torch.full(shape, 0.02), torch.full(shape, 0.01)
        c1 = 0.01**2
        expected = (2 * 0.02 * 0.01 + c1) / (0.02**2 + 0.01**2 + c1)
        self.assertAlmostEqual(expected, 5 / 6)
        assert_allclose(masked_ssim(a, b, torch.ones_like(a), 1.0), [expected], rtol=1e-4)

    @parameterized.expand(dims_cases())
    def test_interior_mask_equals_monai_ssim(self, _, dim):
        size = 20 if dim == 2 else 14
        shape = (2, 1) + (size,) * dim
        g = torch.Generator().manual_seed(3)
        target = torch.rand(shape, generator=g)
        pred = (target + 0.2 * torch.randn(shape, generator=g)).clamp(0, 1)
        expected = SSIMMetric(spatial_dims=dim, data_range=1.0, reduction="none")(pred, target).reshape(-1)
        got = masked_ssim(pred, target, _box_mask(shape, 5), 1.0)
        assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        self.assertTrue((got < 0.9).all())

    def test_errors(self):
        x = torch.zeros(1, 1, 8, 8)
        with self.assertRaisesRegex(ValueError, "mask is empty"):
            masked_ssim(x, x, torch.zeros_like(x), 1.0)
        with self.assertRaisesRegex(ValueError, "same shape"):
            masked_ssim(x, torch.zeros(1, 1, 8, 6), torch.ones_like(x), 1.0)
        with self.assertRaisesRegex(ValueError, "win_size"):
            masked_ssim(x, x, torch.ones_like(x), 1.0, win_size=4)
        with self.assertRaisesRegex(ValueError, "exceed win_size"):
            masked_ssim(torch.zeros(1, 1, 5, 5), torch.zeros(1, 1, 5, 5), torch.ones(1, 1, 5, 5), 1.0)


if __name__ == "__main__":
    unittest.main()
