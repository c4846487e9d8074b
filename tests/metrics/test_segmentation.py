from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from monai_diffusion.metrics import best_dice, dice, dice_at_threshold, hd95
from tests.test_utils import assert_allclose, dims_cases


def _cube(dim: int, size: int, start: tuple[int, ...], side: int) -> torch.Tensor:
    """(1, 1, *spatial) mask with a square/cube of ``side`` pixels at ``start``."""
    m = torch.zeros((1, 1) + (size,) * dim, dtype=torch.bool)
    m[(0, 0) + tuple(slice(s, s + side) for s in start)] = True
    return m


def _pooled_dice(pred: torch.Tensor, target: torch.Tensor) -> float:
    tp, p, t = (pred & target).sum().item(), pred.sum().item(), target.sum().item()
    return 1.0 if p + t == 0 else 2 * tp / (p + t)


class TestDiceHD95(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_known_overlap(self, _, dim):
        a = _cube(dim, 16, (4,) * dim, 4)
        b = _cube(dim, 16, (6,) + (4,) * (dim - 1), 4)  # shifted by half a side: half the volume overlaps
        c = _cube(dim, 16, (10,) * dim, 4)  # disjoint
        got = dice(torch.cat([a, a, a]), torch.cat([a, b, c]))
        assert_allclose(got, [1.0, 0.5, 0.0], atol=1e-6)
        self.assertEqual(got.shape, (3,))
        assert_allclose(dice(a.float(), b.long()), [0.5], atol=1e-6)  # 0/1 numbers work as well as bool

    @parameterized.expand(dims_cases())
    def test_shifted_squares_hd95(self, _, dim):
        a = _cube(dim, 16, (4,) * dim, 8)
        b = _cube(dim, 16, (6,) + (4,) * (dim - 1), 8)  # shifted by 2 pixels along the first axis
        assert_allclose(hd95(a, b), [2.0], atol=1e-6)
        assert_allclose(hd95(b, a), [2.0], atol=1e-6)
        assert_allclose(hd95(a, a), [0.0], atol=1e-6)
        # spacing scales the distance along the shifted axis only
        assert_allclose(hd95(a, b, spacing=(2.0,) + (1.0,) * (dim - 1)), [4.0], atol=1e-6)
        assert_allclose(hd95(a, b, spacing=0.5), [1.0], atol=1e-6)

    @parameterized.expand(dims_cases())
    def test_empty_mask_convention(self, _, dim):
        empty = torch.zeros((1, 1) + (8,) * dim, dtype=torch.bool)
        full = _cube(dim, 8, (2,) * dim, 3)
        pred = torch.cat([empty, empty, full, full])
        target = torch.cat([empty, full, empty, full])
        assert_allclose(dice(pred, target), [1.0, 0.0, 0.0, 1.0], atol=1e-6)
        h = hd95(pred, target)
        self.assertEqual(h[0].item(), 0.0)
        self.assertTrue(math.isnan(h[1].item()) and math.isnan(h[2].item()))
        self.assertEqual(h[3].item(), 0.0)

    def test_errors(self):
        m = torch.zeros(1, 1, 8, 8)
        with self.assertRaisesRegex(ValueError, "binary"):
            dice(m + 0.5, m)
        with self.assertRaisesRegex(ValueError, "same shape"):
            hd95(m, torch.zeros(1, 1, 8, 9))
        with self.assertRaisesRegex(ValueError, r"\(B, 1, \*spatial\)"):
            dice(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
        with self.assertRaisesRegex(TypeError, "pred must be a torch.Tensor"):
            dice(m.numpy(), m)  # type: ignore[arg-type]


class TestBestDice(unittest.TestCase):
    def test_hand_computed(self):
        scores = torch.tensor([0.9, 0.8, 0.3, 0.1], dtype=torch.float64)  # float64: thresholds come back exactly
        target = torch.tensor([1, 0, 1, 0])
        # t=0.9: 2*1/(1+2)=2/3; t=0.8: 2/4; t=0.3: 4/5; t=0.1: 4/6
        d, t = best_dice(scores, target)
        self.assertAlmostEqual(d, 0.8)
        self.assertEqual(t, 0.3)
        d, t = best_dice(scores, target, thresholds=[0.85, 0.5])
        self.assertAlmostEqual(d, 2 / 3)
        self.assertEqual(t, 0.85)
        # pooled Dice at one threshold
        self.assertAlmostEqual(best_dice(scores, target, [0.1])[0], 4 / 6)

    @parameterized.expand(dims_cases())
    def test_exact_maximum_with_ties(self, _, dim):
        g = torch.Generator().manual_seed(0)
        shape = (3, 1) + (10,) * dim
        target = torch.rand(shape, generator=g) < 0.2
        scores = torch.round(10 * (target.float() + torch.rand(shape, generator=g))) / 10  # many ties
        d, t = best_dice(scores, target)
        brute = max(_pooled_dice(scores >= v, target) for v in scores.unique().tolist())
        self.assertAlmostEqual(d, brute, places=12)
        self.assertAlmostEqual(_pooled_dice(scores >= t, target), d, places=12)
        self.assertTrue(0.3 < d < 1.0)

    def test_separated_empty_and_mask(self):
        target = torch.tensor([0, 0, 1, 1, 1])
        scores = torch.tensor([0.1, 0.2, 0.5, 0.6, 0.9], dtype=torch.float64)
        self.assertEqual(best_dice(scores, target), (1.0, 0.5))  # the smallest perfect threshold
        self.assertEqual(best_dice(scores, torch.zeros(5)), (1.0, math.inf))  # nothing to find: predict nothing
        # the mask drops the positive at 0.5, which moves the best threshold up to 0.6
        mask = torch.tensor([1, 1, 0, 1, 1])
        self.assertEqual(best_dice(scores, target, mask=mask), (1.0, 0.6))

    @parameterized.expand(dims_cases())
    def test_dice_at_threshold(self, _, dim):
        g = torch.Generator().manual_seed(1)
        shape = (2, 1) + (8,) * dim
        target = torch.rand(shape, generator=g) < 0.3
        scores = target.float() + 0.8 * torch.rand(shape, generator=g)
        assert_allclose(dice_at_threshold(scores, target, 0.6), dice(scores >= 0.6, target))
        assert_allclose(dice_at_threshold(scores, target, 0.8), [1.0, 1.0])
        assert_allclose(dice_at_threshold(scores, target, math.inf), [0.0, 0.0])

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "same shape"):
            best_dice(torch.zeros(4), torch.zeros(5))
        with self.assertRaisesRegex(ValueError, "binary"):
            best_dice(torch.zeros(4), torch.full((4,), 2.0))
        with self.assertRaisesRegex(ValueError, "nan"):
            best_dice(torch.tensor([0.0, math.nan]), torch.tensor([0, 1]))
        with self.assertRaisesRegex(ValueError, "thresholds must not be empty"):
            best_dice(torch.zeros(4), torch.zeros(4), thresholds=[])
        with self.assertRaisesRegex(ValueError, "threshold must be a number"):
            dice_at_threshold(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), math.nan)


if __name__ == "__main__":
    unittest.main()
