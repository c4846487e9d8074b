from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from monai_diffusion.data import load_arrays, prepare_dataset, synthetic_batch

SIZE = 16


class TestSyntheticBatch(unittest.TestCase):
    @parameterized.expand([("2d", 2, (3, 2, SIZE, SIZE)), ("3d", 3, (3, 2, SIZE, SIZE, SIZE))])
    def test_shapes(self, _, dim, shape):
        out = synthetic_batch(3, dim=dim, size=SIZE, contrasts=("t1w", "t2w"), lesions=True, with_masks=True)
        self.assertEqual(tuple(out["image"].shape), shape)
        self.assertEqual(tuple(out["label"].shape), (3, 1, *shape[2:]))
        self.assertEqual(out["image"].dtype, torch.float32)
        self.assertTrue(torch.all((out["image"] >= 0) & (out["image"] <= 1)))
        self.assertTrue(torch.all(out["image"][:, :, out["label"][0, 0] == 0][0] == 0))
        self.assertTrue(torch.all(out["lesion"] <= (out["label"] >= 2).long()))

    def test_deterministic_and_seeded(self):
        a = synthetic_batch(2, size=SIZE, seed=5)
        b = synthetic_batch(2, size=SIZE, seed=5)
        c = synthetic_batch(2, size=SIZE, seed=6)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        self.assertFalse(torch.equal(a, c))

    def test_healthy_has_empty_masks(self):
        out = synthetic_batch(2, size=SIZE, lesions=False, with_masks=True)
        self.assertEqual(int(out["lesion"].sum()), 0)

    @parameterized.expand([("batch", {"batch": 0}), ("contrast", {"contrasts": "dwi"}), ("size", {"size": 0})])
    def test_bad_arguments(self, name, kwargs):
        with self.assertRaisesRegex(ValueError, name):
            synthetic_batch(**{"batch": 1, "size": SIZE, **kwargs})


class TestLoadArrays(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        cls.path = prepare_dataset(cls.tmp, dim=3, size=SIZE, subjects=3, seed=1)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_stack(self):
        out = load_arrays(self.path, "training", keys=("t1w", "lesion"))
        self.assertEqual(tuple(out["t1w"].shape), (1, 1, SIZE, SIZE, SIZE))
        self.assertEqual(out["healthy"].dtype, torch.bool)
        healthy = load_arrays(self.path, "training", healthy_only=True)
        self.assertTrue(bool(healthy["healthy"].all()))

    def test_errors(self):
        with self.assertRaisesRegex(ValueError, "keys"):
            load_arrays(self.path, "training", keys=("dwi",))
        with self.assertRaisesRegex(ValueError, "section"):
            load_arrays(self.path, "train")
        with self.assertRaises(FileNotFoundError):
            load_arrays(self.tmp / "missing.json")


if __name__ == "__main__":
    unittest.main()
