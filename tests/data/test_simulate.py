from __future__ import annotations

import unittest

import numpy as np
from parameterized import parameterized

from monai_diffusion.data.mri_physics import CONTRASTS
from monai_diffusion.data.simulate import make_grid, simulate_subject, subject_seed
from tests.test_utils import dims_cases

SIZE = 16  # tiny grids keep the tests fast


class TestGrid(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_shapes(self, _, dim):
        grid = make_grid(dim, SIZE)
        self.assertEqual(grid.shape[:2], (SIZE, SIZE))
        if dim == 3:
            self.assertEqual(grid.shape[2], SIZE)
        else:
            self.assertGreater(grid.shape[2], SIZE // 2)  # the brain's height at the in-plane spacing
        np.testing.assert_allclose(np.diag(grid.affine)[:3], grid.spacing)

    @parameterized.expand([("zero", 0), ("negative", -4), ("tiny", 4), ("float", 16.5), ("bool", True)])
    def test_bad_size(self, _, size):
        with self.assertRaisesRegex(ValueError, "size"):
            make_grid(2, size)

    def test_bad_dim(self):
        with self.assertRaisesRegex(ValueError, "dim"):
            make_grid(4, SIZE)


class TestSimulateSubject(unittest.TestCase):
    @parameterized.expand(dims_cases())
    def test_outputs(self, _, dim):
        grid = make_grid(dim, SIZE)
        out = simulate_subject(subject_seed(0, 0), grid, lesions=True)
        for c in CONTRASTS:
            self.assertEqual(out[c].shape, grid.shape)
            self.assertEqual(out[c].dtype, np.float32)
            self.assertGreaterEqual(out[c].min(), 0.0)
            self.assertLessEqual(out[c].max(), 1.0)
            self.assertTrue(np.all(out[c][out["label"] == 0] == 0.0), "background must be exactly 0")
        self.assertEqual(set(np.unique(out["label"])) - {0, 1, 2, 3}, set())
        self.assertEqual(out["label"].dtype, np.uint8)
        self.assertGreater(out["lesion"].sum(), 0)
        self.assertTrue(np.all(out["label"][out["lesion"] > 0] >= 2), "lesions lie in grey or white matter")

    def test_deterministic(self):
        grid = make_grid(3, SIZE)
        a = simulate_subject(12345, grid, lesions=True)
        b = simulate_subject(12345, grid, lesions=True)
        c = simulate_subject(12346, grid, lesions=True)
        for k in (*CONTRASTS, "label", "lesion"):
            np.testing.assert_array_equal(a[k], b[k])
        self.assertEqual(a["params"], b["params"])
        self.assertFalse(np.array_equal(a["t1w"], c["t1w"]))

    @parameterized.expand(dims_cases())
    def test_lesion_mask_is_exactly_where_lesions_were_inserted(self, _, dim):
        grid = make_grid(dim, SIZE)
        seed = subject_seed(3, 7)
        sick = simulate_subject(seed, grid, lesions=True)
        healthy = simulate_subject(seed, grid, lesions=False)
        changed = np.zeros(grid.shape, bool)
        for c in CONTRASTS:
            changed |= sick[c] != healthy[c]
        mask = sick["lesion"] > 0
        self.assertGreater(mask.sum(), 0)
        np.testing.assert_array_equal(changed, mask)
        self.assertEqual(healthy["lesion"].sum(), 0)
        np.testing.assert_array_equal(sick["label"], healthy["label"])
        self.assertEqual(healthy["params"]["lesions"], [])
        self.assertGreaterEqual(len(sick["params"]["lesions"]), 1)

    def test_lesions_stay_near_their_centres(self):
        grid = make_grid(3, 32)
        for index in range(4):
            out = simulate_subject(subject_seed(2, index), grid, lesions=True)
            points = grid.world()[:, out["lesion"] > 0]  # (3, n) world coordinates of lesion voxels
            reach = np.full(points.shape[1], np.inf)
            for lesion in out["params"]["lesions"]:
                d = np.linalg.norm(points - np.asarray(lesion["centre_mm"])[:, None], axis=0)
                reach = np.minimum(reach, d / max(lesion["radii_mm"]))
            self.assertLessEqual(float(reach.max()), 2.5 + 1e-6)

    def test_lesion_contrast(self):
        grid = make_grid(3, 32)
        seed = subject_seed(0, 5)
        sick = simulate_subject(seed, grid, lesions=True)
        healthy = simulate_subject(seed, grid, lesions=False)
        mask = sick["lesion"] > 0
        # inside the mask the lesion is T1-dark and T2/FLAIR-bright relative to the same voxels without it
        self.assertLess(sick["t1w"][mask].mean(), healthy["t1w"][mask].mean())
        self.assertGreater(sick["t2w"][mask].mean(), healthy["t2w"][mask].mean())
        self.assertGreater(sick["flair"][mask].mean(), healthy["flair"][mask].mean())

    def test_contrast_subset_leaves_others_unchanged(self):
        grid = make_grid(2, SIZE)
        full = simulate_subject(99, grid, lesions=True)
        part = simulate_subject(99, grid, lesions=True, contrasts=("t2w",))
        self.assertNotIn("t1w", part)
        np.testing.assert_array_equal(full["t2w"], part["t2w"])

    @parameterized.expand(dims_cases())
    def test_tissue_ordering(self, _, dim):
        grid = make_grid(dim, 32)
        for index in range(3):
            out = simulate_subject(subject_seed(0, index), grid, lesions=False)
            mean = {c: [out[c][out["label"] == k].mean() for k in (1, 2, 3)] for c in CONTRASTS}
            csf, gm, wm = mean["t1w"]
            self.assertGreater(wm, gm, "white matter brighter than grey matter in T1w")
            self.assertGreater(gm, csf)
            csf, gm, wm = mean["t2w"]
            self.assertGreater(csf, gm, "CSF brightest in T2w")
            self.assertGreater(gm, wm)
            csf, gm, wm = mean["flair"]
            self.assertLess(csf, wm, "CSF suppressed in FLAIR")

    @parameterized.expand(dims_cases())
    def test_clean_rendering_is_the_noiseless_signal(self, _, dim):
        """``clean=True`` adds ``<c>_clean`` without changing the noisy images; noisy minus clean is the Rician
        noise: zero mean far from zero signal, standard deviation ``noise_sigma``."""
        grid = make_grid(dim, 32)
        plain = simulate_subject(5, grid, lesions=True)
        out = simulate_subject(5, grid, lesions=True, clean=True)
        self.assertNotIn("t1w_clean", plain)
        sigma = out["params"]["noise_sigma"]
        for c in CONTRASTS:
            np.testing.assert_array_equal(plain[c], out[c])
            clean = out[f"{c}_clean"]
            self.assertTrue(np.all(clean[out["label"] == 0] == 0))
            self.assertTrue(clean.min() >= 0 and clean.max() <= 1)
            bright = (clean > 0.3) & (clean < 0.9)  # Rician ~ Gaussian at high SNR, away from the clip at 1
            residual = out[c][bright] - clean[bright]
            self.assertLess(abs(residual.mean()), 0.2 * sigma, c)
            self.assertAlmostEqual(residual.std() / sigma, 1.0, delta=0.15, msg=c)

    def test_unknown_contrast(self):
        with self.assertRaisesRegex(ValueError, "contrasts"):
            simulate_subject(0, make_grid(2, SIZE), lesions=False, contrasts=("t1w", "dwi"))


if __name__ == "__main__":
    unittest.main()
